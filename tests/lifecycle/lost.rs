//! Issue 20, finding 13: a stored object shorter or longer than its row
//! says is lost, never served as it is and never a panic: downloaded again
//! while its source answers, else 404, counted either way.

use crate::common::*;
use crate::*;

const LOST: &str = r#"permaproxy_storage_errors_total{kind="lost"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_13_a_short_or_long_object_is_lost_not_served() {
    let s = stands(&[]).await;
    let storage = s.proxy.storage_path().to_path_buf();
    // Short, with its source still alive: downloaded again, served whole.
    let a = store_png(&s, "lou", "a.png", &fixtures::unique_png(81)).await;
    s.host.revive("/pbxt/a.png");
    let file = image_file(&storage, &a);
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_served(&get(&s.proxy, &a).await, &a, "downloaded again");
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        len,
        "whole on disk again"
    );
    assert_eq!(s.proxy.metric(LOST).await, 1.0);

    // Long, with its source gone: 404, counted, and the proxy lives on.
    let b = store_png(&s, "lou", "b.png", &fixtures::unique_png(82)).await;
    let mut grown = std::fs::read(image_file(&storage, &b)).unwrap();
    grown.extend_from_slice(b"trailing bytes that are not the image");
    std::fs::write(image_file(&storage, &b), grown).unwrap();
    let r = get(&s.proxy, &b).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["code"], "image_not_found");
    assert_eq!(s.proxy.metric(LOST).await, 2.0);
    assert_served(&get(&s.proxy, &a).await, &a, "others still served");
}
