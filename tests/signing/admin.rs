//! Issue 15 on the admin API: minting signed URLs (variants included), the
//! per-image private flag, and signed URLs in the listing.

use super::*;

const TOKEN: &str = "signing-admin-token-0123456789-padded-to-32-chars";

async fn admin(p: &Proxy, method: reqwest::Method, path: &str) -> Reply {
    admin_call(p, TOKEN, method, path).await
}

/// `/admin/users/{user}/images/{id}` for a hosted URL.
fn admin_image(url: &str) -> String {
    let rest = path_of(url).strip_prefix("/v1/images/hosted/").unwrap();
    let (user, file) = rest.split_once('/').unwrap();
    let id = file.split('.').next().unwrap();
    format!("/admin/users/{user}/images/{id}")
}

fn decoded_width(bytes: &[u8]) -> u32 {
    image::load_from_memory(bytes).expect("decodes").width()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_urls_work_and_a_signed_variant_cannot_become_the_original() {
    let s = stands(&[
        ("IMAGE_URL_SIGNING", "required"),
        ("IMAGE_SIGNING_KEYS", K1),
        ("ADMIN_TOKEN", TOKEN),
    ])
    .await;
    let (url, bytes) = store_bytes(&s, "kim", "mint.png", fixtures::noise_png(200, 100, 9)).await;
    let img = admin_image(&url);
    let mint = |q: &str| format!("{img}/url?{q}");
    let r = admin(&s.proxy, reqwest::Method::POST, &mint("ttl=60")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let minted = r.json()["path"].as_str().unwrap().to_string();
    assert!(r.json()["expires_at"].is_string());
    let got = get(&s.proxy, &minted).await;
    assert_same_bytes(&got.body, &bytes, "a minted URL");
    let max_age: u64 = got.h("cache-control")["private, max-age=".len()..]
        .parse()
        .unwrap();
    assert!(max_age <= 60, "{}", got.h("cache-control"));

    // A thumbnail URL: it serves the thumbnail, and no edit of it serves
    // the original or another size.
    let r = admin(&s.proxy, reqwest::Method::POST, &mint("ttl=0&w=64")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["expires_at"].is_null());
    let thumb = r.json()["path"].as_str().unwrap().to_string();
    assert!(thumb.contains("w=64&sig="), "{thumb}");
    let got = get(&s.proxy, &thumb).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(decoded_width(&got.body), 64);
    let sig = thumb.split("&sig=").nth(1).unwrap();
    let path = path_of(&thumb);
    for altered in [
        format!("{path}?sig={sig}"),
        format!("{path}?w=128&sig={sig}"),
        thumb.replace("w=64", "w=064"),
        format!("{thumb}&w=128"),
    ] {
        let r = get(&s.proxy, &altered).await;
        assert_eq!(r.status, 403, "{altered}: {}", r.text());
    }
    // Bad mints: a width not allowed, a bad ttl, an unknown image.
    let r = admin(&s.proxy, reqwest::Method::POST, &mint("w=65")).await;
    assert_refused(&r, 400, "width_not_allowed");
    let r = admin(&s.proxy, reqwest::Method::POST, &mint("ttl=soon")).await;
    assert_refused(&r, 400, "bad_request");
    let r = admin(
        &s.proxy,
        reqwest::Method::POST,
        "/admin/users/kim/images/img_000000000000000000000000/url",
    )
    .await;
    assert_refused(&r, 404, "image_not_found");
    // The listing hands out signed URLs.
    let list = admin(&s.proxy, reqwest::Method::GET, "/admin/users/kim/images").await;
    let listed = list.json()["images"][0]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(listed.contains("?sig="), "{listed}");
    let listed = &listed[listed.find("/v1/").unwrap()..];
    assert_same_bytes(&get(&s.proxy, listed).await.body, &bytes, "listed URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_needs_a_signature_for_itself_and_its_variants() {
    let s = stands(&[
        ("IMAGE_URL_SIGNING", "sign"),
        ("IMAGE_SIGNING_KEYS", K1),
        ("ADMIN_TOKEN", TOKEN),
    ])
    .await;
    let (url, bytes) = store_bytes(&s, "lea", "flag.png", fixtures::noise_png(200, 100, 8)).await;
    let path = path_of(&url).to_string();
    let thumb = format!("{path}?w=64");
    // Public first: unsigned works (sign mode), variants included, and
    // both are now in memory.
    assert_same_bytes(&get(&s.proxy, &path).await.body, &bytes, "public");
    assert_eq!(get(&s.proxy, &thumb).await.status, 200);
    let flag = format!("{}/private", admin_image(&url));
    let r = admin(&s.proxy, reqwest::Method::PUT, &flag).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["private"], true);
    // Refused as a missing image is (issue 20, finding 5).
    assert_refused(&get(&s.proxy, &path).await, 404, "image_not_found");
    assert_refused(&get(&s.proxy, &thumb).await, 404, "image_not_found");
    assert_same_bytes(&get(&s.proxy, &url).await.body, &bytes, "signed");
    let signed_thumb = signed(K1, &path, "w=64");
    assert_eq!(get(&s.proxy, &signed_thumb).await.status, 200);
    let r = admin(&s.proxy, reqwest::Method::DELETE, &flag).await;
    assert_eq!(r.json()["private"], false);
    assert_same_bytes(&get(&s.proxy, &path).await.body, &bytes, "public again");
    assert_eq!(get(&s.proxy, &thumb).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_made_private_or_minted_with_signing_off() {
    let s = stands(&[("ADMIN_TOKEN", TOKEN)]).await;
    let (url, _) = store(&s, "max", "off.png").await;
    let img = admin_image(&url);
    let r = admin(&s.proxy, reqwest::Method::PUT, &format!("{img}/private")).await;
    assert_refused(&r, 409, "signing_off");
    let r = admin(&s.proxy, reqwest::Method::POST, &format!("{img}/url")).await;
    assert_refused(&r, 409, "signing_off");
    assert_eq!(get(&s.proxy, &url).await.status, 200, "still public");
}
