//! Logs: with LOG_FORMAT=json every line is a JSON object, there is one
//! access line per request, and no credential sent by a client shows up.

use crate::common::*;
use crate::{assert_ok_bytes, stands, store_png, GEN};
use serde_json::Value;

const BEARER: &str = "SECRET-TOKEN-123";
const COOKIE: &str = "COOKIE-456";
const QUERY_TOKEN: &str = "QUERY-789";

/// Every non-empty line of the proxy's output, parsed; panics on the first
/// line that is not a JSON object.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => v,
            _ => panic!("log line is not a JSON object: {l:?}"),
        })
        .collect()
}

fn access_lines(log: &str) -> Vec<Value> {
    json_lines(log)
        .into_iter()
        .filter(|v| v["target"] == "access")
        .collect()
}

/// Access lines of the requests that carried the query token (redacted).
fn token_access_lines(log: &str) -> Vec<Value> {
    access_lines(log)
        .into_iter()
        .filter(|v| v["path"].as_str().is_some_and(|p| p.contains("=REDACTED")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_lines_without_credentials() {
    let s = stands(&[("LOG_FORMAT", "json"), ("RUST_LOG", "info")]).await;
    let h = store_png(&s, "/pbxt/log/out-0.png", fixtures::PNG).await;
    s.api.set_generate_json(&serde_json::json!({"output": []}));

    // Forwarded routes take any query; a hosted URL takes only variant and
    // signature parameters (anything else is a 400), so its credential is
    // a `sig`, logged redacted all the same.
    let q = format!("?access_token={QUERY_TOKEN}&x=1");
    let sig = format!("?sig={QUERY_TOKEN}");
    let auth = format!("Bearer {BEARER}");
    let cookie = format!("session={COOKIE}");
    let send = |rb: reqwest::RequestBuilder| {
        fetch(
            rb.header("authorization", &auth)
                .header("cookie", &cookie)
                .header("content-type", "application/json"),
        )
    };
    let missing = "/v1/images/hosted/anonymous/img_000000000000000000000000.png";
    // (method, path, route, tier, status)
    let cases: [(&str, String, &str, &str, u16); 6] = [
        ("GET", format!("/echo/logs{q}"), "passthrough", "-", 200),
        ("POST", format!("{GEN}{q}"), "rewrite", "-", 200),
        ("GET", format!("{}{sig}", h.path), "hosted", "disk", 200),
        ("HEAD", format!("{}{sig}", h.path), "hosted", "memory", 200),
        ("GET", format!("{missing}{sig}"), "hosted", "miss", 404),
        ("GET", format!("{}{q}", h.path), "hosted", "-", 400),
    ];
    for (method, path, _, _, status) in &cases {
        let url = s.proxy.url(path);
        let rb = match *method {
            "GET" => client().get(url),
            "HEAD" => client().head(url),
            _ => client().post(url).body("{}"),
        };
        let r = send(rb).await;
        assert_eq!(r.status, *status, "{method} {path}: {}", r.text());
        if *method == "GET" && *status == 200 && path.starts_with("/v1/images/hosted/") {
            assert_ok_bytes(&r, fixtures::PNG, "hosted GET");
        }
    }
    // The credentials did reach the upstream: forwarding is not the redaction.
    let echoed = s.api.last_request().expect("upstream saw the requests");
    assert_eq!(echoed.header("authorization"), Some(auth.as_str()));

    let p = &s.proxy;
    let want = cases.len();
    assert!(
        wait_until(secs(10), || async move {
            token_access_lines(&p.log_text()).len() >= want
        })
        .await,
        "expected {} access lines, log:\n{}",
        cases.len(),
        p.log_text()
    );
    let log = s.proxy.log_text();
    let lines = token_access_lines(&log);
    assert_eq!(lines.len(), want, "one access line per request:\n{log}");
    // The requests were sent one after the other: their lines are in order.
    for (line, (method, path, route, tier, status)) in lines.iter().zip(&cases) {
        let (bare, query) = path.split_once('?').unwrap();
        let redacted = query.replace(QUERY_TOKEN, "REDACTED");
        assert_eq!(line["method"], *method, "{line}");
        assert_eq!(
            line["path"].as_str(),
            Some(format!("{bare}?{redacted}").as_str()),
            "{line}"
        );
        assert_eq!(line["status"], *status, "{line}");
        assert_eq!(line["route"], *route, "{line}");
        assert_eq!(line["tier"], *tier, "{line}");
        assert!(
            line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
            "{line}"
        );
        assert!(line["bytes"].as_u64().is_some(), "{line}");
        assert!(
            line["level"].is_string() && line["timestamp"].is_string(),
            "{line}"
        );
    }
    let hosted_get = &lines[2];
    assert_eq!(
        hosted_get["bytes"].as_u64(),
        Some(fixtures::PNG.len() as u64),
        "bytes of the hosted GET: {hosted_get}"
    );
    assert_eq!(lines[3]["bytes"].as_u64(), Some(0), "HEAD sends no body");

    for secret in [BEARER, COOKIE, QUERY_TOKEN] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logging_still_keeps_credentials_out() {
    // Operators turn RUST_LOG up when something is wrong; that must not be
    // when tokens start to leak.
    let s = stands(&[("LOG_FORMAT", "json"), ("RUST_LOG", "debug")]).await;
    let h = store_png(&s, "/pbxt/dbg/out-0.png", fixtures::PNG).await;
    let q = format!("?access_token={QUERY_TOKEN}&x=1");
    for path in [
        format!("/echo/dbg{q}"),
        format!("{GEN}{q}"),
        format!("{}{q}", h.path),
    ] {
        let r = fetch(
            client()
                .post(s.proxy.url(&path))
                .header("authorization", format!("Bearer {BEARER}"))
                .header("cookie", format!("session={COOKIE}"))
                .body("{}"),
        )
        .await;
        assert!(r.status < 500, "POST {path}: {}", r.status);
    }
    let p = &s.proxy;
    assert!(
        wait_until(secs(10), || async move {
            access_lines(&p.log_text()).iter().any(|l| {
                l["path"]
                    .as_str()
                    .is_some_and(|x| x.starts_with("/v1/images/hosted/"))
            })
        })
        .await
    );
    let log = s.proxy.log_text();
    json_lines(&log);
    for secret in [BEARER, COOKIE, QUERY_TOKEN] {
        assert!(
            !log.contains(secret),
            "{secret} leaked at debug level:\n{log}"
        );
    }
}
