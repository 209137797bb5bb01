//! Logs through `tracing`, as JSON lines or for people. Pingora logs through
//! `log`; those records are bridged into the same output.

use crate::config::LogFormat;
use tracing::Level;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, EnvFilter};

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Pingora's debug records print whole request and response headers,
    // Authorization and Cookie included, so they stay off whatever RUST_LOG
    // says: credentials must never reach the logs.
    let no_header_dumps =
        filter_fn(|m| !(*m.level() > Level::INFO && m.target().starts_with("pingora")));
    let output = fmt::layer().with_writer(std::io::stderr);
    let output = match format {
        LogFormat::Json => output
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
        LogFormat::Pretty => output.boxed(),
    };
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(no_header_dumps)
        .with(output)
        .try_init();
    if result.is_err() {
        // Already initialised (tests): keep the first subscriber.
    }
}

/// Query parameters whose values look like credentials are replaced, so
/// access logs never carry tokens or signatures.
pub fn redact_path(uri: &http::Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_string();
    };
    let secret = |pair: &str| pair.split_once('=').is_some_and(|(k, _)| is_secret_name(k));
    if !query.split('&').any(secret) {
        // The common case, on every access line: nothing to hide, so no
        // rebuilding (this used to allocate per parameter, per request).
        return format!("{path}?{query}");
    }
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_name(k) => format!("{k}=REDACTED"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
}

fn is_secret_name(name: &str) -> bool {
    [
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
    ]
    .iter()
    .any(|word| contains_ignore_ascii_case(name, word))
}

/// `name.to_ascii_lowercase().contains(word)` for a lowercase `word`,
/// without the allocation.
fn contains_ignore_ascii_case(name: &str, word: &str) -> bool {
    name.as_bytes()
        .windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
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

    #[test]
    fn keeps_harmless_queries_as_they_are() {
        let path = |s: &str| redact_path(&s.parse::<http::Uri>().unwrap());
        assert_eq!(path("/v1/models"), "/v1/models");
        assert_eq!(path("/v1/models?page=2&x"), "/v1/models?page=2&x");
        assert_eq!(path("/a?PassWord=1&k"), "/a?PassWord=REDACTED&k");
    }
}
