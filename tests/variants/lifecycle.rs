//! A variant lives exactly as long as its image: deleting the image (by the
//! admin API, the per-user limit or the disk cap) deletes its variants'
//! rows and bytes. Variants count against the disk cap, not the user limit.

use crate::common::*;
use crate::{get, host, stands, variant_files, variant_rows, TOKEN};

async fn admin(p: &Proxy, method: reqwest::Method, path: &str) -> Reply {
    admin_call(p, TOKEN, method, path).await
}

async fn queued_deletes(p: &Proxy) -> u64 {
    let db = p.db().await;
    let n = db
        .dump()
        .await
        .iter()
        .filter(|l| l.starts_with("deleted_objects"))
        .count() as u64;
    db.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_image_deletes_its_variants() {
    let s = stands(&[]).await;
    let a = host(&s, "a.png", crate::PHOTO, "jade").await;
    let b = host(
        &s,
        "b.jpg",
        &crate::photo_as(image::ImageFormat::Jpeg),
        "jade",
    )
    .await;
    for h in [&a, &b] {
        for q in ["w=64", "w=128&format=webp"] {
            assert_eq!(get(&s.proxy, h, q, &[]).await.status, 200);
        }
        assert_eq!(variant_files(&s.proxy, h).len(), 2);
        assert_eq!(variant_rows(&s.proxy, h).await, 2);
    }

    let path = format!("/admin/users/jade/images/{}", a.image_id);
    assert_eq!(
        admin(&s.proxy, reqwest::Method::DELETE, &path).await.status,
        204
    );
    assert!(
        variant_files(&s.proxy, &a).is_empty(),
        "variant bytes removed"
    );
    assert!(!s
        .proxy
        .storage_path()
        .join(format!("jade/{}.v", a.image_id))
        .exists());
    assert_eq!(variant_rows(&s.proxy, &a).await, 0);
    assert_eq!(queued_deletes(&s.proxy).await, 0, "nothing left queued");
    // Served from memory a moment ago, gone now.
    assert_eq!(get(&s.proxy, &a, "w=64", &[]).await.status, 410);
    assert_eq!(
        get(&s.proxy, &b, "w=64", &[]).await.status,
        200,
        "b untouched"
    );

    assert_eq!(
        admin(&s.proxy, reqwest::Method::DELETE, "/admin/users/jade")
            .await
            .status,
        204
    );
    assert!(variant_files(&s.proxy, &b).is_empty());
    assert_eq!(variant_rows(&s.proxy, &b).await, 0);
    assert_eq!(
        get(&s.proxy, &b, "w=128&format=webp", &[]).await.status,
        410,
        "deleted: image_gone"
    );
    assert_eq!(queued_deletes(&s.proxy).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_limit_ignores_variants_and_evicts_them_with_their_image() {
    let s = stands(&[("IMAGE_PER_USER_LIMIT", "1"), TRUSTED_IDS]).await;
    let a = host(&s, "a.png", crate::PHOTO, "kim").await;
    for q in ["w=64", "w=128", "w=256&format=webp"] {
        assert_eq!(get(&s.proxy, &a, q, &[]).await.status, 200);
    }
    // Three variants and one image: within a limit of one image.
    let b = host(
        &s,
        "b.png",
        &crate::photo_as(image::ImageFormat::Png),
        "kim",
    )
    .await;
    assert_eq!(get(&s.proxy, &b, "w=64", &[]).await.status, 200);
    assert_eq!(get(&s.proxy, &b, "", &[]).await.status, 200);
    // b's arrival pushed a out, variants and all.
    assert_eq!(get(&s.proxy, &a, "", &[]).await.status, 410);
    assert!(variant_files(&s.proxy, &a).is_empty());
    assert_eq!(variant_rows(&s.proxy, &a).await, 0);
    assert_eq!(variant_files(&s.proxy, &b).len(), 1);
}

/// a's `w=256&format=png` variant as the proxy makes it (the same code, in
/// this process), from a as it is stored (metadata stripped).
fn variant_size() -> usize {
    use permaproxy::variants as v;
    let png = permaproxy::image_format::Format::Png;
    let stored = v::strip_metadata(crate::PHOTO, png).into_owned();
    let spec = v::VariantSpec::parse("w=256&format=png", &[256])
        .unwrap()
        .unwrap();
    let (w, h) = v::dimensions(&stored).unwrap();
    let r = spec.resolve(None, png, w, h);
    v::make_variant(&stored, &r, &v::Limits::default())
        .unwrap()
        .bytes
        .len()
}

fn stored_size(bytes: &[u8], format: permaproxy::image_format::Format) -> usize {
    permaproxy::variants::strip_metadata(bytes, format).len()
}

/// The cap counts variant bytes: without them both images would fit it.
/// The least recently requested image goes, and its variant with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_cap_counts_variant_bytes() {
    use permaproxy::image_format::Format;
    let jpeg = crate::photo_as(image::ImageFormat::Jpeg);
    let (a_size, b_size, v_size) = (
        stored_size(crate::PHOTO, Format::Png),
        stored_size(&jpeg, Format::Jpeg),
        variant_size(),
    );
    assert!(v_size > 1_000);
    let cap = a_size + b_size + 1_000;
    let s = stands(&[("IMAGE_STORAGE_MAX_BYTES", &cap.to_string())]).await;
    let a = host(&s, "a.png", crate::PHOTO, "lee").await;
    let b = host(&s, "b.jpg", &jpeg, "lee").await;
    let v = get(&s.proxy, &a, "w=256&format=png", &[]).await;
    assert_eq!(v.body.len(), v_size, "the variant made as predicted");
    let stored = s.proxy.metric("permaproxy_stored_bytes").await;
    assert_eq!(
        stored,
        (a_size + b_size + v_size) as f64,
        "variants are stored bytes"
    );
    // Requests are ordered by their millisecond: b becomes the newest.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(get(&s.proxy, &b, "", &[]).await.status, 200);

    let r = admin(&s.proxy, reqwest::Method::POST, "/admin/cleanup").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let deleted = r.json()["deleted"].clone();
    assert_eq!(deleted.as_array().map(Vec::len), Some(1), "{deleted}");
    assert_eq!(deleted[0]["id"], a.image_id.as_str());
    assert_eq!(deleted[0]["reason"], "storage_cap");
    assert!(variant_files(&s.proxy, &a).is_empty());
    assert_eq!(get(&s.proxy, &b, "", &[]).await.status, 200);
    let stored = s.proxy.metric("permaproxy_stored_bytes").await;
    assert_eq!(stored, b_size as f64, "only b is left");
}
