//! Postgres: permaproxy's tables live in a schema of their own
//! (`PERMAPROXY_DB_SCHEMA`, default `permaproxy`), so a database Studio API
//! already uses, with its own `predictions` or `webhook_events` in
//! `public`, holds both apps untouched. Every connection sets its
//! `search_path` to that schema alone, so the queries stay unqualified and
//! shared with SQLite, and sqlx's `_sqlx_migrations` bookkeeping lands in
//! the schema too. (`pg_catalog` is always searched first, so built-in
//! functions still resolve.)
//!
//! Earlier releases kept their tables in `public`. [`prepare`] moves them
//! over, once, in one transaction, when `public._sqlx_migrations` is ours
//! (its first migration's checksum is this binary's).

use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

use super::RepoError;

pub const DEFAULT: &str = "permaproxy";

/// `SET search_path` for a new connection. The name is validated at start
/// (lowercase letters, digits, `_`), and quoted anyway.
pub fn set_search_path(schema: &str) -> String {
    format!("SET search_path TO {}", quote(schema))
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The tables a migration's SQL creates, in order.
pub fn created_tables(sql: &str) -> Vec<String> {
    let words: Vec<String> = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or_default())
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == '(' || c == ';'))
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_matches('"').to_ascii_lowercase())
        .collect();
    let mut out = Vec::new();
    for (i, w) in words.windows(2).enumerate() {
        if w[0] != "create" || w[1] != "table" {
            continue;
        }
        let mut rest = words[i + 2..].iter();
        let mut name = rest.next();
        if name.is_some_and(|n| n == "if") {
            // IF NOT EXISTS
            name = rest.nth(2);
        }
        if let Some(n) = name {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
    }
    out
}

async fn count(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    sql: &str,
    binds: &[&str],
) -> Result<i64, RepoError> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    Ok(q.fetch_one(&mut **tx).await?.try_get::<i64, _>(0)?)
}

async fn table_exists(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    schema: &str,
    table: &str,
) -> Result<bool, RepoError> {
    let sql = "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_catalog.pg_tables \
               WHERE schemaname = $1 AND tablename = $2";
    Ok(count(tx, sql, &[schema, table]).await? > 0)
}

/// Creates the schema when missing and moves an earlier release's tables
/// out of `public`. Runs under an advisory lock, so replicas starting
/// together do it once.
pub async fn prepare(pool: &AnyPool, schema: &str, migrator: &Migrator) -> Result<(), RepoError> {
    let mut tx = pool.begin().await?;
    (&mut *tx)
        .execute("SELECT pg_catalog.pg_advisory_xact_lock(7261626572706572)")
        .await?;
    let sql = "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_catalog.pg_namespace WHERE nspname = $1";
    // Checked first: a role without CREATE on the database can still use a
    // schema its administrator made for it.
    if count(&mut tx, sql, &[schema]).await? == 0 {
        (&mut *tx)
            .execute(format!("CREATE SCHEMA {}", quote(schema)).as_str())
            .await?;
        tracing::info!(
            schema,
            "created the database schema for permaproxy's tables"
        );
    }
    if schema != "public" {
        move_from_public(&mut tx, schema, migrator).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn move_from_public(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    schema: &str,
    migrator: &Migrator,
) -> Result<(), RepoError> {
    const BOOKKEEPING: &str = "_sqlx_migrations";
    if table_exists(tx, schema, BOOKKEEPING).await?
        || !table_exists(tx, "public", BOOKKEEPING).await?
    {
        return Ok(());
    }
    let Some(first) = migrator.iter().next() else {
        return Ok(());
    };
    // Another app's sqlx bookkeeping in public is none of ours.
    let ours = "SELECT CAST(COUNT(*) AS BIGINT) FROM public._sqlx_migrations \
                WHERE version = 1 AND encode(checksum, 'hex') = $1";
    if count(tx, ours, &[&hex::encode(&first.checksum)]).await? == 0 {
        return Ok(());
    }
    let applied: Vec<i64> = sqlx::query("SELECT version FROM public._sqlx_migrations")
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?;
    let mut tables: Vec<String> = migrator
        .iter()
        .filter(|m| applied.contains(&m.version))
        .flat_map(|m| created_tables(&m.sql))
        .collect();
    tables.push(BOOKKEEPING.to_string());
    let mut moved = Vec::new();
    for t in &tables {
        // A table a later migration dropped is simply not there.
        if table_exists(tx, "public", t).await? {
            let sql = format!(
                "ALTER TABLE public.{} SET SCHEMA {}",
                quote(t),
                quote(schema)
            );
            (&mut **tx).execute(sql.as_str()).await?;
            moved.push(t.as_str());
        }
    }
    tracing::info!(schema, tables = ?moved, "moved permaproxy's tables out of public (upgrade)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_created_by_a_migration() {
        let cases: &[(&str, &[&str])] = &[
            (
                "-- CREATE TABLE not_this (x)\nCREATE TABLE hosted_images (\n a TEXT);\nCREATE INDEX i ON hosted_images (a);",
                &["hosted_images"],
            ),
            (
                "create table if not exists \"Meta\"(a int); CREATE TABLE b(x); CREATE TABLE b(y);",
                &["meta", "b"],
            ),
            ("DROP INDEX x; CREATE INDEX y ON t (a);", &[]),
        ];
        for (sql, want) in cases {
            assert_eq!(created_tables(sql), *want, "{sql}");
        }
    }

    #[test]
    fn every_migration_names_its_tables() {
        let m = sqlx::migrate!("./migrations");
        let all: Vec<String> = m.iter().flat_map(|m| created_tables(&m.sql)).collect();
        for t in [
            "hosted_images",
            "deleted_objects",
            "permaproxy_meta",
            "image_views_hourly",
            "predictions",
            "webhook_events",
            "image_variants",
        ] {
            assert!(all.iter().any(|a| a == t), "{t} in {all:?}");
        }
    }

    #[test]
    fn search_path_is_quoted() {
        assert_eq!(
            set_search_path("permaproxy"),
            "SET search_path TO \"permaproxy\""
        );
    }
}
