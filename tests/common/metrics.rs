//! A small Prometheus text-format reader for assertions on `/metrics`.

type Labels = Vec<(String, String)>;

/// Parses one Prometheus text sample line into (name, labels, value).
fn parse_sample(line: &str) -> Option<(String, Labels, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, rest) = match line.find('}') {
        Some(close) if line[..close].contains('{') => (&line[..=close], &line[close + 1..]),
        _ => line.split_at(line.find(' ')?),
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = parse_series(series)?;
    Some((name, labels, value))
}

/// `name{a="x",b="y"}` -> (name, [(a,x),(b,y)]).
fn parse_series(series: &str) -> Option<(String, Labels)> {
    let series = series.trim();
    let Some(open) = series.find('{') else {
        return Some((series.to_string(), Vec::new()));
    };
    let name = series[..open].to_string();
    let inner = series[open + 1..].strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut rest = inner;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key, value));
        rest = &after[end? + 1..];
    }
    Some((name, labels))
}

/// Sum of samples in `text` matching `query`; None when nothing matches.
pub fn metric_value(text: &str, query: &str) -> Option<f64> {
    let (qname, qlabels) = parse_series(query)?;
    let mut found = None;
    for (name, labels, value) in text.lines().filter_map(parse_sample) {
        if name == qname && qlabels.iter().all(|q| labels.contains(q)) {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}
