//! Issue 20, findings 8-10 as seen from outside the binary: which of the
//! shared setting names is in effect, what is refused at start, how the
//! admin listener treats a client that has guessed too often, and which
//! hosts are sources by default.

use crate::common::*;
use crate::{generate, hosted};
use serde_json::json;

const TOKEN: &str = "core-admin-token-0123456789abcdef";

/// Finding 8: on Railway, Studio API's DATABASE_URL and JWT_SECRET reach
/// this service too; the PERMAPROXY_ names win and check-config says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_08_check_config_names_the_setting_in_effect() {
    let env = [
        ("DATABASE_URL", "postgres://studio:studio-pw@db:5432/studio"),
        (
            "PERMAPROXY_DATABASE_URL",
            "postgres://pp:pp-pw@db:5432/studio",
        ),
        ("JWT_SECRET", "studio-jwt-secret-value"),
        ("PERMAPROXY_JWT_SECRET", "permaproxy-jwt-secret-value"),
    ];
    let (code, stdout, stderr) = Proxy::run(&["check-config"], &env, secs(10)).await;
    assert_eq!(code, 0, "stderr:\n{stderr}");
    assert!(
        stdout.contains(
            "# database: PERMAPROXY_DATABASE_URL is in effect (DATABASE_URL is set too, and ignored)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "# JWT secret: PERMAPROXY_JWT_SECRET is in effect (JWT_SECRET is set too, and ignored)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("PERMAPROXY_DB_SCHEMA = \"permaproxy\""),
        "{stdout}"
    );
    for secret in [
        "studio-pw",
        "pp-pw",
        "studio-jwt-secret-value",
        "permaproxy-jwt-secret-value",
    ] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
    let (code, stdout, _) = Proxy::run(
        &["check-config"],
        &[("JWT_SECRET", "only-the-plain-one")],
        secs(10),
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("# JWT secret: JWT_SECRET is in effect\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("# database: the embedded SQLite file (neither"),
        "{stdout}"
    );
}

/// Finding 9: an 11-character ADMIN_TOKEN and a TTL that wraps around
/// were accepted; both now stop the start, naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_09_start_refuses_a_short_token_and_a_huge_ttl() {
    for (name, value) in [
        ("ADMIN_TOKEN", "hunter2-abc"),
        ("IMAGE_URL_TTL_SECS", "18446744073709551615"),
        ("IMAGE_URL_TTL_SECS", "315360001"),
    ] {
        let (_, stderr) = Proxy::run_expect_fail(&[(name, value)]).await;
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "the token is not echoed: {stderr}"
        );
    }
}

async fn ask(url: &str, token: &str) -> Reply {
    fetch(
        client()
            .get(url)
            .header("authorization", format!("Bearer {token}")),
    )
    .await
}

/// Finding 9: the right token used to pass while wrong ones got 429, so a
/// guesser still learned which guess was right. A throttled client is now
/// refused whatever it sends, until a try comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_09_a_throttled_client_is_refused_even_with_the_right_token() {
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let proxy = Proxy::start(ProxyOptions::for_stands(&api, &host).env("ADMIN_TOKEN", TOKEN)).await;
    let stats = format!("{}/admin/stats", proxy.admin());
    assert_eq!(ask(&stats, TOKEN).await.status, 200);
    // Wrong guesses until the throttle answers (10 at once are allowed).
    let mut statuses = Vec::new();
    for i in 0..30 {
        let r = ask(&stats, &format!("{TOKEN}-wrong-{i}")).await;
        statuses.push(r.status);
        if r.status == 429 {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(
        statuses[..statuses.len() - 1].iter().all(|s| *s == 401),
        "{statuses:?}"
    );
    // One token comes back every 5 s; the request right after the 429 is
    // well inside that.
    let r = ask(&stats, TOKEN).await;
    assert_eq!(
        r.status,
        429,
        "the right token while throttled: {}",
        r.text()
    );
    assert!(!r.h("retry-after").is_empty());
    // Once a try comes back, the operator is in again.
    assert!(
        wait_until(secs(30), || {
            let url = stats.clone();
            async move { ask(&url, TOKEN).await.status == 200 }
        })
        .await,
        "the right token never got through again"
    );
}

/// Finding 10: outputs on delivery.replicate.com were left as they were
/// (and died within the hour). With the default REPLICATE_HOSTS they are
/// hosted; on_first_hit hands the URL out without fetching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_10_delivery_replicate_com_is_hosted_by_default() {
    let api = StudioApi::start().await;
    let proxy =
        Proxy::start(ProxyOptions::new(&api.url()).env("IMAGE_PERSIST_MODE", "on_first_hit")).await;
    let sources = [
        "https://delivery.replicate.com/xezq/abc123/out-0.webp",
        "https://replicate.delivery/pbxt/abc123/out-0.png",
        "https://tjzk.replicate.delivery/abc123/out-1.png",
    ];
    let elsewhere = "https://replicate.com.example.net/out-0.png";
    api.set_generate_json(&json!({"output": sources, "other": elsewhere}));
    let r = generate(&proxy, "{}", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    for (i, src) in sources.iter().enumerate() {
        let ext = src.rsplit('.').next().unwrap_or_default();
        let h = hosted(&v["output"][i], &proxy.base(), "anonymous", ext);
        assert_eq!(h.image_id, expected_image_id(src), "{src}");
    }
    assert_eq!(v["other"], elsewhere, "other hosts are left alone");
}
