//! Safe by default: a client that merely claims an id cannot evict anyone's
//! images, `anonymous` is not one shared bucket, and with no per-user bound
//! in force the disk bound holds as each image is stored, not a day later.

use crate::common::*;
use crate::rules::one_response;
use crate::*;

/// Generates one image with exactly `headers` (no session unless given):
/// what a client sends on its own.
async fn generate_with(s: &Stands, headers: &[(&str, &str)], name: &str, bytes: &[u8]) -> Img {
    let src = s
        .host
        .add_url(&format!("/pbxt/{name}"), bytes.to_vec(), "image/png");
    s.api.set_generate_json(&json!({ "output": [src] }));
    let mut rb = client()
        .post(s.proxy.url(GEN))
        .header("content-type", "application/json")
        .body("{}");
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = fetch(rb).await;
    assert_eq!(r.status, 200, "generate: {}", r.text());
    let url = r.json()["output"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Img {
        hosted: parse_hosted(&url).unwrap_or_else(|| panic!("not hosted: {url}")),
        bytes: bytes.to_vec(),
        content_type: "image/png".into(),
    }
}

/// Finding 1 with today's default sources (the client's header, then the
/// body, then `anonymous`): five calls claiming alice used to evict all
/// three of her images. Claimed ids are never evicted by the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_01_claimed_ids_cannot_evict_with_the_default_sources() {
    let s = stands(&[("IMAGE_PER_USER_LIMIT", "2")]).await;
    let mut alice = Vec::new();
    for i in 0..3 {
        let png = fixtures::unique_png(2000 + i);
        alice
            .push(generate_with(&s, &[("x-user-id", "alice")], &format!("al-{i}.png"), &png).await);
    }
    for i in 0..5 {
        let png = fixtures::unique_png(2010 + i);
        let img = generate_with(&s, &[("x-user-id", "alice")], &format!("mal-{i}.png"), &png).await;
        assert_eq!(img.user(), "alice", "the claim still names the folder");
    }
    for img in &alice {
        assert_served(
            &get(&s.proxy, img).await,
            img,
            "alice's image after 5 claims",
        );
    }
    assert_eq!(
        s.proxy
            .metric("permaproxy_cleanup_deleted_total{reason=\"user_limit\"}")
            .await,
        0.0
    );
}

/// Finding 1 with a trusted source first: alice's trusted images are not
/// pushed out by images filed under her name on a client's word alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_01_claimed_ids_cannot_evict_trusted_images() {
    let s = stands(&[
        ("IMAGE_PER_USER_LIMIT", "2"),
        (
            "IMAGE_USER_ID_FROM",
            "response-header:x-studio-user,request-header:x-user-id,anonymous",
        ),
    ])
    .await;
    let mine = session("alice");
    let a = generate_with(
        &s,
        &[("authorization", &mine)],
        "t-a.png",
        &fixtures::unique_png(2100),
    )
    .await;
    let b = generate_with(
        &s,
        &[("authorization", &mine)],
        "t-b.png",
        &fixtures::unique_png(2101),
    )
    .await;
    for i in 0..5 {
        let png = fixtures::unique_png(2110 + i);
        let img = generate_with(&s, &[("x-user-id", "alice")], &format!("c-{i}.png"), &png).await;
        assert_eq!(img.user(), "alice");
    }
    for img in [&a, &b] {
        assert_served(
            &get(&s.proxy, img).await,
            img,
            "a trusted image after 5 claims",
        );
    }
}

/// The seed's rule, with a trusted id: limit 2, four images, and the two
/// least recently requested go (not the two stored first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_01_the_per_user_limit_still_holds_for_a_trusted_id() {
    let s = stands(&[("IMAGE_PER_USER_LIMIT", "2"), TRUSTED_IDS]).await;
    let a = store_png(&s, "tess", "lim-a.png", &fixtures::unique_png(2200)).await;
    let b = store_png(&s, "tess", "lim-b.png", &fixtures::unique_png(2201)).await;
    assert_served(
        &get(&s.proxy, &a).await,
        &a,
        "A, requested after B was stored",
    );
    let c = store_png(&s, "tess", "lim-c.png", &fixtures::unique_png(2202)).await;
    assert_served(&get(&s.proxy, &a).await, &a, "A again");
    let d = store_png(&s, "tess", "lim-d.png", &fixtures::unique_png(2203)).await;
    assert_gone(&get(&s.proxy, &b).await, "B, least recently requested");
    assert_gone(&get(&s.proxy, &c).await, "C, then least recently requested");
    assert_served(&get(&s.proxy, &a).await, &a, "A, the oldest but requested");
    assert_served(&get(&s.proxy, &d).await, &d, "D, just stored");
    assert_eq!(
        s.proxy
            .metric("permaproxy_cleanup_deleted_total{reason=\"user_limit\"}")
            .await,
        2.0
    );
}

/// Finding 2: every caller without an id is `anonymous`. The 51st such
/// image used to delete the first, whoever made it; now the limit leaves
/// `anonymous` alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_02_anonymous_is_not_one_evictable_bucket() {
    let s = stands(&[("IMAGE_PER_USER_LIMIT", "2")]).await;
    let mut imgs = Vec::new();
    for i in 0..4 {
        let img = generate_with(
            &s,
            &[],
            &format!("anon-{i}.png"),
            &fixtures::unique_png(2300 + i),
        )
        .await;
        assert_eq!(img.user(), "anonymous");
        imgs.push(img);
    }
    for img in &imgs {
        assert_served(&get(&s.proxy, img).await, img, "an anonymous image");
    }
}

/// With no per-user bound in force the disk is the only bound: the cap
/// holds as each image is stored (the cleanup job runs daily), evicting
/// the least recently requested, never an image of the same response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_01_the_disk_cap_holds_as_images_are_stored() {
    const SIZE: usize = 60_000;
    let s = stands(&[("IMAGE_STORAGE_MAX_BYTES", &(SIZE * 5 / 2).to_string())]).await;
    let png = |seed| fixtures::large_png(SIZE, seed);
    let a = generate_with(&s, &[], "cap-a.png", &png(2400)).await;
    let b = generate_with(&s, &[], "cap-b.png", &png(2401)).await;
    assert_served(
        &get(&s.proxy, &a).await,
        &a,
        "A, requested after B was stored",
    );
    // Three images in one response: over the cap together, but none of
    // them is evicted for the others.
    let batch: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("cap-batch-{i}.png"), png(2410 + i)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = batch.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let imgs = one_response(&s, "anonymous", &refs).await;
    for img in &imgs {
        assert_served(
            &get(&s.proxy, img).await,
            img,
            "an image of the same response",
        );
    }
    // A and B made room, B first (least recently requested), with no
    // cleanup run in between.
    assert_gone(&get(&s.proxy, &b).await, "B");
    assert_gone(&get(&s.proxy, &a).await, "A");
    assert_eq!(
        s.proxy
            .metric("permaproxy_cleanup_deleted_total{reason=\"storage_cap\"}")
            .await,
        2.0
    );
}
