//! Go/Kubernetes duration strings (`300ms`, `1.5s`, `1m30s`, `2h`, `0`): a pure parser and a
//! compact formatter.
//!
//! Owns only the text format. Used on the main thread by the configuration loader (environment
//! variables such as `LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT`) and on the controller thread by
//! `controller::mesh` (ServiceProfile `timeout` and `retryBudget.ttl`). No I/O, no state.
//!
//! Accepted syntax, as Go's `time.ParseDuration` (which Linkerd and Kubernetes use):
//! - one or more `<number><unit>` pairs, e.g. `1h15m30.5s`; the values add up;
//! - `<number>` is decimal digits with an optional fraction: `1`, `1.5`, `.5`, `1.`
//!   (but not a lone `.`);
//! - `<unit>` is one of `ns`, `us`, `µs` (micro sign U+00B5), `μs` (Greek mu U+03BC), `ms`,
//!   `s`, `m`, `h`;
//! - the bare string `0` means zero (any other number needs a unit);
//! - a leading `+` is accepted and ignored, as in Go;
//! - a leading `-` is rejected: spoke has no use for negative durations (Go would accept them);
//! - the total must fit Go's limit of `i64::MAX` nanoseconds (about 292 years), so that any
//!   value accepted here is also valid for Linkerd's control plane and `google.protobuf.Duration`.
//!
//! Fractions finer than a nanosecond are truncated, as Go does (`1.5ns` is 1ns).
//! No whitespace is allowed anywhere; callers trim if they want to.

use std::fmt;
use std::time::Duration;

/// Largest accepted duration in nanoseconds: Go's `time.Duration` is an `i64` of nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Digits of a fraction beyond this many are ignored: they cannot change a nanosecond count
/// even for hours (1h = 3.6e12ns), and ignoring them keeps the arithmetic in `u128`.
const MAX_FRACTION_DIGITS: u32 = 18;

/// Why a duration string was rejected. `Display` quotes the input so messages can be shown as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// The string is empty.
    Empty,
    /// The string starts with `-`.
    Negative(String),
    /// A number is missing where one was expected (e.g. `ms`, `1h.m`, `.s`).
    MissingNumber(String),
    /// A number has no unit after it (e.g. `5`, `1h30`). Only the bare `0` may omit it.
    MissingUnit(String),
    /// The unit is not one of ns, us, µs, ms, s, m, h. Carries the input and the unit seen.
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit text that was not recognised.
        unit: String,
    },
    /// The total exceeds `i64::MAX` nanoseconds.
    Overflow(String),
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Empty => write!(f, "invalid duration \"\": empty"),
            DurationError::Negative(s) => {
                write!(f, "invalid duration {s:?}: negative durations are not allowed")
            }
            DurationError::MissingNumber(s) => {
                write!(f, "invalid duration {s:?}: expected a number")
            }
            DurationError::MissingUnit(s) => write!(
                f,
                "invalid duration {s:?}: missing unit (one of ns, us, ms, s, m, h), e.g. \"500ms\""
            ),
            DurationError::UnknownUnit { input, unit } => write!(
                f,
                "invalid duration {input:?}: unknown unit {unit:?} (expected one of ns, us, ms, s, m, h)"
            ),
            DurationError::Overflow(s) => write!(f, "invalid duration {s:?}: too large"),
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses a Go duration string. See the module documentation for the accepted syntax.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(s.to_string()));
    }
    let body = s.strip_prefix('+').unwrap_or(s);
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(DurationError::MissingNumber(s.to_string()));
    }

    let mut rest = body;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, fraction, after_number) = split_number(rest);
        if whole.is_empty() && fraction.is_none_or(str::is_empty) {
            return Err(DurationError::MissingNumber(s.to_string()));
        }
        let unit_len = after_number
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_number.len());
        let (unit, next) = after_number.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(s.to_string()));
        }
        let unit_nanos = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            input: s.to_string(),
            unit: unit.to_string(),
        })?;
        let nanos = term_nanos(whole, fraction.unwrap_or(""), unit_nanos)
            .ok_or_else(|| DurationError::Overflow(s.to_string()))?;
        total = total
            .checked_add(nanos)
            .filter(|t| *t <= MAX_NANOS)
            .ok_or_else(|| DurationError::Overflow(s.to_string()))?;
        rest = next;
    }
    // `total` is at most i64::MAX, so it fits a u64 and the division cannot lose the seconds.
    let secs = (total / 1_000_000_000) as u64;
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Splits `s` into the integer digits, the fraction digits (`None` when there is no `.`), and
/// the remainder starting at the unit.
fn split_number(s: &str) -> (&str, Option<&str>, &str) {
    let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (whole, after) = s.split_at(int_len);
    match after.strip_prefix('.') {
        Some(frac_and_rest) => {
            let frac_len = frac_and_rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(frac_and_rest.len());
            let (fraction, rest) = frac_and_rest.split_at(frac_len);
            (whole, Some(fraction), rest)
        }
        None => (whole, None, after),
    }
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// `whole.fraction` times `unit` in nanoseconds, truncated; `None` when it is too large.
fn term_nanos(whole: &str, fraction: &str, unit: u128) -> Option<u128> {
    let mut int_value: u128 = 0;
    for d in whole.bytes() {
        int_value = int_value
            .checked_mul(10)?
            .checked_add(u128::from(d - b'0'))?;
        if int_value > MAX_NANOS {
            return None;
        }
    }
    let mut numerator: u128 = 0;
    let mut scale: u128 = 1;
    for d in fraction.bytes().take(MAX_FRACTION_DIGITS as usize) {
        numerator = numerator * 10 + u128::from(d - b'0');
        scale *= 10;
    }
    let int_nanos = int_value.checked_mul(unit)?;
    // numerator < 10^18 and unit <= 3.6e12, so this product stays far below u128::MAX.
    let frac_nanos = numerator * unit / scale;
    int_nanos
        .checked_add(frac_nanos)
        .filter(|n| *n <= MAX_NANOS)
}

/// Formats a duration compactly for messages, in a form `parse` reads back exactly:
/// `0s`, `750ns`, `1.5us`, `250ms`, `1.5s`, `1m30s`, `2h`, `1h0m5s` is written `1h5s`.
pub fn format(d: Duration) -> String {
    let total = d.as_nanos();
    if total == 0 {
        return "0s".to_string();
    }
    const US: u128 = 1_000;
    const MS: u128 = 1_000_000;
    const S: u128 = 1_000_000_000;
    const MIN: u128 = 60 * S;
    const HOUR: u128 = 60 * MIN;
    if total < US {
        return format!("{total}ns");
    }
    if total < MS {
        return with_fraction(total, US, "us");
    }
    if total < S {
        return with_fraction(total, MS, "ms");
    }
    if total < MIN {
        return with_fraction(total, S, "s");
    }
    let mut out = String::new();
    let hours = total / HOUR;
    let minutes = (total % HOUR) / MIN;
    let rest = total % MIN;
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if rest > 0 {
        out.push_str(&with_fraction(rest, S, "s"));
    }
    out
}

/// `value / unit` with the fraction written out and trailing zeros dropped.
fn with_fraction(value: u128, unit: u128, suffix: &str) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return format!("{whole}{suffix}");
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}{suffix}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        match parse(s) {
            Ok(d) => d,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn parses_single_units() {
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("7us"), Duration::from_micros(7));
        assert_eq!(ok("7\u{b5}s"), Duration::from_micros(7));
        assert_eq!(ok("7\u{3bc}s"), Duration::from_micros(7));
    }

    #[test]
    fn parses_fractions_and_sequences() {
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1h15m30.25s"), Duration::from_millis(4_530_250));
        assert_eq!(ok("0.001ms"), Duration::from_micros(1));
        // Sub-nanosecond parts are truncated, as in Go.
        assert_eq!(ok("1.9ns"), Duration::from_nanos(1));
        assert_eq!(
            ok("0.333333333333333333333s"),
            Duration::from_nanos(333_333_333)
        );
    }

    #[test]
    fn parses_zero_and_plus() {
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("+0"), Duration::ZERO);
        assert_eq!(ok("+5s"), Duration::from_secs(5));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert_eq!(parse("-1s"), Err(DurationError::Negative("-1s".into())));
        assert_eq!(parse("-0"), Err(DurationError::Negative("-0".into())));
        assert_eq!(parse("5"), Err(DurationError::MissingUnit("5".into())));
        assert_eq!(parse("00"), Err(DurationError::MissingUnit("00".into())));
        assert_eq!(
            parse("1h30"),
            Err(DurationError::MissingUnit("1h30".into()))
        );
        assert_eq!(parse("ms"), Err(DurationError::MissingNumber("ms".into())));
        assert_eq!(parse(".s"), Err(DurationError::MissingNumber(".s".into())));
        assert_eq!(parse("+"), Err(DurationError::MissingNumber("+".into())));
        assert_eq!(
            parse("1x"),
            Err(DurationError::UnknownUnit {
                input: "1x".into(),
                unit: "x".into()
            })
        );
        assert!(matches!(
            parse("1 s"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse("1d"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(parse(" 1s"), Err(DurationError::MissingNumber(_))));
    }

    #[test]
    fn rejects_overflow() {
        // Go's limit is 2562047h47m16.854775807s.
        assert_eq!(
            ok("2562047h47m16.854775807s"),
            Duration::new(9_223_372_036, 854_775_807)
        );
        assert!(matches!(parse("2562048h"), Err(DurationError::Overflow(_))));
        assert!(matches!(
            parse("2562047h47m16.854775808s"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse("99999999999999999999999999999999999999999ns"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn error_messages_name_the_input() {
        let msg = parse("1x").map(|_| ()).unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid duration \"1x\": unknown unit \"x\" (expected one of ns, us, ms, s, m, h)"
        );
        assert!(parse("5").unwrap_err().to_string().contains("\"5\""));
        assert!(parse("-1s").unwrap_err().to_string().contains("\"-1s\""));
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_nanos(750)), "750ns");
        assert_eq!(format(Duration::from_nanos(1_500)), "1.5us");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_micros(1_500)), "1.5ms");
        assert_eq!(format(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(format(Duration::from_secs(10)), "10s");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(7200)), "2h");
        assert_eq!(format(Duration::from_secs(3605)), "1h5s");
        assert_eq!(format(Duration::from_millis(60_500)), "1m0.5s");
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_nanos(1_001),
            Duration::from_millis(1),
            Duration::from_millis(999),
            Duration::new(59, 999_999_999),
            Duration::new(3_661, 1),
            Duration::new(9_223_372_036, 854_775_807),
        ] {
            assert_eq!(ok(&format(d)), d, "round trip of {}", format(d));
        }
    }
}
