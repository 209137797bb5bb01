//! Variant objects on disk (issue 14): beside their image, never listed as
//! images, removed one by one or with their image.

use super::*;

fn key() -> ImageKey {
    ImageKey::new(
        UserId::parse("u").unwrap(),
        ImageId::parse("img_0123456789abcdef01234567").unwrap(),
    )
}

fn meta(variant: Option<&str>, format: Format, data: &[u8]) -> ImageMeta {
    ImageMeta {
        key: key(),
        format,
        size: data.len() as u64,
        sha256: hex::encode(Sha256::digest(data)),
        source_url: None,
        prediction_id: None,
        created_at: 1,
        private: false,
        variant: variant.map(Into::into),
        vary_accept: false,
    }
}

async fn put(store: &DiskStore, dir: &Path, m: &ImageMeta, data: &[u8]) {
    let staged = dir.join("staged");
    std::fs::write(&staged, data).unwrap();
    store.put(&staged, m).await.unwrap();
}

#[tokio::test]
async fn variants_live_beside_their_image_and_go_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let store = DiskStore::new(&root).unwrap();
    let png: &[u8] = include_bytes!("../../../tests/fixtures/sample.png");
    let image = meta(None, Format::Png, png);
    put(&store, dir.path(), &image, png).await;
    let small = meta(Some("v1-w64-h64-inside-webp-q80-00ff"), Format::Webp, b"w1");
    let other = meta(
        Some("v1-w128-h128-inside-webp-q80-11ee"),
        Format::Webp,
        b"w2",
    );
    put(&store, dir.path(), &small, b"w1").await;
    put(&store, dir.path(), &other, b"w2").await;

    let path = root.join("u/img_0123456789abcdef01234567.v/v1-w64-h64-inside-webp-q80-00ff.webp");
    assert_eq!(std::fs::read(&path).unwrap(), b"w1");
    assert_eq!(
        small.relative_path(),
        path.strip_prefix(&root).unwrap().to_str().unwrap()
    );
    assert_eq!(
        read_sidecar(&root.join("u/img_0123456789abcdef01234567.json")),
        Some(image.clone()),
        "a variant never touches its image's sidecar"
    );
    assert_eq!(store.read_all(&small).await.unwrap(), &b"w1"[..]);
    assert_eq!(
        store.list().await.unwrap(),
        vec![image.clone()],
        "variants are not images"
    );

    store.delete(&small.relative_path()).await.unwrap();
    assert!(!path.exists());
    assert!(
        root.join("u/img_0123456789abcdef01234567.v").exists(),
        "still holds one"
    );
    store.delete(&image.relative_path()).await.unwrap();
    assert!(
        !root.join("u/img_0123456789abcdef01234567.v").exists(),
        "the image takes its remaining variants along"
    );
    store.delete(&other.relative_path()).await.unwrap();
}

#[tokio::test]
async fn queued_paths_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::new(dir.path()).unwrap();
    for bad in [
        "u/img_0123456789abcdef01234567.v/../x.webp",
        "u/img_0123456789abcdef01234567.v/V1.webp",
        "u/img_0123456789abcdef01234567.x/v1.webp",
        "u/img_0123456789abcdef01234567.v/v1.txt",
        "u/img_0123456789abcdef01234567.v/a/b.webp",
        "u/img_0123456789abcdef01234567.v",
    ] {
        assert!(store.delete(bad).await.is_err(), "{bad}");
    }
}
