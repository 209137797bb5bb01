use super::*;
use jsonwebtoken::{encode, EncodingKey, Header};

const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/rsa_public.pem");
const RSA_OTHER: &str = include_str!("../../tests/fixtures/jwt/rsa_other_private.pem");
const EC_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/ec_private.pem");
const EC_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/ec_public.pem");

fn now() -> i64 {
    crate::clock::now_ms() as i64 / 1000
}

fn policy(list: &str, secret: Option<&str>, pem: Option<&str>) -> UserIdPolicy {
    UserIdPolicy::new(
        UserIdSource::parse_list(list).unwrap(),
        false,
        JwtSettings {
            secret: secret.map(str::to_string),
            public_key: pem.map(str::to_string),
            require_exp: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn resolve(p: &UserIdPolicy, req: &[(&str, &str)], resp: &[(&str, &str)]) -> Option<String> {
    let mut rq = HeaderMap::new();
    for (k, v) in req {
        rq.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let mut rs = HeaderMap::new();
    for (k, v) in resp {
        rs.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    p.resolve(&Facts {
        request_headers: &rq,
        request_body: None,
        response_headers: &rs,
    })
    .map(|o| o.user.to_string())
}

fn trusted(p: &UserIdPolicy, req: &[(&str, &str)], resp: &[(&str, &str)]) -> Option<bool> {
    let rq = headers(req);
    let rs = headers(resp);
    p.resolve(&Facts {
        request_headers: &rq,
        request_body: None,
        response_headers: &rs,
    })
    .map(|o| o.trusted)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

#[test]
fn only_ids_from_trusted_sources_are_trusted() {
    let p = policy(
        "response-header:x-owner,request-header:x-user-id,anonymous",
        None,
        None,
    );
    assert_eq!(trusted(&p, &[], &[("x-owner", "alice")]), Some(true));
    assert_eq!(trusted(&p, &[("x-user-id", "alice")], &[]), Some(false));
    // `anonymous` is everyone without an id: never trusted, so never
    // evicted by the per-user limit.
    assert_eq!(trusted(&p, &[], &[]), Some(false));
    assert!(p.has_trusted_source());
    assert_eq!(
        p.describe_sources(),
        "response-header:x-owner,request-header:x-user-id,anonymous"
    );
    let p = policy("request-header:x-user-id,anonymous", None, None);
    assert!(!p.has_trusted_source());
}

fn token(alg: Algorithm, key: &EncodingKey, sub: &str, exp_offset: i64) -> String {
    let claims = serde_json::json!({"sub": sub, "exp": now() + exp_offset});
    encode(&Header::new(alg), &claims, key).unwrap()
}

#[test]
fn response_header_beats_client_header() {
    let p = policy("response-header:x-owner,anonymous", None, None);
    let got = resolve(&p, &[("x-user-id", "victim")], &[("x-owner", "alice")]);
    assert_eq!(got.as_deref(), Some("alice"));
    let got = resolve(&p, &[("x-user-id", "victim")], &[]);
    assert_eq!(got.as_deref(), Some("anonymous"));
    assert_eq!(
        p.private_response_headers().collect::<Vec<_>>(),
        vec!["x-owner"]
    );
}

#[test]
fn hs256_tokens() {
    let p = policy("jwt:sub,anonymous", Some("topsecret"), None);
    let good = EncodingKey::from_secret(b"topsecret");
    let bad = EncodingKey::from_secret(b"wrong");
    let bearer = |t: String| format!("Bearer {t}");
    let ok = bearer(token(Algorithm::HS256, &good, "bob", 3600));
    assert_eq!(
        resolve(&p, &[("authorization", &ok)], &[]).as_deref(),
        Some("bob")
    );
    let expired = bearer(token(Algorithm::HS256, &good, "bob", -3600));
    assert_eq!(
        resolve(&p, &[("authorization", &expired)], &[]).as_deref(),
        Some("anonymous")
    );
    let wrong = bearer(token(Algorithm::HS256, &bad, "bob", 3600));
    assert_eq!(
        resolve(&p, &[("authorization", &wrong)], &[]).as_deref(),
        Some("anonymous")
    );
    let mut tampered = token(Algorithm::HS256, &good, "bob", 3600);
    let payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        format!(r#"{{"sub":"mallory","exp":{}}}"#, now() + 3600),
    );
    let parts: Vec<&str> = tampered.split('.').collect();
    tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
    assert_eq!(
        resolve(&p, &[("authorization", &bearer(tampered))], &[]).as_deref(),
        Some("anonymous")
    );
}

#[test]
fn rs256_and_es256_tokens() {
    let p = policy("jwt:sub,anonymous", None, Some(RSA_PUBLIC));
    let good = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let other = EncodingKey::from_rsa_pem(RSA_OTHER.as_bytes()).unwrap();
    let t = format!("Bearer {}", token(Algorithm::RS256, &good, "carol", 3600));
    assert_eq!(
        resolve(&p, &[("authorization", &t)], &[]).as_deref(),
        Some("carol")
    );
    let t = format!("Bearer {}", token(Algorithm::RS256, &other, "carol", 3600));
    assert_eq!(
        resolve(&p, &[("authorization", &t)], &[]).as_deref(),
        Some("anonymous")
    );
    let t = format!("Bearer {}", token(Algorithm::RS256, &good, "carol", -100));
    assert_eq!(
        resolve(&p, &[("authorization", &t)], &[]).as_deref(),
        Some("anonymous")
    );
    // An HS256 token signed with the public key as secret must not pass.
    let confused = EncodingKey::from_secret(RSA_PUBLIC.as_bytes());
    let t = format!("Bearer {}", token(Algorithm::HS256, &confused, "eve", 3600));
    assert_eq!(
        resolve(&p, &[("authorization", &t)], &[]).as_deref(),
        Some("anonymous")
    );

    let p = policy("jwt:sub", None, Some(EC_PUBLIC));
    let ec = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
    let t = format!("Bearer {}", token(Algorithm::ES256, &ec, "dave", 3600));
    assert_eq!(
        resolve(&p, &[("authorization", &t)], &[]).as_deref(),
        Some("dave")
    );
}

#[test]
fn trusted_only() {
    let p = policy("request-header:x-user-id,anonymous", None, None);
    assert!(p
        .check_trusted_only()
        .unwrap_err()
        .contains("request-header:x-user-id"));
    let p = policy("anonymous,response-header:x-owner", None, None);
    assert!(p.check_trusted_only().unwrap_err().contains("anonymous"));
    let p = policy("response-header:x-owner,anonymous", None, None);
    assert!(p.check_trusted_only().is_ok());
}

#[test]
fn required_yields_none() {
    let p = UserIdPolicy::new(
        UserIdSource::parse_list("response-header:x-owner").unwrap(),
        true,
        JwtSettings::default(),
    )
    .unwrap();
    assert_eq!(resolve(&p, &[("x-user-id", "me")], &[]), None);
}

#[test]
fn parse_errors() {
    assert!(UserIdSource::parse_list("header:x").is_err());
    assert!(UserIdSource::parse_list("jwt:").is_err());
    assert!(UserIdSource::parse_list("").is_err());
    let e = UserIdPolicy::new(
        UserIdSource::parse_list("jwt:sub").unwrap(),
        false,
        JwtSettings::default(),
    );
    assert!(e.is_err());
}

#[test]
fn audience_issuer_and_exp_are_enforced() {
    let p = UserIdPolicy::new(
        UserIdSource::parse_list("jwt:sub,anonymous").unwrap(),
        false,
        JwtSettings {
            secret: Some("topsecret".into()),
            audience: Some("studio".into()),
            issuer: Some("https://auth.example".into()),
            require_exp: true,
            ..Default::default()
        },
    )
    .unwrap();
    let key = EncodingKey::from_secret(b"topsecret");
    let who = |claims: serde_json::Value| {
        let t = encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        resolve(&p, &[("authorization", &format!("Bearer {t}"))], &[]).unwrap()
    };
    let exp = now() + 3600;
    let iss = "https://auth.example";
    assert_eq!(
        who(serde_json::json!({"sub": "bob", "exp": exp, "aud": "studio", "iss": iss})),
        "bob"
    );
    assert_eq!(
        who(serde_json::json!({"sub": "bob", "exp": exp, "aud": ["other", "studio"], "iss": iss})),
        "bob",
        "aud may be a list"
    );
    for (what, claims) in [
        (
            "no aud",
            serde_json::json!({"sub": "bob", "exp": exp, "iss": iss}),
        ),
        (
            "other aud",
            serde_json::json!({"sub": "bob", "exp": exp, "aud": "billing", "iss": iss}),
        ),
        (
            "no iss",
            serde_json::json!({"sub": "bob", "exp": exp, "aud": "studio"}),
        ),
        (
            "other iss",
            serde_json::json!({"sub": "bob", "exp": exp, "aud": "studio", "iss": "https://evil"}),
        ),
        (
            "no exp",
            serde_json::json!({"sub": "bob", "aud": "studio", "iss": iss}),
        ),
    ] {
        assert_eq!(who(claims), "anonymous", "{what}");
    }
}
