//! Issue 8: trusted user ids. The real permaproxy binary against a stand-in
//! Studio API and a stand-in Replicate file host, all on loopback.
//!
//! - `response-header:NAME`: the upstream's header decides the owner, the
//!   client's `X-User-Id` does not, and the header never reaches the client.
//! - `jwt:CLAIM`: HS256, RS256 and ES256 bearer tokens (PEM text, PEM file,
//!   JWKS file); only valid, unexpired, correctly signed ones count.
//! - `IMAGE_USER_ID_TRUSTED_ONLY`: start-up refusal naming the source.
//! - `IMAGE_USER_ID_REQUIRED`: no id means original URLs, no download, a metric.
//! - The default list and `IMAGE_USER_ID_HEADER` behave as before.

mod common;

use common::stands::{generate, stands};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

const MISSING: &str = "permaproxy_user_id_missing_total";
const HS_SECRET: &str = "a-long-test-secret-for-hs256";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("read fixture {name}: {e}"))
}

/// A fresh image path on the file host for every call, so no answer is
/// served from an earlier download.
fn fresh_image(host: &FileHost) -> (String, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = format!("/pbxt/uid/{}.png", N.fetch_add(1, Ordering::SeqCst));
    let url = host.add_url(&path, fixtures::PNG, "image/png");
    (path, url)
}

/// The generate answer of the upstream: `{"output":["<src>"]}` plus `headers`.
fn answer(api: &StudioApi, src: &str, headers: &[(&str, &str)]) -> String {
    let raw = format!(r#"{{"id":"p1","status":"succeeded","output":["{src}"]}}"#);
    let mut canned = Canned::json_text(&raw);
    for (k, v) in headers {
        canned = canned.header(k, v);
    }
    api.set_response(GEN, canned);
    raw
}

/// One generate call with a fresh image; returns the userId of the hosted
/// URL (panics when the URL was not hosted) and checks the bytes serve.
async fn hosted_user(s: &Stands, body: &str, headers: &[(&str, &str)]) -> String {
    let (path, src) = fresh_image(&s.host);
    answer(&s.api, &src, &[]);
    let r = generate(&s.proxy, body, headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let url = v["output"][0].as_str().expect("output[0] string");
    let h = parse_hosted(url).unwrap_or_else(|| panic!("not hosted: {url} (headers {headers:?})"));
    assert_eq!(h.base, s.proxy.base());
    assert_eq!(s.host.hits(&path), 1, "downloaded once");
    let got = fetch(client().get(s.proxy.url(&h.path))).await;
    assert_eq!(got.status, 200);
    assert_same_bytes(&got.body, fixtures::PNG, "hosted bytes");
    h.user
}

/// The user directories under the storage root (the store's own `~name`
/// directories left out).
fn user_dirs(storage: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(storage)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|name| !name.starts_with('~'))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// response-header:NAME

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_owner_wins_and_never_reaches_the_client() {
    let s = stands(&[("IMAGE_USER_ID_FROM", "response-header:X-Owner")]).await;

    // Rewrite route, URLs rewritten: alice from the upstream, not the client's victim.
    let (path, src) = fresh_image(&s.host);
    answer(&s.api, &src, &[("X-Owner", "alice"), ("x-other", "kept")]);
    let r = generate(
        &s.proxy,
        r#"{"prompt":"x","user_id":"victim","userId":"victim"}"#,
        &[("x-user-id", "victim"), ("x-owner", "victim")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["output"][0].as_str().unwrap().to_string();
    let h = parse_hosted(&url).unwrap_or_else(|| panic!("not hosted: {url}"));
    assert_eq!(h.user, "alice", "{url}");
    assert!(r.headers.get("x-owner").is_none(), "{:?}", r.headers);
    assert_eq!(r.h("x-other"), "kept", "other upstream headers pass");
    assert!(!r.text().contains("victim"));
    assert_eq!(s.host.hits(&path), 1);
    let got = fetch(client().get(s.proxy.url(&h.path))).await;
    assert_eq!(got.status, 200);
    assert_same_bytes(&got.body, fixtures::PNG, "alice's image");
    assert!(got.headers.get("x-owner").is_none());
    assert_eq!(user_dirs(s.proxy.storage_path()), ["alice"]);

    // The upstream did not set the header: the client's own X-Owner request
    // header does not count either; the id falls back to anonymous.
    assert_eq!(
        hosted_user(
            &s,
            r#"{"user_id":"victim"}"#,
            &[("x-owner", "victim"), ("x-user-id", "victim")]
        )
        .await,
        "anonymous"
    );

    // Rewrite route, JSON without any source URL (sent unchanged).
    let plain = r#"{"id":"p2","status":"starting"}"#;
    s.api
        .set_response(GEN, Canned::json_text(plain).header("X-Owner", "alice"));
    let r = generate(&s.proxy, "{}", &[("x-user-id", "victim")]).await;
    assert_eq!((r.status, r.text().as_str()), (200, plain));
    assert!(r.headers.get("x-owner").is_none(), "{:?}", r.headers);

    // Rewrite route, an answer that is not rewritten (error, not JSON): streamed.
    s.api.set_response(
        GEN,
        Canned::new(422, "text/plain", "bad prompt").header("X-Owner", "alice"),
    );
    let r = generate(&s.proxy, "{}", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (422, "bad prompt"));
    assert!(r.headers.get("x-owner").is_none(), "{:?}", r.headers);

    // Pass-through route (proxied by Pingora itself).
    let body = json!({"images": [src]}).to_string();
    s.api.set_response(
        "/v1/images/list",
        Canned::json_text(&body)
            .header("X-Owner", "alice")
            .header("x-other", "kept"),
    );
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let r = fetch(
            client()
                .request(method.clone(), s.proxy.url("/v1/images/list?x=1"))
                .header("x-user-id", "victim"),
        )
        .await;
        assert_eq!(r.status, 200, "{method}");
        assert!(
            r.headers.get("x-owner").is_none(),
            "{method}: {:?}",
            r.headers
        );
        assert_eq!(r.h("x-other"), "kept", "{method}");
        if method == reqwest::Method::GET {
            assert_eq!(r.text(), body, "pass-through body untouched");
        }
    }
    assert_eq!(s.api.count("/v1/images/list"), 2);
}

/// An upstream written by hand, to send header names in the case and
/// repetition an Express app may use (hyper would lowercase them). Answers
/// every request with `200`, `X-Owner: alice`, `X-OWNER: mallory` and
/// `body`, then closes the connection.
async fn raw_upstream(body: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Head, then as many body bytes as Content-Length says.
                let head_end = loop {
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let want: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() - head_end < want {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Owner: alice\r\nX-Other: kept\r\nX-OWNER: mallory\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_header_in_any_case_and_repeated_is_stripped() {
    let host = FileHost::start().await;
    let (path, src) = fresh_image(&host);
    let body = format!(r#"{{"output":["{src}"]}}"#);
    let upstream = raw_upstream(body.clone()).await;
    let proxy = Proxy::start(
        ProxyOptions::new(&upstream)
            .env("REPLICATE_HOSTS", &host.addr())
            .env("IMAGE_ALLOW_HTTP_SOURCES", "true")
            .env("IMAGE_USER_ID_FROM", "response-header:x-owner"),
    )
    .await;
    // Rewrite route: the first value decides, none reaches the client.
    let r = generate(&proxy, "{}", &[("x-user-id", "victim")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["output"][0].as_str().unwrap().to_string();
    assert_eq!(
        parse_hosted(&url).map(|h| h.user).as_deref(),
        Some("alice"),
        "{url}"
    );
    assert!(r.headers.get("x-owner").is_none(), "{:?}", r.headers);
    assert_eq!(r.h("x-other"), "kept");
    assert_eq!(host.hits(&path), 1);
    // Pass-through route, through a raw client so nothing is normalised.
    let raw = raw_get(&proxy.addr(), "/v1/anything").await;
    assert_eq!(raw.status, 200);
    assert!(
        !raw.headers.iter().any(|(k, _)| k == "x-owner"),
        "{:?}",
        raw.headers
    );
    assert_eq!(raw.header("x-other"), Some("kept"));
    assert_eq!(String::from_utf8_lossy(&raw.body), body);
}

// ---------------------------------------------------------------------------
// jwt:CLAIM

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sign(
    alg: Algorithm,
    kid: Option<&str>,
    claims: &serde_json::Value,
    key: &EncodingKey,
) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).expect("sign token")
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// `token` with its payload replaced by `claims`; header and signature kept.
fn swap_payload(token: &str, claims: &serde_json::Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    format!(
        "{}.{}.{}",
        parts[0],
        b64url(claims.to_string().as_bytes()),
        parts[2]
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Valid, expired, not-yet-valid, tampered and wrong-key tokens through one
/// proxy. `good`/`wrong` sign; `kid` goes into the header.
async fn check_tokens(
    s: &Stands,
    alg: Algorithm,
    kid: Option<&str>,
    good: &EncodingKey,
    wrong: &EncodingKey,
) {
    let t = now();
    let valid = sign(alg, kid, &json!({"sub": "bob", "exp": t + 3600}), good);
    assert_eq!(
        hosted_user(
            s,
            r#"{"user_id":"victim"}"#,
            &[("authorization", &bearer(&valid)), ("x-user-id", "victim")]
        )
        .await,
        "bob",
        "{alg:?}: a valid token is used"
    );
    // A numeric claim is an id too.
    let numeric = sign(alg, kid, &json!({"sub": 4242, "exp": t + 3600}), good);
    assert_eq!(
        hosted_user(s, "{}", &[("authorization", &bearer(&numeric))]).await,
        "4242",
        "{alg:?}: numeric sub"
    );

    let expired = sign(alg, kid, &json!({"sub": "bob", "exp": t - 3600}), good);
    let not_yet = sign(
        alg,
        kid,
        &json!({"sub": "bob", "nbf": t + 3600, "exp": t + 7200}),
        good,
    );
    let tampered = swap_payload(&valid, &json!({"sub": "victim", "exp": t + 3600}));
    let wrong_key = sign(alg, kid, &json!({"sub": "victim", "exp": t + 3600}), wrong);
    let unsigned = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(
            json!({"sub": "victim", "exp": t + 3600})
                .to_string()
                .as_bytes()
        )
    );
    // Finding 12: a token without exp would never expire (JWT_REQUIRE_EXP
    // defaults to true).
    let no_exp = sign(alg, kid, &json!({"sub": "bob"}), good);
    for (what, token) in [
        ("no exp", no_exp),
        ("expired", expired),
        ("nbf in the future", not_yet),
        ("tampered payload", tampered),
        ("wrong key", wrong_key),
        ("alg none", unsigned),
        ("garbage", "not.a.token".to_string()),
    ] {
        assert_eq!(
            hosted_user(
                s,
                r#"{"user_id":"victim"}"#,
                &[("authorization", &bearer(&token)), ("x-user-id", "victim")]
            )
            .await,
            "anonymous",
            "{alg:?}: a {what} token must not be used"
        );
    }
    // A token that is not sent as a bearer token does not count.
    assert_eq!(
        hosted_user(s, "{}", &[("authorization", &format!("Basic {valid}"))]).await,
        "anonymous"
    );
    assert_eq!(hosted_user(s, "{}", &[]).await, "anonymous");
    assert!(
        !user_dirs(s.proxy.storage_path()).contains(&"victim".to_string()),
        "{:?}",
        user_dirs(s.proxy.storage_path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_tokens() {
    let s = stands(&[
        ("IMAGE_USER_ID_FROM", "jwt:sub,anonymous"),
        ("JWT_SECRET", HS_SECRET),
    ])
    .await;
    check_tokens(
        &s,
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        &EncodingKey::from_secret(b"some-other-secret"),
    )
    .await;
    // The token goes on to the upstream untouched.
    assert!(s.api.requests().iter().any(|r| r.path == GEN
        && r.header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_with_public_key_pem_text() {
    let public = fixture_text("rsa_public.pem");
    let s = stands(&[
        ("IMAGE_USER_ID_FROM", "jwt:sub,anonymous"),
        ("JWT_PUBLIC_KEY", &public),
    ])
    .await;
    let good = EncodingKey::from_rsa_pem(fixture_text("rsa_private.pem").as_bytes()).unwrap();
    let wrong =
        EncodingKey::from_rsa_pem(fixture_text("rsa_other_private.pem").as_bytes()).unwrap();
    check_tokens(&s, Algorithm::RS256, None, &good, &wrong).await;
    // Algorithm confusion: an HS256 token keyed with the public key text.
    let confused = sign(
        Algorithm::HS256,
        None,
        &json!({"sub": "victim", "exp": now() + 3600}),
        &EncodingKey::from_secret(public.as_bytes()),
    );
    assert_eq!(
        hosted_user(&s, "{}", &[("authorization", &bearer(&confused))]).await,
        "anonymous"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_with_public_key_file() {
    let path = fixture("ec_public.pem");
    let s = stands(&[
        ("IMAGE_USER_ID_FROM", "jwt:sub,anonymous"),
        ("JWT_PUBLIC_KEY", path.to_str().unwrap()),
    ])
    .await;
    let good = EncodingKey::from_ec_pem(fixture_text("ec_private.pem").as_bytes()).unwrap();
    let wrong = EncodingKey::from_ec_pem(fixture_text("ec_other_private.pem").as_bytes()).unwrap();
    check_tokens(&s, Algorithm::ES256, None, &good, &wrong).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_with_jwks_file() {
    let jwks = fixture("jwks.json");
    let kid: String = serde_json::from_str::<serde_json::Value>(&fixture_text("jwks.json"))
        .unwrap()["keys"][0]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let s = stands(&[
        ("IMAGE_USER_ID_FROM", "jwt:sub,anonymous"),
        ("JWT_JWKS_PATH", jwks.to_str().unwrap()),
    ])
    .await;
    let good = EncodingKey::from_rsa_pem(fixture_text("rsa_private.pem").as_bytes()).unwrap();
    let wrong =
        EncodingKey::from_rsa_pem(fixture_text("rsa_other_private.pem").as_bytes()).unwrap();
    check_tokens(&s, Algorithm::RS256, Some(&kid), &good, &wrong).await;
    // A kid the set does not hold is not verified against another key.
    let other_kid = sign(
        Algorithm::RS256,
        Some("not-in-the-set"),
        &json!({"sub": "bob", "exp": now() + 3600}),
        &good,
    );
    assert_eq!(
        hosted_user(&s, "{}", &[("authorization", &bearer(&other_kid))]).await,
        "anonymous"
    );
}

// ---------------------------------------------------------------------------
// IMAGE_USER_ID_TRUSTED_ONLY

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_only_refuses_client_controlled_sources_at_start_up() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        // The default list starts with the client's header.
        (&[], "request-header:x-user-id"),
        (
            &[("IMAGE_USER_ID_HEADER", "X-Account")],
            "request-header:x-account",
        ),
        (
            &[("IMAGE_USER_ID_FROM", "response-header:x-owner,body:user_id")],
            "body:user_id",
        ),
        (
            &[("IMAGE_USER_ID_FROM", "anonymous,response-header:x-owner")],
            "anonymous",
        ),
        (
            &[
                (
                    "IMAGE_USER_ID_FROM",
                    "response-header:x-owner,anonymous,jwt:sub",
                ),
                ("JWT_SECRET", HS_SECRET),
            ],
            "anonymous",
        ),
    ];
    for (env, offending) in cases {
        let mut env = env.to_vec();
        env.extend([
            ("IMAGE_USER_ID_TRUSTED_ONLY", "true"),
            ("JWT_PUBLIC_KEY", ""),
            ("JWT_JWKS_PATH", ""),
        ]);
        if !env.iter().any(|(k, _)| *k == "JWT_SECRET") {
            env.push(("JWT_SECRET", ""));
        }
        let (code, stderr) = Proxy::run_expect_fail(&env).await;
        assert_ne!(code, 0);
        let line = stderr
            .lines()
            .find(|l| l.contains("IMAGE_USER_ID"))
            .unwrap_or_else(|| panic!("{env:?}: no IMAGE_USER_ID line in stderr:\n{stderr}"));
        assert!(
            line.contains(offending),
            "{env:?}: stderr must name {offending}, got:\n{stderr}"
        );
        assert!(
            stderr.contains("IMAGE_USER_ID_TRUSTED_ONLY") || stderr.contains("IMAGE_USER_ID_FROM"),
            "{env:?}: stderr must name the setting, got:\n{stderr}"
        );
    }
    // The default list's refusal names the setting that forbids it.
    let (_, stderr) = Proxy::run_expect_fail(&[("IMAGE_USER_ID_TRUSTED_ONLY", "true")]).await;
    assert!(stderr.contains("IMAGE_USER_ID_TRUSTED_ONLY"), "{stderr}");

    // check-config refuses the same way.
    let (code, _, stderr) = Proxy::run(
        &["check-config"],
        &[("IMAGE_USER_ID_TRUSTED_ONLY", "true")],
        secs(10),
    )
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("request-header:x-user-id"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_only_list_starts_and_serves() {
    let s = stands(&[
        ("IMAGE_USER_ID_TRUSTED_ONLY", "true"),
        (
            "IMAGE_USER_ID_FROM",
            "response-header:x-permaproxy-user,jwt:sub,anonymous",
        ),
        ("JWT_SECRET", HS_SECRET),
    ])
    .await;
    // The response header comes first, then the token, then anonymous.
    let (_, src) = fresh_image(&s.host);
    answer(&s.api, &src, &[("x-permaproxy-user", "carol")]);
    let token = sign(
        Algorithm::HS256,
        None,
        &json!({"sub": "bob", "exp": now() + 3600}),
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    );
    let r = generate(&s.proxy, "{}", &[("authorization", &bearer(&token))]).await;
    let url = r.json()["output"][0].as_str().unwrap().to_string();
    assert_eq!(parse_hosted(&url).unwrap().user, "carol", "{url}");
    assert!(r.headers.get("x-permaproxy-user").is_none());
    assert_eq!(
        hosted_user(&s, "{}", &[("authorization", &bearer(&token))]).await,
        "bob"
    );
    assert_eq!(
        hosted_user(&s, r#"{"user_id":"victim"}"#, &[("x-user-id", "victim")]).await,
        "anonymous"
    );
    // The secret is not printed by check-config.
    let (code, stdout, stderr) = Proxy::run(
        &["check-config"],
        &[
            ("IMAGE_USER_ID_TRUSTED_ONLY", "true"),
            ("IMAGE_USER_ID_FROM", "jwt:sub"),
            ("JWT_SECRET", HS_SECRET),
        ],
        secs(10),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stdout.contains(HS_SECRET) && !stderr.contains(HS_SECRET),
        "{stdout}"
    );
    assert!(!s.proxy.log_text().contains(HS_SECRET), "secret in the log");
}

// ---------------------------------------------------------------------------
// IMAGE_USER_ID_REQUIRED

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_id_missing_keeps_original_urls() {
    let s = stands(&[
        ("IMAGE_USER_ID_FROM", "response-header:x-owner,jwt:sub"),
        ("IMAGE_USER_ID_TRUSTED_ONLY", "true"),
        ("IMAGE_USER_ID_REQUIRED", "true"),
        ("JWT_SECRET", HS_SECRET),
    ])
    .await;
    let before = s.proxy.metric(MISSING).await;

    let (path, src) = fresh_image(&s.host);
    let raw = answer(&s.api, &src, &[]);
    let expired = sign(
        Algorithm::HS256,
        None,
        &json!({"sub": "bob", "exp": now() - 3600}),
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    );
    let attempts: [&[(&str, &str)]; 3] = [
        &[],
        &[("x-user-id", "victim")],
        &[("authorization", &bearer(&expired))],
    ];
    for (i, headers) in attempts.iter().enumerate() {
        let r = generate(
            &s.proxy,
            r#"{"user_id":"victim","userId":"victim"}"#,
            headers,
        )
        .await;
        assert_eq!(r.status, 200, "attempt {i}: {}", r.text());
        assert_eq!(
            r.text(),
            raw,
            "attempt {i}: the upstream's bytes, original URLs"
        );
        assert_eq!(r.h("content-length"), raw.len().to_string());
    }
    assert_eq!(s.host.hits(&path), 0, "nothing downloaded");
    assert_eq!(s.host.total_hits(), 0);
    assert!(
        user_dirs(s.proxy.storage_path()).is_empty(),
        "{:?}",
        files_under(s.proxy.storage_path())
    );
    let after = s.proxy.metric(MISSING).await;
    assert_eq!(after - before, 3.0, "{MISSING} counts each response");

    // A gzip answer without an id: the JSON arrives intact (decoded).
    s.api.set_response(GEN, Canned::json_text(&raw).gzip());
    let r = generate(&s.proxy, "{}", &[]).await;
    assert_eq!(r.status, 200);
    let body = if r.h("content-encoding") == "gzip" {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut out)
            .unwrap();
        out
    } else {
        r.body.to_vec()
    };
    assert_eq!(String::from_utf8(body).unwrap(), raw);
    assert_eq!(s.host.total_hits(), 0);

    // With an id the same proxy hosts: the kept URLs were the rule, not a fault.
    answer(&s.api, &src, &[("x-owner", "dave")]);
    let r = generate(&s.proxy, "{}", &[]).await;
    let url = r.json()["output"][0].as_str().unwrap().to_string();
    assert_eq!(
        parse_hosted(&url).map(|h| h.user).as_deref(),
        Some("dave"),
        "{url}"
    );
    assert_eq!(s.host.hits(&path), 1);
    assert_eq!(s.proxy.metric(MISSING).await - before, 4.0);
}

// ---------------------------------------------------------------------------
// Defaults

/// (request headers, request body, expected userId)
type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_list_is_unchanged() {
    let s = stands(&[]).await;
    let cases: &[Case] = &[
        (&[("x-user-id", "carol")], "{}", "carol"),
        (&[("x-user-id", "carol")], r#"{"user_id":"dave"}"#, "carol"),
        (&[], r#"{"user_id":"dave","userId":"erin"}"#, "dave"),
        (&[], r#"{"userId":"erin"}"#, "erin"),
        (&[], r#"{"prompt":"x"}"#, "anonymous"),
    ];
    for (headers, body, want) in cases {
        assert_eq!(
            &hosted_user(&s, body, headers).await,
            want,
            "{headers:?} {body}"
        );
    }
    // No response-header source: upstream headers are not stripped.
    let (_, src) = fresh_image(&s.host);
    answer(&s.api, &src, &[("x-owner", "alice")]);
    let r = generate(&s.proxy, "{}", &[]).await;
    assert_eq!(r.h("x-owner"), "alice");
    assert_eq!(s.proxy.metric(MISSING).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_header_setting_maps_onto_the_default_list() {
    let s = stands(&[("IMAGE_USER_ID_HEADER", "X-Account")]).await;
    let cases: &[Case] = &[
        (&[("x-account", "frank")], "{}", "frank"),
        (&[("x-account", "frank")], r#"{"user_id":"dave"}"#, "frank"),
        (&[("x-user-id", "carol")], "{}", "anonymous"),
        (&[("x-user-id", "carol")], r#"{"user_id":"dave"}"#, "dave"),
        (&[], r#"{"userId":"erin"}"#, "erin"),
    ];
    for (headers, body, want) in cases {
        assert_eq!(
            &hosted_user(&s, body, headers).await,
            want,
            "{headers:?} {body}"
        );
    }
}

/// Finding 12: `aud` and `iss` were never checked, and a token without `exp`
/// was accepted, so a token minted for another service (or one that never
/// expires) chose the user id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_12_jwt_audience_issuer_and_exp_are_required() {
    let s = stands(&[
        ("IMAGE_USER_ID_FROM", "jwt:sub,anonymous"),
        ("JWT_SECRET", HS_SECRET),
        ("JWT_AUDIENCE", "studio-app"),
        ("JWT_ISSUER", "https://auth.example.com"),
    ])
    .await;
    let key = EncodingKey::from_secret(HS_SECRET.as_bytes());
    let exp = now() + 3600;
    let iss = "https://auth.example.com";
    let user_for = |claims: serde_json::Value| {
        let token = sign(Algorithm::HS256, None, &claims, &key);
        let s = &s;
        async move { hosted_user(s, "{}", &[("authorization", &bearer(&token))]).await }
    };
    let good = json!({"sub": "bob", "exp": exp, "aud": "studio-app", "iss": iss});
    assert_eq!(user_for(good).await, "bob");
    for (what, claims) in [
        ("no aud", json!({"sub": "eve", "exp": exp, "iss": iss})),
        (
            "another aud",
            json!({"sub": "eve", "exp": exp, "aud": "billing", "iss": iss}),
        ),
        (
            "no iss",
            json!({"sub": "eve", "exp": exp, "aud": "studio-app"}),
        ),
        (
            "another iss",
            json!({"sub": "eve", "exp": exp, "aud": "studio-app", "iss": "https://evil.example"}),
        ),
        (
            "no exp",
            json!({"sub": "eve", "aud": "studio-app", "iss": iss}),
        ),
    ] {
        assert_eq!(user_for(claims).await, "anonymous", "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_without_exp_are_accepted_only_when_allowed() {
    let s = stands(&[
        ("IMAGE_USER_ID_FROM", "jwt:sub,anonymous"),
        ("JWT_SECRET", HS_SECRET),
        ("JWT_REQUIRE_EXP", "false"),
    ])
    .await;
    let key = EncodingKey::from_secret(HS_SECRET.as_bytes());
    let token = sign(Algorithm::HS256, None, &json!({"sub": "bob"}), &key);
    let got = hosted_user(&s, "{}", &[("authorization", &bearer(&token))]).await;
    assert_eq!(got, "bob");
}
