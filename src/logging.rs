//! Logs through `tracing`, as JSON lines or for people. Pingora logs through
//! `log`; those records are bridged into the same output. The access log has
//! its own cheaper path, [`access`], in the same format.

pub mod access;

use std::fs::File;
use std::sync::Arc;

use crate::config::LogFormat;
use tracing::Level;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, EnvFilter};

pub fn init(format: LogFormat) {
    install(format, None);
}

/// Every log line, access lines included, goes to `file` (without colours);
/// only warnings and errors also reach stderr. `permaproxy demo` uses this so
/// that its story reads alone on the terminal.
pub fn init_to_file(format: LogFormat, file: File) {
    install(format, Some(Arc::new(file)));
}

fn install(format: LogFormat, file: Option<Arc<File>>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Pingora's debug records print whole request and response headers,
    // Authorization and Cookie included, so they stay off whatever RUST_LOG
    // says: credentials must never reach the logs.
    let no_header_dumps =
        filter_fn(|m| !(*m.level() > Level::INFO && m.target().starts_with("pingora")));
    let output = match (&file, format) {
        (None, LogFormat::Json) => fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
        (None, LogFormat::Pretty) => fmt::layer().with_writer(std::io::stderr).boxed(),
        (Some(f), LogFormat::Json) => fmt::layer()
            .with_writer(f.clone())
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
        (Some(f), LogFormat::Pretty) => {
            fmt::layer().with_writer(f.clone()).with_ansi(false).boxed()
        }
    };
    // With the log in a file, warnings and errors still show where the
    // person is looking.
    let warnings = file.is_some().then(|| {
        fmt::layer()
            .with_writer(std::io::stderr.with_max_level(Level::WARN))
            .with_target(false)
    });
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(no_header_dumps)
        .with(output)
        .with(warnings)
        .try_init();
    if result.is_err() {
        // Already initialised (tests): keep the first subscriber.
    }
    // The access log bypasses tracing, so ask the filter once, now, whether
    // RUST_LOG wants it (`warn` or `access=off` turn it off, as before).
    access::start(
        format,
        tracing::enabled!(target: "access", Level::INFO),
        file,
    );
}

/// Writes what is still buffered for the log; call before the process ends.
pub fn flush() {
    access::flush();
}

/// Query parameters whose values look like credentials are replaced, so
/// access logs never carry tokens or signatures.
pub fn redact_path(uri: &http::Uri) -> String {
    let mut out = String::new();
    write_redacted_path(uri, &mut |s| out.push_str(s));
    out
}

/// [`redact_path`] in pieces, handed to `out` without building a string:
/// the access log writes them straight into its buffer.
pub fn write_redacted_path(uri: &http::Uri, out: &mut impl FnMut(&str)) {
    out(uri.path());
    let Some(query) = uri.query() else {
        return;
    };
    out("?");
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out("&");
        }
        match pair.split_once('=') {
            Some((k, _)) if is_secret_name(k) => {
                out(k);
                out("=REDACTED");
            }
            _ => out(pair),
        }
    }
}

/// Whether a parameter name marks a credential: it contains token, key,
/// secret, password, passwd, auth, sig(nature), credential, session or code,
/// in any case. One pass over the name, trying only the words that start
/// with the letter at hand: this runs for every parameter of every access
/// line, and trying every word at every position cost ten times more.
fn is_secret_name(name: &str) -> bool {
    let b = name.as_bytes();
    (0..b.len()).any(|i| {
        let words: &[&str] = match b[i].to_ascii_lowercase() {
            b't' => &["token"],
            b'k' => &["key"],
            // "signature" starts with "sig".
            b's' => &["secret", "sig", "session"],
            b'p' => &["password", "passwd"],
            b'a' => &["auth"],
            b'c' => &["credential", "code"],
            _ => return false,
        };
        let rest = &b[i..];
        words
            .iter()
            .any(|w| rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_tokens() {
        let uri: http::Uri = "/a?x=1&access_token=abc&api_key=def&X-Amz-Signature=zz"
            .parse()
            .unwrap();
        let out = redact_path(&uri);
        assert_eq!(
            out,
            "/a?x=1&access_token=REDACTED&api_key=REDACTED&X-Amz-Signature=REDACTED"
        );
    }

    /// The list as it was first written, matched the obvious way.
    const SECRET_WORDS: [&str; 11] = [
        "token",
        "key",
        "secret",
        "password",
        "passwd",
        "auth",
        "sig",
        "signature",
        "credential",
        "session",
        "code",
    ];

    #[test]
    fn secret_names_match_the_word_list() {
        let reference = |name: &str| {
            let lower = name.to_ascii_lowercase();
            SECRET_WORDS.iter().any(|w| lower.contains(w))
        };
        for name in [
            "",
            "x",
            "page",
            "bench",
            "TOKEN",
            "id_token",
            "apiKey",
            "X-Amz-Signature",
            "sig",
            "si",
            "passw",
            "PassWd",
            "password1",
            "authorization",
            "Credentials",
            "codec",
            "c",
            "sessions",
            "secre",
            "keys",
            "monkey",
            "tok",
            "aut",
            "signal",
            "cod",
        ] {
            assert_eq!(is_secret_name(name), reference(name), "{name:?}");
        }
    }

    #[test]
    fn keeps_harmless_queries_as_they_are() {
        let path = |s: &str| redact_path(&s.parse::<http::Uri>().unwrap());
        assert_eq!(path("/v1/models"), "/v1/models");
        assert_eq!(path("/v1/models?page=2&x"), "/v1/models?page=2&x");
        assert_eq!(path("/a?PassWord=1&k"), "/a?PassWord=REDACTED&k");
    }
}
