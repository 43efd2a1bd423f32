//! The Prometheus text exposition format (0.0.4), both ways: writing the registry's
//! families for `GET /metrics`, and a small parser of that text so `spoke demo` can
//! scrape an admin endpoint and print p50/p99 from the `_bucket` samples.
//!
//! Threads: rendering runs on whichever thread serves `/metrics` (the event loop);
//! parsing runs in the `spoke demo` command. Both are pure: strings in, strings or
//! values out. The registry and its locking live in `metrics/mod.rs`; the bucket
//! bounds and the quantile estimate in `metrics/histogram.rs`.
//!
//! The writer and the parser are kept to the same small dialect (what the writer emits,
//! plus comments, blank lines and an optional timestamp), and the tests round-trip them.

use std::fmt::{self, Write as _};

use super::histogram::{bucket_quantile, LATENCY_BUCKETS_MS};
use super::{Counter, Gauge, Histogram, Labels, MetricKind};

// === Writing ===

/// A series type and how one series of it is written.
pub(super) trait Exposed {
    const KIND: MetricKind;
    /// Appends the sample lines of one series.
    fn write(&self, out: &mut String, name: &str, labels: &Labels);
}

impl Exposed for Counter {
    const KIND: MetricKind = MetricKind::Counter;
    fn write(&self, out: &mut String, name: &str, labels: &Labels) {
        sample(out, name, "", labels, None, self.get());
    }
}

impl Exposed for Gauge {
    const KIND: MetricKind = MetricKind::Gauge;
    fn write(&self, out: &mut String, name: &str, labels: &Labels) {
        sample(out, name, "", labels, None, self.get());
    }
}

impl Exposed for Histogram {
    const KIND: MetricKind = MetricKind::Histogram;
    fn write(&self, out: &mut String, name: &str, labels: &Labels) {
        // One snapshot per series, so the buckets, `+Inf` and `_count` agree.
        let snap = self.snapshot();
        let mut cumulative = 0u64;
        for (bound, count) in LATENCY_BUCKETS_MS.iter().zip(snap.counts.iter()) {
            cumulative = cumulative.saturating_add(*count);
            let le = bound.to_string();
            sample(out, name, "_bucket", labels, Some(&le), cumulative);
        }
        let total = snap.count();
        sample(out, name, "_bucket", labels, Some("+Inf"), total);
        sample(out, name, "_sum", labels, None, Millis(snap.sum_us));
        sample(out, name, "_count", labels, None, total);
    }
}

pub(super) fn header(out: &mut String, name: &str, help: &str, kind: MetricKind) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    // HELP text escapes only backslash and newline.
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind.as_str());
    out.push('\n');
}

/// One sample line: `name[suffix]{labels[,le=".."]} value`.
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &Labels,
    le: Option<&str>,
    value: impl fmt::Display,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (key, value) in labels.iter().chain(le.map(|le| ("le", le))) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(key);
            out.push_str("=\"");
            escape_label_value(out, value);
            out.push('"');
        }
        out.push('}');
    }
    // Writing to a String cannot fail.
    let _ = writeln!(out, " {value}");
}

/// Appends `value` escaped for a label value: backslash, double quote and newline.
pub fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Microseconds shown as milliseconds: `12` or `12.5`, never an exponent.
struct Millis(u64);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 1_000, self.0 % 1_000);
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:03}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

// === Parsing ===

/// One sample line of the text format. `labels` keep their written order, unescaped.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Why one line of exposition text did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The line does not start with a metric name.
    BadName,
    /// A label is not `name="value"`, or the label list is not closed.
    BadLabels,
    /// A label value uses an escape other than `\\`, `\"` or `\n`.
    BadEscape(char),
    /// No value after the name and labels.
    MissingValue,
    /// The value (or timestamp) is not a number.
    BadValue(String),
    /// More than a value and a timestamp follow the labels.
    TrailingText(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadName => f.write_str("line does not start with a metric name"),
            ParseError::BadLabels => f.write_str("malformed label list"),
            ParseError::BadEscape(c) => write!(f, "unknown escape \\{c} in a label value"),
            ParseError::MissingValue => f.write_str("sample has no value"),
            ParseError::BadValue(v) => write!(f, "{v:?} is not a number"),
            ParseError::TrailingText(t) => write!(f, "unexpected text {t:?} after the value"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses every sample line; comments and blank lines are skipped, and a line that does
/// not parse is dropped with a warning naming its line number, so one bad line does not
/// hide the rest of a scrape.
pub fn parse_text(text: &str) -> Vec<Sample> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| match parse_line(line) {
            Ok(sample) => sample,
            Err(e) => {
                log::warn!("metrics text line {}: {e}", i + 1);
                None
            }
        })
        .collect()
}

/// Parses one line: `Ok(None)` for a comment or blank line.
pub fn parse_line(line: &str) -> Result<Option<Sample>, ParseError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let name_len = line
        .char_indices()
        .find(|(i, c)| {
            !(c.is_ascii_alphabetic() || *c == '_' || *c == ':' || (*i > 0 && c.is_ascii_digit()))
        })
        .map_or(line.len(), |(i, _)| i);
    if name_len == 0 {
        return Err(ParseError::BadName);
    }
    let (name, mut rest) = line.split_at(name_len);
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.trim_start().strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next().ok_or(ParseError::MissingValue)?)?;
    if let Some(timestamp) = fields.next() {
        if timestamp.parse::<i64>().is_err() {
            return Err(ParseError::BadValue(timestamp.to_owned()));
        }
    }
    if let Some(extra) = fields.next() {
        return Err(ParseError::TrailingText(extra.to_owned()));
    }
    Ok(Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    }))
}

/// Parses `k="v",k2="v2"}` (the opening brace already consumed) into `labels` and
/// returns the text after the closing brace.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, ParseError> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let key_len = rest
            .char_indices()
            .find(|(i, c)| {
                !(c.is_ascii_alphabetic() || *c == '_' || (*i > 0 && c.is_ascii_digit()))
            })
            .map_or(rest.len(), |(i, _)| i);
        if key_len == 0 {
            return Err(ParseError::BadLabels);
        }
        let (key, after_key) = rest.split_at(key_len);
        let after_eq = after_key
            .trim_start()
            .strip_prefix('=')
            .ok_or(ParseError::BadLabels)?;
        let quoted = after_eq
            .trim_start()
            .strip_prefix('"')
            .ok_or(ParseError::BadLabels)?;
        let (value, after_value) = unescape_until_quote(quoted)?;
        labels.push((key.to_owned(), value));
        rest = after_value.trim_start();
        if let Some(after_comma) = rest.strip_prefix(',') {
            rest = after_comma;
        } else if !rest.starts_with('}') {
            return Err(ParseError::BadLabels);
        }
    }
}

/// Reads an escaped label value up to its closing quote; returns it and what follows.
fn unescape_until_quote(text: &str) -> Result<(String, &str), ParseError> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, other)) => return Err(ParseError::BadEscape(other)),
                None => return Err(ParseError::BadLabels),
            },
            c => value.push(c),
        }
    }
    Err(ParseError::BadLabels)
}

fn parse_value(text: &str) -> Result<f64, ParseError> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|_| ParseError::BadValue(text.to_owned())),
    }
}

/// Estimates the `q`-quantile (ms for latency families) of histogram `family` from
/// scraped samples: takes the `<family>_bucket` samples whose labels include every pair
/// of `matcher`, adds up their counts per `le` (so a partial matcher aggregates, like
/// `sum by (le)` in PromQL, and a full label set picks one series), and interpolates
/// within the bucket as `bucket_quantile` does. A `_bucket` sample with an unreadable
/// `le` is ignored. `None` when nothing matches or the buckets cannot answer.
pub fn histogram_quantile(
    samples: &[Sample],
    family: &str,
    matcher: &[(&str, &str)],
    q: f64,
) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for s in samples {
        let is_bucket = s
            .name
            .strip_prefix(family)
            .is_some_and(|suffix| suffix == "_bucket");
        if !is_bucket || !matcher.iter().all(|(k, v)| s.label(k) == Some(*v)) {
            continue;
        }
        let Some(le) = s.label("le").and_then(|le| parse_value(le).ok()) else {
            continue;
        };
        match buckets.iter_mut().find(|(bound, _)| *bound == le) {
            Some((_, count)) => *count += s.value,
            None => buckets.push((le, s.value)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    bucket_quantile(&buckets, q)
}

#[cfg(test)]
mod tests {
    use super::super::Registry;
    use super::*;
    use std::time::Duration;

    #[test]
    fn millis_render_without_trailing_zeros() {
        assert_eq!(Millis(0).to_string(), "0");
        assert_eq!(Millis(12_000).to_string(), "12");
        assert_eq!(Millis(12_500).to_string(), "12.5");
        assert_eq!(Millis(12_050).to_string(), "12.05");
        assert_eq!(Millis(1).to_string(), "0.001");
    }

    #[test]
    fn escape_covers_backslash_quote_newline() {
        let mut out = String::new();
        escape_label_value(&mut out, "a\\b\"c\nd\te");
        assert_eq!(out, "a\\\\b\\\"c\\nd\te");
    }

    #[test]
    fn parses_names_labels_values_and_timestamps() {
        let sample = parse_line(r#"x_total{a="1",b="two words"} 3 1700000000000"#)
            .expect("valid")
            .expect("a sample");
        assert_eq!(sample.name, "x_total");
        assert_eq!(
            sample.labels,
            vec![("a".into(), "1".into()), ("b".into(), "two words".into())]
        );
        assert_eq!(sample.value, 3.0);
        assert_eq!(sample.label("b"), Some("two words"));
        assert_eq!(sample.label("c"), None);

        let bare = parse_line("up 1").expect("valid").expect("a sample");
        assert!(bare.labels.is_empty());
        let spaced = parse_line(r#"x { a = "1" , } 2.5e3"#)
            .expect("valid")
            .expect("a sample");
        assert_eq!(spaced.labels, vec![("a".into(), "1".into())]);
        assert_eq!(spaced.value, 2500.0);
        let inf = parse_line(r#"h_bucket{le="+Inf"} +Inf"#)
            .expect("valid")
            .expect("a sample");
        assert_eq!(inf.value, f64::INFINITY);
        assert!(parse_line("x NaN")
            .expect("valid")
            .expect("a sample")
            .value
            .is_nan());
    }

    #[test]
    fn comments_and_blanks_are_not_samples() {
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(parse_line("   "), Ok(None));
        assert_eq!(parse_line("# HELP x y"), Ok(None));
        assert_eq!(parse_line("# TYPE x counter"), Ok(None));
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        assert_eq!(parse_line("{a=\"1\"} 1"), Err(ParseError::BadName));
        assert_eq!(parse_line("x"), Err(ParseError::MissingValue));
        assert_eq!(parse_line("x{a=\"1\" 1"), Err(ParseError::BadLabels));
        assert_eq!(parse_line("x{a=1} 1"), Err(ParseError::BadLabels));
        assert_eq!(parse_line("x{a=\"1\""), Err(ParseError::BadLabels));
        assert_eq!(
            parse_line("x{a=\"\\t\"} 1"),
            Err(ParseError::BadEscape('t'))
        );
        assert_eq!(parse_line("x one"), Err(ParseError::BadValue("one".into())));
        assert_eq!(
            parse_line("x 1 2 3"),
            Err(ParseError::TrailingText("3".into()))
        );
        assert_eq!(
            ParseError::BadValue("one".into()).to_string(),
            "\"one\" is not a number"
        );
    }

    #[test]
    fn parse_text_skips_bad_lines_and_keeps_the_rest() {
        let samples = parse_text("# TYPE a counter\na 1\nbroken{\n\nb{k=\"v\"} 2\n");
        let names: Vec<_> = samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b"]);
    }

    #[test]
    fn rendered_text_round_trips_through_the_parser() {
        let registry = Registry::new();
        let tricky = "quote \" back \\ nl \n end";
        registry
            .counter_family("c_total", "C.")
            .expect("valid")
            .series(Labels::new().with("v", tricky).with("e", ""))
            .add(42);
        registry
            .gauge_family("g", "G.")
            .expect("valid")
            .series(Labels::new().with("k", "x"))
            .set(-3);
        let h = registry
            .histogram_family("h_ms", "H.")
            .expect("valid")
            .series(Labels::new().with("k", "x"));
        for ms in [1, 2, 7, 15, 15, 300, 4_500] {
            h.observe(Duration::from_millis(ms));
        }
        h.observe(Duration::from_micros(250));

        let samples = parse_text(&registry.render_to_string());
        let counter = &samples[0];
        assert_eq!(counter.name, "c_total");
        assert_eq!(
            counter.labels,
            vec![("v".into(), tricky.into()), ("e".into(), String::new())]
        );
        assert_eq!(counter.value, 42.0);
        assert_eq!(samples[1].name, "g");
        assert_eq!(samples[1].value, -3.0);

        let buckets: Vec<_> = samples.iter().filter(|s| s.name == "h_ms_bucket").collect();
        assert_eq!(buckets.len(), LATENCY_BUCKETS_MS.len() + 1);
        let parsed: Vec<(f64, f64)> = buckets
            .iter()
            .map(|s| {
                (
                    parse_value(s.label("le").unwrap_or("bad")).unwrap_or(-1.0),
                    s.value,
                )
            })
            .collect();
        assert_eq!(parsed, h.snapshot().cumulative());
        let sum = samples
            .iter()
            .find(|s| s.name == "h_ms_sum")
            .map(|s| s.value);
        assert_eq!(sum, Some(4_840.25));
        let count = samples
            .iter()
            .find(|s| s.name == "h_ms_count")
            .map(|s| s.value);
        assert_eq!(count, Some(8.0));

        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(
                histogram_quantile(&samples, "h_ms", &[("k", "x")], q),
                h.quantile(q),
                "q={q}"
            );
        }
    }

    #[test]
    fn quantile_from_samples_aggregates_matching_series() {
        let text = "\
            lat_bucket{s=\"200\",le=\"10\"} 1\n\
            lat_bucket{s=\"200\",le=\"20\"} 2\n\
            lat_bucket{s=\"200\",le=\"+Inf\"} 2\n\
            lat_bucket{s=\"500\",le=\"10\"} 0\n\
            lat_bucket{s=\"500\",le=\"20\"} 2\n\
            lat_bucket{s=\"500\",le=\"+Inf\"} 2\n\
            lat_bucketeer{s=\"500\",le=\"20\"} 99\n\
            lat_count{s=\"500\"} 2\n";
        let samples = parse_text(text);
        // One series: both of 500's observations lie in (10, 20].
        assert_eq!(
            histogram_quantile(&samples, "lat", &[("s", "500")], 0.5),
            Some(15.0)
        );
        // All series: cumulative 1 at 10, 4 at 20; rank 2 is a third into (10, 20].
        let p50 = histogram_quantile(&samples, "lat", &[], 0.5).expect("answer");
        assert!((p50 - (10.0 + 10.0 / 3.0)).abs() < 1e-9, "{p50}");
        assert_eq!(
            histogram_quantile(&samples, "lat", &[("s", "404")], 0.5),
            None
        );
        assert_eq!(histogram_quantile(&samples, "other", &[], 0.5), None);
    }
}
