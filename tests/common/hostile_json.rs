//! Hostile JSON documents and the oracle that says what their rewrite must
//! be (issue 11). Shared by the rewrite properties (`tests/properties.rs`),
//! the fuzz targets (`fuzz/`, through `#[path]`) and the run through the real
//! binary (`tests/reliability/hostile_strings.rs`), so all three mean the same
//! thing by "hostile" and by "correct".
//!
//! A [`Doc`] is generated from a stream of choices ([`Entropy`]): fuzz input,
//! proptest bytes or a seeded PRNG. A zero byte always picks the simplest
//! option, so an exhausted or shrunk input gives a small document. It mixes
//! user text meant to trip a scanner (strings starting with `http`,
//! `https://` or `data:`, multi-byte characters spliced at every offset of
//! those prefixes, every JSON escape, lone surrogates, control characters,
//! very long strings, deep nesting, numbers in unusual spellings, arbitrary
//! white space) with real sources written the way real JSON encoders write
//! them (plain, `\/`, `\u0026`, ASCII-only, escaped leading letters).
//!
//! The document remembers which string tokens are sources, so
//! [`Doc::check_rewrite`] knows the exact bytes a correct rewrite produces. It
//! also reads input and output back with [`parse`] (strings as UTF-16 units,
//! so lone surrogates survive; numbers as written) and compares the values.
#![allow(dead_code)]

/// `REPLICATE_HOSTS` for [`REPLICATE_SOURCES`] (https only).
pub const REPLICATE_HOSTS: &str = "replicate.delivery,*.replicate.delivery";

/// Real sources in the shapes Replicate and its clients produce, some with
/// characters that must be escaped or that are not ASCII.
pub const REPLICATE_SOURCES: &[&str] = &[
    "https://replicate.delivery/pbxt/abc/out-0.png",
    "https://pbxt.replicate.delivery/xezq/Fq3z/out-1.webp",
    "https://replicate.delivery/yhqm/a%20b/out.jpg?sig=1&exp=2",
    "https://replicate.delivery/pbxt/é/中/out-2.png",
    "https://replicate.delivery/pbxt/\"quoted\"/x.png",
    "https://replicate.delivery/pbxt/back\\slash/x.png",
    "HTTPS://replicate.delivery/upper/scheme.png",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
    "data:application/octet-stream;base64,UklGRgAAAABXRUJQ",
];

/// A stream of choices.
pub trait Entropy {
    fn byte(&mut self) -> u8;
}

/// Choices read from a byte slice; zeros once it is used up.
pub struct ByteEntropy<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteEntropy<'a> {
    pub fn new(data: &'a [u8]) -> ByteEntropy<'a> {
        ByteEntropy { data, pos: 0 }
    }
}

impl Entropy for ByteEntropy<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
}

/// SplitMix64: a seeded PRNG that gives the same documents on every machine
/// and every version of the `rand` crate.
pub struct SplitMix64(pub u64);

impl Entropy for SplitMix64 {
    fn byte(&mut self) -> u8 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as u8
    }
}

/// How big a document may get.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Nesting of ordinary values.
    pub max_depth: usize,
    /// Members or elements per container.
    pub max_items: usize,
    /// Characters in an ordinary string.
    pub max_chars: usize,
    /// Bytes of an occasional very long string (0: none).
    pub long_bytes: usize,
    /// Levels of an occasional deep chain around a value (0: none). Keep
    /// `max_depth + deep_chain` below serde_json's limit of 128.
    pub deep_chain: usize,
    /// Values in the whole document.
    pub max_nodes: usize,
    /// The top level is always an object with an `output` array holding at
    /// least one source, written plainly, like a generate answer.
    pub always_a_source: bool,
}

impl Limits {
    /// For the pure functions: small documents, many of them.
    pub const PURE: Limits = Limits {
        max_depth: 6,
        max_items: 6,
        max_chars: 24,
        long_bytes: 4096,
        deep_chain: 100,
        max_nodes: 80,
        always_a_source: false,
    };

    /// For the run through the binary: generate-shaped answers with very long
    /// strings now and then.
    pub const BINARY: Limits = Limits {
        max_depth: 6,
        max_items: 6,
        max_chars: 40,
        long_bytes: 100_000,
        deep_chain: 100,
        max_nodes: 120,
        always_a_source: true,
    };
}

/// What kind of source a string is (as the matcher says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Url,
    Data,
}

/// A JSON string token and what it means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text {
    /// The token as written, quotes included.
    pub token: String,
    /// Its meaning, as UTF-16 code units (a lone surrogate is one unit).
    pub units: Vec<u16>,
}

impl Text {
    fn new() -> Text {
        Text {
            token: "\"".to_string(),
            units: Vec::new(),
        }
    }

    fn close(mut self) -> Text {
        self.token.push('"');
        self
    }

    /// The meaning as a Rust string, unless it holds a lone surrogate.
    pub fn decoded(&self) -> Option<String> {
        String::from_utf16(&self.units).ok()
    }

    fn is(&self, name: &str) -> bool {
        self.units.iter().copied().eq(name.encode_utf16())
    }
}

/// One piece of the body as written.
#[derive(Debug, Clone)]
pub enum Seg {
    /// Bytes that must come back unchanged.
    Lit(String),
    /// A source string token.
    Src {
        /// Index into [`Doc::sources`].
        source: usize,
        token: String,
        /// The value of a member named `url`: which siblings a rewrite adds.
        siblings: Option<Siblings>,
    },
}

/// The members a rewrite adds after a `url` source (those the object lacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Siblings {
    pub replicate_url: bool,
    pub size_bytes: bool,
    pub hosted_at: bool,
}

/// What the caller's rewrite puts in place of one source.
#[derive(Debug, Clone)]
pub struct Swap {
    pub hosted_url: String,
    /// `None` is written as `null` (a download still pending).
    pub size_bytes: Option<u64>,
    /// `None`: any RFC 3339 UTC time is accepted (the binary decides).
    pub hosted_at: Option<String>,
}

/// A generated document.
#[derive(Debug, Clone)]
pub struct Doc {
    pub segs: Vec<Seg>,
    /// Distinct source values (decoded), with their kind.
    pub sources: Vec<(String, Kind)>,
    /// The string a scanner must report as the prediction id: the top-level
    /// `id` member, when it is a string that decodes.
    pub prediction_id: Option<String>,
}

enum Node {
    Lit(String),
    Str(Text),
    Src(usize, String),
    Arr(Vec<Node>),
    Obj(Vec<(Text, Node)>),
}

const PREFIXES: &[&str] = &[
    "http",
    "https://",
    "data:",
    "data:image/png;base64,",
    "https",
    "https:",
    "https:/",
    "http://",
    "HTTPS://",
    "HtTp://",
    "data",
    "DATA:",
    "data:image/png;base64",
    "data:image/png,",
    "data:image/;base64,",
    "data:text/html;base64,",
    "data:application/octet-stream;base64,",
    "data:;base64,",
    "https://replicate.delivery",
    "https://replicate.delivery/",
    "https://pbxt.replicate.delivery/",
    "https://replicate.delivery.evil.example/",
    "https://evilreplicate.delivery/",
    "https://user@replicate.delivery/",
    "https://replicate.delivery:8443/",
    "http://replicate.delivery/",
    "see https://replicate.delivery/",
    "https:///replicate.delivery/",
    "https://%72eplicate.delivery/",
    "https://127.0.0.1/",
    "https://[::1]/",
    "ftp://replicate.delivery/",
    "//replicate.delivery/",
];

const ASCII: &[u8] = b"abcxyzAZ0159 :/.?&=#%+-_~@!$'()*,;[]{}<>|^`";
const TWO: &[char] = &['é', 'ß', 'ñ', 'Ω', 'ж', '\u{80}', '\u{7ff}'];
const THREE: &[char] = &[
    '€', '中', '\u{800}', '\u{2028}', '\u{2029}', '\u{feff}', '\u{fffd}', '\u{ffff}', '。', '．',
    'ｒ',
];
const FOUR: &[char] = &['😀', '𝄞', '\u{10000}', '\u{10ffff}'];
const CONTROL: &[char] = &[
    '\0', '\u{1}', '\u{8}', '\t', '\n', '\u{b}', '\u{c}', '\r', '\u{1b}', '\u{1f}', '\u{7f}',
];
const SPECIAL: &[char] = &['"', '\\', '/'];
const LONE: &[u16] = &[0xd800, 0xdbff, 0xdc00, 0xdfff, 0xd83d, 0xde00];
const NAMES: &[&str] = &[
    "url",
    "id",
    "output",
    "prompt",
    "replicate_url",
    "size_bytes",
    "hosted_at",
    "status",
    "image",
    "images",
    "urls",
    "input",
    "",
];
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1.50",
    "1e5",
    "1E+05",
    "-12.3400e-7",
    "123456789012345678901234567890",
    "1.7976931348623157e308",
    "5e-324",
    "-0.0",
    "2.5E-3",
];

#[derive(Clone, Copy)]
enum Piece {
    C(char),
    Lone(u16),
}

struct Gen<'a> {
    e: &'a mut dyn Entropy,
    limits: Limits,
    nodes: usize,
    real: &'a [String],
    is_source: &'a dyn Fn(&str) -> Option<Kind>,
    sources: Vec<(String, Kind)>,
    /// One deep chain per document keeps nesting under serde_json's limit.
    chained: bool,
}

impl Gen<'_> {
    fn below(&mut self, n: usize) -> usize {
        match n {
            0 | 1 => 0,
            2..=256 => self.e.byte() as usize % n,
            _ => {
                let v = (self.e.byte() as usize)
                    | (self.e.byte() as usize) << 8
                    | (self.e.byte() as usize) << 16;
                v % n
            }
        }
    }

    /// True with about `percent`% odds; never on a zero byte.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) >= 100 - percent.min(100)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }

    fn hex4(&mut self, u: u16) -> String {
        if self.chance(50) {
            format!("\\u{u:04X}")
        } else {
            format!("\\u{u:04x}")
        }
    }

    /// Appends one character, escaped or not (`escape` is the odds, in
    /// percent, that a character which may be written raw is escaped).
    fn push(&mut self, t: &mut Text, p: Piece, escape: usize) {
        let c = match p {
            Piece::Lone(u) => {
                let hex = self.hex4(u);
                t.token.push_str(&hex);
                t.units.push(u);
                return;
            }
            Piece::C(c) => c,
        };
        let mut buf = [0u16; 2];
        t.units.extend_from_slice(c.encode_utf16(&mut buf));
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        };
        let must = c == '"' || c == '\\' || (c as u32) < 0x20;
        if !must && !self.chance(escape) {
            t.token.push(c);
            return;
        }
        if let Some(s) = short {
            if self.chance(70) {
                t.token.push_str(s);
                return;
            }
        }
        for u in c.encode_utf16(&mut buf).to_vec() {
            let hex = self.hex4(u);
            t.token.push_str(&hex);
        }
    }

    fn push_str(&mut self, t: &mut Text, s: &str, escape: usize) {
        for c in s.chars() {
            self.push(t, Piece::C(c), escape);
        }
    }

    fn non_ascii(&mut self) -> char {
        match self.below(3) {
            0 => self.pick(TWO),
            1 => self.pick(THREE),
            _ => self.pick(FOUR),
        }
    }

    fn piece(&mut self) -> Piece {
        match self.below(16) {
            0..=5 => Piece::C(self.pick(ASCII) as char),
            6 | 7 => Piece::C(self.pick(TWO)),
            8 | 9 => Piece::C(self.pick(THREE)),
            10 => Piece::C(self.pick(FOUR)),
            11 => Piece::C(self.pick(CONTROL)),
            12 => Piece::C(self.pick(SPECIAL)),
            13 => Piece::Lone(self.pick(LONE)),
            _ => Piece::C(char::from_u32(self.below(0x11_0000) as u32).unwrap_or('\u{fffd}')),
        }
    }

    fn tail(&mut self, t: &mut Text, max: usize) {
        let escape = self.pick(&[0, 10, 50, 100]);
        for _ in 0..self.below(max + 1) {
            let p = self.piece();
            self.push(t, p, escape);
        }
    }

    /// User text meant to look like (part of) a source.
    fn hostile(&mut self) -> Text {
        let mut t = Text::new();
        let max = self.limits.max_chars;
        match self.below(8) {
            0 => self.tail(&mut t, max),
            1 | 2 => {
                let p = self.pick(PREFIXES);
                let escape = self.pick(&[0, 0, 10, 100]);
                self.push_str(&mut t, p, escape);
                self.tail(&mut t, max);
            }
            3 | 4 => {
                // A multi-byte character at every possible offset of a prefix.
                let p = self.pick(PREFIXES);
                let at = self.below(p.len() + 1);
                self.push_str(&mut t, &p[..at], 0);
                let c = self.non_ascii();
                self.push(&mut t, Piece::C(c), 0);
                self.push_str(&mut t, &p[at..], 0);
                self.tail(&mut t, max);
            }
            5 if !self.real.is_empty() => {
                // A real source, slightly wrong.
                let src = self.pick_real();
                let chars: Vec<char> = src.chars().collect();
                let at = self.below(chars.len() + 1);
                let escape = self.pick(&[0, 0, 10]);
                let head: String = chars[..at].iter().collect();
                let rest: String = chars[at..].iter().collect();
                match self.below(5) {
                    0 => {
                        self.push_str(&mut t, &head, escape);
                        let p = self.piece();
                        self.push(&mut t, p, escape);
                        self.push_str(&mut t, &rest, escape);
                    }
                    1 => {
                        self.push_str(&mut t, &head, escape);
                    }
                    2 => {
                        self.push_str(&mut t, "see ", 0);
                        self.push_str(&mut t, &src, escape);
                    }
                    3 => {
                        self.push_str(&mut t, &src, escape);
                        self.push_str(&mut t, " ", 0);
                        self.tail(&mut t, max);
                    }
                    _ => {
                        self.push_str(&mut t, &src.to_uppercase(), escape);
                    }
                }
            }
            6 if self.limits.long_bytes > 0 => {
                let p = self.pick(PREFIXES);
                self.push_str(&mut t, p, 0);
                let target = self.below(self.limits.long_bytes + 1);
                let mut chunk = Text::new();
                self.tail(&mut chunk, 16);
                let body = &chunk.token[1..];
                let units = chunk.units.clone();
                if !body.is_empty() {
                    while t.token.len() < target {
                        t.token.push_str(body);
                        t.units.extend_from_slice(&units);
                    }
                }
            }
            _ => {
                let p = self.pick(PREFIXES);
                self.push_str(&mut t, p, 0);
                let c = self.non_ascii();
                self.push(&mut t, Piece::C(c), 0);
                self.tail(&mut t, max);
            }
        }
        t.close()
    }

    fn pick_real(&mut self) -> String {
        let i = self.below(self.real.len());
        self.real[i].clone()
    }

    /// A real source, written the way some JSON encoder writes it. The host
    /// (or `data:`) is never escaped: `may_contain_sources` looks for it
    /// verbatim.
    fn source(&mut self, plain: bool) -> Node {
        let value = self.pick_real();
        let style = if plain { 0 } else { self.below(6) };
        let needle_end = match value.find("://") {
            Some(i) => {
                let host_start = i + 3;
                value[host_start..]
                    .find(['/', '?', '#'])
                    .map_or(value.len(), |j| host_start + j)
            }
            None => 5,
        };
        let needle_start = value.find("://").map_or(0, |i| i + 3);
        let mut t = Text::new();
        for (i, c) in value.char_indices() {
            let in_needle = i >= needle_start && i < needle_end;
            match style {
                // serde_json, JSON.stringify
                0 => self.push(&mut t, Piece::C(c), 0),
                // PHP: every slash escaped
                1 if c == '/' => {
                    t.token.push_str("\\/");
                    t.units.push(u16::from(b'/'));
                }
                // Go: HTML-safe
                2 if matches!(c, '&' | '<' | '>') => {
                    t.token.push_str(&format!("\\u{:04x}", c as u32));
                    t.units.push(c as u16);
                }
                // Python: ASCII only
                3 if !c.is_ascii() => self.push(&mut t, Piece::C(c), 100),
                // Any legal spelling, the host aside.
                4 if !in_needle => self.push(&mut t, Piece::C(c), 30),
                // An escaped leading letter.
                5 if i == 0 => self.push(&mut t, Piece::C(c), 100),
                _ => self.push(&mut t, Piece::C(c), 0),
            }
        }
        let t = t.close();
        let i = self.add_source(value, None);
        Node::Src(i, t.token)
    }

    fn add_source(&mut self, value: String, kind: Option<Kind>) -> usize {
        let kind = kind
            .or_else(|| (self.is_source)(&value))
            .unwrap_or_else(|| panic!("the matcher refuses the real source {value:?}"));
        match self.sources.iter().position(|(v, _)| *v == value) {
            Some(i) => i,
            None => {
                self.sources.push((value, kind));
                self.sources.len() - 1
            }
        }
    }

    /// A string value: hostile text, which is a source after all if the
    /// matcher says so.
    fn string(&mut self) -> Node {
        let t = self.hostile();
        if let Some(value) = t.decoded() {
            if let Some(kind) = (self.is_source)(&value) {
                let i = self.add_source(value, Some(kind));
                return Node::Src(i, t.token);
            }
        }
        Node::Str(t)
    }

    fn number(&mut self) -> String {
        if self.chance(50) {
            return self.pick(NUMBERS).to_string();
        }
        let mut n = String::new();
        if self.chance(30) {
            n.push('-');
        }
        let digits = 1 + self.below(20);
        for i in 0..digits {
            let d = if i == 0 && digits > 1 {
                1 + self.below(9)
            } else {
                self.below(10)
            };
            n.push((b'0' + d as u8) as char);
        }
        if self.chance(40) {
            n.push('.');
            for _ in 0..1 + self.below(8) {
                n.push((b'0' + self.below(10) as u8) as char);
            }
        }
        if self.chance(30) {
            n.push(self.pick(&['e', 'E']));
            if self.chance(60) {
                n.push(self.pick(&['+', '-']));
            }
            for _ in 0..1 + self.below(3) {
                n.push((b'0' + self.below(10) as u8) as char);
            }
        }
        n
    }

    fn key(&mut self) -> Text {
        let mut t = Text::new();
        if self.chance(70) {
            let name = self.pick(NAMES);
            let escape = self.pick(&[0, 0, 0, 20, 100]);
            self.push_str(&mut t, name, escape);
            if self.chance(10) {
                let p = self.piece();
                self.push(&mut t, p, 0);
            }
        } else {
            self.tail(&mut t, 12);
        }
        t.close()
    }

    fn value(&mut self, depth: usize) -> Node {
        self.nodes += 1;
        let containers = depth < self.limits.max_depth && self.nodes < self.limits.max_nodes;
        let node = match self.below(if containers { 11 } else { 7 }) {
            0 => Node::Lit("null".into()),
            1 => Node::Lit(self.pick(&["true", "false"]).into()),
            2 => Node::Lit(self.number()),
            3 | 4 => self.string(),
            5 | 6 if !self.real.is_empty() => self.source(false),
            5 | 6 => self.string(),
            7 | 8 => self.array(depth),
            _ => self.object(depth),
        };
        if self.limits.deep_chain > 0 && !self.chained && self.chance(3) {
            self.chained = true;
            let levels = 1 + self.below(self.limits.deep_chain);
            return self.chain(node, levels);
        }
        node
    }

    fn chain(&mut self, mut node: Node, levels: usize) -> Node {
        for _ in 0..levels {
            node = if self.chance(50) {
                Node::Arr(vec![node])
            } else {
                let mut k = Text::new();
                let name = self.pick(&["a", "url", "output"]);
                self.push_str(&mut k, name, 0);
                Node::Obj(vec![(k.close(), node)])
            };
        }
        node
    }

    fn array(&mut self, depth: usize) -> Node {
        let n = self.below(self.limits.max_items + 1);
        Node::Arr((0..n).map(|_| self.value(depth + 1)).collect())
    }

    fn object(&mut self, depth: usize) -> Node {
        let n = self.below(self.limits.max_items + 1);
        let mut members: Vec<(Text, Node)> = Vec::new();
        for _ in 0..n {
            let k = self.key();
            // Duplicate names are legal but their meaning is not; keep one.
            if members.iter().any(|(m, _)| m.units == k.units) {
                continue;
            }
            let v = if k.is("url") && !self.real.is_empty() && self.chance(70) {
                self.source(false)
            } else {
                self.value(depth + 1)
            };
            members.push((k, v));
        }
        Node::Obj(members)
    }

    fn top(&mut self) -> Node {
        if !self.limits.always_a_source && self.chance(20) {
            return self.value(0);
        }
        let mut members = Vec::new();
        let plain_key = |name: &str| Text {
            token: format!("\"{name}\""),
            units: name.encode_utf16().collect(),
        };
        if self.chance(70) {
            let id = self.string();
            members.push((plain_key("id"), id));
        }
        let mut output = Vec::new();
        if self.limits.always_a_source && !self.real.is_empty() {
            output.push(self.source(true));
        }
        let Node::Obj(more) = self.object(0) else {
            unreachable!()
        };
        if let Node::Arr(rest) = self.array(0) {
            output.extend(rest);
        }
        members.push((plain_key("output"), Node::Arr(output)));
        for (k, v) in more {
            if !members.iter().any(|(m, _)| m.units == k.units) {
                members.push((k, v));
            }
        }
        // Shuffle a little: `output` is not always first.
        if members.len() > 1 {
            let i = self.below(members.len());
            let m = members.remove(i);
            members.push(m);
        }
        Node::Obj(members)
    }

    fn ws(&mut self) -> &'static str {
        match self.below(16) {
            0..=9 => "",
            10 | 11 => " ",
            12 => "\n",
            13 => "\t",
            14 => "\r\n",
            _ => "\n    ",
        }
    }

    fn render(&mut self, node: &Node, siblings: Option<Siblings>, out: &mut Vec<Seg>) {
        fn lit(out: &mut Vec<Seg>, s: &str) {
            if let Some(Seg::Lit(last)) = out.last_mut() {
                last.push_str(s);
            } else {
                out.push(Seg::Lit(s.to_string()));
            }
        }
        match node {
            Node::Lit(s) => lit(out, s),
            Node::Str(t) => lit(out, &t.token),
            Node::Src(i, token) => out.push(Seg::Src {
                source: *i,
                token: token.clone(),
                siblings,
            }),
            Node::Arr(items) => {
                lit(out, "[");
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        lit(out, ",");
                    }
                    let (a, b) = (self.ws(), self.ws());
                    lit(out, a);
                    self.render(item, None, out);
                    lit(out, b);
                }
                if items.is_empty() {
                    let w = self.ws();
                    lit(out, w);
                }
                lit(out, "]");
            }
            Node::Obj(members) => {
                let has = |name: &str| members.iter().any(|(k, _)| k.is(name));
                lit(out, "{");
                for (n, (k, v)) in members.iter().enumerate() {
                    if n > 0 {
                        lit(out, ",");
                    }
                    let ws: Vec<&str> = (0..4).map(|_| self.ws()).collect();
                    lit(out, ws[0]);
                    lit(out, &k.token);
                    lit(out, ws[1]);
                    lit(out, ":");
                    lit(out, ws[2]);
                    let sib = match v {
                        Node::Src(i, _) if k.is("url") => Some(Siblings {
                            replicate_url: !has("replicate_url") && self.sources[*i].1 == Kind::Url,
                            size_bytes: !has("size_bytes"),
                            hosted_at: !has("hosted_at"),
                        }),
                        _ => None,
                    };
                    self.render(v, sib, out);
                    lit(out, ws[3]);
                }
                if members.is_empty() {
                    let w = self.ws();
                    lit(out, w);
                }
                lit(out, "}");
            }
        }
    }
}

impl Doc {
    /// A document from `e`. `real` are sources the caller can host (each
    /// must satisfy `is_source`); `is_source` is the matcher under test, so
    /// hostile text that happens to be a source is counted as one.
    pub fn generate(
        e: &mut dyn Entropy,
        real: &[String],
        is_source: &dyn Fn(&str) -> Option<Kind>,
        limits: Limits,
    ) -> Doc {
        let mut g = Gen {
            e,
            limits,
            nodes: 0,
            real,
            is_source,
            sources: Vec::new(),
            chained: false,
        };
        let top = g.top();
        let prediction_id = match &top {
            Node::Obj(members) => {
                members
                    .iter()
                    .find(|(k, _)| k.is("id"))
                    .and_then(|(_, v)| match v {
                        Node::Str(t) => t.decoded(),
                        Node::Src(i, _) => Some(g.sources[*i].0.clone()),
                        _ => None,
                    })
            }
            _ => None,
        };
        let mut segs = Vec::new();
        let (a, b) = (g.ws(), g.ws());
        segs.push(Seg::Lit(a.to_string()));
        g.render(&top, None, &mut segs);
        if let Some(Seg::Lit(last)) = segs.last_mut() {
            last.push_str(b);
        } else {
            segs.push(Seg::Lit(b.to_string()));
        }
        Doc {
            segs,
            sources: g.sources,
            prediction_id,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for s in &self.segs {
            match s {
                Seg::Lit(l) => out.extend_from_slice(l.as_bytes()),
                Seg::Src { token, .. } => out.extend_from_slice(token.as_bytes()),
            }
        }
        out
    }

    /// Does `out` hold exactly the rewrite of this document? Every byte
    /// outside a replaced source comes back unchanged, each source is
    /// replaced by its swap (or kept when `swap` gives none), `url` members
    /// gain the documented siblings, the result is valid JSON, and read back
    /// as values it equals the input with the same replacements.
    pub fn check_rewrite(
        &self,
        out: &[u8],
        swap: &dyn Fn(&str) -> Option<Swap>,
    ) -> Result<(), String> {
        let input = self.to_bytes();
        // Valid JSON, as serde_json sees it (lone surrogates are legal).
        serde_json::from_slice::<serde::de::IgnoredAny>(&input)
            .map_err(|e| format!("generator wrote invalid JSON ({e})"))?;
        serde_json::from_slice::<serde::de::IgnoredAny>(out)
            .map_err(|e| format!("output is not valid JSON: {e}"))?;
        if serde_json::from_slice::<serde_json::Value>(&input).is_ok() {
            serde_json::from_slice::<serde_json::Value>(out)
                .map_err(|e| format!("output does not parse as a value: {e}"))?;
        }
        self.check_bytes(out, swap)?;
        let want = rewrite_tree(&parse(&input)?, swap);
        let got = parse(out).map_err(|e| format!("output: {e}"))?;
        diff(&want, &got, "$")
    }

    fn check_bytes(&self, out: &[u8], swap: &dyn Fn(&str) -> Option<Swap>) -> Result<(), String> {
        let mut pos = 0;
        let expect = |pos: &mut usize, want: &[u8], what: &str| -> Result<(), String> {
            if out.len() >= *pos + want.len() && &out[*pos..*pos + want.len()] == want {
                *pos += want.len();
                Ok(())
            } else {
                let end = (*pos + want.len().max(40)).min(out.len());
                Err(format!(
                    "byte {}: want {what} {:?}, got {:?}",
                    *pos,
                    String::from_utf8_lossy(&want[..want.len().min(200)]),
                    String::from_utf8_lossy(&out[*pos..end.min(*pos + 200)])
                ))
            }
        };
        for seg in &self.segs {
            match seg {
                Seg::Lit(l) => expect(&mut pos, l.as_bytes(), "unchanged bytes")?,
                Seg::Src {
                    source,
                    token,
                    siblings,
                } => {
                    let value = &self.sources[*source].0;
                    let Some(sw) = swap(value) else {
                        expect(&mut pos, token.as_bytes(), "a source kept as written")?;
                        continue;
                    };
                    expect(&mut pos, json(&sw.hosted_url).as_bytes(), "the hosted URL")?;
                    let Some(sib) = siblings else { continue };
                    if sib.replicate_url {
                        let want = format!(",\"replicate_url\":{}", json(value));
                        expect(&mut pos, want.as_bytes(), "replicate_url")?;
                    }
                    if sib.size_bytes {
                        let n = sw.size_bytes.map_or("null".to_string(), |n| n.to_string());
                        let want = format!(",\"size_bytes\":{n}");
                        expect(&mut pos, want.as_bytes(), "size_bytes")?;
                    }
                    if sib.hosted_at {
                        expect(&mut pos, b",\"hosted_at\":", "hosted_at")?;
                        match &sw.hosted_at {
                            Some(at) => expect(&mut pos, json(at).as_bytes(), "hosted_at")?,
                            None => {
                                let rest = &out[pos..];
                                let end = rest
                                    .iter()
                                    .skip(1)
                                    .position(|&b| b == b'"')
                                    .map(|i| i + 2)
                                    .filter(|_| rest.first() == Some(&b'"'))
                                    .ok_or(format!("byte {pos}: hosted_at is not a string"))?;
                                let at = String::from_utf8_lossy(&rest[1..end - 1]);
                                if !is_rfc3339_utc(&at) {
                                    return Err(format!("hosted_at {at:?} is not RFC 3339"));
                                }
                                pos += end;
                            }
                        }
                    }
                }
            }
        }
        if pos != out.len() {
            return Err(format!(
                "{} unexpected bytes at the end: {:?}",
                out.len() - pos,
                String::from_utf8_lossy(&out[pos..out.len().min(pos + 200)])
            ));
        }
        Ok(())
    }
}

fn json(s: &str) -> String {
    serde_json::to_string(s).expect("a str serialises")
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z`
pub fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b.last() == Some(&b'Z')
        && (b.len() == 20 || (b[19] == b'.' && digits(20..b.len() - 1) && b.len() > 21))
}

/// A JSON value read back as written: strings as UTF-16 units, numbers as
/// their text. `AnyTime` only appears in expected trees.
#[derive(Debug, Clone, PartialEq)]
pub enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(Vec<u16>),
    Arr(Vec<J>),
    Obj(Vec<(Vec<u16>, J)>),
    AnyTime,
}

fn units(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

/// The input tree with every source value swapped, and siblings added
/// after `url` members, as the README documents.
fn rewrite_tree(v: &J, swap: &dyn Fn(&str) -> Option<Swap>) -> J {
    match v {
        J::Str(u) => match String::from_utf16(u).ok().and_then(|s| swap(&s)) {
            Some(sw) => J::Str(units(&sw.hosted_url)),
            None => v.clone(),
        },
        J::Arr(items) => J::Arr(items.iter().map(|i| rewrite_tree(i, swap)).collect()),
        J::Obj(members) => {
            let has = |name: &str| members.iter().any(|(k, _)| *k == units(name));
            let mut out = Vec::new();
            for (k, m) in members {
                out.push((k.clone(), rewrite_tree(m, swap)));
                let J::Str(u) = m else { continue };
                if *k != units("url") {
                    continue;
                }
                let Some(value) = String::from_utf16(u).ok() else {
                    continue;
                };
                let Some(sw) = swap(&value) else { continue };
                let is_data = value.len() > 11 && value[..5].eq_ignore_ascii_case("data:");
                if !has("replicate_url") && !is_data {
                    out.push((units("replicate_url"), J::Str(units(&value))));
                }
                if !has("size_bytes") {
                    let n = sw.size_bytes.map_or(J::Null, |n| J::Num(n.to_string()));
                    out.push((units("size_bytes"), n));
                }
                if !has("hosted_at") {
                    let at = sw
                        .hosted_at
                        .as_deref()
                        .map_or(J::AnyTime, |s| J::Str(units(s)));
                    out.push((units("hosted_at"), at));
                }
            }
            J::Obj(out)
        }
        _ => v.clone(),
    }
}

fn diff(want: &J, got: &J, path: &str) -> Result<(), String> {
    let short = |j: &J| {
        let s = format!("{j:?}");
        s.chars().take(200).collect::<String>()
    };
    match (want, got) {
        (J::AnyTime, J::Str(u)) => {
            let s = String::from_utf16_lossy(u);
            if is_rfc3339_utc(&s) {
                Ok(())
            } else {
                Err(format!("{path}: {s:?} is not an RFC 3339 time"))
            }
        }
        (J::Arr(a), J::Arr(b)) => {
            if a.len() != b.len() {
                return Err(format!("{path}: {} elements, want {}", b.len(), a.len()));
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(x, y, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (J::Obj(a), J::Obj(b)) => {
            let names = |m: &Vec<(Vec<u16>, J)>| {
                m.iter()
                    .map(|(k, _)| String::from_utf16_lossy(k))
                    .collect::<Vec<_>>()
            };
            if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.0 != y.0) {
                return Err(format!(
                    "{path}: members {:?}, want {:?} (in this order)",
                    names(b),
                    names(a)
                ));
            }
            for ((k, x), (_, y)) in a.iter().zip(b) {
                diff(x, y, &format!("{path}.{}", String::from_utf16_lossy(k)))?;
            }
            Ok(())
        }
        _ if want == got => Ok(()),
        _ => Err(format!("{path}: got {}, want {}", short(got), short(want))),
    }
}

/// Reads a JSON text (assumed valid; serde_json checks validity) into a
/// [`J`] tree.
pub fn parse(b: &[u8]) -> Result<J, String> {
    let mut p = Parser { b, i: 0 };
    let v = p.value(0)?;
    p.ws();
    if p.i != b.len() {
        return Err(format!("trailing bytes at {}", p.i));
    }
    Ok(v)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            self.err(&format!("expected {:?}", c as char))
        }
    }

    fn value(&mut self, depth: usize) -> Result<J, String> {
        if depth > 200 {
            return self.err("too deep");
        }
        self.ws();
        let Some(&c) = self.b.get(self.i) else {
            return self.err("unexpected end");
        };
        match c {
            b'n' | b't' | b'f' => {
                for (word, v) in [
                    ("null", J::Null),
                    ("true", J::Bool(true)),
                    ("false", J::Bool(false)),
                ] {
                    if self.b[self.i..].starts_with(word.as_bytes()) {
                        self.i += word.len();
                        return Ok(v);
                    }
                }
                self.err("bad literal")
            }
            b'"' => Ok(J::Str(self.string()?)),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(J::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(J::Arr(items));
                        }
                        _ => return self.err("expected , or ]"),
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(J::Obj(members));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    members.push((k, self.value(depth + 1)?));
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(J::Obj(members));
                        }
                        _ => return self.err("expected , or }"),
                    }
                }
            }
            _ => {
                let start = self.i;
                while self.i < self.b.len() && b"+-0123456789.eE".contains(&self.b[self.i]) {
                    self.i += 1;
                }
                if start == self.i {
                    return self.err("unexpected byte");
                }
                Ok(J::Num(
                    String::from_utf8_lossy(&self.b[start..self.i]).to_string(),
                ))
            }
        }
    }

    fn string(&mut self) -> Result<Vec<u16>, String> {
        if self.b.get(self.i) != Some(&b'"') {
            return self.err("expected a string");
        }
        self.i += 1;
        let mut out = Vec::new();
        let mut run = self.i;
        loop {
            let Some(&c) = self.b.get(self.i) else {
                return self.err("unterminated string");
            };
            if c != b'"' && c != b'\\' {
                self.i += 1;
                continue;
            }
            let text = std::str::from_utf8(&self.b[run..self.i])
                .map_err(|_| format!("invalid UTF-8 before byte {}", self.i))?;
            out.extend(text.encode_utf16());
            self.i += 1;
            if c == b'"' {
                return Ok(out);
            }
            let Some(&e) = self.b.get(self.i) else {
                return self.err("unterminated escape");
            };
            self.i += 1;
            match e {
                b'"' | b'\\' | b'/' => out.push(u16::from(e)),
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'n' => out.push(10),
                b'r' => out.push(13),
                b't' => out.push(9),
                b'u' => {
                    let hex = self
                        .b
                        .get(self.i..self.i + 4)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u16::from_str_radix(h, 16).ok());
                    let Some(u) = hex else {
                        return self.err("bad \\u escape");
                    };
                    out.push(u);
                    self.i += 4;
                }
                _ => return self.err("bad escape"),
            }
            run = self.i;
        }
    }
}
