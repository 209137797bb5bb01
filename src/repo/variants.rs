//! Variant rows (issue 14): `image_variants`, one row per variant made and
//! stored beside its image. A variant row never outlives its image row:
//! it is only written while the image row is locked and stored, and every
//! statement that deletes image rows deletes their variant rows in the
//! same transaction, queueing the variant objects in `deleted_objects`.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::leases::{key_list, KEYS_PER_STATEMENT};
use super::queries::like_prefix;
use super::row::{self, from_db, to_db};
use super::{RepoError, SqlRepo};
use crate::ids::ImageKey;
use crate::image_format::Format;
use crate::store::{variant_dir, variant_path, ImageMeta};

/// Hex digits of the variant's SHA-256 in its object name.
const NAME_DIGEST_LEN: usize = 16;

const COLUMNS: &str =
    "user_id, image_id, variant_key, format, size_bytes, sha256, width, height, created_at";

/// One row of `image_variants`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantRecord {
    /// The image it was made from.
    pub key: ImageKey,
    /// [`crate::variants::Resolved::key`].
    pub variant_key: String,
    pub format: Format,
    pub size: u64,
    pub sha256: String,
    pub width: u32,
    pub height: u32,
    pub created_at: u64,
}

impl VariantRecord {
    /// `{variant_key}-{digest prefix}`: the bytes' digest is in the name, so
    /// an object always holds the bytes its row describes, even when two
    /// replicas make the same variant at once (the loser's object is
    /// deleted, never overwritten under the winner's row).
    pub fn object_name(&self) -> String {
        let digest = &self.sha256[..self.sha256.len().min(NAME_DIGEST_LEN)];
        format!("{}-{digest}", self.variant_key)
    }

    pub fn relative_path(&self) -> String {
        variant_path(&self.key, &self.object_name(), self.format)
    }

    /// What serving needs; `vary_accept` comes from the request.
    pub fn meta(&self, vary_accept: bool) -> ImageMeta {
        ImageMeta {
            key: self.key.clone(),
            format: self.format,
            size: self.size,
            sha256: self.sha256.clone(),
            source_url: None,
            prediction_id: None,
            created_at: self.created_at,
            // Never read for a variant: serving asks its image's flag,
            // which can change after the variant was made.
            private: false,
            variant: Some(self.object_name().into()),
            vary_accept,
        }
    }
}

/// What recording a freshly made variant did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariantPut {
    /// Recorded; `evicted` made room for it (their rows are gone and their
    /// objects queued for deletion, in the same transaction).
    Recorded { evicted: Vec<VariantRecord> },
    /// Another replica (or an earlier make) recorded this variant first:
    /// its row wins.
    Exists(VariantRecord),
    /// The image is gone (or not stored): the variant must not be kept.
    ImageGone,
}

fn record(r: &AnyRow) -> Result<VariantRecord, RepoError> {
    let key = row::key(r)?;
    let format: String = r.try_get("format")?;
    let corrupt = |what: &str| RepoError::Corrupt(format!("variant of {key}: {what}"));
    let variant_key: String = r.try_get("variant_key")?;
    if !crate::store::is_variant_name(&variant_key) {
        return Err(corrupt("variant_key"));
    }
    Ok(VariantRecord {
        variant_key,
        format: Format::from_ext(&format).ok_or_else(|| corrupt("format"))?,
        size: from_db(r.try_get("size_bytes")?),
        sha256: r.try_get("sha256")?,
        width: u32::try_from(r.try_get::<i64, _>("width")?).map_err(|_| corrupt("width"))?,
        height: u32::try_from(r.try_get::<i64, _>("height")?).map_err(|_| corrupt("height"))?,
        created_at: from_db(r.try_get("created_at")?),
        key,
    })
}

async fn queue(tx: &mut Transaction<'static, Any>, rows: &[AnyRow]) -> Result<(), RepoError> {
    let now = to_db(crate::clock::now_ms());
    for r in rows {
        sqlx::query(
            "INSERT INTO deleted_objects (path, queued_at) VALUES ($1, $2) \
             ON CONFLICT (path) DO NOTHING",
        )
        .bind(record(r)?.relative_path())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A variant served, for its last request time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantHit {
    pub key: ImageKey,
    pub variant_key: String,
    pub at: u64,
}

/// Deletes the least recently requested variants of `key` until one more
/// fits under `limit`, queueing their objects; returns them. In the
/// caller's transaction, which holds the image row's lock.
async fn make_room(
    tx: &mut Transaction<'static, Any>,
    key: &ImageKey,
    limit: u64,
) -> Result<Vec<VariantRecord>, RepoError> {
    let n = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM image_variants \
         WHERE user_id = $1 AND image_id = $2",
    )
    .bind(key.user.as_str())
    .bind(key.id.as_str())
    .fetch_one(&mut **tx)
    .await?;
    let over = from_db(n.try_get("n")?)
        .saturating_add(1)
        .saturating_sub(limit);
    if over == 0 {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM image_variants WHERE user_id = $1 AND image_id = $2 \
         ORDER BY requested_at ASC, variant_key ASC LIMIT $3"
    );
    let victims = sqlx::query(&sql)
        .bind(key.user.as_str())
        .bind(key.id.as_str())
        .bind(to_db(over))
        .fetch_all(&mut **tx)
        .await?;
    for r in &victims {
        sqlx::query(
            "DELETE FROM image_variants \
             WHERE user_id = $1 AND image_id = $2 AND variant_key = $3",
        )
        .bind(key.user.as_str())
        .bind(key.id.as_str())
        .bind(r.try_get::<String, _>("variant_key")?)
        .execute(&mut **tx)
        .await?;
    }
    queue(tx, &victims).await?;
    victims.iter().map(record).collect()
}

/// Deletes the variant rows of these images and queues their objects, in
/// the caller's transaction (the one deleting the image rows).
pub(super) async fn delete_of_images(
    tx: &mut Transaction<'static, Any>,
    keys: &[ImageKey],
) -> Result<(), RepoError> {
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let sql = format!(
            "DELETE FROM image_variants WHERE {} RETURNING {COLUMNS}",
            key_list(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for k in chunk {
            q = q.bind(k.user.as_str()).bind(k.id.as_str());
        }
        let rows = q.fetch_all(&mut **tx).await?;
        queue(tx, &rows).await?;
    }
    Ok(())
}

impl SqlRepo {
    pub(super) async fn variant_row(
        &self,
        key: &ImageKey,
        variant_key: &str,
    ) -> Result<Option<VariantRecord>, RepoError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM image_variants \
             WHERE user_id = $1 AND image_id = $2 AND variant_key = $3"
        );
        let r = sqlx::query(&sql)
            .bind(key.user.as_str())
            .bind(key.id.as_str())
            .bind(variant_key)
            .fetch_optional(&self.read)
            .await?;
        r.as_ref().map(record).transpose()
    }

    /// Records a variant while its image is stored. At `limit` variants,
    /// the least recently requested ones make room first (issue 20,
    /// finding 4: a legitimate variant is never refused because others
    /// were made), inside this transaction, which holds the image row's
    /// lock: concurrent makes of one image queue here and never overshoot.
    pub(super) async fn record_variant_row(
        &self,
        v: &VariantRecord,
        limit: u64,
    ) -> Result<VariantPut, RepoError> {
        let mut tx = self.begin().await?;
        // Locks the image row for the rest of this transaction (a no-op
        // UPDATE is the one row lock both databases spell the same way). A
        // delete of the image either committed before (0 rows: the variant
        // is refused) or waits for this commit and then deletes the new
        // variant row with the rest: no variant row outlives its image.
        let locked = sqlx::query(
            "UPDATE hosted_images SET views = views \
             WHERE user_id = $1 AND image_id = $2 AND state = 'stored'",
        )
        .bind(v.key.user.as_str())
        .bind(v.key.id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if locked == 0 {
            return Ok(VariantPut::ImageGone);
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM image_variants \
             WHERE user_id = $1 AND image_id = $2 AND variant_key = $3"
        );
        let first = sqlx::query(&sql)
            .bind(v.key.user.as_str())
            .bind(v.key.id.as_str())
            .bind(v.variant_key.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(r) = first {
            let existing = record(&r)?;
            tx.commit().await?;
            return Ok(VariantPut::Exists(existing));
        }
        let evicted = make_room(&mut tx, &v.key, limit).await?;
        sqlx::query(&format!(
            "INSERT INTO image_variants ({COLUMNS}, requested_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"
        ))
        .bind(v.key.user.as_str())
        .bind(v.key.id.as_str())
        .bind(v.variant_key.as_str())
        .bind(v.format.ext())
        .bind(to_db(v.size))
        .bind(v.sha256.as_str())
        .bind(i64::from(v.width))
        .bind(i64::from(v.height))
        .bind(to_db(v.created_at))
        .execute(&mut *tx)
        .await?;
        // The image may have been deleted and stored again: a delete of
        // the earlier variant at this very path may still be queued, and
        // must not remove the bytes just stored.
        sqlx::query("DELETE FROM deleted_objects WHERE path = $1")
            .bind(v.relative_path())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(VariantPut::Recorded { evicted })
    }

    /// Moves variants' last request times forward (batched, like images').
    pub(super) async fn record_variant_hit_rows(
        &self,
        hits: &[VariantHit],
    ) -> Result<(), RepoError> {
        if hits.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for h in hits {
            sqlx::query(
                "UPDATE image_variants SET requested_at = CASE WHEN requested_at < $4 \
                 THEN $4 ELSE requested_at END \
                 WHERE user_id = $1 AND image_id = $2 AND variant_key = $3",
            )
            .bind(h.key.user.as_str())
            .bind(h.key.id.as_str())
            .bind(h.variant_key.as_str())
            .bind(to_db(h.at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn variant_count_of(&self, key: &ImageKey) -> Result<u64, RepoError> {
        let r = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM image_variants \
             WHERE user_id = $1 AND image_id = $2",
        )
        .bind(key.user.as_str())
        .bind(key.id.as_str())
        .fetch_one(&self.read)
        .await?;
        Ok(from_db(r.try_get("n")?))
    }

    pub(super) async fn forget_variant_row(
        &self,
        key: &ImageKey,
        variant_key: &str,
    ) -> Result<(), RepoError> {
        sqlx::query(
            "DELETE FROM image_variants \
             WHERE user_id = $1 AND image_id = $2 AND variant_key = $3",
        )
        .bind(key.user.as_str())
        .bind(key.id.as_str())
        .bind(variant_key)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Bytes of variants per image, for the images given (those without
    /// variants are absent).
    pub(super) async fn variant_bytes_of(
        &self,
        keys: &[ImageKey],
    ) -> Result<HashMap<ImageKey, u64>, RepoError> {
        let mut out = HashMap::new();
        for chunk in keys.chunks(KEYS_PER_STATEMENT) {
            let sql = format!(
                "SELECT user_id, image_id, CAST(SUM(size_bytes) AS BIGINT) AS bytes \
                 FROM image_variants WHERE {} GROUP BY user_id, image_id",
                key_list(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for k in chunk {
                q = q.bind(k.user.as_str()).bind(k.id.as_str());
            }
            for r in q.fetch_all(&self.read).await? {
                out.insert(row::key(&r)?, from_db(r.try_get("bytes")?));
            }
        }
        Ok(out)
    }

    /// The queued deletions of these images' variant objects. The queue
    /// is short (entries leave as soon as the bytes are gone), so a LIKE
    /// per image is cheap even where it cannot use the index.
    pub(super) async fn queued_variant_paths(
        &self,
        keys: &[ImageKey],
    ) -> Result<Vec<String>, RepoError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(50) {
            let likes: Vec<String> = (1..=chunk.len())
                .map(|i| format!("path LIKE ${i} ESCAPE '\\'"))
                .collect();
            let sql = format!(
                "SELECT path FROM deleted_objects WHERE {}",
                likes.join(" OR ")
            );
            let mut q = sqlx::query(&sql);
            for k in chunk {
                q = q.bind(like_prefix(&format!("{}/", variant_dir(k))));
            }
            for r in q.fetch_all(&self.read).await? {
                out.push(r.try_get("path")?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
