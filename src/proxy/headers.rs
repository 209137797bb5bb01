//! Pure header logic for the routes permaproxy forwards itself: what goes
//! upstream, what comes back, and the base of hosted URLs. No I/O here, so
//! every rule has a unit test.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};

/// Connection-scoped headers (RFC 9110 section 7.6.1): each hop sets its own.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
}

/// X-Forwarded-For gains the client address; X-Forwarded-Host is the Host
/// the client asked for.
pub fn forwarded_headers(
    xff: Option<&HeaderValue>,
    host: Option<&HeaderValue>,
    client: Option<IpAddr>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(ip) = client {
        let value = match xff.and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
            _ => ip.to_string(),
        };
        out.push(("x-forwarded-for", value));
    }
    if let Some(h) = host.and_then(|v| v.to_str().ok()) {
        out.push(("x-forwarded-host", h.to_string()));
    }
    out
}

/// The headers sent upstream for a request the proxy forwards itself: the
/// client's, minus hop-by-hop and Host (the client sets those for its own
/// hop), plus the forwarding headers. A rewrite asks for an identity body so
/// the JSON can be read; a plain forward leaves Accept-Encoding alone.
pub fn upstream_request_headers(
    req: &HeaderMap,
    client: Option<IpAddr>,
    for_rewrite: bool,
) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(req.len() + 3);
    for (name, value) in req {
        // Content-Length is the framing of the body this hop sends, which
        // the client may not share (a rewritten webhook, a chunked body
        // read whole): the HTTP client sets it from the body it sends.
        let skip = HOP_BY_HOP.contains(&name.as_str())
            || name == "host"
            || name == "content-length"
            || (for_rewrite && name == "accept-encoding");
        if !skip {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in forwarded_headers(req.get("x-forwarded-for"), req.get("host"), client) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    if !req.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if for_rewrite {
        headers.insert("accept-encoding", HeaderValue::from_static("identity"));
    }
    headers
}

/// Does the request announce a body? (Pingora has already dropped a
/// Content-Length that came with Transfer-Encoding.)
pub fn has_body(req: &HeaderMap) -> bool {
    req.contains_key("transfer-encoding")
        || req
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false)
}

/// `PUBLIC_BASE_URL`, or the scheme and host this request came in on. A
/// Host that is not a plain host[:port] is not trusted into a URL.
pub fn public_base(configured: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(base) = configured {
        return base.to_string();
    }
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("{proto}://{host}")
}

/// A client's request id is kept when it is short and plain (it lands in
/// logs); anything else is replaced by a fresh random one.
pub fn request_id(given: Option<&HeaderValue>) -> String {
    match given.and_then(|v| v.to_str().ok()) {
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id.to_string()
        }
        _ => format!("{:016x}", rand::random::<u64>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn base_url_from_request() {
        let h = map(&[("host", "api.example.com"), ("x-forwarded-proto", "https")]);
        assert_eq!(public_base(None, &h), "https://api.example.com");
        assert_eq!(
            public_base(Some("https://pinned.example"), &h),
            "https://pinned.example"
        );
        let h = map(&[
            ("host", "evil.com/<script>"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(public_base(None, &h), "https://localhost");
        let h = map(&[("host", "a.example:8080"), ("x-forwarded-proto", "gopher")]);
        assert_eq!(public_base(None, &h), "http://a.example:8080");
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let prev = HeaderValue::from_static("1.2.3.4");
        let host = HeaderValue::from_static("api.example.com");
        let out = forwarded_headers(Some(&prev), Some(&host), Some(ip));
        assert_eq!(
            out,
            vec![
                ("x-forwarded-for", "1.2.3.4, 10.0.0.7".to_string()),
                ("x-forwarded-host", "api.example.com".to_string())
            ]
        );
        assert_eq!(forwarded_headers(None, None, Some(ip))[0].1, "10.0.0.7");
        assert!(forwarded_headers(None, None, None).is_empty());
    }

    #[test]
    fn upstream_headers_drop_hop_by_hop_and_keep_the_rest() {
        let req = map(&[
            ("host", "api.example.com"),
            ("connection", "keep-alive, x-secret"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("accept-encoding", "gzip, br"),
            ("x-multi", "one"),
            ("x-multi", "two"),
            ("authorization", "Bearer t"),
            ("content-length", "12"),
        ]);
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let plain = upstream_request_headers(&req, Some(ip), false);
        for gone in [
            "host",
            "connection",
            "transfer-encoding",
            "upgrade",
            "content-length",
        ] {
            assert!(!plain.contains_key(gone), "{gone}");
        }
        assert_eq!(plain.get_all("x-multi").iter().count(), 2);
        assert_eq!(plain["accept-encoding"], "gzip, br");
        assert_eq!(plain["authorization"], "Bearer t");
        assert_eq!(plain["x-forwarded-for"], "10.0.0.7");
        assert_eq!(plain["x-forwarded-proto"], "http");
        let rewrite = upstream_request_headers(&req, Some(ip), true);
        assert_eq!(rewrite["accept-encoding"], "identity");
        let https = map(&[("x-forwarded-proto", "https")]);
        assert_eq!(
            upstream_request_headers(&https, None, false)["x-forwarded-proto"],
            "https"
        );
    }

    #[test]
    fn bodies_and_json() {
        assert!(has_body(&map(&[("transfer-encoding", "chunked")])));
        assert!(has_body(&map(&[("content-length", "12")])));
        assert!(!has_body(&map(&[("content-length", "0")])));
        assert!(!has_body(&map(&[])));
        assert!(is_json(&map(&[(
            "content-type",
            "application/json; charset=utf-8"
        )])));
        assert!(is_json(&map(&[(
            "content-type",
            "application/problem+json"
        )])));
        assert!(!is_json(&map(&[("content-type", "text/html")])));
        assert!(!is_json(&map(&[])));
    }

    #[test]
    fn request_ids_are_kept_only_when_plain() {
        let ok = HeaderValue::from_static("req-123_abc.9:x");
        assert_eq!(request_id(Some(&ok)), "req-123_abc.9:x");
        for bad in ["", "has space", "quote\"", &"x".repeat(65)] {
            let v = HeaderValue::from_str(bad).unwrap();
            let id = request_id(Some(&v));
            assert_eq!(id.len(), 16, "{bad:?} -> {id}");
        }
        assert_eq!(request_id(None).len(), 16);
    }
}
