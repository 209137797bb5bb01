//! Logs through `tracing`, as JSON lines or for people. Pingora logs through
//! `log`; those records are bridged into the same output.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
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
    let n = name.to_ascii_lowercase();
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
    .any(|s| n.contains(s))
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
}
