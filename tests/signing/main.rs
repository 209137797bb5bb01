//! Issue 15: signed hosted URLs and private images, and re-signing on the
//! way out with no change to Studio API. The real binary, the stand-in
//! Studio API and Replicate host, and a signature check written here from
//! the contract (HMAC-SHA256, URL-safe base64 without padding, over the path
//! plus the query before `&sig=`), not the proxy's own code.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod safe;

use base64::Engine;
use common::stands::generate;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

const K1: &str = "signing-key-one-0123456789abcdef0123";
const K2: &str = "signing-key-two-0123456789abcdef0123";
const OWNER: &str = "x-owner";

/// The contract's signature, computed independently of the proxy.
fn sig(key: &str, message: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// `path?query` signed with `key` by the contract (query may be empty).
fn signed(key: &str, path: &str, query: &str) -> String {
    let (msg, sep) = if query.is_empty() {
        (path.to_string(), "")
    } else {
        (format!("{path}?{query}"), "&")
    };
    format!("{path}?{query}{sep}sig={}", sig(key, &msg))
}

async fn stands(extra: &[(&str, &str)]) -> Stands {
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let opts = ProxyOptions::for_stands(&api, &host)
        .env("IMAGE_USER_ID_FROM", &format!("response-header:{OWNER}"))
        .env("IMAGE_RESIGN_PATHS", "/v1/images/list*")
        .overrides(extra);
    Stands {
        host,
        api,
        proxy: Proxy::start(opts).await,
    }
}

/// Stores one image for `user` through a generate call; returns the URL the
/// proxy handed out (its path and query) and the bytes.
async fn store(s: &Stands, user: &str, name: &str) -> (String, Vec<u8>) {
    let bytes = fixtures::unique_png(name.len() as u64 * 31 + name.as_bytes()[0] as u64);
    store_bytes(s, user, name, bytes).await
}

/// [`store`] with these bytes.
async fn store_bytes(s: &Stands, user: &str, name: &str, bytes: Vec<u8>) -> (String, Vec<u8>) {
    let source = format!("/sig/{name}");
    let hosted = hand_out_from(s, user, &source, bytes.clone()).await;
    s.host.expire(&source);
    (hosted, bytes)
}

/// Hands out one image for `user` (Studio API names the owner) from the
/// source at `path`, left alive; returns the hosted URL's path and query.
pub async fn hand_out_from(s: &Stands, user: &str, path: &str, bytes: Vec<u8>) -> String {
    let src = s.host.add_url(path, bytes, "image/png");
    s.api.set_response(
        GEN,
        Canned::json(&json!({ "output": [src] })).header(OWNER, user),
    );
    let r = generate(&s.proxy, "{}", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["output"][0].as_str().unwrap().to_string();
    let at = url.find("/v1/images/hosted/").expect("a hosted URL");
    url[at..].to_string()
}

async fn get(p: &Proxy, path_and_query: &str) -> Reply {
    fetch(client().get(p.url(path_and_query))).await
}

fn path_of(u: &str) -> &str {
    u.split('?').next().unwrap()
}

#[track_caller]
fn assert_refused(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json()["code"], code);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_hands_out_plain_urls() {
    let s = stands(&[]).await;
    let (url, bytes) = store(&s, "ann", "off.png").await;
    assert!(!url.contains('?'), "{url}");
    let r = get(&s.proxy, &url).await;
    assert_same_bytes(&r.body, &bytes, "unsigned, signing off");
    assert_eq!(r.h("cache-control"), "public, max-age=31536000, immutable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_mode_signs_what_it_hands_out_and_still_serves_unsigned() {
    let s = stands(&[("IMAGE_URL_SIGNING", "sign"), ("IMAGE_SIGNING_KEYS", K1)]).await;
    let (url, bytes) = store(&s, "ben", "sign.png").await;
    let path = path_of(&url);
    assert_eq!(url, signed(K1, path, ""), "signed as the contract says");
    assert_same_bytes(&get(&s.proxy, &url).await.body, &bytes, "signed");
    assert_same_bytes(
        &get(&s.proxy, path).await.body,
        &bytes,
        "unsigned, a migration step",
    );
    assert_refused(
        &get(&s.proxy, &format!("{path}?sig=AAAA")).await,
        403,
        "signature_invalid",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_refuses_missing_tampered_and_wrong_key_signatures() {
    let s = stands(&[
        ("IMAGE_URL_SIGNING", "required"),
        ("IMAGE_SIGNING_KEYS", K1),
    ])
    .await;
    let (url, bytes) = store(&s, "cai", "req.png").await;
    let path = path_of(&url);
    assert_same_bytes(&get(&s.proxy, &url).await.body, &bytes, "signed");
    let other_user = path.replace("/cai/", "/dan/");
    let cases = [
        (path.to_string(), 403, "signature_required"),
        (url.replace("/cai/", "/dan/"), 403, "signature_invalid"),
        (format!("{url}&w=256"), 403, "signature_invalid"),
        (signed(K2, path, ""), 403, "signature_invalid"),
        (format!("{path}?exp=99999999999"), 403, "signature_invalid"),
        // Refusals never tell whether the image exists.
        (signed(K2, &other_user, ""), 403, "signature_invalid"),
        (other_user, 403, "signature_required"),
    ];
    for (u, status, code) in cases {
        let r = get(&s.proxy, &u).await;
        assert_eq!(r.status, status, "{u}: {}", r.text());
        assert_eq!(r.json()["code"], code, "{u}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_downtime() {
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    // The storage outlives each proxy: restarts with other keys share it.
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let start = |keys: String| {
        let opts = ProxyOptions::for_stands(&api, &host)
            .env("IMAGE_USER_ID_FROM", &format!("response-header:{OWNER}"))
            .env("IMAGE_URL_SIGNING", "required")
            .env("IMAGE_SIGNING_KEYS", &keys)
            .env("DATABASE_URL", &common::db::sqlite_url(&storage))
            .storage(&storage);
        Proxy::start(opts)
    };
    let first = start(K1.to_string()).await;
    let s = Stands {
        host,
        api,
        proxy: first,
    };
    let (old_url, bytes) = store(&s, "eve", "rot.png").await;
    let path = path_of(&old_url).to_string();
    let Stands { host, api, proxy } = s;
    drop(proxy);
    let start = |keys: String| {
        let opts = ProxyOptions::for_stands(&api, &host)
            .env("IMAGE_USER_ID_FROM", &format!("response-header:{OWNER}"))
            .env("IMAGE_URL_SIGNING", "required")
            .env("IMAGE_SIGNING_KEYS", &keys)
            .env("DATABASE_URL", &common::db::sqlite_url(&storage))
            .storage(&storage);
        Proxy::start(opts)
    };
    // K2 now signs; K1 still verifies.
    let p = start(format!("{K2},{K1}")).await;
    assert_same_bytes(
        &get(&p, &old_url).await.body,
        &bytes,
        "old key, still listed",
    );
    assert_same_bytes(
        &get(&p, &signed(K2, &path, "")).await.body,
        &bytes,
        "new key",
    );
    drop(p);
    // K1 retired: its URLs stop working.
    let p = start(K2.to_string()).await;
    assert_refused(&get(&p, &old_url).await, 403, "signature_invalid");
    assert_same_bytes(
        &get(&p, &signed(K2, &path, "")).await.body,
        &bytes,
        "new key only",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_url_gets_410_and_caching_never_outlives_it() {
    let s = stands(&[
        ("IMAGE_URL_SIGNING", "required"),
        ("IMAGE_SIGNING_KEYS", K1),
        ("IMAGE_URL_TTL_SECS", "3"),
    ])
    .await;
    let (url, bytes) = store(&s, "fay", "ttl.png").await;
    assert!(url.contains("exp="), "{url}");
    let r = get(&s.proxy, &url).await;
    assert_same_bytes(&r.body, &bytes, "before exp");
    let cc = r.h("cache-control").to_string();
    let max_age: u64 = cc
        .strip_prefix("private, max-age=")
        .unwrap_or_else(|| panic!("{cc}"))
        .parse()
        .unwrap();
    assert!(max_age <= 3, "{cc}");
    // The ETag is the image's own: the signed URL revalidates with 304, and
    // the 304 is no more cacheable than the 200.
    let etag = r.h("etag").to_string();
    let again = fetch(
        client()
            .get(s.proxy.url(&url))
            .header("if-none-match", &etag),
    )
    .await;
    if again.status == 304 {
        assert!(again.h("cache-control").starts_with("private, max-age="));
    } else {
        assert_eq!(again.status, 410, "expired in between");
    }
    let expired = wait_until(secs(15), || async {
        get(&s.proxy, &url).await.status == 410
    })
    .await;
    assert!(expired, "never expired");
    assert_refused(&get(&s.proxy, &url).await, 410, "url_expired");
}

/// The path and query of a URL the proxy wrote into a response.
fn local(url: &Value, base: &str) -> String {
    let url = url.as_str().expect("a URL string");
    url.strip_prefix(base).expect("a proxy URL").to_string()
}

/// The app stored a URL long ago (expired now, or signed by a retired key);
/// Studio API lists it back unchanged; the proxy signs it afresh on the way
/// out, for the user the list belongs to only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_sign_on_read_revives_the_requesting_users_urls_only() {
    let s = stands(&[
        ("IMAGE_URL_SIGNING", "required"),
        ("IMAGE_SIGNING_KEYS", K1),
        ("IMAGE_URL_TTL_SECS", "600"),
    ])
    .await;
    let (mine, bytes) = store(&s, "gus", "mine.png").await;
    let (theirs, _) = store(&s, "hal", "theirs.png").await;
    let base = s.proxy.base();
    let mine_path = path_of(&mine);
    let stale = signed(K1, mine_path, "exp=1000");
    let thumb = signed(K1, mine_path, "w=256&exp=1000");
    assert_refused(&get(&s.proxy, &stale).await, 410, "url_expired");
    let listed = json!({
        "images": [format!("{base}{stale}"), format!("{base}{thumb}"), format!("{base}{theirs}")],
        "prompt": "a \"quoted\" prompt, spacing  kept",
    });
    s.api.set_response(
        "/v1/images/list",
        Canned::json(&listed).header(OWNER, "gus"),
    );
    let r = fetch(client().get(s.proxy.url("/v1/images/list"))).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let fresh = local(&v["images"][0], &base);
    assert_ne!(fresh, stale);
    assert_same_bytes(&get(&s.proxy, &fresh).await.body, &bytes, "re-signed");
    let fresh_thumb = local(&v["images"][1], &base);
    assert!(fresh_thumb.contains("w=256&exp="), "{fresh_thumb}");
    assert_eq!(get(&s.proxy, &fresh_thumb).await.status, 200);
    // A signed thumbnail cannot be turned into the original.
    let stripped = fresh_thumb.replace("w=256&", "");
    assert_refused(&get(&s.proxy, &stripped).await, 403, "signature_invalid");
    // Another user's URL is left exactly as Studio API sent it.
    assert_eq!(v["images"][2], format!("{base}{theirs}"));
    assert_eq!(v["prompt"], listed["prompt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_user_needs_a_signature_even_in_sign_mode() {
    let s = stands(&[
        ("IMAGE_URL_SIGNING", "sign"),
        ("IMAGE_SIGNING_KEYS", K1),
        ("IMAGE_PRIVATE_USERS", "ivy"),
    ])
    .await;
    let (private, bytes) = store(&s, "ivy", "priv.png").await;
    let (public, _) = store(&s, "jon", "pub.png").await;
    assert_same_bytes(&get(&s.proxy, &private).await.body, &bytes, "signed");
    assert_refused(
        &get(&s.proxy, path_of(&private)).await,
        403,
        "signature_required",
    );
    assert_eq!(
        get(&s.proxy, path_of(&public)).await.status,
        200,
        "others stay open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signing_settings_stop_the_start_naming_the_setting() {
    for (env, setting) in [
        (
            vec![("IMAGE_URL_SIGNING", "required")],
            "IMAGE_SIGNING_KEYS",
        ),
        (
            vec![
                ("IMAGE_URL_SIGNING", "sign"),
                ("IMAGE_SIGNING_KEYS", "too-short"),
            ],
            "IMAGE_SIGNING_KEYS",
        ),
        (vec![("IMAGE_PRIVATE_USERS", "ivy")], "IMAGE_PRIVATE_USERS"),
        (
            vec![("IMAGE_URL_SIGNING", "sometimes")],
            "IMAGE_URL_SIGNING",
        ),
    ] {
        let (_, stderr) = Proxy::run_expect_fail(&env).await;
        assert!(stderr.contains(setting), "{env:?}: {stderr}");
        assert!(!stderr.contains("too-short"), "a key is never printed");
    }
}
