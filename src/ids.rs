//! Typed names for stored images: user ids, image ids and the hosted path.
//! Everything that becomes part of a file path or object key passes through
//! here, so nothing a client sends can leave the storage folder.

use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::image_format::Format;

pub const HOSTED_PREFIX: &str = "/v1/images/hosted/";

/// A user id that is safe as one path segment: `[A-Za-z0-9._-]{1,128}`,
/// never `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    pub fn anonymous() -> UserId {
        UserId("anonymous".to_string())
    }

    /// Accepts a valid id as it is, and maps anything else to a stable id
    /// derived from its hash, so a hostile value still lands in one folder of
    /// its own.
    pub fn sanitize(raw: &str) -> UserId {
        match UserId::parse(raw) {
            Some(id) => id,
            None => UserId(format!("u_{}", &sha256_hex(raw.as_bytes())[..24])),
        }
    }

    /// Strict parse, for ids that arrive in paths. Names of the embedded
    /// database's files are reserved: a user folder must never collide with
    /// them in the storage folder.
    pub fn parse(raw: &str) -> Option<UserId> {
        let ok = !raw.is_empty()
            && raw.len() <= 128
            && raw != "."
            && raw != ".."
            && !raw.starts_with("permaproxy.db")
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        ok.then(|| UserId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whose images these are, and whether the id came from a source the client
/// cannot choose (a response header Studio API set, a verified token). Only
/// a trusted owner's images count against the per-user limit and can be
/// evicted by it: a claimed id must never push someone else's images out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub user: UserId,
    pub trusted: bool,
}

impl Owner {
    pub fn untrusted(user: UserId) -> Owner {
        Owner {
            user,
            trusted: false,
        }
    }
}

/// `img_` and 24 lowercase hex characters (96 bits of SHA-256 of the source).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(String);

impl ImageId {
    /// The same source always gives the same id, so the same URL maps to the
    /// same hosted URL forever.
    pub fn for_source(source: &str) -> ImageId {
        ImageId(format!("img_{}", &sha256_hex(source.as_bytes())[..24]))
    }

    pub fn parse(raw: &str) -> Option<ImageId> {
        let hex = raw.strip_prefix("img_")?;
        let ok = hex.len() == 24 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| ImageId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ImageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One stored image: whose, and which.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageKey {
    pub user: UserId,
    pub id: ImageId,
}

impl ImageKey {
    pub fn new(user: UserId, id: ImageId) -> ImageKey {
        ImageKey { user, id }
    }

    /// `{user}/{id}.{ext}`, relative to the store's root or prefix.
    pub fn relative_path(&self, format: Format) -> String {
        format!("{}/{}.{}", self.user, self.id, format.ext())
    }

    pub fn hosted_path(&self, format: Format) -> String {
        format!("{HOSTED_PREFIX}{}", self.relative_path(format))
    }
}

impl std::fmt::Display for ImageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.user, self.id)
    }
}

/// Parses `/v1/images/hosted/{userId}/{imageId}.{ext}`. Anything encoded,
/// empty, nested or unknown is refused before it can touch storage.
pub fn parse_hosted_path(path: &str) -> Result<(ImageKey, Format), ApiError> {
    let rest = path
        .strip_prefix(HOSTED_PREFIX)
        .ok_or(ApiError::BadPath("not a hosted image path"))?;
    if rest.len() > 300
        || rest
            .bytes()
            .any(|b| b == b'%' || b == b'\\' || !(0x21..=0x7e).contains(&b))
    {
        return Err(ApiError::BadPath("encoded or unexpected characters"));
    }
    let (user, file) = rest
        .split_once('/')
        .ok_or(ApiError::BadPath("expected {userId}/{imageId}.{ext}"))?;
    if file.contains('/') {
        return Err(ApiError::BadPath("expected {userId}/{imageId}.{ext}"));
    }
    let user = UserId::parse(user).ok_or(ApiError::BadPath("malformed user id"))?;
    let (id, ext) = file
        .rsplit_once('.')
        .ok_or(ApiError::BadPath("missing extension"))?;
    let id = ImageId::parse(id).ok_or(ApiError::ImageNotFound)?;
    let format = Format::from_ext(ext).ok_or(ApiError::ImageNotFound)?;
    Ok((ImageKey::new(user, id), format))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        assert_eq!(UserId::sanitize("user_123-a.b").as_str(), "user_123-a.b");
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "a b",
            "ü",
            &"x".repeat(129),
            "permaproxy.db",
            "permaproxy.db-wal",
        ] {
            let id = UserId::sanitize(bad);
            assert!(id.as_str().starts_with("u_"), "{bad:?} -> {id}");
            assert!(UserId::parse(id.as_str()).is_some());
            assert_eq!(id, UserId::sanitize(bad), "stable");
        }
        assert_ne!(UserId::sanitize("../a"), UserId::sanitize("../b"));
    }

    #[test]
    fn image_ids_are_stable() {
        let a = ImageId::for_source("https://replicate.delivery/a.png");
        assert_eq!(a, ImageId::for_source("https://replicate.delivery/a.png"));
        assert_ne!(a, ImageId::for_source("https://replicate.delivery/b.png"));
        assert!(ImageId::parse(a.as_str()).is_some());
        assert_eq!(a.as_str().len(), 28);
    }

    // Issue 11: the hosted-path parser sees every client's path; it must
    // never panic, and what it accepts must print back to itself.
    mod never_panics {
        use super::*;
        use proptest::prelude::*;

        fn check(path: &str) {
            for p in [path.to_string(), format!("{HOSTED_PREFIX}{path}")] {
                if let Ok((key, format)) = parse_hosted_path(&p) {
                    assert!(UserId::parse(key.user.as_str()).is_some(), "{p:?}");
                    assert!(ImageId::parse(key.id.as_str()).is_some(), "{p:?}");
                    let printed = key.hosted_path(format);
                    assert_eq!(parse_hosted_path(&printed).ok(), Some((key, format)));
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
            fn on_lossy_bytes(b in prop::collection::vec(any::<u8>(), 0..96)) {
                check(&String::from_utf8_lossy(&b));
            }

            #[test]
            fn on_near_paths(
                user in "[A-Za-z0-9._%/-]{0,10}",
                id in "(img_)?[0-9a-f]{0,30}",
                ext in "[a-z%.]{0,5}",
                junk in any::<String>(),
            ) {
                check(&format!("{user}/{id}.{ext}"));
                check(&format!("{user}/{id}.{ext}{junk}"));
            }

            /// Every valid key parses back from its printed path.
            #[test]
            fn round_trip(user in "[A-Za-z0-9._-]{1,128}", source in any::<String>()) {
                prop_assume!(user != "." && user != "..");
                let key = ImageKey::new(UserId::parse(&user).unwrap(), ImageId::for_source(&source));
                for f in Format::ALL {
                    prop_assert_eq!(parse_hosted_path(&key.hosted_path(f)).ok(), Some((key.clone(), f)));
                }
            }
        }
    }

    #[test]
    fn hosted_paths() {
        let id = ImageId::for_source("x");
        let ok = format!("/v1/images/hosted/user1/{id}.png");
        let (key, fmt) = parse_hosted_path(&ok).unwrap();
        assert_eq!(key.user.as_str(), "user1");
        assert_eq!(fmt, Format::Png);
        assert_eq!(key.hosted_path(fmt), ok);

        for (path, status) in [
            (format!("/v1/images/hosted/../{id}.png"), 400),
            (format!("/v1/images/hosted/%2e%2e/{id}.png"), 400),
            (format!("/v1/images/hosted/a%2Fb/{id}.png"), 400),
            (format!("/v1/images/hosted/a/{id}.png%00"), 400),
            (format!("/v1/images/hosted/a/b/{id}.png"), 400),
            (format!("/v1/images/hosted/a/{id}"), 400),
            ("/v1/images/hosted/a/img_zz.png".to_string(), 404),
            (format!("/v1/images/hosted/a/{id}.exe"), 404),
            (format!("/v1/images/hosted/a/{}.png", "x".repeat(400)), 400),
        ] {
            let err = parse_hosted_path(&path).unwrap_err();
            assert_eq!(err.status(), status, "{path}");
        }
    }
}
