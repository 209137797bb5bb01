//! The admin API: deletes (from memory too), deleting a user, auth, the
//! listing with its metadata, and stats.

use crate::common::*;
use crate::*;
use reqwest::Method;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_answers_410_at_once_even_from_the_memory_cache() {
    let s = stands(&[]).await;
    let storage = s.proxy.storage_path().to_path_buf();
    let x = store_png(&s, "u1", "x.png", &fixtures::unique_png(30)).await;
    let y = store_png(&s, "u1", "y.png", &fixtures::unique_png(31)).await;
    for img in [&x, &y] {
        assert_served(&get(&s.proxy, img).await, img, "first GET");
    }
    // The second GET is answered from memory.
    let memory = "permaproxy_hosted_requests_total{tier=\"memory\"}";
    let before = s.proxy.metric(memory).await;
    for img in [&x, &y] {
        assert_served(&get(&s.proxy, img).await, img, "cached GET");
    }
    assert_eq!(s.proxy.metric(memory).await, before + 2.0);
    assert_eq!(s.proxy.metric("permaproxy_stored_images").await, 2.0);
    let bytes = (x.bytes.len() + y.bytes.len()) as f64;
    assert_eq!(s.proxy.metric("permaproxy_stored_bytes").await, bytes);

    // With its extension...
    let path = format!("/admin/users/u1/images/{}.png", x.id());
    assert_eq!(admin_delete(&s.proxy, &path).await, 204);
    assert_gone(&get(&s.proxy, &x).await, "deleted while cached");
    let head = fetch(client().head(s.proxy.url(&x.hosted.path))).await;
    assert_eq!(head.status, 410, "HEAD of a deleted image");
    assert_not_on_disk(&storage, &x);
    assert_eq!(s.proxy.metric("permaproxy_stored_images").await, 1.0);
    assert_eq!(
        s.proxy.metric("permaproxy_stored_bytes").await,
        y.bytes.len() as f64
    );
    assert_served(&get(&s.proxy, &y).await, &y, "the other image");

    // ... and without.
    let path = format!("/admin/users/u1/images/{}", y.id());
    assert_eq!(admin_delete(&s.proxy, &path).await, 204);
    assert_gone(&get(&s.proxy, &y).await, "deleted by bare id");
    assert_not_on_disk(&storage, &y);
    assert_eq!(s.proxy.metric("permaproxy_stored_images").await, 0.0);
    assert_eq!(s.proxy.metric("permaproxy_stored_bytes").await, 0.0);
    assert_eq!(stats_totals(&s.proxy).await, (0, 0));

    // Deleting what is not there is a 404, not a 5xx.
    assert_eq!(admin_delete(&s.proxy, &path).await, 404);
    let bogus = "/admin/users/u1/images/img_000000000000000000000000.png";
    assert_eq!(admin_delete(&s.proxy, bogus).await, 404);
    assert_eq!(
        admin_delete(&s.proxy, "/admin/users/u1/images/not-an-id").await,
        404
    );

    // The same source generated again is stored again, and served.
    let again = store_png(&s, "u1", "x.png", &fixtures::unique_png(30)).await;
    assert_eq!(again.id(), x.id());
    assert_served(&get(&s.proxy, &again).await, &again, "stored again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_removes_their_files() {
    let s = stands(&[]).await;
    let storage = s.proxy.storage_path().to_path_buf();
    let a1 = store_png(&s, "alice", "a1.png", &fixtures::unique_png(40)).await;
    let a2 = store_with(
        &s,
        "alice",
        "a2.jpg",
        fixtures::JPEG,
        "image/jpeg",
        json!({}),
    )
    .await;
    let b1 = store_png(&s, "bob", "b1.png", &fixtures::unique_png(41)).await;
    assert_served(&get(&s.proxy, &a1).await, &a1, "cached before the delete");
    assert_eq!(files_under(&storage.join("alice")).len(), 4);

    assert_eq!(admin_delete(&s.proxy, "/admin/users/alice").await, 204);
    for img in [&a1, &a2] {
        assert_gone(&get(&s.proxy, img).await, "alice's image");
    }
    let left = files_under(&storage.join("alice"));
    assert!(left.is_empty(), "alice's files remain: {left:?}");
    assert!(listed_ids(&s.proxy, "alice").await.is_empty());
    assert_served(&get(&s.proxy, &b1).await, &b1, "bob's image");
    assert_on_disk(&storage, &b1);
    assert_eq!(stats_totals(&s.proxy).await, (1, b1.bytes.len() as u64));
    assert_eq!(s.proxy.metric("permaproxy_stored_images").await, 1.0);
    // Deleting a user with nothing stored is fine too.
    assert_eq!(admin_delete(&s.proxy, "/admin/users/alice").await, 204);
}

/// Every admin route, with a method, for the auth checks.
fn admin_routes(user: &str, id: &str) -> Vec<(Method, String)> {
    vec![
        (Method::GET, "/admin/stats".to_string()),
        (Method::GET, "/admin/failed".to_string()),
        (Method::GET, format!("/admin/users/{user}/images?limit=2")),
        (Method::POST, "/admin/cleanup?dry_run=true".to_string()),
        (Method::POST, "/admin/cleanup".to_string()),
        (Method::DELETE, format!("/admin/users/{user}/images/{id}")),
        (Method::DELETE, format!("/admin/users/{user}")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_auth_needs_the_token_and_is_off_without_one() {
    let s = stands(&[]).await;
    let img = store_png(&s, "u1", "auth.png", &fixtures::unique_png(50)).await;
    let longer = format!("{TOKEN}x");
    let wrong = [
        None,
        Some("wrong-token"),
        Some(&TOKEN[..TOKEN.len() - 1]),
        Some(longer.as_str()),
        Some(""),
    ];
    // After 10 wrong tokens a client gets 429 instead of 401 (the
    // throttle, tests/admin_ui): either way, refused.
    let refused = |r: &Reply| {
        (r.status == 401 && r.json()["code"] == "unauthorized")
            || (r.status == 429 && r.json()["code"] == "rate_limited")
    };
    for (method, path) in admin_routes("u1", img.id()) {
        for token in wrong {
            let r = admin_req(&s.proxy, method.clone(), &path, token).await;
            assert!(refused(&r), "{method} {path} with {token:?}: {}", r.status);
        }
        // Not a bearer token at all.
        let r = fetch(
            client()
                .request(method.clone(), format!("{}{path}", s.proxy.admin()))
                .header("authorization", format!("Basic {TOKEN}")),
        )
        .await;
        assert!(refused(&r), "{method} {path} with Basic: {}", r.status);
    }
    // None of those deleted anything.
    assert_served(&get(&s.proxy, &img).await, &img, "after refused deletes");
    assert_on_disk(s.proxy.storage_path(), &img);

    // The right token opens every route, once the throttle those wrong
    // tokens earned lets this client try again (issue 20, finding 9).
    let stats = || async {
        admin_req(&s.proxy, Method::GET, "/admin/stats", Some(TOKEN))
            .await
            .status
            == 200
    };
    assert!(
        wait_until(secs(30), stats).await,
        "the throttle never ended"
    );
    for (method, path) in admin_routes("u1", img.id()) {
        let r = admin_req(&s.proxy, method.clone(), &path, Some(TOKEN)).await;
        let want = if method == Method::DELETE { 204 } else { 200 };
        assert_eq!(r.status, want, "{method} {path}: {}", r.text());
    }
    assert_gone(&get(&s.proxy, &img).await, "deleted with the token");

    // No ADMIN_TOKEN: every admin route answers 403, whatever is sent.
    let off = stands(&[("ADMIN_TOKEN", "")]).await;
    let kept = store_png(&off, "u1", "auth.png", &fixtures::unique_png(50)).await;
    for (method, path) in admin_routes("u1", kept.id()) {
        for token in [None, Some(TOKEN), Some("")] {
            let r = admin_req(&off.proxy, method.clone(), &path, token).await;
            assert_eq!(r.status, 403, "{method} {path} with {token:?}");
            assert_eq!(r.json()["code"], "admin_disabled", "{method} {path}");
        }
    }
    assert_served(&get(&off.proxy, &kept).await, &kept, "admin disabled");
    // Health and metrics need no token.
    for p in [&s.proxy, &off.proxy] {
        let r = fetch(client().get(format!("{}/healthz", p.admin()))).await;
        assert_eq!(r.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_every_image_with_its_metadata() {
    let s = stands(&[]).await;
    let mut imgs = Vec::new();
    for (i, (bytes, ct, ext)) in fixtures::all().into_iter().enumerate() {
        let name = format!("list-{i}.{ext}");
        // The first generate response carries a prediction id.
        let extra = if i == 0 {
            json!({"id": "pred_xyz123", "status": "succeeded"})
        } else {
            json!({})
        };
        imgs.push(store_with(&s, "lister", &name, bytes, ct, extra).await);
    }
    store_png(&s, "someone-else", "se.png", &fixtures::unique_png(60)).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/users/lister/images?limit=2&cursor={c}"),
            None => "/admin/users/lister/images?limit=2".to_string(),
        };
        let page = admin_json(&s.proxy, &path).await;
        pages += 1;
        let items = page["images"].as_array().expect("images").clone();
        assert!(!items.is_empty() && items.len() <= 2, "{page}");
        seen.extend(items);
        match &page["next"] {
            serde_json::Value::Null => break,
            serde_json::Value::String(c) => cursor = Some(c.clone()),
            other => panic!("next is neither a cursor nor null: {other}"),
        }
        assert!(pages < 10, "the cursors never end");
    }
    assert_eq!(pages, 3, "5 images, 2 a page");
    let mut got: Vec<String> = seen
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let want = ids(&imgs.iter().collect::<Vec<_>>());
    assert_eq!(got, want, "every image exactly once");

    for img in &imgs {
        let item = seen.iter().find(|i| i["id"] == img.id()).unwrap();
        let url = item["url"].as_str().expect("url");
        assert!(
            url.ends_with(&img.hosted.path),
            "{url} vs {}",
            img.hosted.path
        );
        assert_eq!(item["size_bytes"], img.bytes.len(), "{item}");
        assert_eq!(item["content_type"], img.content_type, "{item}");
        for field in ["created_at", "accessed_at", "expires_at"] {
            let t = item[field].as_str().unwrap_or_default();
            assert!(is_rfc3339(t), "{field} = {:?} in {item}", item[field]);
        }
        assert!(
            item["expires_at"].as_str() > item["accessed_at"].as_str(),
            "{item}"
        );
        assert_eq!(item["user_id"], "lister", "{item}");
        assert_eq!(item["sha256"], sha256_hex(&img.bytes), "{item}");
        let prediction = if img.id() == imgs[0].id() {
            json!("pred_xyz123")
        } else {
            json!(null)
        };
        assert_eq!(item["replicate_prediction_id"], prediction, "{item}");
        assert!(
            item["source_url"]
                .as_str()
                .is_some_and(|u| expected_image_id(u) == img.id()),
            "{item}"
        );
    }
    // A user with nothing stored has an empty list.
    let empty = admin_json(&s.proxy, "/admin/users/nobody/images?limit=2").await;
    assert_eq!(empty, json!({"images": [], "next": null}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_give_totals_and_top_users() {
    let s = stands(&[]).await;
    let big = store_png(&s, "bigone", "big.png", &fixtures::noise_png(64, 64, 70)).await;
    let mut small = Vec::new();
    for i in 0..3 {
        let name = format!("s{i}.png");
        small.push(store_png(&s, "many", &name, &fixtures::unique_png(71 + i)).await);
    }
    let mid = store_with(&s, "mid", "m.jpg", fixtures::JPEG, "image/jpeg", json!({})).await;

    let st = admin_json(&s.proxy, "/admin/stats").await;
    let small_bytes: usize = small.iter().map(|i| i.bytes.len()).sum();
    let total = big.bytes.len() + small_bytes + mid.bytes.len();
    assert_eq!(st["images"], 5, "{st}");
    assert_eq!(st["bytes"], total, "{st}");
    let top = st["top_users"].as_array().expect("top_users");
    let mut want = vec![
        ("bigone", 1, big.bytes.len()),
        ("many", 3, small_bytes),
        ("mid", 1, mid.bytes.len()),
    ];
    want.sort_by_key(|w| std::cmp::Reverse(w.2));
    assert_eq!(top.len(), 3, "{st}");
    for (row, (user, n, bytes)) in top.iter().zip(want) {
        assert_eq!(row["user_id"], user, "{st}");
        assert_eq!(row["images"], n, "{st}");
        assert_eq!(row["bytes"], bytes, "{st}");
    }
    assert_eq!(s.proxy.metric("permaproxy_stored_images").await, 5.0);
    assert_eq!(
        s.proxy.metric("permaproxy_stored_bytes").await,
        total as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_requests_leaves_nothing_behind() {
    // Deletes while clients keep requesting the image: whatever they were
    // answered meanwhile, afterwards it is gone from memory, the index,
    // the metrics and the disk.
    let s = stands(&[
        ("IMAGE_DOWNLOAD_RATE_PER_SEC", "100000"),
        ("IMAGE_DOWNLOAD_BURST", "100000"),
    ])
    .await;
    let storage = s.proxy.storage_path().to_path_buf();
    let mut imgs = Vec::new();
    for i in 0..8 {
        let name = format!("race-{i}.png");
        imgs.push(store_png(&s, "race", &name, &fixtures::unique_png(500 + i)).await);
    }
    for img in &imgs {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let url = s.proxy.url(&img.hosted.path);
                let (stop, answered) = (stop.clone(), answered.clone());
                tokio::spawn(async move {
                    let c = client();
                    while !stop.load(Ordering::SeqCst) {
                        match c.get(&url).send().await.map(|r| r.status().as_u16()) {
                            Ok(200 | 410) => answered.fetch_add(1, Ordering::SeqCst),
                            other => panic!("answer while deleting: {other:?}"),
                        };
                    }
                })
            })
            .collect();
        let answers_grow = |n: usize| {
            let from = answered.load(Ordering::SeqCst);
            let answered = answered.clone();
            wait_until(secs(10), move || {
                let answered = answered.clone();
                async move { answered.load(Ordering::SeqCst) >= from + n }
            })
        };
        assert!(answers_grow(8).await, "requests before the delete");
        let path = format!("/admin/users/race/images/{}", img.id());
        assert_eq!(admin_delete(&s.proxy, &path).await, 204);
        assert!(answers_grow(8).await, "requests after the delete");
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.unwrap();
        }
        assert_gone(&get(&s.proxy, img).await, "deleted under load");
        assert_not_on_disk(&storage, img);
    }
    assert!(listed_ids(&s.proxy, "race").await.is_empty());
    assert_eq!(stats_totals(&s.proxy).await, (0, 0));
    assert_eq!(s.proxy.metric("permaproxy_stored_images").await, 0.0);
}

/// Finding 3: a user deleted while one of their downloads was in flight came
/// back: the download finished, stored the image and served it again. The
/// store step now finds the row gone and removes what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_03_a_user_deleted_during_a_download_stays_deleted() {
    let s = stands(&[("IMAGE_PERSIST_MODE", "background")]).await;
    let storage = s.proxy.storage_path().to_path_buf();
    let bytes = fixtures::unique_png(300);
    let src = s
        .host
        .add_url("/pbxt/slow-del.png", bytes.clone(), "image/png");
    s.host
        .slow("/pbxt/slow-del.png", std::time::Duration::from_secs(2));
    s.api.set_generate_json(&json!({ "output": [src] }));
    let r = fetch(
        client()
            .post(s.proxy.url(GEN))
            .header("content-type", "application/json")
            .header("x-user-id", "zoe")
            .body("{}"),
    )
    .await;
    assert_eq!(r.status, 200);
    let url = r.json()["output"][0].as_str().unwrap().to_string();
    let img = Img {
        hosted: parse_hosted(&url).expect("hosted while pending"),
        bytes,
        content_type: "image/png".into(),
    };
    // The download is running (the source answers after 2 s): delete now.
    assert!(
        wait_until(secs(10), || async {
            s.host.hits("/pbxt/slow-del.png") == 1
        })
        .await
    );
    assert_eq!(admin_delete(&s.proxy, "/admin/users/zoe").await, 204);
    // Wait for the download to end, then nothing of zoe may remain.
    let ended = wait_until(secs(20), || async {
        s.proxy
            .metric(r#"permaproxy_downloads_total{outcome="ok"}"#)
            .await
            >= 1.0
    })
    .await;
    assert!(ended, "the download never finished");
    let settled = wait_until(secs(10), || async { files_of(&storage, &img).is_empty() }).await;
    assert!(
        settled,
        "zoe's image came back: {:?}",
        files_of(&storage, &img)
    );
    assert_gone(&get(&s.proxy, &img).await, "after the delete");
    // The log reaches the test through a pipe: wait for the line.
    let logged = wait_until(secs(10), || async {
        s.proxy.log_text().contains("deleted while it downloaded")
    })
    .await;
    assert!(logged, "no log line says why the bytes were dropped");
    let listed = admin_json(&s.proxy, "/admin/users/zoe/images").await;
    assert_eq!(listed["images"], json!([]), "{listed}");
}

/// Finding 7: the failed list was never pruned and `/admin/failed` was one
/// unbounded page. Failures now age out (IMAGE_FAILED_RETENTION_DAYS), are
/// capped (IMAGE_FAILED_MAX), and are listed a page at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_07_failures_are_capped_and_paged() {
    let s = stands(&[
        ("IMAGE_PERSIST_MODE", "background"),
        ("IMAGE_FAILED_MAX", "3"),
    ])
    .await;
    let srcs: Vec<String> = (0..5)
        .map(|i| s.host.url(&format!("/pbxt/missing-{i}.png")))
        .collect();
    s.api.set_generate_json(&json!({ "output": srcs }));
    let r = fetch(
        client()
            .post(s.proxy.url(GEN))
            .header("content-type", "application/json")
            .header("x-user-id", "fay")
            .body("{}"),
    )
    .await;
    assert_eq!(r.status, 200);
    let all_failed = wait_until(secs(20), || async {
        admin_json(&s.proxy, "/admin/stats").await["failed"] == 5
    })
    .await;
    assert!(all_failed, "{}", admin_json(&s.proxy, "/admin/stats").await);
    // Pages of two: 2 + 2 + 1, each failure once.
    let mut seen = Vec::new();
    let mut path = "/admin/failed?limit=2".to_string();
    loop {
        let page = admin_json(&s.proxy, &path).await;
        let items = page["failed"].as_array().unwrap().clone();
        assert!(items.len() <= 2, "{page}");
        for f in &items {
            assert_eq!(f["reason"], "source answered 404", "{f}");
            seen.push(f["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/admin/failed?limit=2&cursor={next}"),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5, "{seen:?}");
    // A cleanup forgets all but the newest three.
    let done = admin_cleanup(&s.proxy, false).await;
    assert_eq!(done["failed_forgotten"], 2, "{done}");
    assert_eq!(admin_json(&s.proxy, "/admin/stats").await["failed"], 3);
    assert_eq!(s.proxy.metric("permaproxy_failed_downloads").await, 3.0);
}
