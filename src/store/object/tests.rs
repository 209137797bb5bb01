//! Addressing, metadata round trips, and listing (which skips variants).
use super::*;

#[test]
fn addressing_puts_the_bucket_where_the_style_wants_it() {
    let r2 = "https://acct.r2.cloudflarestorage.com";
    assert_eq!(
        addressing(r2, "imgs", false),
        (
            "https://imgs.acct.r2.cloudflarestorage.com".to_string(),
            true
        )
    );
    assert_eq!(addressing(r2, "imgs", true), (r2.to_string(), false));
    // Already named in the host: left alone.
    let named = "https://imgs.acct.r2.cloudflarestorage.com/";
    assert_eq!(
        addressing(named, "imgs", false),
        (
            "https://imgs.acct.r2.cloudflarestorage.com".to_string(),
            true
        )
    );
    // No bucket can go into an IP address: path style.
    let ip = "http://127.0.0.1:3900";
    assert_eq!(addressing(ip, "imgs", false), (ip.to_string(), false));
    assert_eq!(
        addressing("http://minio.internal:9000", "imgs", false),
        ("http://imgs.minio.internal:9000".to_string(), true)
    );
}

/// `reindex` on S3 lists the bucket: variant objects (issue 14) must not
/// come back as images, and are skipped without a HEAD each.
#[tokio::test]
async fn listing_skips_variants() {
    let store = ObjectBackend::memory();
    let dir = tempfile::tempdir().unwrap();
    let staged = dir.path().join("s");
    let image = ImageMeta {
        key: ImageKey::new(
            UserId::parse("u").unwrap(),
            ImageId::parse("img_0123456789abcdef01234567").unwrap(),
        ),
        format: Format::Png,
        size: 3,
        sha256: "ab".repeat(32),
        source_url: None,
        prediction_id: None,
        created_at: 1,
        private: false,
        variant: None,
        vary_accept: false,
    };
    let variant = ImageMeta {
        format: Format::Webp,
        variant: Some("v1-w64-h64-inside-webp-q80-abababababababab".into()),
        ..image.clone()
    };
    for m in [&image, &variant] {
        std::fs::write(&staged, b"abc").unwrap();
        store.put(&staged, m).await.unwrap();
    }
    assert_eq!(store.list().await.unwrap(), vec![image.clone()]);
    assert_eq!(&store.read_all(&variant).await.unwrap()[..], b"abc");
    store.delete(&variant.relative_path()).await.unwrap();
    assert!(matches!(
        store.read_all(&variant).await,
        Err(StoreError::NotFound)
    ));
}

#[test]
fn metadata_round_trips_through_attributes() {
    let meta = ImageMeta {
        key: ImageKey::new(
            UserId::parse("alice").unwrap(),
            ImageId::parse("img_0123456789abcdef01234567").unwrap(),
        ),
        format: Format::Webp,
        size: 42,
        sha256: "ab".repeat(32),
        source_url: Some("https://replicate.delivery/x/out-0.webp?a=1&b=é".into()),
        prediction_id: Some("p 1/2".into()),
        created_at: 1_700_000_000_123,
        private: false,
        variant: None,
        vary_accept: false,
    };
    let back = meta_from_attributes(&attributes(&meta), 42).unwrap();
    assert_eq!(back, meta);
    let variant = ImageMeta {
        variant: Some("v1-w256-h256-inside-webp-q80-0123456789abcdef".into()),
        ..meta
    };
    assert_eq!(
        meta_from_attributes(&attributes(&variant), 42),
        None,
        "a variant is never listed as an image"
    );
}
