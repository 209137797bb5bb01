//! Turning `hosted_images` rows into typed records. Ids are parsed once
//! here, so the rest of the program never re-parses strings.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{ImageRecord, ImageState, RepoError};
use crate::ids::{ImageId, ImageKey, UserId};
use crate::image_format::Format;

/// Every column of `hosted_images`, in the order [`record`] reads them.
pub const COLUMNS: &str = "user_id, image_id, state, format, size_bytes, sha256, width, height, \
     source_url, prediction_id, created_at, stored_at, requested_at, views, attempts, last_error, \
     failed_at, due_at, lease_owner, lease_until, private, owner_trusted";

/// The database keeps i64; sizes and times are never negative here.
pub fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Text from outside (source URLs, prediction ids, error reasons) as a
/// column can hold it: Postgres refuses NUL in text, so a JSON `\u0000`
/// would fail the whole hand-out there and not on SQLite. `%00` is how a
/// URL carries NUL anyway (the download requests the same URL), and keeps
/// labels readable.
pub fn text(s: &str) -> String {
    s.replace('\0', "%00")
}

pub fn opt_text(s: Option<&str>) -> Option<String> {
    s.map(text)
}

pub fn from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn opt_u32(v: Option<i64>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

pub fn key(row: &AnyRow) -> Result<ImageKey, RepoError> {
    let user: String = row.try_get("user_id")?;
    let id: String = row.try_get("image_id")?;
    match (UserId::parse(&user), ImageId::parse(&id)) {
        (Some(u), Some(i)) => Ok(ImageKey::new(u, i)),
        _ => Err(RepoError::Corrupt(format!("bad key {user:?}/{id:?}"))),
    }
}

pub fn record(row: &AnyRow) -> Result<ImageRecord, RepoError> {
    let state: String = row.try_get("state")?;
    let format: String = row.try_get("format")?;
    let key = key(row)?;
    let corrupt = |what: &str| RepoError::Corrupt(format!("{key}: {what}"));
    Ok(ImageRecord {
        state: ImageState::parse(&state).ok_or_else(|| corrupt("state"))?,
        format: Format::from_ext(&format).ok_or_else(|| corrupt("format"))?,
        size: from_db(row.try_get("size_bytes")?),
        sha256: row.try_get("sha256")?,
        width: opt_u32(row.try_get("width")?),
        height: opt_u32(row.try_get("height")?),
        source_url: row.try_get("source_url")?,
        prediction_id: row.try_get("prediction_id")?,
        created_at: from_db(row.try_get("created_at")?),
        stored_at: row.try_get::<Option<i64>, _>("stored_at")?.map(from_db),
        requested_at: from_db(row.try_get("requested_at")?),
        views: from_db(row.try_get("views")?),
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        last_error: row.try_get("last_error")?,
        failed_at: row.try_get::<Option<i64>, _>("failed_at")?.map(from_db),
        due_at: from_db(row.try_get("due_at")?),
        lease_owner: row.try_get("lease_owner")?,
        lease_until: from_db(row.try_get("lease_until")?),
        private: row.try_get::<i64, _>("private")? != 0,
        trusted: row.try_get::<i64, _>("owner_trusted")? != 0,
        key,
    })
}

pub fn records(rows: &[AnyRow]) -> Result<Vec<ImageRecord>, RepoError> {
    rows.iter().map(record).collect()
}
