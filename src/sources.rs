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

/// May a download connect to this address? Every range of IANA's IPv4 and
/// IPv6 special-purpose address registries is refused (private, loopback,
/// link-local, CGNAT, documentation, benchmarking, AS112, AMT, Teredo,
/// ORCHID, reserved, multicast...), and so is IPv6 outside global unicast
/// `2000::/3`. IPv4 hidden in IPv6 (mapped, compatible, 6to4, NAT64) is
/// unwrapped and judged as IPv4. Whole blocks are refused even where the
/// registry marks a few addresses globally reachable: none of them is a
/// place an image is downloaded from.
pub fn address_is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_public(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Embedded::One(v4) => v4_is_public(v4),
            // Local-use NAT64: the translator's prefix length decides where
            // the IPv4 address sits, so every reading must be public.
            Embedded::AnyOf(list) => list.iter().all(|v4| v4_is_public(*v4)),
            Embedded::None => v6_is_public(v6),
        },
    }
}

/// IANA IPv4 Special-Purpose Address Registry, plus multicast (224.0.0.0/4).
const V4_SPECIAL: &[(u32, u8)] = &[
    (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
    (0x0a00_0000, 8),  // 10.0.0.0/8 private
    (0x6440_0000, 10), // 100.64.0.0/10 shared address space (CGNAT)
    (0x7f00_0000, 8),  // 127.0.0.0/8 loopback
    (0xa9fe_0000, 16), // 169.254.0.0/16 link local
    (0xac10_0000, 12), // 172.16.0.0/12 private
    (0xc000_0000, 24), // 192.0.0.0/24 IETF protocol assignments
    (0xc000_0200, 24), // 192.0.2.0/24 TEST-NET-1
    (0xc01f_c400, 24), // 192.31.196.0/24 AS112-v4
    (0xc034_c100, 24), // 192.52.193.0/24 AMT
    (0xc058_6300, 24), // 192.88.99.0/24 deprecated 6to4 relay anycast
    (0xc0a8_0000, 16), // 192.168.0.0/16 private
    (0xc0af_3000, 24), // 192.175.48.0/24 direct delegation AS112
    (0xc612_0000, 15), // 198.18.0.0/15 benchmarking
    (0xc633_6400, 24), // 198.51.100.0/24 TEST-NET-2
    (0xcb00_7100, 24), // 203.0.113.0/24 TEST-NET-3
    (0xe000_0000, 4),  // 224.0.0.0/4 multicast
    (0xf000_0000, 4),  // 240.0.0.0/4 reserved, and 255.255.255.255
];

/// IANA IPv6 Special-Purpose Address Registry (the blocks not unwrapped to
/// IPv4 above), plus multicast and the deprecated site-local block. Most of
/// them are outside 2000::/3 as well; they are listed so the table says
/// what is refused and why.
const V6_SPECIAL: &[(u128, u8)] = &[
    (0, 128),                          // ::/128 unspecified
    (1, 128),                          // ::1/128 loopback
    (0x0100_0000_0000_0000 << 64, 64), // 100::/64 discard-only
    (0x0100_0000_0000_0001 << 64, 64), // 100:0:0:1::/64 dummy prefix
    (0x2001_0000 << 96, 23), // 2001::/23 IETF protocol assignments (Teredo, ORCHID, AMT...)
    (0x2001_0db8 << 96, 32), // 2001:db8::/32 documentation
    (0x2620_004f_8000 << 80, 48), // 2620:4f:8000::/48 direct delegation AS112
    (0x3fff << 112, 20),     // 3fff::/20 documentation
    (0x5f00 << 112, 16),     // 5f00::/16 segment routing SIDs
    (0xfc00 << 112, 7),      // fc00::/7 unique local
    (0xfe80 << 112, 10),     // fe80::/10 link local
    (0xfec0 << 112, 10),     // fec0::/10 site local (deprecated)
    (0xff00 << 112, 8),      // ff00::/8 multicast
];

fn in_block(addr: u128, width: u32, base: u128, len: u8) -> bool {
    let shift = width - u32::from(len);
    // A /0 would shift by the whole width; no entry is one.
    shift >= width || (addr >> shift) == (base >> shift)
}

fn v4_is_public(ip: Ipv4Addr) -> bool {
    let a = u128::from(u32::from(ip));
    !V4_SPECIAL
        .iter()
        .any(|&(base, len)| in_block(a, 32, u128::from(base), len))
}

fn v6_is_public(ip: Ipv6Addr) -> bool {
    let a = u128::from(ip);
    // Only 2000::/3 is allocated for global unicast.
    (a >> 125) == 0b001
        && !V6_SPECIAL
            .iter()
            .any(|&(base, len)| in_block(a, 128, base, len))
}

enum Embedded {
    None,
    One(Ipv4Addr),
    AnyOf(Vec<Ipv4Addr>),
}

/// The IPv4 address inside an RFC 6052 NAT64 address with a prefix of
/// `prefix_bits`: the 32 bits after the prefix, skipping bits 64..72.
fn rfc6052_v4(ip: Ipv6Addr, prefix_bits: usize) -> Ipv4Addr {
    let o = ip.octets();
    let mut v4 = (prefix_bits / 8..16).filter(|&i| i != 8).map(|i| o[i]);
    let mut next = || v4.next().unwrap_or(0);
    Ipv4Addr::new(next(), next(), next(), next())
}

fn embedded_v4(ip: Ipv6Addr) -> Embedded {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Embedded::One(v4); // ::ffff:0:0/96
    }
    if s[0..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Embedded::One(rfc6052_v4(ip, 96)); // IPv4-compatible ::a.b.c.d
    }
    if s[0..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Embedded::One(rfc6052_v4(ip, 96)); // well-known NAT64 64:ff9b::/96
    }
    if s[0..3] == [0x64, 0xff9b, 1] {
        // Local-use NAT64 64:ff9b:1::/48 (RFC 8215), any RFC 6052 length
        // from the /48 down.
        return Embedded::AnyOf([48, 56, 64, 96].map(|p| rfc6052_v4(ip, p)).to_vec());
    }
    if s[0] == 0x2002 {
        return Embedded::One(rfc6052_v4(ip, 16)); // 6to4 2002:a.b.c.d::/48
    }
    Embedded::None
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

    /// Finding 12 (issue 20): Teredo, 100::/64 and other special-purpose
    /// blocks were public. Every block of IANA's IPv4 and IPv6
    /// special-purpose registries (as of 2025), and multicast, is refused at
    /// its first and last address; IPv4 wrapped in IPv6 is judged as IPv4.
    #[test]
    fn finding_12_iana_special_purpose_ranges_are_refused() {
        const IANA: &[&str] = &[
            "0.0.0.0/8",
            "0.0.0.0/32",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.0.0.0/24",
            "192.0.0.0/29",
            "192.0.0.8/32",
            "192.0.0.9/32",
            "192.0.0.10/32",
            "192.0.0.170/32",
            "192.0.0.171/32",
            "192.0.2.0/24",
            "192.31.196.0/24",
            "192.52.193.0/24",
            "192.88.99.0/24",
            "192.168.0.0/16",
            "192.175.48.0/24",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "240.0.0.0/4",
            "255.255.255.255/32",
            "224.0.0.0/4",
            "::1/128",
            "::/128",
            "::ffff:0:0/96",
            "64:ff9b::/96",
            "64:ff9b:1::/48",
            "100::/64",
            "100:0:0:1::/64",
            "2001::/23",
            "2001::/32",
            "2001:1::1/128",
            "2001:1::2/128",
            "2001:1::3/128",
            "2001:2::/48",
            "2001:3::/32",
            "2001:4:112::/48",
            "2001:10::/28",
            "2001:20::/28",
            "2001:30::/28",
            "2001:db8::/32",
            "2002::/16",
            "2620:4f:8000::/48",
            "3fff::/20",
            "5f00::/16",
            "fc00::/7",
            "fe80::/10",
            "ff00::/8",
        ];
        for block in IANA {
            let net: ipnet::IpNet = block.parse().unwrap();
            for ip in [net.network(), net.broadcast()] {
                assert!(!address_is_public(ip), "{ip} (in {block}) must be refused");
            }
        }
        // IPv4 inside IPv6: private stays private, public stays public.
        for (wrapped, public) in [
            ("::ffff:10.0.0.1", false),
            ("::ffff:8.8.8.8", true),
            ("64:ff9b::8.8.8.8", true),
            ("64:ff9b::192.168.0.1", false),
            ("2002:0808:0808::1", true),
            ("2002:c0a8:0001::1", false),
            ("2002:c058:6301::1", false),
            // Local-use NAT64: public only when every RFC 6052 reading is.
            ("64:ff9b:1:808:8:808:808:808", true),
            ("64:ff9b:1:a00:1::808:808", false),
            ("64:ff9b:1::7f00:1", false),
        ] {
            let ip: IpAddr = wrapped.parse().unwrap();
            assert_eq!(address_is_public(ip), public, "{wrapped}");
        }
        // Just outside some blocks: ordinary global addresses.
        for ok in [
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.0",
            "192.0.1.1",
            "192.88.100.1",
            "198.20.0.1",
            "223.255.255.254",
            "2001:200::1",
            "2001:4860:4860::8888",
            "2620:4f:8001::1",
            "3fff:1000::1",
            "2a00:1450::1",
        ] {
            assert!(address_is_public(ok.parse().unwrap()), "{ok} is public");
        }
        // Not global unicast (outside 2000::/3), though in no block above.
        for bad in ["4000::1", "::ffff:0:808:808", "64:ff9b:0:1::1"] {
            assert!(!address_is_public(bad.parse().unwrap()), "{bad}");
        }
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
