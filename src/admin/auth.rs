//! Who may use the admin API: `Authorization: Bearer $ADMIN_TOKEN`,
//! compared in constant time.

use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// What `ADMIN_TOKEN` unlocks.
#[derive(Clone)]
pub struct Keys {
    token: String,
}

/// Constant-time equality of two strings.
pub fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Keys {
    pub fn new(token: &str) -> Keys {
        Keys {
            token: token.to_string(),
        }
    }

    /// `Authorization: Bearer <token>`, as the API has always accepted it.
    pub fn bearer_ok(&self, header: Option<&str>) -> bool {
        let given = header.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        same(given, &self.token)
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
