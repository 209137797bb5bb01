use super::*;

const WIDTHS: &[u32] = &[64, 128, 256, 512, 1024, 2048];

fn p(q: &str) -> Result<Option<VariantSpec>, VariantError> {
    VariantSpec::parse(q, WIDTHS)
}
fn spec(q: &str) -> VariantSpec {
    p(q).unwrap().unwrap()
}

#[test]
fn no_variant_parameters_means_original() {
    assert_eq!(p(""), Ok(None));
    assert_eq!(p("&&"), Ok(None));
    assert_eq!(p("exp=1700000000&sig=abcdef"), Ok(None));
}

#[test]
fn parses_all_parameters() {
    let s = spec("w=256&h=100&fit=cover&format=webp&q=70&exp=1&sig=x");
    assert_eq!(s.width(), Some(256));
    assert_eq!(s.height(), Some(100));
    assert_eq!(s.fit(), Fit::Cover);
    assert_eq!(s.format(), OutputFormat::Webp);
    assert_eq!(s.quality(), Some(70));
    let s = spec("format=jpg");
    assert_eq!(s.format(), OutputFormat::Jpeg);
    assert_eq!(s.width(), None);
    assert_eq!(spec("q=50").quality(), Some(50));
    // Percent-encoded names and values are decoded.
    assert_eq!(spec("%77=2%35%36").width(), Some(256));
}

#[test]
fn width_not_in_list_names_w() {
    let e = p("w=300").unwrap_err();
    assert_eq!(e.parameter(), "w");
    assert_eq!(e.code(), "width_not_allowed");
    let msg = e.to_string();
    assert!(msg.contains("300") && msg.contains("64, 128"), "{msg}");
    assert_eq!(p("w=0").unwrap_err().parameter(), "w");
    assert_eq!(p("w=99999999999").unwrap_err().parameter(), "w");
    assert_eq!(
        VariantSpec::parse("w=256", &[]).unwrap_err().code(),
        "width_not_allowed"
    );
}

#[test]
fn unknown_parameter_is_named() {
    let e = p("w=256&width=256").unwrap_err();
    assert_eq!(
        e,
        VariantError::UnknownParameter {
            name: "width".into()
        }
    );
    assert_eq!(e.parameter(), "width");
    assert!(e.to_string().contains("\"width\""));
    // Case matters.
    assert_eq!(p("W=256").unwrap_err().parameter(), "W");
    // Long names are cut.
    let long = "x".repeat(1000);
    let e = p(&long).unwrap_err();
    assert!(e.parameter().chars().count() <= ECHO_MAX + 1);
}

#[test]
fn bad_values_are_refused_and_named() {
    for (q, name) in [
        ("w=", "w"),
        ("w=abc", "w"),
        ("w=+256", "w"),
        ("w=-256", "w"),
        ("w= 256", "w"),
        ("w=256.0", "w"),
        ("w=256&h=0", "h"),
        ("w=256&h=2049", "h"),
        ("w=256&h=x", "h"),
        ("w=256&fit=fill", "fit"),
        ("w=256&fit=COVER", "fit"),
        ("format=gif", "format"),
        ("format=", "format"),
        ("q=0", "q"),
        ("q=101", "q"),
        ("q=50.5", "q"),
        ("w=256&w=512", "w"),
        ("format=webp&format=png", "format"),
        ("h=100", "w"),
        ("fit=cover", "w"),
        ("w=%ff", "w"),
        ("w=256&%zz=1", "%zz"),
    ] {
        let e = match p(q) {
            Err(e) => e,
            Ok(v) => panic!("{q} was accepted: {v:?}"),
        };
        assert_eq!(e.parameter(), name, "{q}: {e}");
        assert!(!e.to_string().is_empty());
    }
    // `%zz` is not percent-encoding: kept literally, then unknown.
    assert_eq!(p("%zz=1").unwrap_err().code(), "unknown_parameter");
}

#[test]
fn height_bound_is_largest_allowed_width() {
    assert_eq!(spec("w=64&h=2048").height(), Some(2048));
    let e = p("w=64&h=2049").unwrap_err();
    assert_eq!(
        e,
        VariantError::HeightOutOfRange {
            value: 2049,
            max: 2048
        }
    );
}

#[test]
fn never_panics_on_odd_queries() {
    for q in [
        "=",
        "==",
        "&=&",
        "w",
        "w==256",
        "%",
        "%2",
        "%%",
        "é=ü",
        "w=２５６",
        "\0=\0",
        "w=256&\u{7f}",
        "format=%00",
        "q=%31%30%30",
    ] {
        let _ = p(q);
        let _ = VariantSpec::parse(q, &[]);
    }
    assert_eq!(spec("q=%31%30%30").quality(), Some(100));
}

#[test]
fn auto_negotiates_from_accept() {
    let s = spec("w=256&format=auto");
    let chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
    let old_firefox = "image/webp,*/*";
    let ios = "*/*";
    let r = s.resolve(Some(chrome), Format::Png, 1024, 1024);
    assert_eq!((r.format, r.vary_accept), (Format::Avif, true));
    let r = s.resolve(Some(old_firefox), Format::Png, 1024, 1024);
    assert_eq!(r.format, Format::Webp);
    let r = s.resolve(Some(ios), Format::Png, 1024, 1024);
    assert_eq!((r.format, r.vary_accept), (Format::Png, true));
    let r = s.resolve(None, Format::Jpeg, 1024, 1024);
    assert_eq!(r.format, Format::Jpeg);
    // q=0 means refused.
    let r = s.resolve(Some("image/avif;q=0, image/webp"), Format::Png, 1024, 1024);
    assert_eq!(r.format, Format::Webp);
    let r = s.resolve(Some("IMAGE/AVIF ; q=0.5"), Format::Png, 1024, 1024);
    assert_eq!(r.format, Format::Avif);
    // Explicit formats do not vary.
    let r = spec("w=256&format=webp").resolve(Some(chrome), Format::Png, 1024, 1024);
    assert_eq!((r.format, r.vary_accept), (Format::Webp, false));
    // auto on an original the client already accepts, same size: original.
    let r = spec("format=auto").resolve(Some(ios), Format::Png, 100, 100);
    assert!(r.same_as_original && r.vary_accept);
}

#[test]
fn never_upscales() {
    let r = spec("w=2048").resolve(None, Format::Png, 1024, 768);
    assert_eq!((r.width, r.height), (1024, 768));
    assert!(r.same_as_original);
    let r = spec("w=2048&h=2048").resolve(None, Format::Png, 1024, 768);
    assert_eq!((r.width, r.height), (1024, 768));
    // Cover larger than the original: the box shrinks, keeping 1:1 aspect.
    let r = spec("w=2048&h=2048&fit=cover").resolve(None, Format::Png, 1024, 768);
    assert_eq!((r.width, r.height, r.fit), (768, 768, Fit::Cover));
    let r = spec("w=2048&h=1024&fit=cover").resolve(None, Format::Png, 1000, 100);
    assert_eq!((r.width, r.height), (200, 100));
    // Contain larger than the original: picture at 1:1, padded.
    let r = spec("w=2048&h=2048&fit=contain").resolve(None, Format::Png, 1024, 512);
    assert_eq!((r.width, r.height, r.fit), (1024, 1024, Fit::Contain));
    assert!(!r.same_as_original);
    // Format change at the original size is not the original.
    let r = spec("w=2048&format=webp").resolve(None, Format::Png, 100, 100);
    assert_eq!((r.width, r.height, r.same_as_original), (100, 100, false));
    // Same format asked explicitly: the original.
    let r = spec("w=2048&format=png").resolve(None, Format::Png, 100, 100);
    assert!(r.same_as_original);
    // Explicit quality on a lossy original is a re-encode.
    let r = spec("q=40").resolve(None, Format::Jpeg, 100, 100);
    assert!(!r.same_as_original);
    // ... but not on a lossless one.
    let r = spec("q=40").resolve(None, Format::Png, 100, 100);
    assert!(r.same_as_original);
}

#[test]
fn geometry_of_each_fit() {
    // Width only keeps the aspect ratio.
    let r = spec("w=256").resolve(None, Format::Png, 1024, 683);
    assert_eq!((r.width, r.height, r.fit), (256, 171, Fit::Inside));
    // Inside a box limited by height.
    let r = spec("w=512&h=100").resolve(None, Format::Png, 1000, 500);
    assert_eq!((r.width, r.height), (200, 100));
    let r = spec("w=256&h=256&fit=cover").resolve(None, Format::Png, 1000, 500);
    assert_eq!((r.width, r.height, r.fit), (256, 256, Fit::Cover));
    let r = spec("w=256&h=256&fit=contain").resolve(None, Format::Png, 1000, 500);
    assert_eq!((r.width, r.height, r.fit), (256, 256, Fit::Contain));
    // Zero-sized originals do not divide by zero.
    let r = spec("w=256&h=256&fit=cover").resolve(None, Format::Png, 0, 0);
    assert_eq!((r.width, r.height), (1, 1));
    // Huge originals do not overflow.
    let r = spec("w=64&h=2048&fit=contain").resolve(None, Format::Png, u32::MAX, 1);
    assert!(r.width >= 1 && r.height >= 1);
    let r = spec("w=64&h=1").resolve(None, Format::Png, 1, u32::MAX);
    assert_eq!((r.width, r.height), (1, 1));
}

#[test]
fn equivalent_requests_share_a_key() {
    let a = spec("w=256").resolve(None, Format::Png, 1024, 1024);
    let b = spec("h=256&fit=cover&w=256").resolve(None, Format::Png, 1024, 1024);
    let c = spec("w=256&format=png&q=55").resolve(None, Format::Png, 1024, 1024);
    assert_eq!(a.key(), "v1-w256-h256-inside-png-q0");
    assert_eq!(a.key(), b.key());
    assert_eq!(a.key(), c.key());
    let d = spec("w=256&format=webp").resolve(None, Format::Png, 1024, 1024);
    let e = spec("w=256&format=webp&q=80").resolve(None, Format::Png, 1024, 1024);
    assert_eq!(d.key(), "v1-w256-h256-inside-webp-q80");
    assert_eq!(d.key(), e.key());
    let f = spec("w=256&h=128&fit=cover&format=jpg").resolve(None, Format::Png, 1024, 1024);
    assert_eq!(f.key(), "v1-w256-h128-cover-jpeg-q80");
    for k in [a.key(), d.key(), f.key()] {
        assert!(k
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
    }
}

#[test]
fn resized_gif_becomes_png() {
    let r = spec("w=64").resolve(None, Format::Gif, 200, 100);
    assert_eq!(r.format, Format::Png);
    let r = spec("w=256").resolve(None, Format::Gif, 200, 100);
    assert!(r.same_as_original);
    assert_eq!(r.format, Format::Gif);
}
