//! Variant query parsing and resolution. Pure: no I/O, no allocation beyond
//! the small result values, and no panics on any input (see the tests).
//!
//! Two steps, so that a request can be refused before anything is looked up:
//!
//! 1. [`VariantSpec::parse`] reads the query string alone and refuses
//!    unknown parameters, disallowed widths and bad values with a
//!    [`VariantError`] that names the parameter (answer 400).
//! 2. [`VariantSpec::resolve`] combines the spec with the `Accept` header and
//!    the original's format and header dimensions, and gives the concrete
//!    [`Resolved`] output: exact output size, format, quality, whether the
//!    answer varies on `Accept`, and whether it is just the original.
//!
//! ## Parameters
//!
//! | name | values | meaning |
//! |---|---|---|
//! | `w` | one of the allowed widths (`IMAGE_VARIANT_WIDTHS`) | target width; required for any resize |
//! | `h` | `1..=max(allowed widths)` | target height; needs `w` |
//! | `fit` | `inside` (default), `cover`, `contain` | how `w`x`h` is filled; needs `w` |
//! | `format` | `auto`, `webp`, `avif`, `jpeg` (or `jpg`), `png` | output format; default: the original's |
//! | `q` | `1..=100` | lossy quality (ignored for PNG) |
//! | `exp`, `sig` | anything | belong to signed URLs: accepted and ignored here |
//!
//! Names and values are case-sensitive (lowercase), may be percent-encoded,
//! and each may appear once. Anything else is refused.
//!
//! `h` is bounded by the largest allowed width: heights are not listed, so
//! they are capped rather than enumerated. `h` and `fit` without `w` are
//! refused (naming `w`), so every resize goes through the width list.
//!
//! ## Fit (all of them keep the picture's aspect ratio; none upscales)
//!
//! - `inside`: scale to fit within `w`x`h` (or to width `w`); the output
//!   has the original's aspect ratio.
//! - `cover`: fill exactly `w`x`h`, cropping the centre.
//! - `contain`: fit within `w`x`h` and pad to exactly `w`x`h` (transparent
//!   for PNG/WebP/AVIF, white for JPEG).
//!
//! No upscaling: when a box is larger than the original, `inside` serves the
//! original size; `cover` and `contain` shrink the box (keeping its aspect
//! ratio) until the picture is at 1:1 scale, so a cover crop never exceeds
//! the original and a contain box only adds padding.
//!
//! ## Format negotiation (`format=auto`)
//!
//! AVIF when `Accept` lists `image/avif` explicitly (q > 0), else WebP when
//! it lists `image/webp`, else the original's format. Wildcards (`image/*`,
//! `*/*`) do not count: iOS sends `*/*` and older browsers `image/*` without
//! decoding AVIF. The answer must carry `Vary: Accept` ([`Resolved::vary_accept`]).
//!
//! A resized GIF is the first frame, encoded as PNG (when the format is the
//! original's). AVIF originals can be served but not decoded here (see
//! [`super::transcode::can_decode`]).

use crate::image_format::Format;

/// Default lossy quality per output format when `q` is absent.
pub const DEFAULT_QUALITY_WEBP: u8 = 80;
pub const DEFAULT_QUALITY_JPEG: u8 = 80;
/// AVIF reaches WebP q80 quality at a lower number.
pub const DEFAULT_QUALITY_AVIF: u8 = 60;

/// Version of the variant recipe, the first part of every [`Resolved::key`].
/// Bump it when the output of the same key changes (filter, encoder
/// settings): stored variants under the old keys are then simply not found.
pub const KEY_VERSION: u32 = 1;

/// Longest parameter name or value echoed back in an error.
const ECHO_MAX: usize = 64;

/// How the target box is filled. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Fit {
    #[default]
    Inside,
    Cover,
    Contain,
}

impl Fit {
    pub fn as_str(self) -> &'static str {
        match self {
            Fit::Inside => "inside",
            Fit::Cover => "cover",
            Fit::Contain => "contain",
        }
    }
}

/// The `format` parameter as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OutputFormat {
    /// Negotiate from `Accept`.
    Auto,
    /// No `format` parameter: keep the original's.
    #[default]
    Original,
    Png,
    Jpeg,
    Webp,
    Avif,
}

/// A parsed variant request, before the original is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VariantSpec {
    width: Option<u32>,
    height: Option<u32>,
    fit: Fit,
    format: OutputFormat,
    quality: Option<u8>,
}

/// Why a variant query was refused. Every variant names the parameter
/// ([`VariantError::parameter`]); `Display` is a sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariantError {
    #[error("unknown parameter {name:?}: allowed are w, h, fit, format, q")]
    UnknownParameter { name: String },
    #[error("parameter {name} is given more than once")]
    DuplicateParameter { name: &'static str },
    #[error("parameter {name} has an invalid value {value:?}: expected {expected}")]
    InvalidValue {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("width {value} is not allowed: allowed widths are {}", list(allowed))]
    WidthNotAllowed { value: u32, allowed: Vec<u32> },
    #[error("height {value} is out of range: expected 1..={max}")]
    HeightOutOfRange { value: u32, max: u32 },
    #[error("parameter w is required when {because} is given")]
    WidthRequired { because: &'static str },
    #[error("parameter {name:?} is not valid percent-encoded UTF-8")]
    BadEncoding { name: String },
}

fn list(v: &[u32]) -> String {
    let parts: Vec<String> = v.iter().map(u32::to_string).collect();
    if parts.is_empty() {
        "none (resizing is off)".to_string()
    } else {
        parts.join(", ")
    }
}

impl VariantError {
    /// The offending parameter's name, for the JSON error body.
    pub fn parameter(&self) -> &str {
        match self {
            VariantError::UnknownParameter { name } | VariantError::BadEncoding { name } => name,
            VariantError::DuplicateParameter { name } | VariantError::InvalidValue { name, .. } => {
                name
            }
            VariantError::WidthNotAllowed { .. } | VariantError::WidthRequired { .. } => "w",
            VariantError::HeightOutOfRange { .. } => "h",
        }
    }

    /// A stable machine-readable code, for the `code` field.
    pub fn code(&self) -> &'static str {
        match self {
            VariantError::UnknownParameter { .. } => "unknown_parameter",
            VariantError::DuplicateParameter { .. } => "duplicate_parameter",
            VariantError::InvalidValue { .. } | VariantError::BadEncoding { .. } => {
                "invalid_parameter"
            }
            VariantError::WidthNotAllowed { .. } => "width_not_allowed",
            VariantError::HeightOutOfRange { .. } => "height_out_of_range",
            VariantError::WidthRequired { .. } => "width_required",
        }
    }
}

/// Cuts an echoed name or value to a bounded length (on a char boundary).
fn echo(s: &str) -> String {
    match s.char_indices().nth(ECHO_MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A strict decimal: ASCII digits only (no sign, no spaces), at most 9 digits.
fn parse_number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn decode(raw: &str, name_for_error: &str) -> Result<String, VariantError> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| VariantError::BadEncoding {
            name: echo(name_for_error),
        })
}

impl VariantSpec {
    /// Parses a raw query string (without the leading `?`).
    ///
    /// `Ok(None)` when it holds no variant parameter (only `exp`/`sig`, or
    /// nothing): serve the original exactly as without a query.
    pub fn parse(query: &str, allowed_widths: &[u32]) -> Result<Option<VariantSpec>, VariantError> {
        let mut width = None;
        let mut height = None;
        let mut fit = None;
        let mut format = None;
        let mut quality = None;
        let max_height = allowed_widths.iter().copied().max().unwrap_or(0);

        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(raw_name, raw_name)?;
            let value = decode(raw_value, &name)?;
            match name.as_str() {
                "exp" | "sig" => continue,
                "w" => {
                    let v = parse_number(&value).ok_or_else(|| invalid("w", &value, "a width"))?;
                    if !allowed_widths.contains(&v) {
                        return Err(VariantError::WidthNotAllowed {
                            value: v,
                            allowed: allowed_widths.to_vec(),
                        });
                    }
                    set(&mut width, v, "w")?;
                }
                "h" => {
                    let v = parse_number(&value).ok_or_else(|| invalid("h", &value, "a height"))?;
                    if v == 0 || v > max_height {
                        return Err(VariantError::HeightOutOfRange {
                            value: v,
                            max: max_height,
                        });
                    }
                    set(&mut height, v, "h")?;
                }
                "fit" => {
                    let v = match value.as_str() {
                        "inside" => Fit::Inside,
                        "cover" => Fit::Cover,
                        "contain" => Fit::Contain,
                        _ => return Err(invalid("fit", &value, "cover, contain or inside")),
                    };
                    set(&mut fit, v, "fit")?;
                }
                "format" => {
                    let v = match value.as_str() {
                        "auto" => OutputFormat::Auto,
                        "webp" => OutputFormat::Webp,
                        "avif" => OutputFormat::Avif,
                        "jpeg" | "jpg" => OutputFormat::Jpeg,
                        "png" => OutputFormat::Png,
                        _ => {
                            return Err(invalid("format", &value, "auto, webp, avif, jpeg or png"))
                        }
                    };
                    set(&mut format, v, "format")?;
                }
                "q" => {
                    let v = parse_number(&value)
                        .filter(|q| (1..=100).contains(q))
                        .ok_or_else(|| invalid("q", &value, "a quality in 1..=100"))?;
                    set(&mut quality, v as u8, "q")?;
                }
                _ => {
                    return Err(VariantError::UnknownParameter { name: echo(&name) });
                }
            }
        }

        if width.is_none() {
            if height.is_some() {
                return Err(VariantError::WidthRequired { because: "h" });
            }
            if fit.is_some() {
                return Err(VariantError::WidthRequired { because: "fit" });
            }
            if format.is_none() && quality.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(VariantSpec {
            width,
            height,
            fit: fit.unwrap_or_default(),
            format: format.unwrap_or_default(),
            quality,
        }))
    }

    pub fn width(&self) -> Option<u32> {
        self.width
    }
    pub fn height(&self) -> Option<u32> {
        self.height
    }
    pub fn fit(&self) -> Fit {
        self.fit
    }
    pub fn format(&self) -> OutputFormat {
        self.format
    }
    pub fn quality(&self) -> Option<u8> {
        self.quality
    }

    /// The concrete output for this request and this original. `orig_w` and
    /// `orig_h` come from the original's header (or its stored row). Zero
    /// dimensions are treated as 1.
    pub fn resolve(
        &self,
        accept: Option<&str>,
        original: Format,
        orig_w: u32,
        orig_h: u32,
    ) -> Resolved {
        let (ow, oh) = (orig_w.max(1), orig_h.max(1));
        let (width, height, fit) = geometry(self.width, self.height, self.fit, ow, oh);
        let resized = (width, height) != (ow, oh) || fit != Fit::Inside;

        let vary_accept = self.format == OutputFormat::Auto;
        let format = match self.format {
            OutputFormat::Png => Format::Png,
            OutputFormat::Jpeg => Format::Jpeg,
            OutputFormat::Webp => Format::Webp,
            OutputFormat::Avif => Format::Avif,
            OutputFormat::Auto => negotiate(accept).unwrap_or(original),
            OutputFormat::Original => original,
        };
        // A resized GIF is one frame: PNG keeps it lossless.
        let format = if format == Format::Gif && resized {
            Format::Png
        } else {
            format
        };
        let quality = match format {
            Format::Webp => self.quality.unwrap_or(DEFAULT_QUALITY_WEBP),
            Format::Jpeg => self.quality.unwrap_or(DEFAULT_QUALITY_JPEG),
            Format::Avif => self.quality.unwrap_or(DEFAULT_QUALITY_AVIF),
            Format::Png | Format::Gif => 0,
        };
        // An explicit q on a lossy original of the same size asks for a
        // re-encode; anything else at the original's size and format is the
        // original itself.
        let lossless_or_default = quality == 0 || self.quality.is_none();
        let same_as_original = !resized && format == original && lossless_or_default;
        Resolved {
            width,
            height,
            fit,
            format,
            quality,
            vary_accept,
            same_as_original,
        }
    }
}

fn invalid(name: &'static str, value: &str, expected: &'static str) -> VariantError {
    VariantError::InvalidValue {
        name,
        value: echo(value),
        expected,
    }
}

fn set<T>(slot: &mut Option<T>, v: T, name: &'static str) -> Result<(), VariantError> {
    if slot.is_some() {
        return Err(VariantError::DuplicateParameter { name });
    }
    *slot = Some(v);
    Ok(())
}

/// `n * num / den`, rounded to nearest, at least 1, in u64 (no overflow).
fn scale(n: u32, num: u64, den: u64) -> u32 {
    let den = den.max(1);
    let v = (n as u64 * num + den / 2) / den;
    v.clamp(1, u32::MAX as u64) as u32
}

/// Output size and canonical fit. Canonical: when nothing is cropped or
/// padded the fit is reported as `Inside`, so `?w=256` and
/// `?w=256&h=256&fit=cover` on a square original give the same key.
fn geometry(w: Option<u32>, h: Option<u32>, fit: Fit, ow: u32, oh: u32) -> (u32, u32, Fit) {
    let Some(bw) = w.map(|v| v.max(1)) else {
        return (ow, oh, Fit::Inside);
    };
    let Some(bh) = h.map(|v| v.max(1)) else {
        // Width only: the aspect ratio decides the height; never upscale.
        if bw >= ow {
            return (ow, oh, Fit::Inside);
        }
        return (bw, scale(oh, bw as u64, ow as u64), Fit::Inside);
    };
    // Compare ratios as cross products: bw/ow vs bh/oh.
    let (bw64, bh64, ow64, oh64) = (bw as u64, bh as u64, ow as u64, oh as u64);
    let width_limits = bw64 * oh64 <= bh64 * ow64; // bw/ow <= bh/oh
    match fit {
        Fit::Inside => {
            // scale = min(bw/ow, bh/oh, 1)
            let (w, h) = if width_limits {
                if bw >= ow {
                    (ow, oh)
                } else {
                    (bw, scale(oh, bw64, ow64))
                }
            } else if bh >= oh {
                (ow, oh)
            } else {
                (scale(ow, bh64, oh64), bh)
            };
            (w.min(ow), h.min(oh), Fit::Inside)
        }
        Fit::Cover => {
            // scale = max(bw/ow, bh/oh); if > 1, shrink the box by it so
            // the crop is taken at 1:1.
            let (w, h) = if bw <= ow && bh <= oh {
                (bw, bh)
            } else if width_limits {
                // bh/oh is the larger ratio (> 1): box height becomes oh.
                (scale(bw, oh64, bh64).min(ow), oh)
            } else {
                (ow, scale(bh, ow64, bw64).min(oh))
            };
            let fit = if crops_or_pads(w, h, ow, oh) {
                Fit::Cover
            } else {
                Fit::Inside
            };
            (w, h, fit)
        }
        Fit::Contain => {
            // scale = min(bw/ow, bh/oh); if > 1, shrink the box by it so
            // the picture sits at 1:1 inside it.
            let (w, h) = if width_limits {
                if bw <= ow {
                    (bw, bh)
                } else {
                    // Picture width becomes ow; the box keeps its ratio.
                    (ow, scale(bh, ow64, bw64).max(oh))
                }
            } else if bh <= oh {
                (bw, bh)
            } else {
                (scale(bw, oh64, bh64).max(ow), oh)
            };
            let fit = if crops_or_pads(w, h, ow, oh) {
                Fit::Contain
            } else {
                Fit::Inside
            };
            (w, h, fit)
        }
    }
}

/// Whether a `w`x`h` output of an `ow`x`oh` picture needs a crop or padding,
/// i.e. the aspect ratios differ by more than one pixel of rounding.
fn crops_or_pads(w: u32, h: u32, ow: u32, oh: u32) -> bool {
    // The height that width w would give, and the width that height h would.
    let h_for_w = scale(oh, w as u64, ow as u64);
    let w_for_h = scale(ow, h as u64, oh as u64);
    h_for_w != h && w_for_h != w
}

/// AVIF, then WebP, when `Accept` names them explicitly with q > 0. Public
/// so a cache can key `format=auto` answers on this choice alone rather
/// than on the whole `Accept` header.
pub fn negotiate(accept: Option<&str>) -> Option<Format> {
    let accept = accept?;
    let mut avif = false;
    let mut webp = false;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim();
        let mut q_positive = true;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    let v = v.trim();
                    // q=0, q=0.0, q=0.000 mean "not acceptable".
                    q_positive = !(v.starts_with('0') && v.bytes().all(|b| b == b'0' || b == b'.'));
                }
            }
        }
        if media.eq_ignore_ascii_case("image/avif") {
            avif |= q_positive;
        } else if media.eq_ignore_ascii_case("image/webp") {
            webp |= q_positive;
        }
    }
    if avif {
        Some(Format::Avif)
    } else if webp {
        Some(Format::Webp)
    } else {
        None
    }
}

/// The concrete output of a variant request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resolved {
    /// Output width in pixels (never larger than the original's, except
    /// that `contain` may pad).
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Canonical fit: `Inside` whenever nothing is cropped or padded.
    pub fit: Fit,
    /// Output format (never `Gif` unless it is the untouched original).
    pub format: Format,
    /// Lossy quality 1..=100; 0 for PNG and GIF.
    pub quality: u8,
    /// The response must carry `Vary: Accept` (`format=auto`).
    pub vary_accept: bool,
    /// Nothing to make: serve the original bytes (with `Vary: Accept` when
    /// [`Self::vary_accept`]).
    pub same_as_original: bool,
}

impl Resolved {
    /// Canonical, stable, filename-safe name of this output, e.g.
    /// `v1-w256-h171-inside-webp-q80`. Only `[a-z0-9-]`. Equivalent
    /// requests give the same key because it is built from the resolved
    /// output, not from the query. Not unique across originals: store it
    /// next to the original's id.
    pub fn key(&self) -> String {
        format!(
            "v{}-w{}-h{}-{}-{}-q{}",
            KEY_VERSION,
            self.width,
            self.height,
            self.fit.as_str(),
            match self.format {
                Format::Jpeg => "jpeg",
                f => f.ext(),
            },
            self.quality
        )
    }
}

#[cfg(test)]
mod tests {
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
}
