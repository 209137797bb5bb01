//! CDN purge: every hosted answer carries its user's and its image's tags,
//! and every way an image can go (admin delete, user delete, the private
//! flag, retention, the per-user limit, the disk cap) purges it at the CDN,
//! through a stand-in of each provider's documented API: batched, retried
//! on 429 and 503, kept across a kill -9, and sent once across replicas.

use crate::common::cdn::{self, CdnApi};
use crate::common::*;
use crate::*;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Digest;

/// The tag of a name as the documentation defines it, written out here
/// independently of the proxy's code.
fn tag(label: &str, name: &str) -> String {
    let d = sha2::Sha256::digest(format!("permaproxy:{label}:{name}").as_bytes());
    let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("pp{}{hex}", &label[..1])
}

fn image_tag(img: &Img) -> String {
    tag("image", &format!("{}/{}", img.user(), img.id()))
}

fn user_tag(user: &str) -> String {
    tag("user", user)
}

fn provider(cdn: &CdnApi, name: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("CDN_PURGE_PROVIDER".into(), name.into()),
        ("CDN_PURGE_API_URL".into(), cdn.url()),
        ("CDN_PURGE_MAX_PER_MINUTE".into(), "6000".into()),
    ];
    let ids = match name {
        "cloudflare" => [
            ("CLOUDFLARE_ZONE_ID", cdn::ZONE),
            ("CLOUDFLARE_API_TOKEN", cdn::TOKEN),
        ],
        "fastly" => [
            ("FASTLY_SERVICE_ID", cdn::SERVICE),
            ("FASTLY_API_TOKEN", cdn::TOKEN),
        ],
        _ => [
            ("BUNNY_PULLZONE_ID", cdn::PULLZONE),
            ("BUNNY_API_KEY", cdn::TOKEN),
        ],
    };
    env.extend(ids.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

async fn purge_stands(cdn: &CdnApi, name: &str, extra: &[(&str, &str)]) -> Stands {
    let env = provider(cdn, name);
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend_from_slice(extra);
    stands(&all).await
}

/// Waits until the CDN has purged every tag of `want`.
async fn purged(cdn: &CdnApi, want: &[String]) -> bool {
    wait_until(secs(20), || async {
        let got = cdn.purged_tags();
        want.iter().all(|t| got.contains(t))
    })
    .await
}

async fn head_or_get(
    p: &Proxy,
    img: &Img,
    method: reqwest::Method,
    headers: &[(&str, &str)],
) -> Reply {
    let mut rb = client().request(method, p.url(&img.hosted.path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    fetch(rb).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_tags_every_answer_and_purges_admin_deletes() {
    let cdn = CdnApi::start().await;
    let s = purge_stands(&cdn, "cloudflare", &[]).await;
    let a = store_png(&s, "cf", "cf-a.png", &fixtures::noise_png(64, 64, 3000)).await;
    let want = format!("{},{}", user_tag("cf"), image_tag(&a));
    let etag = get(&s.proxy, &a).await.h("etag").to_string();
    let answers = [
        (reqwest::Method::GET, vec![], 200),
        (reqwest::Method::GET, vec![("range", "bytes=0-9")], 206),
        (
            reqwest::Method::GET,
            vec![("if-none-match", etag.as_str())],
            304,
        ),
        (reqwest::Method::HEAD, vec![], 200),
    ];
    for (method, headers, status) in answers {
        let r = head_or_get(&s.proxy, &a, method.clone(), &headers).await;
        assert_eq!(r.status, status, "{method} {headers:?}");
        assert_eq!(r.h("cache-tag"), want, "{method} {headers:?}");
        assert!(r.h("cache-tag").len() < 200);
    }
    let variant = fetch(client().get(s.proxy.url(&format!("{}?w=64", a.hosted.path)))).await;
    assert_eq!(variant.status, 200, "{}", variant.text());
    assert_eq!(
        variant.h("cache-tag"),
        want,
        "a variant shares its image's tag"
    );

    // Admin delete of one image: its tag, with the token, as documented.
    let b = store_png(&s, "cf", "cf-b.png", &fixtures::unique_png(3001)).await;
    assert_eq!(
        admin_delete(&s.proxy, &format!("/admin/users/cf/images/{}", b.id())).await,
        204
    );
    assert!(purged(&cdn, &[image_tag(&b)]).await, "{:?}", cdn.calls());
    let call = cdn
        .calls()
        .into_iter()
        .find(|c| c.tags().contains(&image_tag(&b)))
        .unwrap();
    assert_eq!(
        call.path,
        format!("/client/v4/zones/{}/purge_cache", cdn::ZONE)
    );
    assert_eq!(
        call.header("authorization"),
        Some(format!("Bearer {}", cdn::TOKEN).as_str())
    );
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert!(call.accepted);

    // A whole user: one user tag.
    store_png(&s, "gone", "gone-1.png", &fixtures::unique_png(3002)).await;
    assert_eq!(admin_delete(&s.proxy, "/admin/users/gone").await, 204);
    assert!(purged(&cdn, &[user_tag("gone")]).await);
    assert!(
        s.proxy
            .metric(r#"permaproxy_cdn_purges_total{provider="cloudflare",outcome="sent"}"#)
            .await
            >= 2.0
    );
    assert!(cdn.calls().iter().all(|c| c.accepted), "{:?}", cdn.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn making_an_image_private_purges_it() {
    let cdn = CdnApi::start().await;
    let signing = [
        ("IMAGE_URL_SIGNING", "sign"),
        ("IMAGE_SIGNING_KEYS", SIGNING_KEY),
    ];
    let s = purge_stands(&cdn, "cloudflare", &signing).await;
    let a = store_png(&s, "cf", "cf-p.png", &fixtures::unique_png(3003)).await;
    // Made private: the public copy must leave the edge.
    let r = admin_req(
        &s.proxy,
        reqwest::Method::PUT,
        &format!("/admin/users/cf/images/{}/private", a.id()),
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(purged(&cdn, &[image_tag(&a)]).await);

    assert_eq!(cdn.purged_tags(), vec![image_tag(&a)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_limit_the_disk_cap_and_retention_purge_too() {
    let cdn = CdnApi::start().await;
    let size = fixtures::noise_png(40, 40, 3100).len();
    let cap = (size * 5 / 2).to_string();
    let s = purge_stands(
        &cdn,
        "cloudflare",
        &[
            ("IMAGE_PER_USER_LIMIT", "1"),
            TRUSTED_IDS,
            ("IMAGE_STORAGE_MAX_BYTES", &cap),
        ],
    )
    .await;
    let a = store_png(&s, "lim", "lim-a.png", &fixtures::noise_png(40, 40, 3100)).await;
    let b = store_png(&s, "lim", "lim-b.png", &fixtures::noise_png(40, 40, 3101)).await;
    assert_gone(&get(&s.proxy, &a).await, "A, over the per-user limit");
    assert!(purged(&cdn, &[image_tag(&a)]).await, "user limit");
    let c = store_png(&s, "cap1", "cap-c.png", &fixtures::noise_png(40, 40, 3102)).await;
    let d = store_png(&s, "cap2", "cap-d.png", &fixtures::noise_png(40, 40, 3103)).await;
    assert_gone(&get(&s.proxy, &b).await, "B, over the disk cap");
    assert!(purged(&cdn, &[image_tag(&b)]).await, "disk cap");
    for img in [&c, &d] {
        assert_served(&get(&s.proxy, img).await, img, "kept");
    }

    // Retention: 0.00003 days is 2.6 s; cleanup every second.
    let cdn = CdnApi::start().await;
    let s = purge_stands(
        &cdn,
        "cloudflare",
        &[
            ("IMAGE_MAX_AGE_DAYS", "0.00003"),
            ("IMAGE_CLEANUP_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    let old = store_png(&s, "ret", "ret.png", &fixtures::unique_png(3104)).await;
    assert!(purged(&cdn, &[image_tag(&old)]).await, "retention");
    assert_gone(&get(&s.proxy, &old).await, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_are_batched_to_100_and_retried_on_503_and_429() {
    let cdn = CdnApi::start().await;
    // 0.00003 days is 2.6 s: every image expires, and one cleanup deletes
    // all 101 in one transaction, so 101 purges are owed at once.
    let s = purge_stands(
        &cdn,
        "cloudflare",
        &[
            ("IMAGE_MAX_SOURCES_PER_RESPONSE", "200"),
            ("IMAGE_MAX_AGE_DAYS", "0.00003"),
        ],
    )
    .await;
    let images: Vec<(String, Vec<u8>)> = (0..101)
        .map(|i| (format!("many-{i}.png"), fixtures::unique_png(3200 + i)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = images
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    let imgs = crate::rules::one_response(&s, "many", &refs).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    // The provider answers the first call 503, the next 429 (Retry-After).
    cdn.fail_next(503, None);
    cdn.fail_next(429, Some("1"));
    let done = admin_cleanup(&s.proxy, false).await;
    assert_eq!(
        done["deleted"].as_array().map(Vec::len),
        Some(101),
        "{done}"
    );
    let want: Vec<String> = imgs.iter().map(image_tag).collect();
    assert!(
        purged(&cdn, &want).await,
        "not all purged: {:?}",
        cdn.calls()
    );
    let calls = cdn.calls();
    assert_eq!(calls[0].status, 503);
    assert_eq!(
        calls[0].tags().len(),
        100,
        "the first batch is the documented 100"
    );
    assert!(calls.iter().any(|c| c.status == 429));
    assert!(calls.iter().all(|c| c.accepted && c.tags().len() <= 100));
    let ok: Vec<_> = calls.iter().filter(|c| c.status == 200).collect();
    assert_eq!(ok.iter().map(|c| c.tags().len()).sum::<usize>(), 101);
    for outcome in ["retried", "rate_limited"] {
        let q =
            format!(r#"permaproxy_cdn_purges_total{{provider="cloudflare",outcome="{outcome}"}}"#);
        assert!(s.proxy.metric(&q).await >= 1.0, "{outcome}");
    }
    let drained = wait_until(secs(30), || async {
        s.proxy.metric("permaproxy_cdn_purge_queue").await == 0.0
    })
    .await;
    assert!(drained, "the queue gauge does not drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_owed_at_a_kill_9_is_sent_after_restart() {
    let cdn = CdnApi::start().await;
    let mut s = purge_stands(&cdn, "cloudflare", &[]).await;
    let a = store_png(&s, "k9", "k9.png", &fixtures::unique_png(3300)).await;
    cdn.down(503);
    assert_eq!(
        admin_delete(&s.proxy, &format!("/admin/users/k9/images/{}", a.id())).await,
        204
    );
    assert!(wait_until(secs(20), || async { !cdn.calls().is_empty() }).await);
    s.proxy.kill9();
    cdn.up();
    s.proxy.restart().await;
    assert!(
        purged(&cdn, &[image_tag(&a)]).await,
        "the owed purge was lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_send_each_purge_once() {
    let cdn = CdnApi::start().await;
    let s = purge_stands(&cdn, "cloudflare", &[]).await;
    let env = provider(&cdn, "cloudflare");
    let mut opts = ProxyOptions::for_stands(&s.api, &s.host)
        .env("DATABASE_URL", s.proxy.database_url())
        .env("ADMIN_TOKEN", TOKEN);
    for (k, v) in &env {
        opts = opts.env(k, v);
    }
    let other = Proxy::start(opts).await;
    let mut imgs = Vec::new();
    for i in 0..12 {
        imgs.push(
            store_png(
                &s,
                "rep",
                &format!("rep-{i}.png"),
                &fixtures::unique_png(3400 + i),
            )
            .await,
        );
    }
    // Deleted through both replicas; both send.
    for (i, img) in imgs.iter().enumerate() {
        let p = if i % 2 == 0 { &s.proxy } else { &other };
        assert_eq!(
            admin_delete(p, &format!("/admin/users/rep/images/{}", img.id())).await,
            204
        );
    }
    let want: Vec<String> = imgs.iter().map(image_tag).collect();
    assert!(purged(&cdn, &want).await);
    // Give a second sender every chance to repeat one, then count.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let got = cdn.purged_tags();
    for t in &want {
        assert_eq!(
            got.iter().filter(|g| *g == t).count(),
            1,
            "{t} purged twice: {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastly_soft_purges_surrogate_keys() {
    let cdn = CdnApi::start().await;
    let s = purge_stands(&cdn, "fastly", &[("FASTLY_SOFT_PURGE", "true")]).await;
    let a = store_png(&s, "fa", "fa.png", &fixtures::unique_png(3500)).await;
    let r = get(&s.proxy, &a).await;
    assert_eq!(
        r.h("surrogate-key"),
        format!("{} {}", user_tag("fa"), image_tag(&a))
    );
    assert_eq!(
        admin_delete(&s.proxy, &format!("/admin/users/fa/images/{}", a.id())).await,
        204
    );
    assert!(purged(&cdn, &[image_tag(&a)]).await, "{:?}", cdn.calls());
    let call = &cdn.calls()[0];
    assert_eq!(call.path, format!("/service/{}/purge", cdn::SERVICE));
    assert_eq!(call.header("fastly-key"), Some(cdn::TOKEN));
    assert_eq!(call.header("fastly-soft-purge"), Some("1"));
    assert_eq!(call.body["surrogate_keys"][0], image_tag(&a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bunny_purges_one_cache_tag_per_request() {
    let cdn = CdnApi::start().await;
    let s = purge_stands(&cdn, "bunny", &[]).await;
    let a = store_png(&s, "bu", "bu-a.png", &fixtures::unique_png(3600)).await;
    let b = store_png(&s, "bu", "bu-b.png", &fixtures::unique_png(3601)).await;
    assert_eq!(
        get(&s.proxy, &a).await.h("cdn-tag"),
        format!("{},{}", user_tag("bu"), image_tag(&a))
    );
    for img in [&a, &b] {
        assert_eq!(
            admin_delete(&s.proxy, &format!("/admin/users/bu/images/{}", img.id())).await,
            204
        );
    }
    assert!(
        purged(&cdn, &[image_tag(&a), image_tag(&b)]).await,
        "{:?}",
        cdn.calls()
    );
    for call in cdn.calls() {
        assert_eq!(call.path, format!("/pullzone/{}/purgeCache", cdn::PULLZONE));
        assert_eq!(call.header("accesskey"), Some(cdn::TOKEN));
        assert_eq!(call.tags().len(), 1, "one tag per request");
    }
}

const SIGNING_KEY: &str = "purge-test-signing-key-0123456789abcdef";

const HOOK_SECRET: &str = "whsec_dGhpcyBpcyBhIHB1cmdlIHdlYmhvb2sgc2VjcmV0";

/// Standard Webhooks, checked with code of the test's own.
fn verifies(call: &cdn::PurgeCall) -> bool {
    let (Some(id), Some(ts), Some(sig)) = (
        call.header("webhook-id"),
        call.header("webhook-timestamp"),
        call.header("webhook-signature"),
    ) else {
        return false;
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(HOOK_SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{}", call.body).as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    sig.split(' ').any(|s| s == format!("v1,{want}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_provider_posts_signed_tags_and_urls() {
    let cdn = CdnApi::start().await;
    let hook = format!("{}/purge-hook", cdn.url());
    let s = stands(&[
        ("CDN_PURGE_PROVIDER", "webhook"),
        ("CDN_PURGE_WEBHOOK_URL", &hook),
        ("CDN_PURGE_WEBHOOK_SECRET", HOOK_SECRET),
        ("IMAGE_CACHE_TAG_HEADER", "X-Cache-Tags"),
        ("PUBLIC_BASE_URL", "https://img.example.com"),
    ])
    .await;
    let a = store_png(&s, "wh", "wh.png", &fixtures::unique_png(3700)).await;
    assert_eq!(
        get(&s.proxy, &a).await.h("x-cache-tags"),
        format!("{},{}", user_tag("wh"), image_tag(&a))
    );
    assert_eq!(
        admin_delete(&s.proxy, &format!("/admin/users/wh/images/{}", a.id())).await,
        204
    );
    assert!(purged(&cdn, &[image_tag(&a)]).await, "{:?}", cdn.calls());
    let call = &cdn.calls()[0];
    assert_eq!(call.path, "/purge-hook");
    assert!(verifies(call), "the signature does not verify: {call:?}");
    assert_eq!(
        call.body["urls"][0],
        format!("https://img.example.com{}", a.hosted.path)
    );
}
