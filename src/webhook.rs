//! Replicate's webhook signatures, as Replicate documents them (the Svix
//! scheme): HMAC-SHA256 keyed with the base64-decoded part of the
//! `whsec_…` secret after its prefix, over `{webhook-id}.{webhook-timestamp}.{raw body}`,
//! sent as standard base64 in a space-separated list of `v1,<sig>` entries.
//! Pure: no I/O, no clock (the caller passes `now`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A webhook signing secret, decoded once at start.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("webhook-id, webhook-timestamp or webhook-signature is missing")]
    MissingHeaders,
    #[error("webhook-timestamp is not a Unix time")]
    BadTimestamp,
    #[error("webhook-timestamp is outside the tolerance")]
    Stale,
    #[error("no webhook-signature entry matches")]
    BadSignature,
}

impl Rejection {
    pub fn as_str(&self) -> &'static str {
        match self {
            Rejection::MissingHeaders => "missing_headers",
            Rejection::BadTimestamp => "bad_timestamp",
            Rejection::Stale => "stale",
            Rejection::BadSignature => "bad_signature",
        }
    }
}

/// The three headers a webhook is signed with.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signatures: &'a str,
}

impl WebhookSecret {
    /// `whsec_<base64>`, as `GET /v1/webhooks/default/secret` returns it.
    pub fn parse(secret: &str) -> Result<WebhookSecret, String> {
        let b64 = secret
            .trim()
            .strip_prefix("whsec_")
            .ok_or("must start with whsec_")?;
        let key = STANDARD
            .decode(b64)
            .map_err(|_| "the part after whsec_ is not base64".to_string())?;
        if key.is_empty() {
            return Err("the key after whsec_ is empty".into());
        }
        Ok(WebhookSecret { key })
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length.
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC-SHA256 accepts any key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value for this id, timestamp and body.
    pub fn sign(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }

    /// Checks the timestamp against `now` (Unix seconds) within
    /// `tolerance_secs` either way, then every `v1,` entry in constant
    /// time; one valid entry is enough (secrets rotate).
    pub fn verify(
        &self,
        h: &Signed,
        body: &[u8],
        now: u64,
        tolerance_secs: u64,
    ) -> Result<(), Rejection> {
        if h.id.is_empty() || h.timestamp.is_empty() || h.signatures.is_empty() {
            return Err(Rejection::MissingHeaders);
        }
        let ts: u64 = h
            .timestamp
            .trim()
            .parse()
            .map_err(|_| Rejection::BadTimestamp)?;
        if ts.abs_diff(now) > tolerance_secs {
            return Err(Rejection::Stale);
        }
        let expected = self.mac(h.id, h.timestamp, body);
        for entry in h.signatures.split_whitespace() {
            let Some(b64) = entry.strip_prefix("v1,") else {
                continue;
            };
            let Ok(tag) = STANDARD.decode(b64) else {
                continue;
            };
            // verify_slice compares in constant time.
            if expected.clone().verify_slice(&tag).is_ok() {
                return Ok(());
            }
        }
        Err(Rejection::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> WebhookSecret {
        WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    #[test]
    fn sign_then_verify() {
        let s = secret();
        let body = br#"{"id":"p1","status":"succeeded"}"#;
        let sig = s.sign("msg_1", "1700000000", body);
        assert!(sig.starts_with("v1,"));
        let h = Signed {
            id: "msg_1",
            timestamp: "1700000000",
            signatures: &sig,
        };
        assert_eq!(s.verify(&h, body, 1_700_000_100, 300), Ok(()));
        // Any other body, id or timestamp fails.
        assert_eq!(
            s.verify(&h, b"{}", 1_700_000_100, 300),
            Err(Rejection::BadSignature)
        );
        let other = Signed { id: "msg_2", ..h };
        assert_eq!(
            s.verify(&other, body, 1_700_000_100, 300),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn one_valid_entry_among_several_is_enough() {
        let s = secret();
        let body = b"{}";
        let good = s.sign("m", "1700000000", body);
        let list = format!("v1,AAAA v2,whatever {good} v1,not-base64!");
        let h = Signed {
            id: "m",
            timestamp: "1700000000",
            signatures: &list,
        };
        assert_eq!(s.verify(&h, body, 1_700_000_000, 300), Ok(()));
    }

    #[test]
    fn old_and_future_timestamps_fail() {
        let s = secret();
        let sig = s.sign("m", "1700000000", b"{}");
        let h = Signed {
            id: "m",
            timestamp: "1700000000",
            signatures: &sig,
        };
        assert_eq!(
            s.verify(&h, b"{}", 1_700_000_301, 300),
            Err(Rejection::Stale)
        );
        assert_eq!(
            s.verify(&h, b"{}", 1_699_999_699, 300),
            Err(Rejection::Stale)
        );
        let bad = Signed {
            timestamp: "soon",
            ..h
        };
        assert_eq!(
            s.verify(&bad, b"{}", 1_700_000_000, 300),
            Err(Rejection::BadTimestamp)
        );
        let missing = Signed {
            signatures: "",
            ..h
        };
        assert_eq!(
            s.verify(&missing, b"{}", 1_700_000_000, 300),
            Err(Rejection::MissingHeaders)
        );
    }

    #[test]
    fn secrets_parse_strictly() {
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_***").is_err());
        assert!(WebhookSecret::parse("whsec_").is_err());
        assert!(format!("{:?}", secret()).contains("redacted"));
    }

    /// The example of Svix's documentation (the scheme Replicate uses).
    #[test]
    fn matches_the_published_example() {
        let s = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            s.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
