//! IMAGE_IGNORED_PARAMS (issue 20, finding 16): query parameters that a
//! hosted URL ignores. A CDN, a share sheet or an analytics tool appends
//! `utm_source=…`, `fbclid=…` or a cache-buster `?v=2`; before variants
//! such a query was ignored, and it must not turn a working image into a
//! 400. Only the listed names are taken out: any other unknown parameter
//! (a misspelt `?width=256`) still reaches the variant parser and its 400.
//!
//! The parameters are taken out before the signature check, so they stay
//! outside the signed text and never change the answer. The query is
//! parsed, never edited as text: pairs are kept or dropped whole, in order.
//! Pure.

use std::borrow::Cow;

/// Parameters this proxy gives a meaning to: ignoring one would change
/// answers (a variant) or open a hole (a signature), so none may be listed.
const RESERVED: &[&str] = &["w", "h", "fit", "format", "q", "exp", "sig"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoredParams {
    exact: Vec<String>,
    /// From entries ending in `*`: names starting with these.
    prefixes: Vec<String>,
}

impl IgnoredParams {
    /// A comma list of names; a trailing `*` is a prefix match.
    pub fn parse(list: &str) -> Result<IgnoredParams, String> {
        let mut out = IgnoredParams::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.strip_suffix('*') {
                Some("") => return Err("a bare * would ignore every parameter".into()),
                Some(prefix) => out.prefixes.push(prefix.to_string()),
                None => out.exact.push(entry.to_string()),
            }
        }
        if let Some(name) = RESERVED.iter().find(|n| out.ignores(n)) {
            return Err(format!(
                "{name:?} is a parameter hosted URLs use, it cannot be ignored"
            ));
        }
        Ok(out)
    }

    /// Whether a (decoded) parameter name is ignored.
    pub fn ignores(&self, name: &str) -> bool {
        self.exact.iter().any(|e| e == name) || self.prefixes.iter().any(|p| name.starts_with(&**p))
    }

    /// `query` without the ignored parameters; `None` when nothing is left.
    /// Borrowed as it is when nothing was ignored (the usual case).
    pub fn strip<'q>(&self, query: Option<&'q str>) -> Option<Cow<'q, str>> {
        let q = query.filter(|q| !q.is_empty())?;
        let ignored = |pair: &&str| {
            url::form_urlencoded::parse(pair.as_bytes())
                .next()
                .is_some_and(|(name, _)| self.ignores(&name))
        };
        if !q.split('&').any(|p| ignored(&p)) {
            return Some(Cow::Borrowed(q));
        }
        let kept: Vec<&str> = q.split('&').filter(|p| !ignored(p)).collect();
        let kept = kept.join("&");
        (!kept.is_empty()).then_some(Cow::Owned(kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default() -> IgnoredParams {
        IgnoredParams::parse("utm_*,v,_,fbclid,gclid").unwrap()
    }

    #[test]
    fn strips_only_the_listed_names_keeping_order() {
        let p = default();
        let strip = |q: &str| p.strip(Some(q)).map(|c| c.into_owned());
        assert_eq!(strip("utm_source=x&v=2"), None);
        assert_eq!(
            strip("w=256&utm_medium=a&format=webp&_=17"),
            Some("w=256&format=webp".into())
        );
        assert_eq!(
            strip("exp=9&sig=abc&fbclid=z"),
            Some("exp=9&sig=abc".into())
        );
        assert_eq!(
            strip("width=256&gclid=1"),
            Some("width=256".into()),
            "a misspelt parameter stays, for its 400"
        );
        assert_eq!(
            strip("utm%5Fsource=1&w=64"),
            Some("w=64".into()),
            "names are decoded"
        );
        assert_eq!(strip("version=3"), Some("version=3".into()), "v is exact");
        assert!(matches!(p.strip(Some("w=64")), Some(Cow::Borrowed("w=64"))));
        assert_eq!(p.strip(None), None);
        assert_eq!(p.strip(Some("")), None);
    }

    #[test]
    fn reserved_names_and_a_bare_star_are_refused() {
        for bad in ["sig", "w", "e*", "*", "form*"] {
            assert!(IgnoredParams::parse(bad).is_err(), "{bad}");
        }
        assert!(IgnoredParams::parse("")
            .unwrap()
            .strip(Some("v=1"))
            .is_some());
    }
}
