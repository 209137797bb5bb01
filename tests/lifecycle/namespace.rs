//! Issue 20, finding 8: permaproxy in a Postgres database Studio API
//! already uses. Its tables live in their own schema (`permaproxy`), the
//! other app's tables in `public` are never touched, and a database laid
//! out by an earlier release (our tables in `public`) is moved over in
//! place. Postgres only: these skip on the SQLite run of the suite.

use crate::common::*;
use crate::*;
use sqlx::{AnyPool, Executor, Row};

async fn pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url)
        .await
        .expect("connect to the test database")
}

/// Names of the tables in `schema`, sorted.
async fn tables(db: &AnyPool, schema: &str) -> Vec<String> {
    let rows = sqlx::query(
        "SELECT CAST(tablename AS TEXT) AS t FROM pg_catalog.pg_tables \
         WHERE schemaname = $1 ORDER BY tablename",
    )
    .bind(schema)
    .fetch_all(db)
    .await
    .expect("list tables");
    rows.iter().map(|r| r.get::<String, _>("t")).collect()
}

/// Every row of Studio API's tables, as text.
async fn studio_rows(db: &AnyPool) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT id || '|' || status || '|' || output FROM public.predictions ORDER BY id",
        "SELECT key || '|' || value FROM public.meta ORDER BY key",
        "SELECT CAST(id AS TEXT) || '|' || payload FROM public.webhook_events ORDER BY id",
    ] {
        for r in sqlx::query(sql).fetch_all(db).await.expect(sql) {
            out.push(r.get::<String, _>(0));
        }
    }
    out
}

async fn count(db: &AnyPool, table: &str) -> i64 {
    let sql = format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}");
    sqlx::query(&sql).fetch_one(db).await.expect(&sql).get(0)
}

const OURS: [&str; 10] = [
    "_sqlx_migrations",
    "cdn_purges",
    "deleted_objects",
    "hosted_images",
    "image_tombstones",
    "image_variants",
    "image_views_hourly",
    "permaproxy_meta",
    "predictions",
    "webhook_events",
];

/// Today's main failed to start here: `migration 3: relation "predictions"
/// already exists`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_08_shared_postgres() {
    let Some(server) = db::postgres_server() else {
        eprintln!("SKIP finding_08_shared_postgres: needs PERMAPROXY_TEST_POSTGRES_URL");
        return;
    };
    let url = db::fresh_postgres(&server).await;
    let studio = pool(&url).await;
    for sql in [
        "CREATE TABLE predictions (id TEXT PRIMARY KEY, status TEXT NOT NULL, output TEXT NOT NULL)",
        "INSERT INTO predictions VALUES ('p1', 'succeeded', 'https://replicate.delivery/x.png')",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO meta VALUES ('schema_version', '42')",
        "CREATE TABLE webhook_events (id BIGINT PRIMARY KEY, payload TEXT NOT NULL)",
        "INSERT INTO webhook_events VALUES (1, '{\"studio\": true}')",
    ] {
        studio.execute(sql).await.expect(sql);
    }
    let before = studio_rows(&studio).await;

    // Railway's shared variables: Studio API's own DATABASE_URL.
    let s = stands(&[("DATABASE_URL", &url)]).await;
    let img = store_with(
        &s,
        "alice",
        "shared/out-0.png",
        fixtures::PNG,
        "image/png",
        serde_json::json!({"id": "pred_shared", "status": "succeeded"}),
    )
    .await;
    assert_served(
        &get(&s.proxy, &img).await,
        &img,
        "hosted from a shared database",
    );

    assert_eq!(
        tables(&studio, "public").await,
        ["meta", "predictions", "webhook_events"]
    );
    assert_eq!(
        studio_rows(&studio).await,
        before,
        "Studio API's rows untouched"
    );
    assert_eq!(tables(&studio, "permaproxy").await, OURS);
    assert_eq!(count(&studio, "permaproxy.hosted_images").await, 1);
    let row = sqlx::query("SELECT prediction_id FROM permaproxy.hosted_images")
        .fetch_one(&studio)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "pred_shared");
    // The harness's own view of the proxy's rows goes through the schema.
    assert_eq!(s.proxy.db().await.count("state = 'stored'").await, 1);
    studio.close().await;
}

/// A database an earlier release laid out (its tables and its sqlx
/// bookkeeping in `public`; `PERMAPROXY_DB_SCHEMA=public` lays it out the
/// same way) is moved into the schema at the next start, images intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_08_upgrade_in_place_from_public() {
    let Some(server) = db::postgres_server() else {
        eprintln!(
            "SKIP finding_08_upgrade_in_place_from_public: needs PERMAPROXY_TEST_POSTGRES_URL"
        );
        return;
    };
    let url = db::fresh_postgres(&server).await;
    let mut old = stands(&[("DATABASE_URL", &url), ("PERMAPROXY_DB_SCHEMA", "public")]).await;
    let img = store_png(&old, "bob", "upgrade/out-0.png", fixtures::PNG).await;
    let db = pool(&url).await;
    assert_eq!(tables(&db, "public").await, OURS, "the old layout");
    let migrations = count(&db, "public._sqlx_migrations").await;
    old.proxy.sigterm();
    assert!(
        old.proxy.wait_exit(secs(20)).await.is_some(),
        "old proxy stopped"
    );

    let opts = ProxyOptions::for_stands(&old.api, &old.host)
        .env("ADMIN_TOKEN", TOKEN)
        .env("DATABASE_URL", &url)
        .storage(old.proxy.storage_path());
    let mut new = Proxy::start(opts).await;
    assert_served(&get(&new, &img).await, &img, "after the upgrade");
    assert!(
        tables(&db, "public").await.is_empty(),
        "nothing of ours left in public"
    );
    assert_eq!(tables(&db, "permaproxy").await, OURS);
    assert_eq!(count(&db, "permaproxy._sqlx_migrations").await, migrations);
    assert_eq!(count(&db, "permaproxy.hosted_images").await, 1);
    assert!(new
        .log_text()
        .contains("moved permaproxy's tables out of public"));

    // The next start finds nothing to move and serves the same image.
    new.restart().await;
    assert_served(&get(&new, &img).await, &img, "after a second start");
    assert_eq!(tables(&db, "permaproxy").await, OURS);
    db.close().await;
}
