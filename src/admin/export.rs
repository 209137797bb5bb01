//! `GET /admin/users/{user}/export.zip`: a user's originals and a
//! `manifest.json`, as one zip built while it is sent. No temporary file:
//! the zip writer streams (data descriptors instead of seeking back), its
//! output is handed to the response in chunks through a bounded channel,
//! so memory stays at a few chunks whatever the user holds. The manifest,
//! which comes last and lists every image, is spooled to an anonymous
//! temporary file in the staging folder as the images go out, then copied
//! into the zip: memory is bounded in the number of images too (issue 20,
//! finding 15). Entries are stored, not deflated: the images are compressed
//! already.

use std::io::{BufWriter, Read, Seek, Write};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue};
use serde_json::json;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::api::{image_json, parse_user};
use super::respond::{reply, ApiFail};
use super::{auth, ui, Ctx};
use crate::error::ApiError;
use crate::ids::{ImageId, UserId};
use crate::repo::ImageState;

/// Rows read per page while walking the user's images.
const PAGE: u32 = 100;
/// Output is sent on once this much has accumulated.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the writer and the connection.
const IN_FLIGHT: usize = 4;

type Chunks = mpsc::Sender<Result<Bytes, std::io::Error>>;

fn bearer_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The bearer token (scripts) or a session (the page's button).
pub async fn export(
    State(ctx): State<Arc<Ctx>>,
    Path(user): Path<String>,
    parts: http::request::Parts,
) -> Response {
    let headers = &parts.headers;
    if let Some(e) = ctx.throttled(parts.extensions.get()) {
        return ApiFail(e).into_response();
    }
    if let Err(e) = auth::check_bearer(ctx.keys.as_ref(), bearer_of(headers)) {
        if matches!(e, ApiError::AdminDisabled) || ui::session_of(&ctx, headers).is_none() {
            return ApiFail(ctx.refusal(parts.extensions.get(), e)).into_response();
        }
    }
    let user = match parse_user(&user) {
        Ok(u) => u,
        Err(e) => return ApiFail(e).into_response(),
    };
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    tokio::spawn(write_zip(ctx, user.clone(), tx));
    let mut r = reply(200, "application/zip", Body::from_stream(rx));
    let disposition = format!("attachment; filename=\"{user}-images.zip\"");
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// What the zip writer writes into; drained into the channel as it fills.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    /// Sends what has accumulated once it is at least `min` bytes. An
    /// error means the client went away.
    async fn drain(&self, tx: &mut Chunks, min: usize) -> Result<(), String> {
        let chunk = {
            let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if buf.len() < min.max(1) {
                return Ok(());
            }
            std::mem::take(&mut *buf)
        };
        tx.send(Ok(Bytes::from(chunk)))
            .await
            .map_err(|_| "the client went away".to_string())
    }
}

async fn write_zip(ctx: Arc<Ctx>, user: UserId, mut tx: Chunks) {
    if let Err(e) = zip_into(&ctx, &user, &mut tx).await {
        tracing::warn!(%user, error = %e, "zip export stopped");
        // The response is cut short with an error, so the client sees a
        // failed download rather than a zip that looks whole.
        let _ = tx.send(Err(std::io::Error::other(e))).await;
    }
}

async fn zip_into(ctx: &Ctx, user: &UserId, tx: &mut Chunks) -> Result<(), String> {
    let sink = Sink::default();
    let mut zip = ZipWriter::new_stream(sink.clone());
    let staging = crate::hosting::staging_dir(ctx.hosting.cfg());
    let spool = tempfile::tempfile_in(&staging).map_err(|e| format!("manifest spool: {e}"))?;
    let mut manifest = Manifest {
        spool: BufWriter::new(spool),
        count: 0,
    };
    let mut after: Option<ImageId> = None;
    let z = |e: zip::result::ZipError| e.to_string();
    let io = |e: std::io::Error| e.to_string();
    loop {
        let rows = ctx
            .hosting
            .user_images(user, after.as_ref(), PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let full = rows.len() == PAGE as usize;
        after = rows.last().map(|r| r.key.id.clone());
        for r in rows.iter().filter(|r| r.state == ImageState::Stored) {
            let Some(meta) = r.stored_meta() else {
                continue;
            };
            let mut stream = match ctx.hosting.open_stream(&meta, None).await {
                Ok(s) => s,
                // Deleted since the page was read: leave it out.
                Err(crate::store::StoreError::NotFound) => continue,
                Err(e) => return Err(e.to_string()),
            };
            let file = format!("{}.{}", r.key.id, r.format.ext());
            let options = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Stored)
                .last_modified_time(zip_time(r.stored_at.unwrap_or(r.created_at)));
            zip.start_file(file.as_str(), options).map_err(z)?;
            while let Some(chunk) = stream.next().await {
                zip.write_all(&chunk.map_err(io)?).map_err(io)?;
                sink.drain(tx, CHUNK).await?;
            }
            let mut entry = image_json(ctx, r);
            entry["file"] = json!(file);
            entry["hosted_url"] = entry["url"].clone();
            manifest.push(&entry).map_err(io)?;
        }
        if !full {
            break;
        }
    }
    zip.start_file(
        "manifest.json",
        SimpleFileOptions::default().compression_method(CompressionMethod::Stored),
    )
    .map_err(z)?;
    let head = json!({
        "user_id": user.as_str(),
        "exported_at": crate::clock::rfc3339(crate::clock::now_ms()),
        "count": manifest.count,
    });
    // The head object, opened up to take the "images" array after it.
    let head = serde_json::to_string_pretty(&head).map_err(|e| e.to_string())?;
    let head = head.trim_end().trim_end_matches('}').trim_end();
    zip.write_all(format!("{head},\n  \"images\": [").as_bytes())
        .map_err(io)?;
    let mut spool = manifest.spool.into_inner().map_err(|e| e.to_string())?;
    spool.rewind().map_err(io)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = spool.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        zip.write_all(&buf[..n]).map_err(io)?;
        sink.drain(tx, CHUNK).await?;
    }
    zip.write_all(b"\n  ]\n}\n").map_err(io)?;
    zip.finish().map_err(z)?;
    sink.drain(tx, 0).await
}

/// The manifest's image entries, spooled to a file as they are made.
struct Manifest {
    spool: BufWriter<std::fs::File>,
    count: u64,
}

impl Manifest {
    fn push(&mut self, entry: &serde_json::Value) -> std::io::Result<()> {
        let sep: &[u8] = if self.count == 0 {
            b"\n    "
        } else {
            b",\n    "
        };
        self.spool.write_all(sep)?;
        serde_json::to_writer(&mut self.spool, entry)?;
        self.count += 1;
        Ok(())
    }
}

/// The zip's DOS time (UTC) for a Unix millisecond; 1980 for anything the
/// format cannot hold.
fn zip_time(ms: u64) -> zip::DateTime {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = crate::clock::civil_from_days(days);
    let fields = (
        u16::try_from(y).ok(),
        u8::try_from(m).ok(),
        u8::try_from(d).ok(),
    );
    if let (Some(y), Some(m), Some(d)) = fields {
        let (hh, mm, ss) = ((rem / 3600) as u8, (rem / 60 % 60) as u8, (rem % 60) as u8);
        if let Ok(t) = zip::DateTime::from_date_and_time(y, m, d, hh, mm, ss) {
            return t;
        }
    }
    zip::DateTime::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(crate::clock::civil_from_days(0), (1970, 1, 1));
        assert_eq!(crate::clock::civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(crate::clock::civil_from_days(11_016), (2000, 2, 29));
        let t = zip_time(1_704_067_200_000 + 3_661_000); // 2024-01-01 01:01:01
        assert_eq!(
            (t.year(), t.month(), t.day(), t.hour(), t.minute()),
            (2024, 1, 1, 1, 1)
        );
        assert_eq!(zip_time(0), zip::DateTime::default(), "before 1980");
    }

    #[tokio::test]
    async fn the_sink_sends_chunks_once_full() {
        let sink = Sink::default();
        let (mut tx, mut rx) = mpsc::channel(4);
        let mut w = sink.clone();
        w.write_all(&[1; 10]).unwrap();
        sink.drain(&mut tx, 64).await.unwrap();
        assert!(rx.try_recv().is_err(), "nothing sent below the threshold");
        sink.drain(&mut tx, 0).await.unwrap();
        let got = rx.try_recv().unwrap().unwrap();
        assert_eq!(got.len(), 10);
    }
}
