use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load_from(None, &env(pairs))
}

#[test]
fn defaults_are_valid() {
    let c = load(&[]).unwrap();
    assert_eq!(c.listen_addr, "0.0.0.0:8080");
    assert_eq!(c.metrics_addr, "127.0.0.1:9090");
    assert_eq!(c.persist.mode, PersistMode::BeforeResponse);
    assert_eq!(c.storage.memory_cache_bytes, 256 << 20);
    assert_eq!(c.lifecycle.per_user_limit, 50);
    assert!(c.is_rewrite_path("/v1/images/generate"));
    assert!(!c.is_rewrite_path("/v1/images/generate/x"));
}

#[test]
fn port_sets_listen_addr() {
    assert_eq!(
        load(&[("PORT", "3001")]).unwrap().listen_addr,
        "0.0.0.0:3001"
    );
    let c = load(&[("PORT", "3001"), ("LISTEN_ADDR", "127.0.0.1:1")]).unwrap();
    assert_eq!(c.listen_addr, "127.0.0.1:1");
}

#[test]
fn errors_name_the_setting() {
    let e = load(&[("IMAGE_PERSIST_MODE", "sometimes")]).unwrap_err();
    assert_eq!(e.setting, "IMAGE_PERSIST_MODE");
    let e = load(&[("UPSTREAM_URL", "notaurl")]).unwrap_err();
    assert_eq!(e.setting, "UPSTREAM_URL");
    let e = load(&[("IMAGE_MAX_BYTES", "-3")]).unwrap_err();
    assert_eq!(e.setting, "IMAGE_MAX_BYTES");
    let e = load(&[("IMAGE_HOSTING_ENABLED", "maybe")]).unwrap_err();
    assert_eq!(e.setting, "IMAGE_HOSTING_ENABLED");
    assert!(e.to_string().contains("IMAGE_HOSTING_ENABLED"));
}

#[test]
fn toml_then_env() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "image_max_age_days = 0.5\nIMAGE_REWRITE_PATHS = [\"/a\", \"/b/*\"]\nimage_per_user_limit = 7\n",
    )
    .unwrap();
    let c = Config::load_from(Some(&path), &env(&[("IMAGE_PER_USER_LIMIT", "9")])).unwrap();
    assert_eq!(c.lifecycle.max_age, Duration::from_secs(43_200));
    assert_eq!(c.lifecycle.per_user_limit, 9);
    assert!(c.is_rewrite_path("/a"));
    assert!(c.is_rewrite_path("/b/anything"));
    assert!(!c.is_rewrite_path("/c"));
}

#[test]
fn unknown_toml_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "upstream_ulr = \"http://x\"\n").unwrap();
    let e = Config::load_from(Some(&path), &[]).unwrap_err();
    assert_eq!(e.setting, "upstream_ulr");
}

#[test]
fn fractional_age() {
    let c = load(&[("IMAGE_MAX_AGE_DAYS", "0.0001")]).unwrap();
    assert!((c.lifecycle.max_age.as_secs_f64() - 8.64).abs() < 1e-6);
}

#[test]
fn describe_redacts_secrets() {
    let c = load(&[
        ("ADMIN_TOKEN", "hunter2-hunter2-hunter2-hunter2-hunter2"),
        ("JWT_SECRET", "s3cret"),
    ])
    .unwrap();
    let d = c.describe();
    assert!(!d.contains("hunter2-hunter2-hunter2-hunter2-hunter2") && !d.contains("s3cret"));
    assert!(d.contains("ADMIN_TOKEN = \"<redacted>\""));
}

#[test]
fn s3_needs_a_bucket() {
    let e = load(&[("IMAGE_STORAGE_BACKEND", "s3")]).unwrap_err();
    assert_eq!(e.setting, "S3_BUCKET");
}

#[test]
fn docs_list_every_setting() {
    let docs = include_str!("../../docs/settings.md");
    let example = include_str!("../../conf/permaproxy.example.toml");
    for s in settings::SETTINGS {
        assert!(
            docs.contains(&format!("| `{}` |", s.name)),
            "docs/settings.md lacks {} (run scripts/gen-settings-docs.py)",
            s.name
        );
        assert!(
            example.contains(&format!("# {} = ", s.name.to_ascii_lowercase())),
            "example TOML lacks {}",
            s.name
        );
    }
    let help = settings::help_text();
    assert!(settings::SETTINGS.iter().all(|s| help.contains(s.name)));
}

#[test]
fn example_toml_loads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/permaproxy.example.toml");
    Config::load_from(Some(&path), &[]).unwrap();
}

#[test]
fn database_defaults_to_sqlite_in_the_storage_folder() {
    let c = load(&[("IMAGE_STORAGE_PATH", "/data/images")]).unwrap();
    assert_eq!(c.database.url, "sqlite:///data/images/permaproxy.db");
    let c = load(&[("DATABASE_URL", "postgres://u:pw@db:5432/pp")]).unwrap();
    assert_eq!(c.database.url, "postgres://u:pw@db:5432/pp");
    assert!(
        c.describe()
            .contains("postgres://u:%3Credacted%3E@db:5432/pp"),
        "{}",
        c.describe()
    );
    let e = load(&[("DATABASE_URL", "mysql://x")]).unwrap_err();
    assert_eq!(e.setting, "DATABASE_URL");
    let e = load(&[("IMAGE_PENDING_LEASE_SECS", "1")]).unwrap_err();
    assert_eq!(e.setting, "IMAGE_PENDING_LEASE_SECS");
    let c = load(&[("IMAGE_FIRST_HIT_DEADLINE_SECS", "0")]).unwrap();
    assert_eq!(c.persist.first_hit_deadline, None);
}

/// Finding 8 (issue 20): Studio API's framework reads DATABASE_URL and
/// JWT_SECRET too; the PERMAPROXY_ names win, and check-config says which.
#[test]
fn finding_08_permaproxy_names_win() {
    let c = load(&[
        ("DATABASE_URL", "postgres://studio:pw@db/studio"),
        ("PERMAPROXY_DATABASE_URL", "postgres://pp:pw@db/pp"),
        ("JWT_SECRET", "studio-secret"),
        ("PERMAPROXY_JWT_SECRET", "pp-secret"),
    ])
    .unwrap();
    assert_eq!(c.database.url, "postgres://pp:pw@db/pp");
    assert_eq!(c.database.url_from, "PERMAPROXY_DATABASE_URL");
    assert_eq!(c.database.schema, "permaproxy");
    let d = c.describe();
    assert!(d.contains("# database: PERMAPROXY_DATABASE_URL is in effect (DATABASE_URL is set too, and ignored)"), "{d}");
    assert!(
        d.contains("# JWT secret: PERMAPROXY_JWT_SECRET is in effect"),
        "{d}"
    );
    assert!(!d.contains("pp-secret") && !d.contains(":pw@"), "{d}");
    let c = load(&[
        ("DATABASE_URL", "postgres://studio@db/s"),
        ("JWT_SECRET", "x"),
    ])
    .unwrap();
    assert_eq!(c.database.url_from, "DATABASE_URL");
    assert!(c
        .describe()
        .contains("# JWT secret: JWT_SECRET is in effect\n"));
    let e = load(&[("PERMAPROXY_DATABASE_URL", "mysql://x")]).unwrap_err();
    assert_eq!(e.setting, "PERMAPROXY_DATABASE_URL");
    let e = load(&[("PERMAPROXY_DB_SCHEMA", "Bad-Name")]).unwrap_err();
    assert_eq!(e.setting, "PERMAPROXY_DB_SCHEMA");
}

/// Finding 9 (issue 20): an 11-character admin token and a TTL that wraps
/// around were accepted.
#[test]
fn finding_09_short_token_and_huge_ttl_are_refused() {
    let e = load(&[("ADMIN_TOKEN", "hunter2-abc")]).unwrap_err();
    assert_eq!(e.setting, "ADMIN_TOKEN");
    assert!(e.to_string().contains("32"), "{e}");
    assert!(
        !e.to_string().contains("hunter2"),
        "the token is not echoed: {e}"
    );
    assert!(load(&[("ADMIN_TOKEN", &"x".repeat(32))]).is_ok());
    for ttl in ["18446744073709551615", "315360001"] {
        let e = load(&[("IMAGE_URL_TTL_SECS", ttl)]).unwrap_err();
        assert_eq!(e.setting, "IMAGE_URL_TTL_SECS", "{ttl}");
    }
    let c = load(&[("IMAGE_URL_TTL_SECS", "315360000")]).unwrap();
    assert_eq!(
        c.signing.ttl,
        Some(std::time::Duration::from_secs(315_360_000))
    );
}

/// Finding 10 (issue 20): outputs on delivery.replicate.com were never
/// hosted by default.
#[test]
fn finding_10_default_hosts_cover_delivery_replicate_com() {
    let c = load(&[]).unwrap();
    for url in [
        "https://delivery.replicate.com/xezq/abc/out-0.webp",
        "https://replicate.delivery/pbxt/abc/out-0.png",
        "https://tjzk.replicate.delivery/abc/out-0.png",
    ] {
        assert!(c.rewrite.sources.classify(url).is_some(), "{url}");
    }
    for url in [
        "https://x.delivery.replicate.com/a.png",
        "https://replicate.com/a.png",
    ] {
        assert!(c.rewrite.sources.classify(url).is_none(), "{url}");
    }
}
