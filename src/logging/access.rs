//! The access log: one preformatted line per request, handed to a writer
//! thread in batches.
//!
//! Going through `tracing`'s JSON formatter cost about 19k instructions per
//! request (field-by-field serialisation, timestamp formatting) plus a
//! `write` to stderr on the worker thread: +21% on a pass-through request.
//! Here a line is formatted straight into a shared buffer (no allocation),
//! and a writer thread sends what gathered with one `write` every few
//! milliseconds. Workers never wait on stderr: if it stalls, lines beyond a
//! bound are dropped and counted, not queued without limit.
//!
//! The lines look exactly as `tracing` printed them (target `access`,
//! message `request`, the same fields), and `RUST_LOG` still decides whether
//! they are written: [`super::init`] asks the installed filter once.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::LogFormat;

/// How long the writer lets lines gather before one `write`: long enough to
/// batch hundreds of lines under load, short enough that a line shows up
/// when a person is watching.
const GATHER: Duration = Duration::from_millis(10);
/// Lines waiting beyond this are dropped (and counted): a stalled stderr must
/// not turn into unbounded memory or blocked requests.
const MAX_PENDING: usize = 4 << 20;

/// One request, as the access line reports it.
pub struct Access<'a> {
    pub method: &'a str,
    pub uri: &'a http::Uri,
    pub status: u16,
    pub duration: Duration,
    pub bytes: usize,
    pub route: &'a str,
    pub tier: &'a str,
    /// Plain characters only (`proxy::headers::request_id`), still escaped.
    pub request_id: &'a str,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static LOG: OnceLock<AccessLog> = OnceLock::new();

struct AccessLog {
    style: Style,
    /// Where lines go; stderr when `None`.
    file: Option<Arc<File>>,
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Held while a batch is taken and written, so a final [`flush`] cannot
    /// overtake a batch the writer thread is still writing.
    writing: Mutex<()>,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    writer_idle: bool,
    dropped: u64,
    clock: Clock,
}

/// `YYYY-MM-DDTHH:MM:SS` of the last second a line was written in: under
/// load, thousands of lines share it, and formatting the date was a quarter
/// of a line's cost.
#[derive(Default)]
struct Clock {
    secs: u64,
    text: [u8; 19],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Json,
    Pretty { ansi: bool },
}

/// Starts the writer; `enabled` is what the log filter said about
/// `target: "access"` at INFO; lines go to `file`, or to stderr without one.
/// The first call wins, as with `tracing`.
pub(super) fn start(format: LogFormat, enabled: bool, file: Option<Arc<File>>) {
    let style = match format {
        LogFormat::Json => Style::Json,
        // tracing's default: colours unless NO_COLOR is set, and never in a
        // file.
        LogFormat::Pretty => Style::Pretty {
            ansi: file.is_none() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        },
    };
    let mut first = false;
    LOG.get_or_init(|| {
        first = true;
        AccessLog {
            style,
            file,
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            writing: Mutex::new(()),
        }
    });
    if !first {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(writer_loop);
    // Without a writer thread, lines would only pile up until the bound.
    ENABLED.store(enabled && spawned.is_ok(), Ordering::Relaxed);
}

/// Whether access lines are wanted: one relaxed load, so a request whose
/// line is filtered out pays nothing else.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Appends one access line. Never blocks on the output.
pub fn record(a: &Access<'_>) {
    let Some(log) = LOG.get() else {
        return;
    };
    let now = SystemTime::now();
    let wake = {
        let mut p = log.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.buf.len() >= MAX_PENDING {
            p.dropped += 1;
            return;
        }
        let p = &mut *p;
        format_line(&mut p.buf, &mut p.clock, log.style, now, a);
        std::mem::take(&mut p.writer_idle)
    };
    if wake {
        log.wake.notify_one();
    }
}

/// Writes whatever is pending now; for the end of the process.
pub fn flush() {
    if let Some(log) = LOG.get() {
        let mut batch = Vec::new();
        write_batch(log, &mut batch);
    }
}

fn writer_loop() {
    let Some(log) = LOG.get() else {
        return;
    };
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        {
            let mut p = log.pending.lock().unwrap_or_else(|e| e.into_inner());
            while p.buf.is_empty() && p.dropped == 0 {
                p.writer_idle = true;
                p = log.wake.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            p.writer_idle = false;
        }
        std::thread::sleep(GATHER);
        write_batch(log, &mut batch);
    }
}

/// Swaps the pending lines out (the lock is held for a pointer swap, not for
/// the write) and writes them with one call.
fn write_batch(log: &AccessLog, batch: &mut Vec<u8>) {
    let _order = log.writing.lock().unwrap_or_else(|e| e.into_inner());
    let dropped = {
        let mut p = log.pending.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut p.buf, batch);
        std::mem::take(&mut p.dropped)
    };
    if dropped > 0 {
        tracing::warn!(dropped, "access log fell behind its output; lines dropped");
    }
    if !batch.is_empty() {
        // Nothing better to do with a failed log write than to go on.
        let _ = match &log.file {
            Some(f) => (&**f).write_all(batch),
            None => std::io::stderr().lock().write_all(batch),
        };
    }
    batch.clear();
    // A burst must not pin a large buffer for the life of the process.
    if batch.capacity() > 1 << 20 {
        batch.shrink_to(64 * 1024);
    }
}

fn format_line(
    out: &mut Vec<u8>,
    clock: &mut Clock,
    style: Style,
    now: SystemTime,
    a: &Access<'_>,
) {
    match style {
        Style::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(out, clock, now);
            out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":\"");
            // A method is an HTTP token (no quote, backslash or control
            // character), and route and tier are our own names: nothing to
            // escape. Only the path comes from the client as it is.
            out.extend_from_slice(a.method.as_bytes());
            out.extend_from_slice(b"\",\"path\":\"");
            super::write_redacted_path(a.uri, &mut |s| json_str(out, s));
            out.extend_from_slice(b"\",\"status\":");
            uint(out, a.status as u64);
            out.extend_from_slice(b",\"duration_ms\":");
            millis(out, a.duration);
            out.extend_from_slice(b",\"bytes\":");
            uint(out, a.bytes as u64);
            out.extend_from_slice(b",\"route\":\"");
            out.extend_from_slice(a.route.as_bytes());
            out.extend_from_slice(b"\",\"tier\":\"");
            out.extend_from_slice(a.tier.as_bytes());
            out.extend_from_slice(b"\",\"request_id\":\"");
            json_str(out, a.request_id);
            out.extend_from_slice(b"\",\"target\":\"access\"}\n");
        }
        Style::Pretty { ansi } => {
            // The layout of tracing's default formatter, colours included.
            let (dim, end, italic) = if ansi {
                ("\x1b[2m", "\x1b[0m", "\x1b[3m")
            } else {
                ("", "", "")
            };
            let field = |out: &mut Vec<u8>, name: &str| {
                out.push(b' ');
                out.extend_from_slice(italic.as_bytes());
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(end.as_bytes());
                out.extend_from_slice(dim.as_bytes());
                out.push(b'=');
                out.extend_from_slice(end.as_bytes());
            };
            out.extend_from_slice(dim.as_bytes());
            timestamp(out, clock, now);
            out.extend_from_slice(end.as_bytes());
            out.push(b' ');
            out.extend_from_slice(if ansi {
                b"\x1b[32m INFO\x1b[0m"
            } else {
                b" INFO"
            });
            out.push(b' ');
            out.extend_from_slice(dim.as_bytes());
            out.extend_from_slice(b"access");
            out.extend_from_slice(end.as_bytes());
            out.extend_from_slice(dim.as_bytes());
            out.push(b':');
            out.extend_from_slice(end.as_bytes());
            out.extend_from_slice(b" request");
            field(out, "method");
            out.extend_from_slice(a.method.as_bytes());
            field(out, "path");
            super::write_redacted_path(a.uri, &mut |s| out.extend_from_slice(s.as_bytes()));
            field(out, "status");
            uint(out, a.status as u64);
            field(out, "duration_ms");
            millis(out, a.duration);
            field(out, "bytes");
            uint(out, a.bytes as u64);
            field(out, "route");
            quoted(out, a.route);
            field(out, "tier");
            quoted(out, a.tier);
            field(out, "request_id");
            for c in a.request_id.escape_debug() {
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
            out.push(b'\n');
        }
    }
}

/// RFC 3339 in UTC with microseconds, as tracing prints it:
/// `2026-11-25T14:42:07.123456Z`.
fn timestamp(out: &mut Vec<u8>, clock: &mut Clock, now: SystemTime) {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    if clock.secs != secs || clock.text[0] == 0 {
        let mut text = Vec::with_capacity(19);
        let (y, m, day) = crate::clock::civil_from_days((secs / 86_400) as i64);
        let tod = secs % 86_400;
        uint_padded(&mut text, y.clamp(0, 9999) as u64, 4);
        text.push(b'-');
        uint_padded(&mut text, m as u64, 2);
        text.push(b'-');
        uint_padded(&mut text, day as u64, 2);
        text.push(b'T');
        uint_padded(&mut text, tod / 3600, 2);
        text.push(b':');
        uint_padded(&mut text, tod / 60 % 60, 2);
        text.push(b':');
        uint_padded(&mut text, tod % 60, 2);
        clock.text.copy_from_slice(&text);
        clock.secs = secs;
    }
    out.extend_from_slice(&clock.text);
    out.push(b'.');
    uint_padded(out, d.subsec_micros() as u64, 6);
    out.push(b'Z');
}

/// Milliseconds with microsecond precision (`12.345`): a JSON number, and
/// integer formatting instead of a float's shortest representation.
fn millis(out: &mut Vec<u8>, d: Duration) {
    let us = d.as_micros().min(u64::MAX as u128) as u64;
    uint(out, us / 1000);
    out.push(b'.');
    uint_padded(out, us % 1000, 3);
}

fn uint(out: &mut Vec<u8>, n: u64) {
    uint_padded(out, n, 1);
}

fn uint_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut tmp = [b'0'; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i.min(tmp.len() - width)..]);
}

/// The inside of a JSON string: quotes, backslashes and control characters
/// escaped; everything else (valid UTF-8) as it is.
fn json_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
}

/// A string field as tracing's default formatter shows it (`Debug`).
fn quoted(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        if c == '"' || c == '\\' || c.is_control() {
            out.extend(c.escape_debug().to_string().bytes());
        } else {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(style: Style, uri: &str) -> String {
        let uri: http::Uri = uri.parse().unwrap();
        let a = Access {
            method: "GET",
            uri: &uri,
            status: 200,
            duration: Duration::from_micros(12_345),
            bytes: 59,
            route: "passthrough",
            tier: "-",
            request_id: "req-1",
        };
        let mut out = Vec::new();
        let t = UNIX_EPOCH + Duration::new(1_795_617_727, 123_456_789);
        format_line(&mut out, &mut Clock::default(), style, t, &a);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_line_has_the_fields_tracing_wrote() {
        let l = line(Style::Json, "/v1/models?x=1&access_token=abc");
        assert_eq!(
            l,
            "{\"timestamp\":\"2026-11-25T14:42:07.123456Z\",\"level\":\"INFO\",\
             \"message\":\"request\",\"method\":\"GET\",\
             \"path\":\"/v1/models?x=1&access_token=REDACTED\",\"status\":200,\
             \"duration_ms\":12.345,\"bytes\":59,\"route\":\"passthrough\",\
             \"tier\":\"-\",\"request_id\":\"req-1\",\"target\":\"access\"}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["duration_ms"].as_f64(), Some(12.345));
    }

    #[test]
    fn pretty_line_reads_like_tracing() {
        let l = line(Style::Pretty { ansi: false }, "/a");
        assert_eq!(
            l,
            "2026-11-25T14:42:07.123456Z  INFO access: request method=GET path=/a \
             status=200 duration_ms=12.345 bytes=59 route=\"passthrough\" tier=\"-\" request_id=req-1\n"
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        json_str(&mut out, "a\"b\\c\u{1}d\né");
        assert_eq!(String::from_utf8(out).unwrap(), "a\\\"b\\\\c\\u0001d\\né");
    }

    #[test]
    fn dates_follow_the_calendar() {
        let mut clock = Clock::default();
        let mut ts = |secs: u64| {
            let mut out = Vec::new();
            timestamp(&mut out, &mut clock, UNIX_EPOCH + Duration::from_secs(secs));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(ts(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(ts(1), "1970-01-01T00:00:01.000000Z");
        assert_eq!(ts(1), "1970-01-01T00:00:01.000000Z");
        assert_eq!(ts(951_782_400), "2000-02-29T00:00:00.000000Z");
        assert_eq!(ts(4_107_542_399), "2100-02-28T23:59:59.000000Z");
    }

    #[test]
    fn millis_keep_microseconds() {
        let mut out = Vec::new();
        millis(&mut out, Duration::from_nanos(1_234_567_890));
        assert_eq!(out, b"1234.567");
        out.clear();
        millis(&mut out, Duration::from_nanos(999));
        assert_eq!(out, b"0.000");
    }
}
