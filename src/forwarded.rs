//! Which address is the client, for the per-client rate limit: the
//! socket's, or one taken from `X-Forwarded-For`.
//!
//! Every hop appends the address it received the request from, so only the
//! right end of the header was written by proxies; the left end is whatever
//! the client sent. With `TRUSTED_PROXIES`, the client is the rightmost
//! entry that is not a trusted proxy, as nginx's `real_ip_recursive on`
//! takes it: a client that rotates made-up entries on the left stays the
//! same client.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// How `X-Forwarded-For` is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardedFor {
    /// The socket address is the client; the header is ignored.
    Ignore,
    /// `TRUST_FORWARDED_FOR=true` alone: the leftmost entry, which the
    /// client writes itself (kept for compatibility, warned about).
    Leftmost,
    /// `TRUSTED_PROXIES`: the rightmost entry that is not one of these,
    /// read only when the socket peer is one of them.
    TrustedProxies(Vec<IpNet>),
}

/// What `private` stands for in `TRUSTED_PROXIES`: loopback, RFC 1918,
/// CGNAT, unique local and link-local, the ranges a platform's edge
/// reaches a service from.
const PRIVATE: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// Parses `TRUSTED_PROXIES`: CIDRs, bare addresses, or `private`.
pub fn parse_trusted(list: &str) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item.eq_ignore_ascii_case("private") {
            out.extend(PRIVATE.iter().filter_map(|p| p.parse::<IpNet>().ok()));
            continue;
        }
        let net = item
            .parse::<IpNet>()
            .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                format!("{item:?} is not an address, a CIDR like 10.0.0.0/8, or `private`")
            })?;
        out.push(net.trunc());
    }
    Ok(out)
}

/// IPv4-mapped IPv6 (a dual-stack socket's view of an IPv4 peer) as IPv4,
/// so `10.0.0.0/8` matches it.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn trusted(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

/// One header entry: an address, or an address with a port (`1.2.3.4:80`,
/// `[::1]:80`), as some proxies write them.
fn entry_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .or_else(|_| s.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(canonical)
}

/// The client's address. `headers` are the request's `X-Forwarded-For`
/// values in order (several headers read as one list).
pub fn client_ip(
    socket: Option<IpAddr>,
    headers: &[&str],
    policy: &ForwardedFor,
) -> Option<IpAddr> {
    let socket = socket.map(canonical);
    let entries = || {
        headers
            .iter()
            .flat_map(|h| h.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
    };
    match policy {
        ForwardedFor::Ignore => socket,
        ForwardedFor::Leftmost => entries().next().and_then(entry_ip).or(socket),
        ForwardedFor::TrustedProxies(nets) => {
            let peer = socket?;
            if !trusted(nets, peer) {
                // Anyone else's header is the client's own words.
                return Some(peer);
            }
            let mut client = peer;
            for e in entries().collect::<Vec<_>>().into_iter().rev() {
                // Garbage cannot have come from a trusted hop: stop at the
                // last address a trusted hop vouched for (nginx does too).
                let Some(ip) = entry_ip(e) else { break };
                client = ip;
                if !trusted(nets, ip) {
                    break;
                }
            }
            Some(client)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Finding 11 (issue 20): with TRUST_FORWARDED_FOR the leftmost entry,
    /// which the client writes, named the client.
    #[test]
    fn finding_11_xff_rightmost_untrusted() {
        let edge = ForwardedFor::TrustedProxies(parse_trusted("10.0.0.0/8, 192.0.2.1").unwrap());
        let private = ForwardedFor::TrustedProxies(parse_trusted("private").unwrap());
        let cases: &[(&str, &[&str], &ForwardedFor, &str)] = &[
            // socket, headers, policy, client
            ("10.0.0.2", &["203.0.113.7"], &edge, "203.0.113.7"),
            // Made-up entries on the left change nothing.
            ("10.0.0.2", &["1.1.1.1, 203.0.113.7"], &edge, "203.0.113.7"),
            (
                "10.0.0.2",
                &["9.9.9.9, 8.8.8.8, 203.0.113.7"],
                &edge,
                "203.0.113.7",
            ),
            // Trusted hops on the right are skipped.
            (
                "10.0.0.2",
                &["1.1.1.1, 203.0.113.7, 10.0.0.9, 192.0.2.1"],
                &edge,
                "203.0.113.7",
            ),
            // Several headers are one list, in order.
            (
                "10.0.0.2",
                &["1.1.1.1", "203.0.113.7, 10.1.1.1"],
                &edge,
                "203.0.113.7",
            ),
            // A peer that is not trusted: its header is ignored.
            ("198.51.100.4", &["203.0.113.7"], &edge, "198.51.100.4"),
            // No header, or only trusted entries: the leftmost trusted one.
            ("10.0.0.2", &[], &edge, "10.0.0.2"),
            ("10.0.0.2", &["10.0.0.3, 10.0.0.4"], &edge, "10.0.0.3"),
            // Garbage stops the walk at the last vouched-for address.
            (
                "10.0.0.2",
                &["203.0.113.7, garbage, 10.0.0.5"],
                &edge,
                "10.0.0.5",
            ),
            ("10.0.0.2", &["garbage"], &edge, "10.0.0.2"),
            // Ports and brackets; IPv4-mapped peers match IPv4 ranges.
            (
                "::ffff:10.0.0.2",
                &["[2001:db8::1]:443"],
                &edge,
                "2001:db8::1",
            ),
            ("10.0.0.2", &["203.0.113.7:5555"], &edge, "203.0.113.7"),
            (
                "fd00::1",
                &["1.1.1.1, 2001:db8::9"],
                &private,
                "2001:db8::9",
            ),
            (
                "100.64.3.4",
                &["6.6.6.6, 203.0.113.7"],
                &private,
                "203.0.113.7",
            ),
            // Today's meanings: the socket, or the leftmost entry.
            (
                "10.0.0.2",
                &["1.1.1.1, 203.0.113.7"],
                &ForwardedFor::Ignore,
                "10.0.0.2",
            ),
            (
                "10.0.0.2",
                &["1.1.1.1, 203.0.113.7"],
                &ForwardedFor::Leftmost,
                "1.1.1.1",
            ),
            (
                "10.0.0.2",
                &["garbage"],
                &ForwardedFor::Leftmost,
                "10.0.0.2",
            ),
        ];
        for (socket, headers, policy, want) in cases {
            assert_eq!(
                client_ip(Some(ip(socket)), headers, policy),
                Some(ip(want)),
                "{socket} {headers:?} {policy:?}"
            );
        }
        assert_eq!(client_ip(None, &["1.1.1.1"], &edge), None);
    }

    #[test]
    fn trusted_lists() {
        assert_eq!(parse_trusted("").unwrap(), vec![]);
        let l = parse_trusted("10.1.2.3/8, 2001:db8::1, private").unwrap();
        assert_eq!(l[0], "10.0.0.0/8".parse::<IpNet>().unwrap());
        assert_eq!(l[1], "2001:db8::1/128".parse::<IpNet>().unwrap());
        assert_eq!(l.len(), 2 + PRIVATE.len());
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.0/8/8", "1.2.3"] {
            assert!(parse_trusted(bad).is_err(), "{bad}");
        }
    }
}
