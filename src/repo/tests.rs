//! The queries, on an in-memory SQLite and, when
//! `PERMAPROXY_TEST_POSTGRES_URL` names a server (scripts/test.sh starts
//! one), on a fresh Postgres database too.

use super::*;
use crate::ids::ImageId;

pub async fn databases() -> Vec<SqlRepo> {
    let mut out = vec![SqlRepo::connect("sqlite::memory:", 1).await.unwrap()];
    if let Ok(url) = std::env::var("PERMAPROXY_TEST_POSTGRES_URL") {
        out.push(fresh_postgres(&url).await);
    }
    out
}

/// A new, empty database on the server `url` points at.
pub async fn fresh_postgres(url: &str) -> SqlRepo {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let name = format!("pp_unit_{:016x}", rand::random::<u64>());
    let admin = sqlx::AnyPool::connect(url).await.unwrap();
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    SqlRepo::connect(&format!("{base}/{name}"), 4)
        .await
        .unwrap()
}

fn key(user: &str, n: u32) -> ImageKey {
    ImageKey::new(
        UserId::parse(user).unwrap(),
        ImageId::for_source(&format!("https://replicate.delivery/{n}.png")),
    )
}

fn new_image(user: &str, n: u32) -> NewImage {
    NewImage {
        key: key(user, n),
        source_url: format!("https://replicate.delivery/{n}.png"),
        format: Format::Png,
    }
}

fn batch(images: Vec<NewImage>, now: u64, owner: Option<&str>) -> HandOut {
    HandOut {
        images,
        prediction_id: Some("p1".into()),
        now,
        owner: owner.map(str::to_string),
        lease_until: now + 15_000,
        due_at: now,
        trusted: true,
    }
}

fn meta(k: &ImageKey, size: u64, at: u64) -> ImageMeta {
    ImageMeta {
        key: k.clone(),
        format: Format::Webp,
        size,
        sha256: "ab".repeat(32),
        source_url: None,
        prediction_id: None,
        created_at: at,
        private: false,
        variant: None,
        vary_accept: false,
    }
}

/// Hands out and stores `n` images for `user`, each requested at `at + i`.
async fn stored(repo: &SqlRepo, user: &str, range: std::ops::Range<u32>, at: u64) {
    for i in range {
        let k = key(user, i);
        repo.hand_out(&batch(
            vec![new_image(user, i)],
            at + u64::from(i),
            Some("r1"),
        ))
        .await
        .unwrap();
        assert!(repo
            .mark_stored(&meta(&k, 100, at), None)
            .await
            .unwrap()
            .is_some());
    }
}

#[tokio::test]
async fn hand_out_then_store() {
    for repo in databases().await {
        let rows = repo
            .hand_out(&batch(
                vec![new_image("u", 1), new_image("u", 2)],
                1_000,
                Some("r1"),
            ))
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.state == ImageState::Pending));
        assert_eq!(rows[0].lease_owner.as_deref(), Some("r1"));
        assert_eq!(rows[0].prediction_id.as_deref(), Some("p1"));
        // Handed out again later by another replica: newer request time,
        // the live lease stays with r1.
        let again = repo
            .hand_out(&batch(vec![new_image("u", 1)], 2_000, Some("r2")))
            .await
            .unwrap();
        assert_eq!(again[0].requested_at, 2_000);
        assert_eq!(again[0].lease_owner.as_deref(), Some("r1"));
        let at = repo
            .mark_stored(&meta(&key("u", 1), 42, 2_500), Some((64, 48)))
            .await;
        assert_eq!(
            at.unwrap().map(|m| m.requested_at),
            Some(2_500),
            "being stored counts as a request"
        );
        let r = repo.get(&key("u", 1)).await.unwrap().unwrap();
        assert_eq!(r.state, ImageState::Stored);
        assert_eq!(
            (r.size, r.format, r.width, r.height),
            (42, Format::Webp, Some(64), Some(48))
        );
        assert_eq!(r.stored_meta().unwrap().created_at, 2_500);
        assert_eq!(r.lease_owner, None);
        assert_eq!(repo.get(&key("u", 9)).await.unwrap(), None);
        let t = repo.totals().await.unwrap();
        assert_eq!((t.images, t.bytes, t.pending, t.failed), (1, 42, 1, 0));
    }
}

#[tokio::test]
async fn a_failed_image_handed_out_again_is_retried() {
    for repo in databases().await {
        repo.hand_out(&batch(vec![new_image("u", 1)], 1_000, Some("r1")))
            .await
            .unwrap();
        repo.mark_failed(&key("u", 1), "source answered 404", 1_100)
            .await
            .unwrap();
        let r = repo.get(&key("u", 1)).await.unwrap().unwrap();
        assert_eq!(r.state, ImageState::Failed);
        assert_eq!(r.last_error.as_deref(), Some("source answered 404"));
        let rows = repo
            .hand_out(&batch(vec![new_image("u", 1)], 5_000, Some("r2")))
            .await
            .unwrap();
        assert_eq!(rows[0].state, ImageState::Pending);
        assert_eq!(rows[0].lease_owner.as_deref(), Some("r2"));
        assert_eq!(rows[0].attempts, 0);
    }
}

#[tokio::test]
async fn a_deleted_row_refuses_its_download() {
    for repo in databases().await {
        repo.hand_out(&batch(vec![new_image("u", 1)], 1_000, Some("r1")))
            .await
            .unwrap();
        let gone = repo
            .delete_user_page(&UserId::parse("u").unwrap(), 100)
            .await
            .unwrap();
        assert_eq!(gone.len(), 1);
        let stored = repo
            .mark_stored(&meta(&key("u", 1), 10, 2_000), None)
            .await
            .unwrap();
        assert_eq!(stored, None, "a deleted image stays deleted");
        assert_eq!(repo.get(&key("u", 1)).await.unwrap(), None);
    }
}

#[tokio::test]
async fn leases_claims_and_takeover() {
    for repo in databases().await {
        let images = (1..=3).map(|i| new_image("u", i)).collect();
        repo.hand_out(&batch(images, 1_000, Some("dead")))
            .await
            .unwrap();
        // The lease (until 16_000) is alive: nothing to take over.
        assert!(repo
            .claim_due("r2", 10_000, 25_000, 10, false)
            .await
            .unwrap()
            .is_empty());
        // The owner renews one of them.
        repo.renew_leases("dead", &[key("u", 1)], 40_000)
            .await
            .unwrap();
        let taken = repo
            .claim_due("r2", 20_000, 35_000, 10, false)
            .await
            .unwrap();
        assert_eq!(taken.len(), 2, "the two whose lease ran out");
        assert!(taken.iter().all(|r| r.lease_owner.as_deref() == Some("r2")));
        // A restarted "dead" replica reclaims its own at once.
        let own = repo
            .claim_due("dead", 20_000, 35_000, 10, true)
            .await
            .unwrap();
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].key, key("u", 1));
        // A single claim only takes a free or expired lease.
        assert!(!repo
            .claim(&key("u", 2), "r3", 21_000, 50_000)
            .await
            .unwrap());
        assert!(repo
            .claim(&key("u", 2), "r3", 36_000, 500_000)
            .await
            .unwrap());
        // Postponed: due later, lease released.
        repo.postpone(&key("u", 3), "disk full", 90_000)
            .await
            .unwrap();
        let early = repo
            .claim_due("r4", 60_000, 70_000, 10, false)
            .await
            .unwrap();
        assert!(early.iter().all(|r| r.key != key("u", 3)), "not due yet");
        let late = repo
            .claim_due("r4", 90_000, 99_000, 10, false)
            .await
            .unwrap();
        assert!(late.iter().any(|r| r.key == key("u", 3)));
    }
}

#[tokio::test]
async fn lazy_rows_wait_for_their_deadline() {
    for repo in databases().await {
        let mut b = batch(vec![new_image("u", 1)], 1_000, None);
        b.due_at = 1_000 + 1_800_000;
        let rows = repo.hand_out(&b).await.unwrap();
        assert_eq!(rows[0].lease_owner, None);
        assert!(repo
            .claim_due("r1", 60_000, 70_000, 10, true)
            .await
            .unwrap()
            .is_empty());
        let due = repo
            .claim_due("r1", 1_801_000, 1_900_000, 10, false)
            .await
            .unwrap();
        assert_eq!(due.len(), 1);
    }
}

#[tokio::test]
async fn the_user_limit_never_evicts_its_own_response() {
    for repo in databases().await {
        let user = UserId::parse("u").unwrap();
        stored(&repo, "u", 0..3, 1_000).await;
        // One response with 4 more images, all requested at 10_000.
        let images = (10..14).map(|i| new_image("u", i)).collect();
        repo.hand_out(&batch(images, 10_000, Some("r1")))
            .await
            .unwrap();
        for i in 10..14 {
            repo.mark_stored(&meta(&key("u", i), 100, 10_100), None)
                .await
                .unwrap();
        }
        let gone = repo.enforce_user_limit(&user, 2, 10_000).await.unwrap();
        assert_eq!(gone.len(), 3, "only the older images go");
        assert!(gone.iter().all(|r| r.requested_at < 10_000));
        assert_eq!(
            repo.totals().await.unwrap().images,
            4,
            "the response keeps all 4"
        );
        // The queue holds the evicted objects.
        let queued = repo.queued_deletes(10).await.unwrap();
        assert_eq!(queued.len(), 3);
        repo.forget_queued_delete(&queued[0]).await.unwrap();
        assert_eq!(repo.queued_deletes(10).await.unwrap().len(), 2);
        // Later enforcement, protecting nothing older, trims to the limit.
        let gone = repo.enforce_user_limit(&user, 2, u64::MAX).await.unwrap();
        assert_eq!(gone.len(), 2);
    }
}

#[tokio::test]
async fn hits_raise_request_times_and_count_views() {
    for repo in databases().await {
        stored(&repo, "u", 0..1, 1_000).await;
        let hits = vec![Hit {
            key: key("u", 0),
            last_ms: 50_000,
            count: 3,
        }];
        repo.record_hits(&hits).await.unwrap();
        repo.record_hits(&[Hit {
            key: key("u", 0),
            last_ms: 40_000,
            count: 1,
        }])
        .await
        .unwrap();
        let r = repo.get(&key("u", 0)).await.unwrap().unwrap();
        assert_eq!((r.requested_at, r.views), (50_000, 4));
    }
}

#[tokio::test]
async fn pages_walk_every_row_once() {
    for repo in databases().await {
        stored(&repo, "a", 0..7, 1_000).await;
        stored(&repo, "b_x", 0..5, 1_000).await;
        let mut seen = Vec::new();
        let mut cursor: Option<Cursor> = None;
        loop {
            let page = repo.stored_page(cursor.as_ref(), 3).await.unwrap();
            let done = page.len() < 3;
            for r in page {
                cursor = Some(Cursor {
                    at: r.requested_at,
                    key: r.key.clone(),
                });
                seen.push(r);
            }
            if done {
                break;
            }
        }
        assert_eq!(seen.len(), 12);
        assert!(seen
            .windows(2)
            .all(|w| w[0].requested_at >= w[1].requested_at));
        let users = repo.users("b_", None, 10).await.unwrap();
        assert_eq!(users.len(), 1, "the _ in the prefix is not a wildcard");
        assert_eq!((users[0].images, users[0].bytes), (5, 500));
        let a = UserId::parse("a").unwrap();
        let first = repo.user_images(&a, None, 4).await.unwrap();
        let rest = repo
            .user_images(&a, Some(&first[3].key.id), 4)
            .await
            .unwrap();
        assert_eq!(first.len() + rest.len(), 7);
        let top = repo.top_users(1).await.unwrap();
        assert_eq!(top[0].user, a);
        let keys = vec![key("a", 0), key("a", 99)];
        let alive = repo.existing(&keys).await.unwrap();
        assert_eq!(alive.get(&key("a", 0)), Some(&false));
        assert!(!alive.contains_key(&key("a", 99)));
        assert!(repo.set_private(&key("a", 0), true).await.unwrap());
        assert!(!repo.set_private(&key("a", 99), true).await.unwrap());
        assert_eq!(
            repo.existing(&keys).await.unwrap().get(&key("a", 0)),
            Some(&true)
        );
    }
}

#[tokio::test]
async fn failures_are_paged_and_pruned() {
    for repo in databases().await {
        for i in 0..5u32 {
            repo.hand_out(&batch(vec![new_image("u", i)], 1_000, Some("r1")))
                .await
                .unwrap();
            repo.mark_failed(&key("u", i), "gone", 1_000 + u64::from(i))
                .await
                .unwrap();
        }
        let page = repo.failed(None, 2).await.unwrap();
        assert_eq!(page[0].failed_at, Some(1_004), "newest first");
        let c = Cursor {
            at: page[1].failed_at.unwrap(),
            key: page[1].key.clone(),
        };
        assert_eq!(repo.failed(Some(&c), 10).await.unwrap().len(), 3);
        assert_eq!(
            repo.prune_failed(1_002, 100).await.unwrap(),
            2,
            "older than 1_002"
        );
        assert_eq!(
            repo.prune_failed(0, 1).await.unwrap(),
            2,
            "all but the newest"
        );
        assert_eq!(repo.totals().await.unwrap().failed, 1);
    }
}

#[tokio::test]
async fn meta_values_and_imports() {
    for repo in databases().await {
        assert_eq!(repo.meta_get("x").await.unwrap(), None);
        repo.meta_set("x", "1").await.unwrap();
        repo.meta_set("x", "2").await.unwrap();
        assert_eq!(repo.meta_get("x").await.unwrap().as_deref(), Some("2"));
        let m = meta(&key("u", 1), 7, 3_000);
        repo.upsert_stored(&m, 9_000, false).await.unwrap();
        repo.upsert_stored(&m, 1_000, false).await.unwrap();
        let r = repo.get(&key("u", 1)).await.unwrap().unwrap();
        assert_eq!((r.state, r.requested_at), (ImageState::Stored, 9_000));
    }
}

/// A JSON `\u0000` in a source URL or a prediction id reaches the database
/// as text; Postgres refuses NUL in text, and the whole hand-out (the
/// response's rewrite) failed there and not on SQLite.
#[tokio::test]
async fn nul_in_outside_text_is_stored_on_every_database() {
    for repo in databases().await {
        let mut img = new_image("nul", 1);
        img.source_url = "https://replicate.delivery/a\0b.png".into();
        let mut b = batch(vec![img], 1_000, Some("r1"));
        b.prediction_id = Some("p\0q".into());
        let rows = repo.hand_out(&b).await.unwrap();
        assert_eq!(rows.len(), 1);
        let r = repo.get(&key("nul", 1)).await.unwrap().unwrap();
        assert_eq!(
            r.source_url.as_deref(),
            Some("https://replicate.delivery/a%00b.png")
        );
        assert_eq!(r.prediction_id.as_deref(), Some("p%00q"));
        repo.mark_failed(&key("nul", 1), "bad\0byte", 2_000)
            .await
            .unwrap();
        let r = repo.get(&key("nul", 1)).await.unwrap().unwrap();
        assert_eq!(r.last_error.as_deref(), Some("bad%00byte"));
    }
}

/// A parameter for [`plan_of`].
enum P {
    I(i64),
    T(&'static str),
}

/// The plan `repo` runs `sql` with, parameters bound as the proxy binds
/// them (a literal can change SQLite's choice). Postgres is told that sorts
/// and full scans are expensive, so on a table this small the plan shows
/// whether an ordered index range exists at all.
async fn plan_of(repo: &SqlRepo, sql: &str, params: &[P]) -> Vec<String> {
    use sqlx::{Executor, Row};
    let mut conn = repo.read.acquire().await.unwrap();
    let explain = match repo.dialect {
        Dialect::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
        Dialect::Postgres => {
            for off in ["enable_seqscan", "enable_bitmapscan", "enable_sort"] {
                conn.execute(format!("SET {off} = off").as_str())
                    .await
                    .unwrap();
            }
            format!("EXPLAIN {sql}")
        }
    };
    let mut q = sqlx::query(&explain);
    for p in params {
        q = match p {
            P::I(v) => q.bind(*v),
            P::T(v) => q.bind(*v),
        };
    }
    let rows = q.fetch_all(&mut *conn).await.unwrap();
    let column = if repo.dialect == Dialect::Sqlite {
        3
    } else {
        0
    };
    let plan = rows
        .iter()
        .map(|r| r.try_get::<String, _>(column).unwrap())
        .collect();
    if repo.dialect == Dialect::Postgres {
        conn.execute("RESET ALL").await.unwrap();
    }
    plan
}

/// A Postgres plan with a full sort (an incremental sort of ties is fine).
fn pg_sorts(plan: &[String]) -> bool {
    plan.iter().any(|l| {
        l.contains("Sort")
            && !l.contains("Incremental Sort")
            && !l.contains("Sort Key")
            && !l.contains("Presorted Key")
    })
}

/// One page of the cleanup walk must start at the cursor in an index: a page
/// that sorts (SQLite) or scans (Postgres) every stored row makes walking
/// the table quadratic, which kept a start with 100k rows busy for minutes
/// (BENCHMARKS.md, "Metadata database"). Checked on the query plan, which
/// depends on the schema and the query, not on timing.
#[tokio::test]
async fn the_cleanup_walk_reads_each_page_from_an_index() {
    let sql = super::queries::stored_page_sql();
    let params = [P::I(1000), P::T("u"), P::T("img_0"), P::I(500)];
    for repo in databases().await {
        stored(&repo, "a", 0..3, 1_000).await;
        let plan = plan_of(&repo, &sql, &params).await;
        let text = plan.join("\n");
        match repo.dialect {
            Dialect::Sqlite => {
                assert!(
                    text.contains("hosted_images_state_requested (state=? AND requested_at<?)"),
                    "{text}"
                );
                assert!(!text.contains("TEMP B-TREE FOR ORDER BY"), "{text}");
            }
            Dialect::Postgres => {
                assert!(
                    plan.iter()
                        .any(|l| l.contains("Index Cond") && l.contains("requested_at <=")),
                    "{text}"
                );
                assert!(!pg_sorts(&plan), "{text}");
            }
        }
    }
}

/// The per-user limit runs for every image stored, inside the write
/// transaction: it must read that user's rows only, never walk the table
/// in request order (which SQLite did once (state, requested_at) existed).
#[tokio::test]
async fn the_per_user_limit_reads_only_that_users_rows() {
    let params = [P::T("a"), P::I(1 << 40), P::I(50)];
    for repo in databases().await {
        stored(&repo, "a", 0..3, 1_000).await;
        let plan = plan_of(&repo, super::deletes::USER_LIMIT_VICTIMS, &params).await;
        let text = plan.join("\n");
        match repo.dialect {
            Dialect::Sqlite => assert!(
                text.contains("hosted_images_user_state_requested (user_id=? AND state=?)"),
                "{text}"
            ),
            Dialect::Postgres => {
                assert!(
                    plan.iter()
                        .any(|l| l.contains("Index Cond") && l.contains("user_id =")),
                    "{text}"
                );
                assert!(!pg_sorts(&plan), "{text}");
            }
        }
    }
}

/// Checking cached images against the database looks their keys up by
/// primary key, never reads every stored row (which SQLite did while the
/// query filtered on state: seconds per 200 keys at a million rows).
#[tokio::test]
async fn checking_cached_keys_looks_them_up_by_key() {
    let sql = super::queries::existing_sql(2);
    let params = [P::T("a"), P::T("img_0"), P::T("a"), P::T("img_1")];
    for repo in databases().await {
        stored(&repo, "a", 0..3, 1_000).await;
        repo.hand_out(&batch(vec![new_image("a", 7)], 5_000, None))
            .await
            .unwrap();
        let alive = repo
            .existing(&[key("a", 0), key("a", 7), key("a", 9)])
            .await
            .unwrap();
        assert_eq!(
            alive,
            HashMap::from([(key("a", 0), false)]),
            "only stored rows"
        );
        let plan = plan_of(&repo, &sql, &params).await;
        let text = plan.join("\n");
        match repo.dialect {
            Dialect::Sqlite => assert!(
                text.contains("sqlite_autoindex_hosted_images_1 (user_id=? AND image_id=?)"),
                "{text}"
            ),
            // Either key index will do on a table this small; what matters
            // is a lookup per key, not a scan.
            Dialect::Postgres => assert!(
                plan.iter()
                    .any(|l| l.contains("Index Cond") && l.contains("user_id =")),
                "{text}"
            ),
        }
    }
}
