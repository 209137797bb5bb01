//! Issue 20 through the real binary: private in every state (finding 5),
//! variant aliases never served by the image route (6), foreign query
//! parameters ignored (16).

use super::*;

const TOKEN: &str = "signing-safe-token-0123456789abcdef";

fn admin_private(path: &str) -> String {
    let rest = path.strip_prefix("/v1/images/hosted/").unwrap();
    let (user, file) = rest.split_once('/').unwrap();
    let id = file.split('.').next().unwrap();
    format!("/admin/users/{user}/images/{id}/private")
}

/// A missing image of the same user, to compare answers with.
fn missing_like(path: &str) -> String {
    let (dir, file) = path.rsplit_once('/').unwrap();
    let ext = file.rsplit_once('.').unwrap().1;
    format!("{dir}/img_000000000000000000000000.{ext}")
}

/// Status, body and every header but the clock's: what tells answers apart.
fn answer(r: &Reply) -> (u16, Vec<(String, String)>, bytes::Bytes) {
    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(k, _)| k.as_str() != "date")
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    headers.sort();
    (r.status, headers, r.body.clone())
}

#[track_caller]
fn assert_answers_as_missing(r: &Reply, missing: &Reply, what: &str) {
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(answer(r), answer(missing), "{what}");
}

/// Hands out one image for `user` and leaves its source alive; returns the
/// handed-out URL's path and query.
async fn hand_out(s: &Stands, user: &str, name: &str, bytes: &[u8]) -> String {
    hand_out_from(s, user, &format!("/safe/{name}"), bytes.to_vec()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_05_a_private_image_answers_as_a_missing_one_in_every_state() {
    let s = stands(&[
        ("IMAGE_URL_SIGNING", "sign"),
        ("IMAGE_SIGNING_KEYS", K1),
        ("ADMIN_TOKEN", TOKEN),
        ("IMAGE_PERSIST_MODE", "on_first_hit"),
        ("IMAGE_FIRST_HIT_DEADLINE_SECS", "0"),
        ("IMAGE_PERSIST_TIMEOUT_MS", "300"),
    ])
    .await;
    let bytes = fixtures::noise_png(120, 80, 5);
    let url = hand_out(&s, "pia", "pending.png", &bytes).await;
    let path = path_of(&url).to_string();
    let missing = get(&s.proxy, &missing_like(&path)).await;
    let flag = admin_private(&path);
    let r = admin_call(&s.proxy, TOKEN, reqwest::Method::PUT, &flag).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Pending: no bytes, no download, no redirect to the source.
    let unsigned = get(&s.proxy, &path).await;
    assert_answers_as_missing(&unsigned, &missing, "pending and private");
    assert_answers_as_missing(
        &get(&s.proxy, &format!("{path}?w=64")).await,
        &missing,
        "a variant of it",
    );
    assert_eq!(
        s.host.hits("/safe/pending.png"),
        0,
        "nothing downloaded for it"
    );
    // Being downloaded, slowly: even signed, no 307 to the source URL.
    s.host
        .slow("/safe/pending.png", std::time::Duration::from_secs(2));
    let r = get(&s.proxy, &url).await;
    assert_ne!(r.status, 307, "no redirect for a private image");
    assert!(r.h("location").is_empty());
    // Once stored (and in memory, from the row's flag): signed gets the
    // bytes, unsigned still gets exactly the missing answer.
    assert!(
        wait_until(secs(20), || async {
            get(&s.proxy, &url).await.status == 200
        })
        .await
    );
    assert_same_bytes(&get(&s.proxy, &url).await.body, &bytes, "signed");
    assert_answers_as_missing(&get(&s.proxy, &path).await, &missing, "stored and cached");
    assert_answers_as_missing(
        &fetch(client().head(s.proxy.url(&path))).await,
        &fetch(client().head(s.proxy.url(&missing_like(&path)))).await,
        "HEAD",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_06_variant_bytes_are_never_served_by_their_alias() {
    let s = stands(&[
        ("IMAGE_URL_SIGNING", "sign"),
        ("IMAGE_SIGNING_KEYS", K1),
        ("ADMIN_TOKEN", TOKEN),
    ])
    .await;
    let (url, _) = store_bytes(&s, "ida", "alias.png", fixtures::noise_png(200, 100, 6)).await;
    let path = path_of(&url).to_string();
    let r = admin_call(&s.proxy, TOKEN, reqwest::Method::PUT, &admin_private(&path)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A signed variant: made, and its bytes cached under an alias key.
    let thumb = get(&s.proxy, &signed(K1, &path, "w=64")).await;
    assert_eq!(thumb.status, 200, "{}", thumb.text());
    let hosted = parse_hosted(&format!("http://x{path}")).unwrap();
    let db = s.proxy.db().await;
    let variants = db.variants_of(&hosted.user, &hosted.image_id).await;
    db.close().await;
    assert_eq!(variants.len(), 1);
    let (vkey, sha) = &variants[0];
    let name = format!("{vkey}-{}", &sha[..16]);
    let key = format!("{}/{}", hosted.user, hosted.image_id);
    let alias = permaproxy::ids::ImageId::for_source(&format!("variant:{key}/{name}"));
    let by_alias = format!("/v1/images/hosted/{}/{alias}.{}", hosted.user, hosted.ext);
    let missing = get(&s.proxy, &missing_like(&path)).await;
    let r = get(&s.proxy, &by_alias).await;
    assert_ne!(r.body, thumb.body, "the variant's bytes, unsigned");
    assert_answers_as_missing(&r, &missing, "the alias key");
    // Signed, too: an alias is not an image.
    assert_eq!(get(&s.proxy, &signed(K1, &by_alias, "")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_16_foreign_query_parameters_are_ignored_not_refused() {
    let s = stands(&[("IMAGE_URL_SIGNING", "sign"), ("IMAGE_SIGNING_KEYS", K1)]).await;
    let (url, bytes) = store(&s, "uma", "utm.png").await;
    let path = path_of(&url).to_string();
    for q in [
        "utm_source=newsletter&utm_medium=mail",
        "v=2",
        "_=1700000000",
        "fbclid=abc&gclid=x",
    ] {
        let r = get(&s.proxy, &format!("{path}?{q}")).await;
        assert_same_bytes(&r.body, &bytes, q);
    }
    // A misspelt variant parameter still gets its clear 400.
    let r = get(&s.proxy, &format!("{path}?width=256&utm_source=x")).await;
    assert_refused(&r, 400, "unknown_parameter");
    // Signed: ignored parameters, before or after, never touch the check.
    let q = url.split_once('?').unwrap().1;
    for u in [
        format!("{url}&utm_source=x"),
        format!("{path}?fbclid=1&{q}&v=9"),
    ] {
        assert_same_bytes(&get(&s.proxy, &u).await.body, &bytes, &u);
    }
    let thumb = get(&s.proxy, &signed(K1, &path, "w=64")).await;
    assert_eq!(thumb.status, 200, "{}", thumb.text());
    let tagged = get(
        &s.proxy,
        &format!("{}&utm_campaign=z", signed(K1, &path, "w=64")),
    )
    .await;
    assert_eq!(answer(&tagged), answer(&thumb), "the same answer");
    // Tampering is still refused: an ignored name does not hide a change.
    let r = get(&s.proxy, &format!("{}&w=128", signed(K1, &path, "w=64"))).await;
    assert_eq!(r.status, 403, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_16_required_mode_still_needs_the_signature() {
    let s = stands(&[
        ("IMAGE_URL_SIGNING", "required"),
        ("IMAGE_SIGNING_KEYS", K1),
    ])
    .await;
    let (url, bytes) = store(&s, "una", "req.png").await;
    let path = path_of(&url).to_string();
    assert_refused(
        &get(&s.proxy, &format!("{path}?utm_source=x")).await,
        403,
        "signature_required",
    );
    assert_same_bytes(
        &get(&s.proxy, &format!("{url}&utm_source=x")).await.body,
        &bytes,
        "signed, tagged",
    );
}
