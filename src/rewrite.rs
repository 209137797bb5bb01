//! Pure JSON URL rewriting.
//!
//! The body is not parsed into a tree and printed again: that would reorder
//! nothing with `preserve_order`, but it would still change number spelling,
//! escapes and white space. Instead a small scanner finds the byte spans of
//! string values, and only those spans are replaced. Everything else is
//! copied byte for byte.

use std::collections::HashMap;

use crate::sources::{Source, SourceMatcher};

/// A source string found in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Byte span of the JSON string token, quotes included.
    pub start: usize,
    pub end: usize,
    /// The decoded string.
    pub value: String,
    pub source: Source,
    /// The string was the value of a member named `url`.
    pub url_member: bool,
    /// Which object it sits in (index into [`Scan::object_keys`]).
    object: Option<usize>,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub found: Vec<Found>,
    /// A top-level `id` string: Replicate's prediction id.
    pub prediction_id: Option<String>,
    /// A top-level `status` string: the prediction's state.
    pub prediction_status: Option<String>,
    object_keys: Vec<Vec<String>>,
}

/// What a source string is replaced with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    pub hosted_url: String,
    /// Unknown while the download is still pending: sent as `null`.
    pub size_bytes: Option<u64>,
    pub hosted_at: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("body is not valid JSON")]
pub struct NotJson;

/// True when the body may hold a source. Bodies without any needle skip the
/// JSON parse entirely, which is most pass-through traffic on these routes.
pub fn may_contain_sources(body: &[u8], needles: &[String]) -> bool {
    needles
        .iter()
        .any(|n| memchr::memmem::find(body, n.as_bytes()).is_some())
}

enum Frame {
    Object {
        index: usize,
        expect_key: bool,
        key: Option<String>,
    },
    Array,
}

/// One string value of the body (never a member name), as the walk meets it.
struct Value<'a> {
    start: usize,
    end: usize,
    /// The raw token, quotes included.
    token: &'a [u8],
    /// The member it is the value of, if it sits in an object.
    member: Option<&'a str>,
    object: Option<usize>,
    /// 1 for the top-level object's members.
    depth: usize,
}

/// Walks every string of `body`, calling `on_value` for each value, and
/// returns the member names of every object (by object index).
fn walk(body: &[u8], mut on_value: impl FnMut(Value<'_>)) -> Result<Vec<Vec<String>>, NotJson> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(|_| NotJson)?;
    let mut object_keys: Vec<Vec<String>> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'{' => {
                object_keys.push(Vec::new());
                stack.push(Frame::Object {
                    index: object_keys.len() - 1,
                    expect_key: true,
                    key: None,
                });
            }
            b'[' => stack.push(Frame::Array),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => {
                if let Some(Frame::Object { expect_key, .. }) = stack.last_mut() {
                    *expect_key = true;
                }
            }
            b'"' => {
                let end = string_end(body, i).ok_or(NotJson)?;
                on_string(body, i, end, &mut stack, &mut object_keys, &mut on_value);
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(object_keys)
}

fn on_string(
    body: &[u8],
    start: usize,
    end: usize,
    stack: &mut [Frame],
    object_keys: &mut [Vec<String>],
    on_value: &mut impl FnMut(Value<'_>),
) {
    let depth = stack.len();
    let token = &body[start..end];
    match stack.last_mut() {
        Some(Frame::Object {
            index,
            expect_key: expect_key @ true,
            key,
        }) => {
            // A name that is not valid Unicode (a lone surrogate escape such
            // as "\ud800") is legal JSON; it cannot be one of the names we
            // look for, so it must not stop the rewrite of the whole body.
            let name: String = serde_json::from_slice(token).unwrap_or_default();
            object_keys[*index].push(name.clone());
            *key = Some(name);
            *expect_key = false;
        }
        frame => {
            let (member, object) = match frame {
                Some(Frame::Object { index, key, .. }) => (key.as_deref(), Some(*index)),
                _ => (None, None),
            };
            on_value(Value {
                start,
                end,
                token,
                member,
                object,
                depth,
            });
        }
    }
}

/// Finds every string value in `body` that the matcher calls a source, and
/// the top-level `id` and `status` (Replicate's prediction id and state).
pub fn scan(body: &[u8], matcher: &SourceMatcher) -> Result<Scan, NotJson> {
    let mut found = Vec::new();
    let mut prediction_id = None;
    let mut prediction_status = None;
    let object_keys = walk(body, |v| {
        if v.depth == 1 && v.member == Some("id") {
            prediction_id = serde_json::from_slice(v.token).ok();
        }
        if v.depth == 1 && v.member == Some("status") {
            prediction_status = serde_json::from_slice(v.token).ok();
        }
        if !looks_like_source(v.token) {
            return;
        }
        // Likewise a value with a lone surrogate is user text, not a URL:
        // skip it instead of failing the whole scan.
        let Ok(value) = serde_json::from_slice::<String>(v.token) else {
            return;
        };
        if let Some(source) = matcher.classify(&value) {
            found.push(Found {
                start: v.start,
                end: v.end,
                value,
                source,
                url_member: v.member == Some("url"),
                object: v.object,
            });
        }
    })?;
    Ok(Scan {
        found,
        prediction_id,
        prediction_status,
        object_keys,
    })
}

/// A string value of a body and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub value: String,
}

/// Every string value whose raw token holds `needle` (a cheap byte test; a
/// needle without `/` or `\` survives any JSON escaping) and whose decoded
/// text `keep` accepts.
pub fn find_strings(
    body: &[u8],
    needle: &[u8],
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<Span>, NotJson> {
    let mut out = Vec::new();
    walk(body, |v| {
        if memchr::memmem::find(v.token, needle).is_none() {
            return;
        }
        if let Ok(value) = serde_json::from_slice::<String>(v.token) {
            if keep(&value) {
                out.push(Span {
                    start: v.start,
                    end: v.end,
                    value,
                });
            }
        }
    })?;
    Ok(out)
}

/// `body` with each span's string token replaced by a JSON string holding
/// the new text; every other byte is kept. Spans must be in body order.
pub fn replace_spans(body: &[u8], spans: &[(Span, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + spans.len() * 64);
    let mut copied = 0;
    for (span, text) in spans {
        out.extend_from_slice(&body[copied..span.start]);
        push_json_string(&mut out, text);
        copied = span.end;
    }
    out.extend_from_slice(&body[copied..]);
    out
}

/// Cheap pre-check on the raw token so most strings are never decoded. A
/// token with an escape among its first bytes (`"\u0068ttps://…"`) may
/// still decode to a source, so it is decoded too.
fn looks_like_source(token: &[u8]) -> bool {
    let inner = &token[1..];
    inner.len() > 8
        && (inner[..4].eq_ignore_ascii_case(b"http")
            || inner[..5].eq_ignore_ascii_case(b"data:")
            || inner[..5].contains(&b'\\'))
}

/// Index just past the closing quote of the string starting at `start`.
fn string_end(body: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The distinct sources of a scan, in order of first appearance, at most
/// `cap` of them (linear: a body repeating one URL thousands of times costs
/// one hash lookup each). Also returns how many distinct sources were left
/// out by the cap; those keep their original URLs.
pub fn distinct_sources(scan: &Scan, cap: usize) -> (Vec<(String, Source)>, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut over = 0;
    for f in &scan.found {
        if !seen.insert(f.value.as_str()) {
            continue;
        }
        if out.len() < cap {
            out.push((f.value.clone(), f.source.clone()));
        } else {
            over += 1;
        }
    }
    (out, over)
}

/// The new body: each found source that has a replacement is swapped for its
/// hosted URL, and `url` members gain `replicate_url`, `size_bytes` and
/// `hosted_at` siblings (unless the object already has them).
pub fn apply(body: &[u8], scan: &Scan, replacements: &HashMap<String, Replacement>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + scan.found.len() * 160);
    let mut copied = 0;
    for f in &scan.found {
        let Some(r) = replacements.get(&f.value) else {
            continue;
        };
        out.extend_from_slice(&body[copied..f.start]);
        push_json_string(&mut out, &r.hosted_url);
        if f.url_member {
            let existing = f.object.map(|i| &scan.object_keys[i]);
            let has = |k: &str| existing.is_some_and(|keys| keys.iter().any(|e| e == k));
            if !has("replicate_url") && matches!(f.source, Source::Url(_)) {
                out.extend_from_slice(b",\"replicate_url\":");
                push_json_string(&mut out, &f.value);
            }
            if !has("size_bytes") {
                let size = r
                    .size_bytes
                    .map_or_else(|| "null".to_string(), |n| n.to_string());
                out.extend_from_slice(format!(",\"size_bytes\":{size}").as_bytes());
            }
            if !has("hosted_at") {
                out.extend_from_slice(b",\"hosted_at\":");
                push_json_string(&mut out, &r.hosted_at);
            }
        }
        copied = f.end;
    }
    out.extend_from_slice(&body[copied..]);
    out
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str cannot fail.
    if let Ok(encoded) = serde_json::to_vec(s) {
        out.extend_from_slice(&encoded);
    }
}

#[cfg(test)]
mod tests;
