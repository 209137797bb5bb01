//! Variant rows on SQLite and, with PERMAPROXY_TEST_POSTGRES_URL, Postgres.

use super::super::tests::databases;
use super::*;
use crate::ids::{ImageId, UserId};
use crate::repo::{GoneReason, HandOut, NewImage, Repo, VariantPut};

fn key(user: &str, n: u32) -> ImageKey {
    ImageKey::new(
        UserId::parse(user).unwrap(),
        ImageId::for_source(&format!("https://replicate.delivery/{n}.png")),
    )
}

/// Hands out and stores image `n` of `user`, 1000 bytes, requested at `at`.
async fn store(repo: &SqlRepo, user: &str, n: u32, at: u64) -> ImageKey {
    let k = key(user, n);
    repo.hand_out(&HandOut {
        images: vec![NewImage {
            key: k.clone(),
            source_url: format!("https://replicate.delivery/{n}.png"),
            format: Format::Png,
        }],
        prediction_id: None,
        now: at,
        owner: Some("r1".into()),
        lease_until: at + 15_000,
        due_at: at,
        trusted: true,
    })
    .await
    .unwrap();
    let meta = ImageMeta {
        key: k.clone(),
        format: Format::Png,
        size: 1000,
        sha256: "cd".repeat(32),
        source_url: None,
        prediction_id: None,
        created_at: at,
        private: false,
        variant: None,
        vary_accept: false,
    };
    assert!(repo.mark_stored(&meta, None).await.unwrap().is_some());
    k
}

fn variant(k: &ImageKey, vkey: &str, size: u64, digest: &str) -> VariantRecord {
    VariantRecord {
        key: k.clone(),
        variant_key: vkey.into(),
        format: Format::Webp,
        size,
        sha256: digest.repeat(32),
        width: 256,
        height: 171,
        created_at: 5,
    }
}

const W256: &str = "v1-w256-h171-inside-webp-q80";
const W64: &str = "v1-w64-h43-inside-webp-q80";

#[tokio::test]
async fn recorded_once_and_read_back() {
    for repo in databases().await {
        let k = store(&repo, "u", 1, 1_000).await;
        let v = variant(&k, W256, 300, "ab");
        assert_eq!(
            repo.record_variant(&v, 32).await.unwrap(),
            VariantPut::Recorded { evicted: vec![] }
        );
        assert_eq!(repo.get_variant(&k, W256).await.unwrap(), Some(v.clone()));
        assert_eq!(repo.get_variant(&k, W64).await.unwrap(), None);
        assert_eq!(repo.variant_count(&k).await.unwrap(), 1);
        // A second make of the same variant (another replica) loses.
        let other = variant(&k, W256, 310, "ef");
        assert_eq!(
            repo.record_variant(&other, 32).await.unwrap(),
            VariantPut::Exists(v.clone())
        );
        assert_eq!(
            v.relative_path(),
            format!("u/{}.v/{W256}-abababababababab.webp", k.id)
        );
        let t = repo.totals().await.unwrap();
        assert_eq!((t.images, t.bytes), (1, 1300), "variant bytes count");
        assert_eq!(
            repo.variant_bytes(std::slice::from_ref(&k)).await.unwrap()[&k],
            300
        );
        repo.forget_variant(&k, W256).await.unwrap();
        assert_eq!(repo.get_variant(&k, W256).await.unwrap(), None);
    }
}

#[tokio::test]
async fn no_variant_without_a_stored_image() {
    for repo in databases().await {
        let missing = key("u", 9);
        assert_eq!(
            repo.record_variant(&variant(&missing, W256, 1, "ab"), 32)
                .await
                .unwrap(),
            VariantPut::ImageGone
        );
        let k = store(&repo, "u", 1, 1_000).await;
        repo.delete_images(std::slice::from_ref(&k), GoneReason::Deleted)
            .await
            .unwrap();
        assert_eq!(
            repo.record_variant(&variant(&k, W256, 1, "ab"), 32)
                .await
                .unwrap(),
            VariantPut::ImageGone
        );
        assert_eq!(repo.totals().await.unwrap().bytes, 0);
    }
}

/// Every way an image row goes takes its variant rows along and queues
/// their objects, so nothing of a deleted image stays in the store.
#[tokio::test]
async fn deletes_take_variants_along() {
    for repo in databases().await {
        // delete_images
        let a = store(&repo, "u", 1, 1_000).await;
        let b = store(&repo, "u", 2, 1_001).await;
        for k in [&a, &b] {
            for (vk, d) in [(W256, "ab"), (W64, "12")] {
                repo.record_variant(&variant(k, vk, 10, d), 32)
                    .await
                    .unwrap();
            }
        }
        repo.delete_images(std::slice::from_ref(&a), GoneReason::Deleted)
            .await
            .unwrap();
        let mut queued = repo
            .queued_variant_deletes(std::slice::from_ref(&a))
            .await
            .unwrap();
        queued.sort();
        assert_eq!(
            queued,
            vec![
                variant(&a, W256, 10, "ab").relative_path(),
                variant(&a, W64, 10, "12").relative_path(),
            ]
        );
        assert!(repo.queued_deletes(10).await.unwrap().contains(&queued[0]));
        assert_eq!(repo.get_variant(&a, W256).await.unwrap(), None);
        assert!(repo.get_variant(&b, W256).await.unwrap().is_some());
        assert_eq!(repo.totals().await.unwrap().bytes, 1000 + 20);

        // enforce_user_limit: b is older than c, and goes with its variants.
        let c = store(&repo, "u", 3, 2_000).await;
        let gone = repo.enforce_user_limit(&a.user, 1, 3_000).await.unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].key, b);
        assert_eq!(repo.get_variant(&b, W64).await.unwrap(), None);
        assert_eq!(
            repo.queued_variant_deletes(std::slice::from_ref(&b))
                .await
                .unwrap()
                .len(),
            2
        );

        // delete_user
        repo.record_variant(&variant(&c, W256, 10, "ab"), 32)
            .await
            .unwrap();
        let other = store(&repo, "someone_else", 4, 2_000).await;
        repo.record_variant(&variant(&other, W256, 10, "ab"), 32)
            .await
            .unwrap();
        repo.delete_user_page(&c.user, 1000).await.unwrap();
        assert_eq!(repo.get_variant(&c, W256).await.unwrap(), None);
        assert_eq!(
            repo.queued_variant_deletes(std::slice::from_ref(&c))
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(repo.get_variant(&other, W256).await.unwrap().is_some());
        assert!(repo
            .queued_variant_deletes(std::slice::from_ref(&other))
            .await
            .unwrap()
            .is_empty());
    }
}

/// A user id with LIKE's wildcards must not match another user's queue.
#[tokio::test]
async fn queued_paths_are_matched_literally() {
    for repo in databases().await {
        let a = store(&repo, "a_b", 1, 1_000).await;
        let near = ImageKey::new(UserId::parse("axb").unwrap(), a.id.clone());
        repo.record_variant(&variant(&a, W256, 10, "ab"), 32)
            .await
            .unwrap();
        repo.delete_images(std::slice::from_ref(&a), GoneReason::Deleted)
            .await
            .unwrap();
        assert!(repo
            .queued_variant_deletes(&[near])
            .await
            .unwrap()
            .is_empty());
        assert_eq!(repo.queued_variant_deletes(&[a]).await.unwrap().len(), 1);
    }
}
