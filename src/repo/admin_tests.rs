//! The admin page's queries, on SQLite and (with
//! `PERMAPROXY_TEST_POSTGRES_URL`) Postgres: hourly views, their pruning,
//! and another try for a failed download.

use super::super::tests::databases;
use super::super::views::HOUR_MS;
use super::super::*;
use crate::ids::ImageId;

fn key(user: &str, n: u32) -> ImageKey {
    ImageKey::new(
        UserId::parse(user).unwrap(),
        ImageId::for_source(&format!("https://replicate.delivery/v/{n}.png")),
    )
}

fn hand_out(user: &str, n: u32, now: u64) -> HandOut {
    HandOut {
        images: vec![NewImage {
            key: key(user, n),
            source_url: format!("https://replicate.delivery/v/{n}.png"),
            format: Format::Png,
        }],
        prediction_id: None,
        now,
        owner: Some("r1".into()),
        lease_until: now + 15_000,
        due_at: now,
        trusted: true,
    }
}

async fn store(repo: &SqlRepo, user: &str, n: u32, now: u64) {
    repo.hand_out(&hand_out(user, n, now)).await.unwrap();
    let meta = ImageMeta {
        key: key(user, n),
        format: Format::Png,
        size: 100 + u64::from(n),
        sha256: "cd".repeat(32),
        source_url: None,
        prediction_id: None,
        created_at: now,
        private: false,
        variant: None,
        vary_accept: false,
    };
    assert!(repo.mark_stored(&meta, None).await.unwrap().is_some());
}

fn hit(user: &str, n: u32, at: u64, count: u64) -> Hit {
    Hit {
        key: key(user, n),
        last_ms: at,
        count,
    }
}

/// Hour 100 (in Unix hours) is an arbitrary, whole-hour origin.
const T0: u64 = 100 * HOUR_MS;

#[tokio::test]
async fn top_viewed_counts_requests_by_hour_in_the_window() {
    for repo in databases().await {
        store(&repo, "a", 0, T0).await;
        store(&repo, "a", 1, T0).await;
        store(&repo, "b", 0, T0).await;
        // Two batches in hour 101 and one in hour 102 for a/0; older
        // requests of b/0 in hour 100 only.
        repo.record_hits(&[hit("a", 0, T0 + HOUR_MS + 5, 2), hit("b", 0, T0 + 10, 9)])
            .await
            .unwrap();
        repo.record_hits(&[
            hit("a", 0, T0 + HOUR_MS + 9, 1),
            hit("a", 1, T0 + 2 * HOUR_MS, 4),
        ])
        .await
        .unwrap();
        repo.record_hits(&[hit("a", 0, T0 + 2 * HOUR_MS + 1, 3)])
            .await
            .unwrap();
        // A hit for an image that does not exist leaves no hourly row.
        repo.record_hits(&[hit("ghost", 0, T0 + HOUR_MS, 50)])
            .await
            .unwrap();

        // From hour 101 on: a/0 has 6, a/1 has 4; b/0's hour is outside.
        let top = repo.top_viewed(T0 + HOUR_MS, 10).await.unwrap();
        let got: Vec<(String, u64, u64)> = top
            .iter()
            .map(|t| (t.key.to_string(), t.recent_views, t.views))
            .collect();
        assert_eq!(
            got,
            vec![
                (key("a", 0).to_string(), 6, 6),
                (key("a", 1).to_string(), 4, 4)
            ]
        );
        assert_eq!(top[0].size, 100);
        assert_eq!(top[0].format, Format::Png);
        assert_eq!(top[0].requested_at, T0 + 2 * HOUR_MS + 1);
        // A window start inside an hour counts that whole hour.
        let all = repo.top_viewed(T0 + 30, 10).await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].key, key("b", 0), "9 requests in hour 100");
        assert_eq!(repo.top_viewed(T0, 1).await.unwrap().len(), 1, "limit");

        // Pruning forgets whole hours before the given time.
        assert_eq!(repo.prune_views(T0 + HOUR_MS).await.unwrap(), 1);
        let left = repo.top_viewed(0, 10).await.unwrap();
        assert!(left.iter().all(|t| t.key.user.as_str() == "a"), "{left:?}");
    }
}

#[tokio::test]
async fn deleted_and_recreated_images_do_not_inherit_views() {
    for repo in databases().await {
        store(&repo, "a", 0, T0).await;
        store(&repo, "a", 1, T0).await;
        repo.record_hits(&[hit("a", 0, T0 + 5, 7), hit("a", 1, T0 + 5, 1)])
            .await
            .unwrap();
        // Deleted: its hours no longer show.
        repo.delete_images(&[key("a", 1)], crate::repo::GoneReason::Deleted)
            .await
            .unwrap();
        let top = repo.top_viewed(T0, 10).await.unwrap();
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].key, key("a", 0));
        // The same source handed out again two hours later is a new image:
        // the old image's hours do not count for it.
        store(&repo, "a", 1, T0 + 2 * HOUR_MS + 10).await;
        let top = repo.top_viewed(T0, 10).await.unwrap();
        assert_eq!(top.len(), 1, "{top:?}");
        repo.record_hits(&[hit("a", 1, T0 + 2 * HOUR_MS + 20, 2)])
            .await
            .unwrap();
        let top = repo.top_viewed(T0, 10).await.unwrap();
        let again = top.iter().find(|t| t.key == key("a", 1)).unwrap();
        assert_eq!((again.recent_views, again.views), (2, 2));
    }
}

#[tokio::test]
async fn a_failed_download_can_be_retried_once() {
    for repo in databases().await {
        repo.hand_out(&hand_out("u", 1, 1_000)).await.unwrap();
        repo.mark_failed(&key("u", 1), "source answered 404", 2_000)
            .await
            .unwrap();
        let r = repo
            .retry_failed(&key("u", 1), 5_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.state, ImageState::Pending);
        assert_eq!((r.attempts, r.due_at, r.lease_until), (0, 5_000, 0));
        assert_eq!(
            (r.last_error, r.failed_at, r.lease_owner),
            (None, None, None)
        );
        assert_eq!(
            r.source_url.as_deref(),
            Some("https://replicate.delivery/v/1.png")
        );
        // It is pending now, not failed: nothing more to retry.
        assert_eq!(repo.retry_failed(&key("u", 1), 6_000).await.unwrap(), None);
        assert_eq!(repo.totals().await.unwrap().pending, 1);
        // A stored image, or none at all, is not retried.
        store(&repo, "u", 2, 1_000).await;
        assert_eq!(repo.retry_failed(&key("u", 2), 6_000).await.unwrap(), None);
        assert_eq!(repo.retry_failed(&key("u", 3), 6_000).await.unwrap(), None);
        // And the pending row can be claimed by whoever downloads it.
        assert!(repo.claim(&key("u", 1), "r9", 6_000, 9_000).await.unwrap());
    }
}
