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
mod tests;
