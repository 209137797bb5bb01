//! Signed hosted URLs: `{path}?{params}&exp=UNIX&sig=SIG`, where SIG is the
//! URL-safe base64 (unpadded) of HMAC-SHA256(key, the path plus the query
//! string up to and excluding `&sig=`). Keys are UTF-8 secrets, as
//! Cloudflare Images uses them; the first signs, every key verifies, so
//! keys rotate without downtime. Pure: the caller passes `now`.
//!
//! The query is parsed, never edited as text: `sig` must appear exactly
//! once, as the last parameter, and the message is rebuilt from the
//! parameters before it (thumbor's signature check was once bypassed
//! because it string-replaced the signature out, GHSA-mw3h-qjxj-6xg9).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shorter secrets are refused at start.
pub const MIN_KEY_LEN: usize = 32;

#[derive(Clone)]
pub struct Signer {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} keys, redacted)", self.keys.len())
    }
}

/// What a request's query says about its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No `sig` (and no `exp`).
    Unsigned,
    /// A valid signature; `exp` when the URL expires.
    Valid { exp: Option<u64> },
    /// Validly signed, but past its `exp`.
    Expired,
    /// Tampered, wrong key, malformed, or `sig` not last.
    Invalid,
}

impl Signer {
    /// `keys`: the comma list of IMAGE_SIGNING_KEYS, first one signing.
    pub fn parse(list: &str) -> Result<Signer, String> {
        let keys: Vec<Vec<u8>> = list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| k.as_bytes().to_vec())
            .collect();
        if keys.is_empty() {
            return Err("must list at least one key".into());
        }
        if let Some((i, _)) = keys.iter().enumerate().find(|(_, k)| k.len() < MIN_KEY_LEN) {
            return Err(format!(
                "key {} is shorter than {MIN_KEY_LEN} characters",
                i + 1
            ));
        }
        Ok(Signer { keys })
    }

    fn mac(key: &[u8], message: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC-SHA256 accepts any key length"));
        mac.update(message.as_bytes());
        mac
    }

    /// The query string for `path`: `params` (already canonical, as
    /// `name=value` pairs), then `exp` when given, then `sig`.
    pub fn sign(&self, path: &str, params: &[String], exp: Option<u64>) -> String {
        let mut pairs: Vec<String> = params.to_vec();
        if let Some(exp) = exp {
            pairs.push(format!("exp={exp}"));
        }
        let signed = pairs.join("&");
        let tag = Self::mac(&self.keys[0], &message(path, &signed))
            .finalize()
            .into_bytes();
        let sig = format!("sig={}", URL_SAFE_NO_PAD.encode(tag));
        if signed.is_empty() {
            sig
        } else {
            format!("{signed}&{sig}")
        }
    }

    /// Checks a request's query (`None`: no query at all).
    pub fn verify(&self, path: &str, query: Option<&str>, now: u64) -> Verdict {
        let Some(q) = query.filter(|q| !q.is_empty()) else {
            return Verdict::Unsigned;
        };
        let pairs: Vec<&str> = q.split('&').collect();
        fn name<'q>(p: &&'q str) -> &'q str {
            p.split_once('=').map_or(*p, |(n, _)| n)
        }
        let sigs = pairs.iter().filter(|p| name(p) == "sig").count();
        let exps: Vec<&str> = pairs
            .iter()
            .filter(|p| name(p) == "exp")
            .map(|p| p.split_once('=').map_or("", |(_, v)| v))
            .collect();
        if sigs == 0 {
            return if exps.is_empty() {
                Verdict::Unsigned
            } else {
                Verdict::Invalid
            };
        }
        let last = pairs[pairs.len() - 1];
        if sigs > 1 || name(&last) != "sig" || exps.len() > 1 {
            return Verdict::Invalid;
        }
        let Some(tag) = last
            .split_once('=')
            .and_then(|(_, v)| URL_SAFE_NO_PAD.decode(v).ok())
        else {
            return Verdict::Invalid;
        };
        let signed = pairs[..pairs.len() - 1].join("&");
        let msg = message(path, &signed);
        // Every key is tried, valid or not, so timing does not tell which.
        let mut ok = false;
        for key in &self.keys {
            ok |= Self::mac(key, &msg).verify_slice(&tag).is_ok();
        }
        if !ok {
            return Verdict::Invalid;
        }
        let exp = match exps.first() {
            None => None,
            Some(v) => match v.parse::<u64>() {
                Ok(t) => Some(t),
                Err(_) => return Verdict::Invalid,
            },
        };
        match exp {
            Some(t) if now > t => Verdict::Expired,
            _ => Verdict::Valid { exp },
        }
    }
}

/// Ten years, the longest TTL a URL may be signed with (IMAGE_URL_TTL_SECS
/// is refused at start above it, a mint's `ttl` per request): longer is no
/// expiry in practice, and `0` signs without `exp` for that.
pub const MAX_TTL_SECS: u64 = 10 * 365 * 86_400;

/// The URL this proxy hands out for `path`: signed when the configuration
/// says so, with `exp` = now + IMAGE_URL_TTL_SECS when a TTL is set.
pub fn hosted_url(
    cfg: &crate::config::SigningConfig,
    base: &str,
    path: &str,
    params: &[String],
    now_secs: u64,
) -> String {
    match &cfg.signer {
        Some(signer) if cfg.mode != crate::config::SigningMode::Off => {
            // Saturating: a sum that wrapped would mint URLs already expired.
            let exp = cfg.ttl.map(|ttl| now_secs.saturating_add(ttl.as_secs()));
            format!("{base}{path}?{}", signer.sign(path, params, exp))
        }
        _ if params.is_empty() => format!("{base}{path}"),
        _ => format!("{base}{path}?{}", params.join("&")),
    }
}

/// What is signed: the path, plus the query before `sig` when there is one.
fn message(path: &str, signed_query: &str) -> String {
    if signed_query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{signed_query}")
    }
}

/// The query without `exp` and `sig`: what a URL asks for, to be signed
/// again. Parameter order is kept.
pub fn unsigned_params(query: Option<&str>) -> Vec<String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split_once('=').map_or(*p, |(n, _)| n);
            name != "sig" && name != "exp"
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "first-key-0123456789-0123456789-xx";
    const K2: &str = "second-key-0123456789-0123456789-x";
    const PATH: &str = "/v1/images/hosted/alice/img_0123456789abcdef01234567.png";

    fn signer(list: &str) -> Signer {
        Signer::parse(list).unwrap()
    }

    fn query(url_query: &str) -> Option<&str> {
        Some(url_query)
    }

    #[test]
    fn round_trip_with_and_without_exp() {
        let s = signer(K1);
        let q = s.sign(PATH, &[], None);
        assert!(q.starts_with("sig="), "{q}");
        assert_eq!(s.verify(PATH, query(&q), 0), Verdict::Valid { exp: None });
        let q = s.sign(PATH, &["w=256".into()], Some(1_000));
        assert!(q.starts_with("w=256&exp=1000&sig="), "{q}");
        assert_eq!(
            s.verify(PATH, query(&q), 999),
            Verdict::Valid { exp: Some(1_000) }
        );
        assert_eq!(s.verify(PATH, query(&q), 1_001), Verdict::Expired);
        assert_eq!(s.verify(PATH, None, 0), Verdict::Unsigned);
    }

    #[test]
    fn tampering_is_refused() {
        let s = signer(K1);
        let q = s.sign(PATH, &["w=256".into()], Some(1_000));
        let other_path = PATH.replace("alice", "bob");
        assert_eq!(s.verify(&other_path, query(&q), 0), Verdict::Invalid);
        // The thumbnail cannot be turned into the original.
        let original = q.replacen("w=256&", "", 1);
        assert_eq!(s.verify(PATH, query(&original), 0), Verdict::Invalid);
        let bigger = q.replace("w=256", "w=2048");
        assert_eq!(s.verify(PATH, query(&bigger), 0), Verdict::Invalid);
        let later = q.replace("exp=1000", "exp=9999999999");
        assert_eq!(s.verify(PATH, query(&later), 0), Verdict::Invalid);
        // Anything after sig, a second sig, exp without sig.
        assert_eq!(
            s.verify(PATH, query(&format!("{q}&w=64")), 0),
            Verdict::Invalid
        );
        assert_eq!(
            s.verify(PATH, query(&format!("{q}&{q}")), 0),
            Verdict::Invalid
        );
        assert_eq!(s.verify(PATH, query("exp=5"), 0), Verdict::Invalid);
        assert_eq!(s.verify(PATH, query("sig=!!!"), 0), Verdict::Invalid);
        assert_eq!(s.verify(PATH, query("sig"), 0), Verdict::Invalid);
    }

    #[test]
    fn keys_rotate() {
        let old = signer(K1);
        let q = old.sign(PATH, &[], None);
        let both = signer(&format!("{K2},{K1}"));
        assert_eq!(
            both.verify(PATH, query(&q), 0),
            Verdict::Valid { exp: None }
        );
        let new_q = both.sign(PATH, &[], None);
        assert_eq!(
            old.verify(PATH, query(&new_q), 0),
            Verdict::Invalid,
            "signed by K2"
        );
        let only_new = signer(K2);
        assert_eq!(only_new.verify(PATH, query(&q), 0), Verdict::Invalid);
    }

    #[test]
    fn keys_are_checked_at_parse() {
        assert!(Signer::parse("").is_err());
        assert!(Signer::parse("short").unwrap_err().contains("key 1"));
        assert!(Signer::parse(&format!("{K1},short"))
            .unwrap_err()
            .contains("key 2"));
        assert!(!format!("{:?}", signer(K1)).contains(K1));
    }

    #[test]
    fn unsigned_params_keep_the_rest_in_order() {
        assert_eq!(
            unsigned_params(Some("w=256&exp=5&format=webp&sig=x")),
            vec!["w=256".to_string(), "format=webp".to_string()]
        );
        assert!(unsigned_params(None).is_empty());
    }
}
