use super::*;

fn matcher() -> SourceMatcher {
    SourceMatcher::parse("replicate.delivery,*.replicate.delivery", false).unwrap()
}

fn repl(urls: &[&str]) -> HashMap<String, Replacement> {
    urls.iter()
        .enumerate()
        .map(|(i, u)| {
            (
                u.to_string(),
                Replacement {
                    hosted_url: format!("https://api.example.com/v1/images/hosted/u/img_{i}.png"),
                    size_bytes: Some(100 + i as u64),
                    hosted_at: "2026-11-28T10:00:00Z".into(),
                },
            )
        })
        .collect()
}

fn rewrite(body: &str, urls: &[&str]) -> String {
    let s = scan(body.as_bytes(), &matcher()).unwrap();
    String::from_utf8(apply(body.as_bytes(), &s, &repl(urls))).unwrap()
}

#[test]
fn url_member_gets_siblings() {
    let body = r#"{"url": "https://replicate.delivery/pbxt/a/out-0.png", "n": 1.50}"#;
    let out = rewrite(body, &["https://replicate.delivery/pbxt/a/out-0.png"]);
    assert_eq!(
        out,
        r#"{"url": "https://api.example.com/v1/images/hosted/u/img_0.png","replicate_url":"https://replicate.delivery/pbxt/a/out-0.png","size_bytes":100,"hosted_at":"2026-11-28T10:00:00Z", "n": 1.50}"#
    );
}

#[test]
fn arrays_and_nesting_keep_everything_else() {
    let a = "https://replicate.delivery/xezq/a/out-0.webp";
    let b = "https://pbxt.replicate.delivery/b/out-1.webp";
    let body = format!(
        r#"{{"id":"p1","output":["{a}","{b}"],"deep":{{"x":[{{"u":"{a}"}}]}},"n":1e5,"s":"\u00e9\/"}}"#
    );
    let out = rewrite(&body, &[a, b]);
    assert!(!out.contains(a) && !out.contains(b));
    assert!(out.starts_with(r#"{"id":"p1","output":["https://api.example.com"#));
    assert!(out.ends_with(r#""n":1e5,"s":"\u00e9\/"}"#), "{out}");
    assert_eq!(
        out.matches("img_0.png").count(),
        2,
        "same URL, same replacement"
    );
    assert!(
        !out.contains("replicate_url"),
        "only url members get siblings"
    );
    let s = scan(body.as_bytes(), &matcher()).unwrap();
    assert_eq!(s.prediction_id.as_deref(), Some("p1"));
}

#[test]
fn untouched_cases() {
    let m = matcher();
    for body in [
        r#"{"text":"see https://replicate.delivery/a.png"}"#,
        r#"{"url":"https://example.com/a.png"}"#,
        r#"{"url":"http://replicate.delivery/a.png"}"#,
        r#"{"url":"https://replicate.delivery.evil.com/a.png"}"#,
        r#"["https://replicate.delivery"]"#,
    ] {
        let s = scan(body.as_bytes(), &m).unwrap();
        let non_empty: Vec<_> = s
            .found
            .iter()
            .filter(|f| f.value.contains("/a.png"))
            .collect();
        assert!(non_empty.is_empty(), "{body}");
    }
    assert_eq!(scan(b"not json", &m).unwrap_err(), NotJson);
    assert_eq!(scan(br#"{"a":"unterminated}"#, &m).unwrap_err(), NotJson);
}

#[test]
fn escaped_urls_are_found() {
    let body = r#"{"url":"https:\/\/replicate.delivery\/a\/out.png"}"#;
    let out = rewrite(body, &["https://replicate.delivery/a/out.png"]);
    assert!(out.contains("img_0.png"));
    assert!(out.contains(r#""replicate_url":"https://replicate.delivery/a/out.png""#));
}

#[test]
fn existing_siblings_are_not_duplicated() {
    let a = "https://replicate.delivery/a.png";
    let body = format!(r#"{{"url":"{a}","size_bytes":5}}"#);
    let out = rewrite(&body, &[a]);
    assert_eq!(out.matches("size_bytes").count(), 1);
    serde_json::from_str::<serde_json::Value>(&out).unwrap();
}

#[test]
fn keys_that_look_like_urls_are_not_values() {
    let a = "https://replicate.delivery/a.png";
    let body = format!(r#"{{"{a}":"x"}}"#);
    let s = scan(body.as_bytes(), &matcher()).unwrap();
    assert!(s.found.is_empty());
}

#[test]
fn missing_replacement_keeps_original() {
    let a = "https://replicate.delivery/a.png";
    let body = format!(r#"{{"url":"{a}"}}"#);
    let out = rewrite(&body, &[]);
    assert_eq!(out, body);
}

#[test]
fn needles() {
    let m = matcher();
    let needles = m.needles();
    assert!(may_contain_sources(
        br#"{"u":"https://x.replicate.delivery/a"}"#,
        needles
    ));
    assert!(!may_contain_sources(br#"{"ok":true}"#, needles));
}

#[test]
fn data_uri_members() {
    let d = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==";
    let body = format!(r#"{{"url":"{d}"}}"#);
    let out = rewrite(&body, &[d]);
    assert!(
        !out.contains("replicate_url"),
        "a data URI is not echoed back"
    );
    assert!(out.contains("size_bytes"));
}

#[test]
fn distinct_sources_are_linear_and_capped() {
    let urls: Vec<String> = (0..100)
        .map(|i| format!("https://replicate.delivery/p/{i}/out.png"))
        .collect();
    // Every URL twice, interleaved.
    let all: Vec<&String> = urls.iter().chain(urls.iter()).collect();
    let body = serde_json::to_string(&serde_json::json!({ "output": all })).unwrap();
    let s = scan(body.as_bytes(), &matcher()).unwrap();
    assert_eq!(s.found.len(), 200);
    let (picked, over) = distinct_sources(&s, 64);
    assert_eq!(picked.len(), 64);
    assert_eq!(over, 36);
    assert_eq!(picked[0].0, urls[0], "first appearance order");
    assert_eq!(picked[63].0, urls[63]);
    let (picked, over) = distinct_sources(&s, 1000);
    assert_eq!((picked.len(), over), (100, 0));
}

// Issue 11: a string that is legal JSON but not valid Unicode (a lone
// surrogate escape, as JavaScript's JSON.stringify writes for a prompt cut in
// the middle of an emoji) made the scan fail, so the whole body passed
// through and every source beside it expired un-hosted.
#[test]
fn lone_surrogates_do_not_stop_the_rewrite() {
    let a = "https://replicate.delivery/a.png";
    for body in [
        format!(r#"{{"prompt":"https://x \ud83d","url":"{a}"}}"#),
        format!(r#"{{"prompt":"data:image/png;base64,\udc00","url":"{a}"}}"#),
        format!(r#"{{"caption\ud800":"x","url":"{a}"}}"#),
        format!(r#"{{"id":"p\ud800","output":["{a}"]}}"#),
    ] {
        let s = scan(body.as_bytes(), &matcher()).expect("legal JSON is scanned");
        assert_eq!(s.found.len(), 1, "{body}");
        let out = rewrite(&body, &[a]);
        assert!(out.contains("img_0.png"), "{out}");
        assert!(
            !out.contains(&format!(r#""url":"{a}""#)) && !out.contains(&format!(r#"["{a}"]"#)),
            "{out}"
        );
        assert!(
            out.contains(r"\ud8") || out.contains(r"\udc"),
            "kept: {out}"
        );
        serde_json::from_slice::<serde::de::IgnoredAny>(out.as_bytes()).unwrap();
    }
}

// Issue 11: the raw-token pre-check looked for `http`/`data:` literally, so
// a source whose first characters are escaped was missed, though JSON says
// it is the same string.
#[test]
fn escaped_leading_characters_are_decoded() {
    let a = "https://replicate.delivery/a.png";
    for token in [
        r#""\u0068ttps://replicate.delivery/a.png""#,
        r#""h\u0074tps://replicate.delivery/a.png""#,
        r#""http\u0073://replicate.delivery/a.png""#,
    ] {
        let body = format!(r#"{{"url":{token}}}"#);
        let out = rewrite(&body, &[a]);
        assert!(out.contains("img_0.png"), "{token} -> {out}");
        assert!(out.contains(&format!(r#""replicate_url":"{a}""#)), "{out}");
    }
    let d = "data:image/png;base64,iVBORw0KGgo=";
    let out = rewrite(r#"["\u0064ata:image/png;base64,iVBORw0KGgo="]"#, &[d]);
    assert_eq!(
        out,
        r#"["https://api.example.com/v1/images/hosted/u/img_0.png"]"#
    );
}
