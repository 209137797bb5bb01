//! Who may use the admin listener: the bearer token for the API, a signed
//! session cookie for the web page, and the CSRF token tied to a session.
//!
//! Sessions are stateless: the cookie carries its expiry and a random
//! nonce, signed with HMAC-SHA256 under a key derived from `ADMIN_TOKEN`.
//! Nothing is stored server-side, so every replica accepts every session,
//! and rotating the token logs everyone out. MACs and tokens are compared
//! in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

type HmacSha256 = Hmac<Sha256>;

pub const COOKIE: &str = "permaproxy_admin";
/// A session lasts a working day; then the token is asked for again.
pub const SESSION_TTL_MS: u64 = 12 * 3_600_000;
/// Scoped to the admin paths: the export (`/admin/users/...`) accepts a
/// session too.
const COOKIE_PATH: &str = "/admin";

/// Keys derived from `ADMIN_TOKEN`.
#[derive(Clone)]
pub struct Keys {
    token: String,
    session: [u8; 32],
}

/// A verified session: when it ends and its nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub expires_ms: u64,
    nonce: String,
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(p);
        mac.update(b"|");
    }
    mac.finalize().into_bytes().into()
}

/// Equality of a secret and a guess that leaks neither the secret's
/// length nor where they differ: both sides are MACed under a key drawn at
/// start, and the fixed-length MACs are compared in constant time. A plain
/// `ct_eq` returns at once on a length mismatch, which tells a guesser the
/// token's length.
pub fn same(a: &str, b: &str) -> bool {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    bool::from(hmac(key, &[a.as_bytes()]).ct_eq(&hmac(key, &[b.as_bytes()])))
}

impl Keys {
    pub fn new(token: &str) -> Keys {
        Keys {
            token: token.to_string(),
            // A separate key per purpose, so a session MAC can never be
            // replayed as anything else.
            session: hmac(token.as_bytes(), &[b"permaproxy admin session v1"]),
        }
    }

    /// `Authorization: Bearer <token>`, as the API has always accepted it.
    pub fn bearer_ok(&self, header: Option<&str>) -> bool {
        let given = header.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        same(given, &self.token)
    }

    /// The login form's token.
    pub fn token_ok(&self, given: &str) -> bool {
        same(given, &self.token)
    }

    fn mac(&self, purpose: &str, expires_ms: u64, nonce: &str) -> String {
        let exp = expires_ms.to_string();
        URL_SAFE_NO_PAD.encode(hmac(
            &self.session,
            &[purpose.as_bytes(), exp.as_bytes(), nonce.as_bytes()],
        ))
    }

    /// A new session from `now_ms`, and the cookie value that carries it.
    pub fn issue(&self, now_ms: u64) -> (Session, String) {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let expires_ms = now_ms + SESSION_TTL_MS;
        let value = format!(
            "{expires_ms}.{nonce}.{}",
            self.mac("session", expires_ms, &nonce)
        );
        (Session { expires_ms, nonce }, value)
    }

    /// The session a cookie value carries, if its MAC is right and it has
    /// not expired.
    pub fn verify(&self, value: &str, now_ms: u64) -> Option<Session> {
        let mut parts = value.splitn(3, '.');
        let (exp, nonce, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let expires_ms: u64 = exp.parse().ok()?;
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        if !same(mac, &self.mac("session", expires_ms, nonce)) || expires_ms <= now_ms {
            return None;
        }
        Some(Session {
            expires_ms,
            nonce: nonce.to_string(),
        })
    }

    /// The CSRF token of a session: every form of the page carries it,
    /// every POST must send it back.
    pub fn csrf(&self, s: &Session) -> String {
        self.mac("csrf", s.expires_ms, &s.nonce)
    }

    pub fn csrf_ok(&self, s: &Session, given: &str) -> bool {
        same(given, &self.csrf(s))
    }
}

/// Checks the bearer header against the configured token: 403 when the
/// admin API is off, 401 when the token is missing or wrong.
pub fn check_bearer(keys: Option<&Keys>, header: Option<&str>) -> Result<(), ApiError> {
    match keys {
        None => Err(ApiError::AdminDisabled),
        Some(k) if k.bearer_ok(header) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized),
    }
}

/// The session cookie's value among the request's `Cookie` headers.
pub fn cookie_value(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then_some(value)
        })
}

/// Did the request reach the TLS terminator in front of us over https?
pub fn came_over_https(headers: &http::HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// `Set-Cookie` for a new session (or, with `None`, one that clears it).
pub fn set_cookie(value: Option<&str>, secure: bool) -> String {
    let (value, max_age) = match value {
        Some(v) => (v, SESSION_TTL_MS / 1000),
        None => ("", 0),
    };
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_verifies_until_it_expires() {
        let k = Keys::new("tok");
        let (s, value) = k.issue(1_000);
        assert_eq!(k.verify(&value, 2_000), Some(s.clone()));
        assert_eq!(k.verify(&value, 1_000 + SESSION_TTL_MS), None, "expired");
        assert_eq!(
            Keys::new("other").verify(&value, 2_000),
            None,
            "rotated token"
        );
    }

    #[test]
    fn tampered_cookies_are_refused() {
        let k = Keys::new("tok");
        let (_, value) = k.issue(1_000);
        let (exp, rest) = value.split_once('.').unwrap();
        // A later expiry with the old MAC.
        let later = format!("{}.{rest}", exp.parse::<u64>().unwrap() + 1);
        assert_eq!(k.verify(&later, 2_000), None);
        for bad in [
            "",
            "1.2",
            "x.y.z",
            "9999999999999.abc.def",
            &value[..value.len() - 1],
        ] {
            assert_eq!(k.verify(bad, 2_000), None, "{bad:?}");
        }
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let k = Keys::new("tok");
        let (a, _) = k.issue(1_000);
        let (b, _) = k.issue(1_000);
        assert!(k.csrf_ok(&a, &k.csrf(&a)));
        assert!(!k.csrf_ok(&a, &k.csrf(&b)));
        assert!(!k.csrf_ok(&a, ""));
        assert_ne!(k.csrf(&a), a.nonce, "the token is not the nonce");
    }

    #[test]
    fn bearer_and_cookies() {
        let k = Keys::new("tok");
        assert!(k.bearer_ok(Some("Bearer tok")));
        for h in [None, Some("Bearer tokx"), Some("Basic tok"), Some("tok")] {
            assert!(!k.bearer_ok(h), "{h:?}");
        }
        assert!(matches!(
            check_bearer(None, Some("Bearer tok")),
            Err(ApiError::AdminDisabled)
        ));
        let mut h = http::HeaderMap::new();
        h.append("cookie", "a=1; permaproxy_admin=v.a.l".parse().unwrap());
        assert_eq!(cookie_value(&h), Some("v.a.l"));
        h.insert("x-forwarded-proto", "HTTPS, http".parse().unwrap());
        assert!(came_over_https(&h));
        let c = set_cookie(Some("v"), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
        assert!(set_cookie(None, false).contains("Max-Age=0"));
        assert!(!set_cookie(None, false).contains("Secure"));
    }
}
