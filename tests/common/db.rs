//! The metadata database as tests see it: the embedded SQLite file in a
//! proxy's storage folder, or, in the Postgres run of the suite
//! (`PERMAPROXY_TEST_POSTGRES_URL`, set by scripts/test.sh), a fresh
//! database per proxy on that server.

use sqlx::{AnyPool, Executor, Row};

/// The Postgres server of this test run, if the suite runs against one.
pub fn postgres_server() -> Option<String> {
    std::env::var("PERMAPROXY_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A new, empty database on the Postgres server at `url`; its URL.
pub async fn fresh_postgres(url: &str) -> String {
    sqlx::any::install_default_drivers();
    let name = format!("pp_it_{:016x}", rand::random::<u64>());
    let admin = AnyPool::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to the test Postgres at {url}: {e}"));
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create a test database");
    admin.close().await;
    let (base, _) = url.rsplit_once('/').expect("a URL with a database name");
    format!("{base}/{name}")
}

/// A URL that reaches the proxy's tables: on Postgres they live in the
/// `permaproxy` schema (issue 20), so the connection searches it.
pub fn in_schema(url: &str) -> String {
    if url.starts_with("sqlite:") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options[search_path]=permaproxy")
}

/// The embedded database's URL for a storage folder.
pub fn sqlite_url(storage: &std::path::Path) -> String {
    format!("sqlite://{}", storage.join("permaproxy.db").display())
}

pub struct Db {
    pool: AnyPool,
}

impl Db {
    /// Connects without creating anything: the proxy made the database.
    pub async fn open(url: &str) -> Db {
        sqlx::any::install_default_drivers();
        let url = if url.starts_with("sqlite:") {
            format!("{url}?mode=rw")
        } else {
            in_schema(url)
        };
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("open the proxy's database {url}: {e}"));
        Db { pool }
    }

    pub async fn close(self) {
        self.pool.close().await;
    }

    /// (state, requested_at) of one row.
    pub async fn row(&self, user: &str, id: &str) -> Option<(String, u64)> {
        let r = sqlx::query(
            "SELECT state, requested_at FROM hosted_images WHERE user_id = $1 AND image_id = $2",
        )
        .bind(user)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .expect("query hosted_images")?;
        let state: String = r.get("state");
        let at: i64 = r.get("requested_at");
        Some((state, at as u64))
    }

    pub async fn requested_at(&self, user: &str, id: &str) -> Option<u64> {
        self.row(user, id).await.map(|r| r.1)
    }

    /// Every row of every table permaproxy keeps, as text, sorted: two
    /// dumps are equal when nothing changed.
    pub async fn dump(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (table, cols) in [
            (
                "hosted_images",
                "user_id, image_id, state, format, size_bytes, sha256, requested_at, views, \
                 attempts, due_at, COALESCE(lease_owner, '') AS lease_owner, lease_until",
            ),
            ("deleted_objects", "path, queued_at"),
            (
                "image_variants",
                "user_id, image_id, variant_key, format, size_bytes, sha256",
            ),
            ("permaproxy_meta", "name, value"),
        ] {
            let rows = sqlx::query(&format!("SELECT {cols} FROM {table}"))
                .fetch_all(&self.pool)
                .await
                .expect("dump a table");
            for r in rows {
                let cells: Vec<String> = (0..r.len())
                    .map(|i| {
                        r.try_get::<String, _>(i)
                            .or_else(|_| r.try_get::<i64, _>(i).map(|n| n.to_string()))
                            .unwrap_or_else(|_| "?".into())
                    })
                    .collect();
                out.push(format!("{table}: {}", cells.join(" | ")));
            }
        }
        out.sort();
        out
    }

    /// Forgets every image row, as if the database were lost (the marker of
    /// the one-time import stays, so only `reindex` brings them back).
    pub async fn wipe_images(&self) {
        self.pool
            .execute("DELETE FROM hosted_images")
            .await
            .expect("wipe hosted_images");
    }

    /// Rows of `image_variants` (issue 14) matching `sql_where`.
    pub async fn count_variants(&self, sql_where: &str) -> u64 {
        let r = sqlx::query(&format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM image_variants WHERE {sql_where}"
        ))
        .fetch_one(&self.pool)
        .await
        .expect("count variant rows");
        r.get::<i64, _>("n") as u64
    }

    /// `(variant_key, sha256)` of an image's variants.
    pub async fn variants_of(&self, user: &str, id: &str) -> Vec<(String, String)> {
        sqlx::query(
            "SELECT variant_key, sha256 FROM image_variants WHERE user_id = $1 AND image_id = $2",
        )
        .bind(user)
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .expect("variant rows")
        .iter()
        .map(|r| {
            (
                r.get::<String, _>("variant_key"),
                r.get::<String, _>("sha256"),
            )
        })
        .collect()
    }

    pub async fn count(&self, sql_where: &str) -> u64 {
        let r = sqlx::query(&format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM hosted_images WHERE {sql_where}"
        ))
        .fetch_one(&self.pool)
        .await
        .expect("count rows");
        r.get::<i64, _>("n") as u64
    }
}
