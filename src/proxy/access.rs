//! Who may read a hosted image: the signature check of IMAGE_URL_SIGNING,
//! made before the image is looked up, so a refusal never says whether the
//! image exists. Pure: the caller passes `now`.

use crate::config::{SigningConfig, SigningMode};
use crate::error::ApiError;
use crate::ids::ImageKey;
use crate::serve::CACHE_CONTROL;
use crate::signing::Verdict;

/// What the request proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// No signature, and none needed so far (a private image still needs one).
    Unsigned,
    /// A valid signature, expiring at `exp` (Unix seconds) when set.
    Signed { exp: Option<u64> },
}

/// Checks the signature of a request for `key` at `path` with `query`.
pub fn check(
    cfg: &SigningConfig,
    key: &ImageKey,
    path: &str,
    query: Option<&str>,
    now_secs: u64,
) -> Result<Grant, ApiError> {
    let Some(signer) = cfg.signer.as_ref().filter(|_| cfg.mode != SigningMode::Off) else {
        return Ok(Grant::Unsigned);
    };
    match signer.verify(path, query, now_secs) {
        Verdict::Valid { exp } => Ok(Grant::Signed { exp }),
        Verdict::Expired => Err(ApiError::UrlExpired),
        Verdict::Invalid => Err(ApiError::SignatureInvalid),
        Verdict::Unsigned
            if cfg.mode == SigningMode::Required || cfg.private_users.contains(&key.user) =>
        {
            Err(ApiError::SignatureRequired)
        }
        Verdict::Unsigned => Ok(Grant::Unsigned),
    }
}

impl Grant {
    /// A private image needs a signature even when the mode is `sign`.
    /// Refused, it answers exactly as a missing image does (same status,
    /// body and headers), so a refusal never says that it exists (issue
    /// 20, finding 5).
    pub fn allows(self, cfg: &SigningConfig, private: bool) -> Result<(), ApiError> {
        match self {
            Grant::Unsigned if private && cfg.mode != SigningMode::Off => {
                Err(ApiError::ImageNotFound)
            }
            _ => Ok(()),
        }
    }

    /// The caching a response may allow: never longer than its signature
    /// lives, and then only in the client's own cache. `None` keeps the
    /// immutable header.
    pub fn cache_control(self, now_secs: u64) -> Option<String> {
        match self {
            Grant::Signed { exp: Some(exp) } => {
                let left = exp.saturating_sub(now_secs).min(31_536_000);
                Some(format!("private, max-age={left}"))
            }
            _ => None,
        }
    }
}

/// The Cache-Control a hosted answer carries under `grant`.
pub fn cache_control(grant: Grant, now_secs: u64) -> String {
    grant
        .cache_control(now_secs)
        .unwrap_or_else(|| CACHE_CONTROL.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ImageId, UserId};

    const KEY1: &str = "first-key-0123456789-0123456789-xx";

    fn cfg(mode: SigningMode, private: &[&str]) -> SigningConfig {
        SigningConfig {
            mode,
            signer: Some(crate::signing::Signer::parse(KEY1).unwrap()),
            ttl: None,
            resign_paths: Vec::new(),
            private_users: private.iter().map(|u| UserId::parse(u).unwrap()).collect(),
        }
    }

    fn key(user: &str) -> ImageKey {
        ImageKey::new(UserId::parse(user).unwrap(), ImageId::for_source("x"))
    }

    #[test]
    fn modes() {
        let path = "/v1/images/hosted/al/img_000000000000000000000000.png";
        let c = cfg(SigningMode::Sign, &["priv"]);
        let q = c.signer.as_ref().unwrap().sign(path, &[], Some(100));
        assert_eq!(
            check(&c, &key("al"), path, None, 50).ok(),
            Some(Grant::Unsigned)
        );
        assert_eq!(
            check(&c, &key("al"), path, Some(&q), 50).ok(),
            Some(Grant::Signed { exp: Some(100) })
        );
        assert!(matches!(
            check(&c, &key("al"), path, Some(&q), 101),
            Err(ApiError::UrlExpired)
        ));
        assert!(matches!(
            check(&c, &key("al"), path, Some("sig=AAAA"), 50),
            Err(ApiError::SignatureInvalid)
        ));
        assert!(matches!(
            check(&c, &key("priv"), path, None, 50),
            Err(ApiError::SignatureRequired)
        ));
        let r = cfg(SigningMode::Required, &[]);
        assert!(matches!(
            check(&r, &key("al"), path, None, 50),
            Err(ApiError::SignatureRequired)
        ));
        let off = cfg(SigningMode::Off, &[]);
        assert_eq!(
            check(&off, &key("al"), path, Some("sig=bad"), 50).ok(),
            Some(Grant::Unsigned)
        );
    }

    #[test]
    fn caching_never_outlives_the_signature() {
        assert_eq!(
            cache_control(Grant::Signed { exp: Some(1_000) }, 400),
            "private, max-age=600"
        );
        assert_eq!(
            cache_control(Grant::Signed { exp: Some(1_000) }, 1_000),
            "private, max-age=0"
        );
        assert_eq!(cache_control(Grant::Signed { exp: None }, 0), CACHE_CONTROL);
        assert_eq!(cache_control(Grant::Unsigned, 0), CACHE_CONTROL);
        let c = cfg(SigningMode::Sign, &[]);
        assert!(Grant::Unsigned.allows(&c, true).is_err());
        assert!(Grant::Signed { exp: None }.allows(&c, true).is_ok());
        assert!(Grant::Unsigned.allows(&c, false).is_ok());
    }
}
