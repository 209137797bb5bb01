use super::*;
use crate::ids::ImageId;

fn key() -> ImageKey {
    ImageKey::new(UserId::parse("alice").unwrap(), ImageId::for_source("s"))
}

#[test]
fn tags_are_short_stable_and_opaque() {
    let k = key();
    assert_eq!(image_tag(&k), image_tag(&key()));
    assert_ne!(image_tag(&k), user_tag(&k.user));
    assert!(image_tag(&k).starts_with("ppi") && image_tag(&k).len() == 19);
    assert!(user_tag(&k.user).starts_with("ppu") && !user_tag(&k.user).contains("alice"));
    let t = Tagging::new(Some(Provider::Fastly), None).unwrap();
    assert_eq!(t.header, "surrogate-key");
    assert_eq!(
        t.value(&k),
        format!("{} {}", user_tag(&k.user), image_tag(&k))
    );
    assert!(t.value(&k).len() < 200);
    let t = Tagging::new(Some(Provider::Cloudflare), Some("X-Tags")).unwrap();
    assert_eq!(t.header, "x-tags");
    assert!(t.value(&k).contains(','));
    assert!(Tagging::new(None, None).is_none());
    assert!(Tagging::new(Some(Provider::Webhook), None).is_none());
}

#[test]
fn each_provider_gets_its_documented_request() {
    let tags = vec!["a".to_string(), "b".to_string()];
    let t = Target::new(Provider::Cloudflare, None, "z1".into(), "tok".into(), false);
    let r = t.request(&tags, &[]);
    assert_eq!(
        r.url,
        "https://api.cloudflare.com/client/v4/zones/z1/purge_cache"
    );
    assert!(r.headers.contains(&("authorization", "Bearer tok".into())));
    assert_eq!(r.body, r#"{"tags":["a","b"]}"#);
    let t = Target::new(
        Provider::Fastly,
        Some("http://x/".into()),
        "s1".into(),
        "k".into(),
        true,
    );
    let r = t.request(&tags, &[]);
    assert_eq!(r.url, "http://x/service/s1/purge");
    assert!(r.headers.contains(&("fastly-key", "k".into())));
    assert!(r.headers.contains(&("fastly-soft-purge", "1".into())));
    assert_eq!(r.body, r#"{"surrogate_keys":["a","b"]}"#);
    let t = Target::new(Provider::Bunny, None, "9".into(), "k".into(), false);
    let r = t.request(&tags[..1], &[]);
    assert_eq!(r.url, "https://api.bunny.net/pullzone/9/purgeCache");
    assert!(r.headers.contains(&("accesskey", "k".into())));
    assert_eq!(r.body, r#"{"CacheTag":"a"}"#);
    let t = Target::new(
        Provider::Webhook,
        Some("http://hook/p".into()),
        String::new(),
        String::new(),
        false,
    );
    let r = t.request(&tags, &["http://h/1.png".to_string()]);
    assert_eq!(r.url, "http://hook/p");
    assert_eq!(r.body, r#"{"tags":["a","b"],"urls":["http://h/1.png"]}"#);
}

#[test]
fn retry_after_and_backoff_are_bounded() {
    assert_eq!(retry_after_secs(Some("7")), 7);
    assert_eq!(retry_after_secs(Some("Wed, 21 Oct 2015 07:28:00 GMT")), 60);
    assert_eq!(retry_after_secs(None), 60);
    assert_eq!(retry_after_secs(Some("999999")), 3600);
    assert_eq!(backoff_secs(0), 2);
    assert_eq!(backoff_secs(3), 8);
    assert_eq!(backoff_secs(40), 300);
}
