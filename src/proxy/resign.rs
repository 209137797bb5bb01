//! Re-signing on read (issue 15): this proxy's own hosted URLs in a JSON
//! answer get a fresh `exp`/`sig`, for the requesting user only, so an app
//! that stored URLs months ago gets working ones back from Studio API with
//! no change to Studio API. Everything else in the body is kept byte for
//! byte.

use crate::config::SigningConfig;
use crate::ids::{parse_hosted_path, UserId, HOSTED_PREFIX};
use crate::ignored_params::IgnoredParams;
use crate::rewrite::{self, NotJson};
use crate::signing::{hosted_url, unsigned_params};

/// The path and query of `s` when it is one of this proxy's hosted URLs
/// under `base` (signed or not, expired or not, any key).
fn own_hosted<'a>(s: &'a str, base: &str) -> Option<(&'a str, Option<&'a str>)> {
    let rest = s.strip_prefix(base)?;
    if !rest.starts_with(HOSTED_PREFIX) || rest.contains('#') {
        return None;
    }
    Some(match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    })
}

/// `body` with `user`'s hosted URLs signed afresh; `Ok(None)` when there
/// are none. URLs of other users, and anything not ours, stay as they are.
pub fn resign(
    cfg: &SigningConfig,
    ignored: &IgnoredParams,
    body: &[u8],
    user: &UserId,
    base: &str,
    now_secs: u64,
) -> Result<Option<Vec<u8>>, NotJson> {
    // "hosted" survives every JSON escaping of a URL ("\/" for "/").
    let spans = rewrite::find_strings(body, b"hosted", |s| own_hosted(s, base).is_some())?;
    let mut out = Vec::new();
    for span in spans {
        let Some((path, query)) = own_hosted(&span.value, base) else {
            continue;
        };
        let Ok((key, _)) = parse_hosted_path(path) else {
            continue;
        };
        if key.user != *user {
            continue;
        }
        // Ignored parameters are never signed: the check takes them out
        // before it verifies (finding 16).
        let query = ignored.strip(query);
        let url = hosted_url(
            cfg,
            base,
            path,
            &unsigned_params(query.as_deref()),
            now_secs,
        );
        out.push((span, url));
    }
    Ok((!out.is_empty()).then(|| rewrite::replace_spans(body, &out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SigningMode;
    use crate::signing::{Signer, Verdict};

    const KEY: &str = "first-key-0123456789-0123456789-xx";
    const BASE: &str = "https://api.example.com";

    fn cfg() -> SigningConfig {
        SigningConfig {
            mode: SigningMode::Sign,
            signer: Some(Signer::parse(KEY).unwrap()),
            ttl: Some(std::time::Duration::from_secs(600)),
            resign_paths: Vec::new(),
            private_users: Default::default(),
        }
    }

    #[test]
    fn only_the_users_own_urls_are_signed_again() {
        let mine = format!("{BASE}/v1/images/hosted/al/img_000000000000000000000001.png");
        let thumb = format!(
            "{BASE}/v1/images/hosted/al/img_000000000000000000000002.png?w=256&exp=5&sig=old"
        );
        let theirs = format!("{BASE}/v1/images/hosted/bo/img_000000000000000000000003.png");
        let elsewhere =
            "https://cdn.example.com/v1/images/hosted/al/img_000000000000000000000001.png";
        let body = serde_json::json!({
            "images": [mine, thumb, theirs, elsewhere],
            "note": "  spacing   kept ",
            "n": 1.50
        })
        .to_string()
        .replace("\"n\":1.5", "\"n\":1.50");
        let al = UserId::parse("al").unwrap();
        let out = resign(
            &cfg(),
            &IgnoredParams::default(),
            body.as_bytes(),
            &al,
            BASE,
            1_000,
        )
        .unwrap()
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let signer = cfg().signer.unwrap();
        for (i, want_query) in [(0, "exp=1600&sig="), (1, "w=256&exp=1600&sig=")] {
            let url = v["images"][i].as_str().unwrap();
            let (path, query) = url.strip_prefix(BASE).unwrap().split_once('?').unwrap();
            assert!(query.starts_with(want_query), "{url}");
            assert_eq!(
                signer.verify(path, Some(query), 1_000),
                Verdict::Valid { exp: Some(1_600) }
            );
        }
        assert_eq!(
            v["images"][2],
            theirs.as_str(),
            "another user's URL is left alone"
        );
        assert_eq!(v["images"][3], elsewhere, "not ours");
        assert!(String::from_utf8(out).unwrap().contains("\"n\":1.50"));
        // Nothing of the user's: no new body.
        let bo_only = serde_json::json!({"x": theirs}).to_string();
        assert_eq!(
            resign(
                &cfg(),
                &IgnoredParams::default(),
                bo_only.as_bytes(),
                &al,
                BASE,
                0
            )
            .unwrap(),
            None
        );
    }
}
