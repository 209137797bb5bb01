//! Which strings are image sources we host (Replicate URLs and `data:` URIs),
//! and which network addresses a download may connect to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One entry of `REPLICATE_HOSTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `host` or `host:port`: matches that host exactly.
    Exact { host: String, port: Option<u16> },
    /// `*.suffix` (optionally with a port): any subdomain of suffix.
    Wildcard { suffix: String, port: Option<u16> },
}

#[derive(Debug, Clone)]
pub struct SourceMatcher {
    patterns: Vec<HostPattern>,
    allow_http: bool,
    /// Derived from `patterns` once, so the rewrite path never rebuilds it.
    needles: Vec<String>,
}

/// What kind of source a JSON string is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Url(url::Url),
    /// A `data:` URI carrying base64 image bytes.
    Data,
}

impl SourceMatcher {
    pub fn parse(list: &str, allow_http: bool) -> Result<SourceMatcher, String> {
        let mut patterns = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let item = item.to_ascii_lowercase();
            let (host, port) = match item.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                    let port = p
                        .parse::<u16>()
                        .map_err(|_| format!("{item:?} has a bad port"))?;
                    (h.to_string(), Some(port))
                }
                _ => (item.clone(), None),
            };
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            if host.is_empty() || host.contains('/') || host.contains('@') {
                return Err(format!("{item:?} is not a host[:port]"));
            }
            match host.strip_prefix("*.") {
                Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
                    patterns.push(HostPattern::Wildcard {
                        suffix: suffix.to_string(),
                        port,
                    })
                }
                Some(_) => return Err(format!("{item:?} is not a valid wildcard")),
                None if host.contains('*') => {
                    return Err(format!("{item:?}: only a leading *. is allowed"))
                }
                None => patterns.push(HostPattern::Exact { host, port }),
            }
        }
        if patterns.is_empty() {
            return Err("must list at least one host".into());
        }
        let mut needles: Vec<String> = patterns
            .iter()
            .map(|p| match p {
                HostPattern::Exact { host, .. } => host.clone(),
                HostPattern::Wildcard { suffix, .. } => suffix.clone(),
            })
            .collect();
        needles.push("data:".to_string());
        Ok(SourceMatcher {
            patterns,
            allow_http,
            needles,
        })
    }

    /// Is this whole string a source? A string that merely contains a URL is
    /// not one.
    pub fn classify(&self, s: &str) -> Option<Source> {
        // Compared as bytes: user text such as "httpé…" has no char boundary
        // at 5, and slicing the str there would panic the request.
        if s.len() > 11 && s.as_bytes()[..5].eq_ignore_ascii_case(b"data:") {
            return is_image_data_uri(s).then_some(Source::Data);
        }
        if s.len() > 2048 || s.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20) {
            return None;
        }
        let url = url::Url::parse(s).ok()?;
        self.url_allowed(&url).then_some(Source::Url(url))
    }

    /// Scheme and host policy, used for sources and for every redirect hop.
    pub fn url_allowed(&self, url: &url::Url) -> bool {
        let scheme_ok = match url.scheme() {
            "https" => true,
            "http" => self.allow_http,
            _ => false,
        };
        if !scheme_ok || !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = url.port_or_known_default();
        let default_port = url.port().is_none();
        self.patterns.iter().any(|p| match p {
            HostPattern::Exact { host: h, port: pp } => {
                *h == host && port_ok(*pp, port, default_port)
            }
            HostPattern::Wildcard { suffix, port: pp } => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                    && port_ok(*pp, port, default_port)
            }
        })
    }

    /// Is `host` named by an exact entry (any port)? The resolver's half of
    /// [`SourceMatcher::private_allowed`]; the port half is checked before.
    pub fn host_listed(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.patterns.iter().any(
            |p| matches!(p, HostPattern::Exact { host: h, .. } if h.eq_ignore_ascii_case(host)),
        )
    }

    /// May this URL reach a private address? Only when its host *and* port
    /// match an exact entry: that is how a source on the same private
    /// network is allowed on purpose, and the entry pins the port, so a
    /// wildcard entry that also matches the host cannot open other ports of
    /// that private machine.
    pub fn private_allowed(&self, url: &url::Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_or_known_default();
        let default_port = url.port().is_none();
        self.patterns.iter().any(|p| match p {
            HostPattern::Exact { host: h, port: pp } => {
                h.eq_ignore_ascii_case(host) && port_ok(*pp, port, default_port)
            }
            HostPattern::Wildcard { .. } => false,
        })
    }

    /// Cheap byte needles: a body holding none of them cannot hold a source,
    /// so it is not parsed at all.
    pub fn needles(&self) -> &[String] {
        &self.needles
    }
}

fn port_ok(pattern: Option<u16>, actual: Option<u16>, is_default: bool) -> bool {
    match pattern {
        Some(p) => actual == Some(p),
        None => is_default,
    }
}

fn is_image_data_uri(s: &str) -> bool {
    let Some(comma) = s.find(',') else {
        return false;
    };
    let header = s[5..comma].to_ascii_lowercase();
    header.ends_with(";base64")
        && (header.starts_with("image/") || header.starts_with("application/octet-stream"))
}

/// May a download connect to this address? Loopback, private, link-local,
/// CGNAT, multicast and reserved space are refused, including IPv4 hidden
/// in IPv6 (mapped, compatible, 6to4 and NAT64 forms).
pub fn address_is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_public(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => v4_is_public(v4),
            None => v6_is_public(v6),
        },
    }
}

fn v4_is_public(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 CGNAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 IETF
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240) // reserved
}

fn v6_is_public(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
}

fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[0..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail); // IPv4-compatible ::a.b.c.d
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        return Some(tail); // NAT64 64:ff9b::/96 and 64:ff9b:1::/48
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> SourceMatcher {
        SourceMatcher::parse(
            "replicate.delivery,*.replicate.delivery,127.0.0.1:9999",
            false,
        )
        .unwrap()
    }

    #[test]
    fn matches_hosts_and_wildcards() {
        let m = m();
        assert!(m
            .classify("https://replicate.delivery/pbxt/a/out-0.png")
            .is_some());
        assert!(m
            .classify("https://pbxt.replicate.delivery/a/out-0.webp")
            .is_some());
        assert!(m.classify("https://evilreplicate.delivery/a.png").is_none());
        assert!(m
            .classify("https://replicate.delivery.evil.com/a.png")
            .is_none());
        assert!(m
            .classify("https://replicate.delivery:8443/a.png")
            .is_none());
        assert!(
            m.classify("http://replicate.delivery/a.png").is_none(),
            "http needs opt-in"
        );
        assert!(m
            .classify("https://user@replicate.delivery/a.png")
            .is_none());
        assert!(m.classify("see https://replicate.delivery/a.png").is_none());
        assert!(m.classify("https://replicate.delivery/a.png ").is_none());
        assert!(m.classify("ftp://replicate.delivery/a.png").is_none());
    }

    #[test]
    fn explicit_port_and_http_opt_in() {
        let m = SourceMatcher::parse("127.0.0.1:9999", true).unwrap();
        assert!(m.classify("http://127.0.0.1:9999/x.png").is_some());
        assert!(m.classify("http://127.0.0.1:9998/x.png").is_none());
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(m.private_allowed(&url("http://127.0.0.1:9999/x")));
        assert!(!m.private_allowed(&url("http://10.0.0.1:9999/x")));
    }

    #[test]
    fn private_addresses_only_on_the_pinned_port() {
        // finding 11: the wildcard allows any subdomain on 8080, and
        // files.internal is listed exactly, but only on the default port.
        let m =
            SourceMatcher::parse("files.internal,*.internal:8080,db.internal:5432", true).unwrap();
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(m.url_allowed(&url("http://files.internal:8080/a.png")));
        assert!(!m.private_allowed(&url("http://files.internal:8080/a.png")));
        assert!(m.private_allowed(&url("http://files.internal/a.png")));
        assert!(m.private_allowed(&url("https://files.internal/a.png")));
        assert!(m.private_allowed(&url("http://db.internal:5432/a.png")));
        assert!(!m.private_allowed(&url("http://db.internal/a.png")));
        assert!(!m.private_allowed(&url("http://x.internal:8080/a.png")));
    }

    #[test]
    fn data_uris() {
        let m = m();
        assert_eq!(
            m.classify("data:image/png;base64,iVBORw0KGgo="),
            Some(Source::Data)
        );
        assert_eq!(
            m.classify("data:application/octet-stream;base64,AAAA"),
            Some(Source::Data)
        );
        assert_eq!(m.classify("data:text/html;base64,AAAA"), None);
        assert_eq!(m.classify("data:image/png,rawtext"), None);
    }

    #[test]
    fn multibyte_text_never_panics() {
        let m = m();
        for s in [
            "httpé and more text",
            "dataé:xxxxxxxxx",
            "httpsé://x.y/zzzzz",
            "ééééééééé",
            "data\u{1F600}xxxxxxx",
        ] {
            assert_eq!(m.classify(s), None, "{s}");
        }
    }

    // Issue 11: classify panicked on user text with a multi-byte character
    // at byte 5. It must never panic, whatever the string.
    mod never_panics {
        use super::*;
        use proptest::prelude::*;

        const PREFIXES: &[&str] = &[
            "",
            "http",
            "https://",
            "http://",
            "data:",
            "data:image/png;base64,",
            "DATA:",
            "https://replicate.delivery/",
            "https://x.replicate.delivery",
            "http://127.0.0.1:9999/",
        ];

        fn matchers() -> [SourceMatcher; 2] {
            [
                m(),
                SourceMatcher::parse("127.0.0.1:9999,[::1]:8443,*.example.com", true).unwrap(),
            ]
        }

        fn check(s: &str) {
            for m in matchers() {
                match m.classify(s) {
                    Some(Source::Url(u)) => assert!(m.url_allowed(&u), "{s:?}"),
                    Some(Source::Data) => assert!(s.len() > 11, "{s:?}"),
                    None => {}
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn on_arbitrary_strings(s in any::<String>()) {
                check(&s);
            }

            #[test]
            fn on_lossy_bytes(b in prop::collection::vec(any::<u8>(), 0..64)) {
                check(&String::from_utf8_lossy(&b));
            }

            /// A source-like prefix with a character spliced in anywhere,
            /// then anything.
            #[test]
            fn on_near_sources(
                prefix in prop::sample::select(PREFIXES),
                at in any::<prop::sample::Index>(),
                c in any::<char>(),
                tail in any::<String>(),
            ) {
                let i = at.index(prefix.len() + 1);
                check(&format!("{}{c}{}{tail}", &prefix[..i], &prefix[i..]));
            }
        }
    }

    #[test]
    fn bad_patterns() {
        assert!(SourceMatcher::parse("", false).is_err());
        assert!(SourceMatcher::parse("a*.b", false).is_err());
        assert!(SourceMatcher::parse("host:notaport", false).is_err());
    }

    #[test]
    fn ssrf_addresses() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(
                !address_is_public(bad.parse().unwrap()),
                "{bad} must be refused"
            );
        }
        for good in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(address_is_public(good.parse().unwrap()), "{good} is public");
        }
    }
}
