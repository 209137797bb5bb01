//! Whose images these are. The user id decides the storage folder and whose
//! per-user limit evicts what, so where it comes from is a security choice:
//! headers the upstream sets and verified tokens are trusted; anything the
//! client sends directly is not.

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::ids::{Owner, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserIdSource {
    /// Set by the upstream after it authenticated the caller. Stripped
    /// before the response reaches the client.
    ResponseHeader(String),
    /// A claim of a bearer token whose signature verifies.
    Jwt(String),
    /// Client-controlled: kept for compatibility.
    RequestHeader(String),
    /// Client-controlled: a top-level field of the JSON request body.
    Body(String),
    Anonymous,
}

impl UserIdSource {
    pub fn parse_list(list: &str) -> Result<Vec<UserIdSource>, String> {
        let mut out = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (kind, arg) = item.split_once(':').unwrap_or((item, ""));
            let arg = arg.trim();
            let needs_arg = |s: UserIdSource| {
                if arg.is_empty() {
                    Err(format!("{item:?} needs a name after the colon"))
                } else {
                    Ok(s)
                }
            };
            out.push(match kind.trim() {
                "response-header" => needs_arg(UserIdSource::ResponseHeader(arg.to_ascii_lowercase()))?,
                "jwt" => needs_arg(UserIdSource::Jwt(arg.to_string()))?,
                "request-header" => needs_arg(UserIdSource::RequestHeader(arg.to_ascii_lowercase()))?,
                "body" => needs_arg(UserIdSource::Body(arg.to_string()))?,
                "anonymous" => UserIdSource::Anonymous,
                _ => return Err(format!("{item:?} is not one of response-header:NAME, jwt:CLAIM, request-header:NAME, body:FIELD, anonymous")),
            });
        }
        if out.is_empty() {
            return Err("must list at least one source".into());
        }
        Ok(out)
    }

    pub fn is_trusted(&self) -> bool {
        matches!(self, UserIdSource::ResponseHeader(_) | UserIdSource::Jwt(_))
    }

    fn describe(&self) -> String {
        match self {
            UserIdSource::ResponseHeader(n) => format!("response-header:{n}"),
            UserIdSource::Jwt(c) => format!("jwt:{c}"),
            UserIdSource::RequestHeader(n) => format!("request-header:{n}"),
            UserIdSource::Body(f) => format!("body:{f}"),
            UserIdSource::Anonymous => "anonymous".into(),
        }
    }
}

#[derive(Clone)]
struct VerifyKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
    kid: Option<String>,
}

/// How bearer tokens are verified for `jwt:` sources.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    pub secret: Option<String>,
    pub public_key: Option<String>,
    pub jwks_path: Option<String>,
    /// When set, the token's `aud` must hold it.
    pub audience: Option<String>,
    /// When set, the token's `iss` must equal it.
    pub issuer: Option<String>,
    /// A token without `exp` never expires, so it is refused by default.
    pub require_exp: bool,
}

#[derive(Clone)]
pub struct UserIdPolicy {
    sources: Vec<UserIdSource>,
    required: bool,
    keys: Vec<VerifyKey>,
    validation: ClaimRules,
}

#[derive(Clone, Default)]
struct ClaimRules {
    audience: Option<String>,
    issuer: Option<String>,
    require_exp: bool,
}

impl std::fmt::Debug for UserIdPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserIdPolicy")
            .field("sources", &self.sources)
            .field("required", &self.required)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// What a request offers for finding its user id.
pub struct Facts<'a> {
    pub request_headers: &'a HeaderMap,
    pub request_body: Option<&'a serde_json::Map<String, serde_json::Value>>,
    pub response_headers: &'a HeaderMap,
}

impl UserIdPolicy {
    pub fn new(
        sources: Vec<UserIdSource>,
        required: bool,
        jwt: JwtSettings,
    ) -> Result<UserIdPolicy, (&'static str, String)> {
        let mut keys = Vec::new();
        if let Some(secret) = jwt.secret {
            keys.push(VerifyKey {
                key: DecodingKey::from_secret(secret.as_bytes()),
                algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
                kid: None,
            });
        }
        if let Some(pem) = jwt.public_key {
            keys.push(load_pem(&pem).map_err(|m| ("JWT_PUBLIC_KEY", m))?);
        }
        if let Some(path) = jwt.jwks_path {
            keys.extend(load_jwks(&path).map_err(|m| ("JWT_JWKS_PATH", m))?);
        }
        if keys.is_empty() && sources.iter().any(|s| matches!(s, UserIdSource::Jwt(_))) {
            return Err((
                "IMAGE_USER_ID_FROM",
                "a jwt: source needs PERMAPROXY_JWT_SECRET (or JWT_SECRET), JWT_PUBLIC_KEY or JWT_JWKS_PATH".into(),
            ));
        }
        Ok(UserIdPolicy {
            sources,
            required,
            keys,
            validation: ClaimRules {
                audience: jwt.audience,
                issuer: jwt.issuer,
                require_exp: jwt.require_exp,
            },
        })
    }

    /// Refuses lists where the client can choose its own id.
    pub fn check_trusted_only(&self) -> Result<(), String> {
        for s in &self.sources {
            match s {
                UserIdSource::RequestHeader(_) | UserIdSource::Body(_) => {
                    return Err(format!(
                        "{} is controlled by the client, which IMAGE_USER_ID_TRUSTED_ONLY=true forbids",
                        s.describe()
                    ))
                }
                UserIdSource::Anonymous if self.sources.iter().skip_while(|x| *x != s).any(UserIdSource::is_trusted) => {
                    return Err("anonymous comes before a trusted source, so the trusted source would never be used".into())
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Response headers that carry a user id and must not reach the client.
    pub fn private_response_headers(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().filter_map(|s| match s {
            UserIdSource::ResponseHeader(n) => Some(n.as_str()),
            _ => None,
        })
    }

    pub fn needs_request_body(&self) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s, UserIdSource::Body(_)))
    }

    /// The id from a trusted source only (a response header Studio API set,
    /// or a verified token): what re-signing URLs on the way out needs, so
    /// a client cannot get someone else's URLs signed by naming them.
    pub fn resolve_trusted(&self, facts: &Facts) -> Option<UserId> {
        self.sources
            .iter()
            .filter(|s| s.is_trusted())
            .find_map(|s| {
                let raw = match s {
                    UserIdSource::ResponseHeader(n) => header(facts.response_headers, n),
                    UserIdSource::Jwt(claim) => self.jwt_claim(facts.request_headers, claim),
                    _ => None,
                };
                raw.filter(|r| !r.trim().is_empty())
                    .map(|r| UserId::sanitize(r.trim()))
            })
    }

    /// The first source that yields an id wins, and says whether it is
    /// trusted (`anonymous` never is). `None` only when ids are required
    /// and no source yielded one: then nothing is hosted.
    pub fn resolve(&self, facts: &Facts) -> Option<Owner> {
        for s in &self.sources {
            let raw = match s {
                UserIdSource::ResponseHeader(n) => header(facts.response_headers, n),
                UserIdSource::RequestHeader(n) => header(facts.request_headers, n),
                UserIdSource::Jwt(claim) => self.jwt_claim(facts.request_headers, claim),
                UserIdSource::Body(field) => facts
                    .request_body
                    .and_then(|b| b.get(field))
                    .and_then(|v| match v {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    }),
                UserIdSource::Anonymous => return Some(Owner::untrusted(UserId::anonymous())),
            };
            if let Some(raw) = raw.filter(|r| !r.trim().is_empty()) {
                return Some(Owner {
                    user: UserId::sanitize(raw.trim()),
                    trusted: s.is_trusted(),
                });
            }
        }
        (!self.required).then(|| Owner::untrusted(UserId::anonymous()))
    }

    /// Whether any source could ever yield a trusted id. Without one, the
    /// per-user limit evicts nothing and the disk is the only bound.
    pub fn has_trusted_source(&self) -> bool {
        self.sources.iter().any(UserIdSource::is_trusted)
    }

    /// The sources in effect, as IMAGE_USER_ID_FROM would spell them.
    pub fn describe_sources(&self) -> String {
        self.sources
            .iter()
            .map(UserIdSource::describe)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn jwt_claim(&self, headers: &HeaderMap, claim: &str) -> Option<String> {
        let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))?
            .trim();
        let header = jsonwebtoken::decode_header(token).ok()?;
        for k in &self.keys {
            if !k.algorithms.contains(&header.alg) {
                continue;
            }
            if k.kid.is_some() && header.kid.is_some() && k.kid != header.kid {
                continue;
            }
            let v = self.validation.for_alg(header.alg);
            if let Ok(data) = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token, &k.key, &v,
            ) {
                return match data.claims.get(claim)? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                };
            }
        }
        None
    }
}

impl ClaimRules {
    /// `exp` and `nbf` are checked whenever present (5 s leeway); `exp`,
    /// `aud` and `iss` are required when configured, so a token minted for
    /// another service, or one that never expires, names nobody.
    fn for_alg(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        let mut required = Vec::new();
        if self.require_exp {
            required.push("exp");
        }
        v.validate_exp = true;
        v.validate_nbf = true;
        v.leeway = 5;
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        v
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)?.to_str().ok().map(str::to_string)
}

fn load_pem(value: &str) -> Result<VerifyKey, String> {
    let pem = if value.contains("-----BEGIN") {
        value.to_string()
    } else {
        std::fs::read_to_string(value).map_err(|e| format!("cannot read {value}: {e}"))?
    };
    if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok(VerifyKey {
            key,
            algorithms: vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
            kid: None,
        });
    }
    DecodingKey::from_ec_pem(pem.as_bytes())
        .map(|key| VerifyKey {
            key,
            algorithms: vec![Algorithm::ES256, Algorithm::ES384],
            kid: None,
        })
        .map_err(|_| "not an RSA or EC public key in PEM form".to_string())
}

fn load_jwks(path: &str) -> Result<Vec<VerifyKey>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&text).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("bad key: {e}"))?;
        let algorithms = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => {
                vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]
            }
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => {
                vec![Algorithm::ES256, Algorithm::ES384]
            }
            _ => continue,
        };
        out.push(VerifyKey {
            key,
            algorithms,
            kid: jwk.common.key_id.clone(),
        });
    }
    if out.is_empty() {
        return Err("holds no RSA or EC key".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
