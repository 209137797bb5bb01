//! Issue 20 at the database: removals that re-check the queue (finding 14),
//! user deletes in pages (15), tombstones (17) and variant eviction (4). On
//! an in-memory SQLite and, with PERMAPROXY_TEST_POSTGRES_URL, Postgres.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::tests::databases;
use super::*;
use crate::store::object::ObjectBackend;
use crate::store::{ByteRange, ByteStream, Store, StoreError};

fn key(user: &str, n: u32) -> ImageKey {
    ImageKey::new(
        UserId::parse(user).unwrap(),
        ImageId::for_source(&format!("https://replicate.delivery/{n}.png")),
    )
}

const BYTES: &[u8] = b"fresh bytes of a stored image";

fn meta(k: &ImageKey) -> ImageMeta {
    ImageMeta {
        key: k.clone(),
        format: Format::Png,
        size: BYTES.len() as u64,
        sha256: "cd".repeat(32),
        source_url: None,
        prediction_id: None,
        created_at: 10,
        private: false,
        variant: None,
        vary_accept: false,
    }
}

async fn hand_out(repo: &SqlRepo, k: &ImageKey, at: u64) {
    repo.hand_out(&HandOut {
        images: vec![NewImage {
            key: k.clone(),
            source_url: format!("https://replicate.delivery/{}.png", k.id),
            format: Format::Png,
        }],
        prediction_id: None,
        now: at,
        owner: None,
        lease_until: 0,
        due_at: at,
        trusted: true,
    })
    .await
    .unwrap();
}

/// What the download does, in its order: dequeue, put, mark stored.
async fn store_bytes(repo: &SqlRepo, store: &dyn Store, k: &ImageKey) {
    let m = meta(k);
    repo.forget_queued_delete(&m.relative_path()).await.unwrap();
    let staged = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(staged.path(), BYTES).unwrap();
    store.put(staged.path(), &m).await.unwrap();
    assert!(repo.mark_stored(&m, None).await.unwrap().is_some());
}

async fn held(store: &dyn Store, k: &ImageKey) -> bool {
    store.read_all(&meta(k)).await.is_ok()
}

/// The race of finding 14, one interleaving: the sweep read the queue,
/// then the image was handed out and stored again, then the sweep removes.
#[tokio::test]
async fn finding_14_a_sweep_never_removes_the_bytes_of_an_image_stored_again() {
    for repo in databases().await {
        let store = ObjectBackend::memory();
        let k = key("u", 1);
        hand_out(&repo, &k, 10).await;
        store_bytes(&repo, &store, &k).await;
        repo.delete_images(std::slice::from_ref(&k), GoneReason::Deleted)
            .await
            .unwrap();
        let queued = repo.queued_deletes(10).await.unwrap();
        assert_eq!(queued, vec![meta(&k).relative_path()]);
        // Handed out and stored again before the sweep gets to it.
        hand_out(&repo, &k, 20).await;
        store_bytes(&repo, &store, &k).await;
        let done = repo.remove_queued(&queued[0], &store).await.unwrap();
        assert!(matches!(done, Removal::NotQueued), "{done:?}");
        assert!(held(&store, &k).await, "the live row's bytes are kept");
        assert_eq!(
            repo.get(&k).await.unwrap().unwrap().state,
            ImageState::Stored
        );
        // A plain queued removal still removes.
        repo.delete_images(std::slice::from_ref(&k), GoneReason::Deleted)
            .await
            .unwrap();
        let done = repo.remove_queued(&queued[0], &store).await.unwrap();
        assert!(matches!(done, Removal::Removed), "{done:?}");
        assert!(!held(&store, &k).await);
    }
}

/// A store whose `delete` stops halfway until told to go on: the other
/// interleaving, a removal under way when a writer arrives.
struct Paused {
    inner: ObjectBackend,
    entered: tokio::sync::Notify,
    go: tokio::sync::Notify,
}

#[async_trait]
impl Store for Paused {
    async fn put(&self, staged: &Path, meta: &ImageMeta) -> Result<(), StoreError> {
        self.inner.put(staged, meta).await
    }
    async fn read(
        &self,
        meta: &ImageMeta,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, StoreError> {
        self.inner.read(meta, range).await
    }
    async fn read_all(&self, meta: &ImageMeta) -> Result<Bytes, StoreError> {
        self.inner.read_all(meta).await
    }
    async fn delete(&self, relative_path: &str) -> Result<(), StoreError> {
        self.entered.notify_one();
        self.go.notified().await;
        self.inner.delete(relative_path).await
    }
    async fn stat(&self, meta: &ImageMeta) -> Result<Option<ImageMeta>, StoreError> {
        self.inner.stat(meta).await
    }
    async fn list(&self) -> Result<Vec<ImageMeta>, StoreError> {
        self.inner.list().await
    }
    async fn probe(&self) -> Result<(), StoreError> {
        self.inner.probe().await
    }
    fn free_bytes(&self) -> Option<u64> {
        None
    }
    fn name(&self) -> &'static str {
        "paused"
    }
}

/// The other interleaving: the removal has taken its queue entry and is
/// inside the store's delete when the image is stored again. The writer's
/// dequeue waits for the removal to finish, so its bytes go in after the
/// old ones went out, whatever the scheduler does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_14_a_store_again_waits_for_a_removal_under_way() {
    for repo in databases().await {
        let repo = Arc::new(repo);
        let store = Arc::new(Paused {
            inner: ObjectBackend::memory(),
            entered: tokio::sync::Notify::new(),
            go: tokio::sync::Notify::new(),
        });
        let k = key("u", 2);
        hand_out(&repo, &k, 10).await;
        store_bytes(&repo, store.as_ref(), &k).await;
        repo.delete_images(std::slice::from_ref(&k), GoneReason::Deleted)
            .await
            .unwrap();
        let path = meta(&k).relative_path();
        let removal = tokio::spawn({
            let (repo, store, path) = (repo.clone(), store.clone(), path.clone());
            async move { repo.remove_queued(&path, store.as_ref()).await.unwrap() }
        });
        store.entered.notified().await;
        let writer = tokio::spawn({
            let (repo, store, k) = (repo.clone(), store.clone(), k.clone());
            async move {
                hand_out(&repo, &k, 20).await;
                store_bytes(&repo, store.as_ref(), &k).await;
            }
        });
        store.go.notify_one();
        let done = removal.await.unwrap();
        assert!(matches!(done, Removal::Removed), "{done:?}");
        writer.await.unwrap();
        assert!(held(store.as_ref(), &k).await, "stored after the removal");
        assert_eq!(
            repo.get(&k).await.unwrap().unwrap().state,
            ImageState::Stored
        );
        assert!(repo.queued_deletes(10).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn finding_15_a_user_is_deleted_in_pages() {
    for repo in databases().await {
        for n in 0..5 {
            hand_out(&repo, &key("u", n), 10).await;
        }
        hand_out(&repo, &key("other", 9), 10).await;
        let user = UserId::parse("u").unwrap();
        let mut pages = Vec::new();
        loop {
            let page = repo.delete_user_page(&user, 2).await.unwrap();
            if page.is_empty() {
                break;
            }
            pages.push(page.len());
        }
        assert_eq!(pages, vec![2, 2, 1], "at most a page in memory");
        assert!(repo.get(&key("other", 9)).await.unwrap().is_some());
        let stone = repo.tombstone(&key("u", 3)).await.unwrap().unwrap();
        assert_eq!(stone.reason, GoneReason::Deleted);
    }
}

#[tokio::test]
async fn finding_17_every_deletion_leaves_a_bounded_tombstone() {
    for repo in databases().await {
        let store = ObjectBackend::memory();
        for n in 0..3 {
            hand_out(&repo, &key("u", n), 10).await;
            store_bytes(&repo, &store, &key("u", n)).await;
        }
        let gone = repo
            .delete_images(&[key("u", 0)], GoneReason::Expired)
            .await
            .unwrap();
        assert_eq!(gone.len(), 1);
        // The delete, its queued object and its tombstone are one commit.
        assert_eq!(repo.queued_deletes(10).await.unwrap().len(), 1);
        let evicted = repo
            .enforce_user_limit(&UserId::parse("u").unwrap(), 1, u64::MAX)
            .await
            .unwrap();
        assert_eq!(evicted.len(), 1);
        let stone = |n| {
            let repo = &repo;
            async move { repo.tombstone(&key("u", n)).await.unwrap() }
        };
        assert_eq!(stone(0).await.unwrap().reason, GoneReason::Expired);
        let (limited, kept) = if repo.get(&key("u", 1)).await.unwrap().is_none() {
            (1, 2)
        } else {
            (2, 1)
        };
        assert_eq!(stone(limited).await.unwrap().reason, GoneReason::UserLimit);
        assert!(stone(kept).await.is_none(), "alive");
        repo.set_private(&key("u", kept), true).await.unwrap();
        repo.delete_images(&[key("u", kept)], GoneReason::Deleted)
            .await
            .unwrap();
        let private = stone(kept).await.unwrap();
        assert_eq!(private.reason, GoneReason::Deleted);
        assert!(private.private, "a private image's tombstone stays private");
        assert!(stone(7).await.is_none(), "never existed");
        // Swept: all but the newest one, then by age.
        assert_eq!(repo.prune_tombstones(0, 1).await.unwrap(), 2);
        assert_eq!(repo.prune_tombstones(u64::MAX, 10).await.unwrap(), 1);
        assert!(stone(kept).await.is_none());
    }
}

fn variant(k: &ImageKey, vkey: &str, at: u64) -> VariantRecord {
    VariantRecord {
        key: k.clone(),
        variant_key: vkey.into(),
        format: Format::Webp,
        size: 10,
        sha256: "ef".repeat(32),
        width: 64,
        height: 43,
        created_at: at,
    }
}

/// At the limit, the least recently requested variant makes room, in the
/// insert's transaction; the count never goes past the limit.
#[tokio::test]
async fn finding_04_a_new_variant_evicts_the_least_recently_requested() {
    for repo in databases().await {
        let store = ObjectBackend::memory();
        let k = key("u", 1);
        hand_out(&repo, &k, 10).await;
        store_bytes(&repo, &store, &k).await;
        for (vk, at) in [("v1-a", 1), ("v1-b", 2)] {
            let put = repo.record_variant(&variant(&k, vk, at), 2).await.unwrap();
            assert_eq!(put, VariantPut::Recorded { evicted: vec![] });
        }
        // `a`, older, was requested last.
        repo.record_variant_hits(&[VariantHit {
            key: k.clone(),
            variant_key: "v1-a".into(),
            at: 50,
        }])
        .await
        .unwrap();
        let put = repo
            .record_variant(&variant(&k, "v1-c", 60), 2)
            .await
            .unwrap();
        let VariantPut::Recorded { evicted } = put else {
            panic!("{put:?}");
        };
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].variant_key, "v1-b");
        assert_eq!(repo.variant_count(&k).await.unwrap(), 2);
        assert!(repo
            .queued_deletes(10)
            .await
            .unwrap()
            .contains(&evicted[0].relative_path()));
        assert!(repo.get_variant(&k, "v1-a").await.unwrap().is_some());
    }
}
