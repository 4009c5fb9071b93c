//! Time spans as systemd reads and writes them (systemd.time(7)), for
//! options such as `[Container] StopTimeout=` and `HealthInterval=`.
//!
//! [`parse_timespan`] reads a span the way systemd's `parse_sec()` does
//! (checked against systemd 252 with `systemd-analyze timespan`):
//!
//! - A span is one or more terms, each a non-negative decimal number
//!   followed by an optional unit; the terms add up: `1min 30s`, `1h30m`,
//!   `2.5s`, even `5s 5` (10 seconds). Whitespace may separate terms, and a
//!   number from its unit (`5 min`).
//! - A number without a unit is seconds.
//! - Units, case-sensitive: `usec us µs μs`, `msec ms`,
//!   `seconds second sec s`, `minutes minute min m`, `hours hour hr h`,
//!   `days day d`, `weeks week w`, `months month M` (30.4375 days, a twelfth
//!   of a year) and `years year y` (365.25 days).
//! - A fraction counts down to the microsecond, the rest is dropped
//!   (`1.9us` is 1µs); `.5s` is allowed, `5.s` is not. A sign other than a
//!   leading `+` is an error.
//! - `infinity` alone (with surrounding whitespace) is a value of its own,
//!   accepted only where the caller allows it ([`parse_timespan_or_infinity`]).
//! - A span must stay below 2^64 microseconds (about 584,542 years).
//!
//! [`format_timespan`] prints a span back in systemd's style (`1min 30s`),
//! which [`parse_timespan`] reads back exactly for any span made of whole
//! microseconds. Unlike systemd's `format_timespan()`, which prints a
//! remainder under a minute as a decimal (`2.500000s`), it prints whole
//! units only (`2s 500ms`); systemd reads both the same.

use std::fmt;
use std::time::Duration;

/// Why a time span could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("expected a time span such as 30s, 1min 30s or 2h, found an empty value")]
    Empty,
    #[error("expected a time span such as 30s, 1min 30s or 2h, found {value:?}: {reason}")]
    Invalid { value: String, reason: String },
    #[error("time span {0:?} is negative")]
    Negative(String),
    #[error("time span {0:?} is too long")]
    OutOfRange(String),
    #[error("\"infinity\" is not allowed here; give a time span such as 30s")]
    Infinity,
}

/// A time span that may be infinite, for settings that allow `infinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timespan {
    Finite(Duration),
    Infinity,
}

impl fmt::Display for Timespan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timespan::Finite(d) => f.write_str(&format_timespan(*d)),
            Timespan::Infinity => f.write_str("infinity"),
        }
    }
}

const NSEC_PER_USEC: u128 = 1_000;
const USEC_PER_SEC: u128 = 1_000_000;
const USEC_PER_MINUTE: u128 = 60 * USEC_PER_SEC;
const USEC_PER_HOUR: u128 = 60 * USEC_PER_MINUTE;
const USEC_PER_DAY: u128 = 24 * USEC_PER_HOUR;
const USEC_PER_WEEK: u128 = 7 * USEC_PER_DAY;
const USEC_PER_MONTH: u128 = 2_629_800 * USEC_PER_SEC;
const USEC_PER_YEAR: u128 = 31_557_600 * USEC_PER_SEC;

/// systemd's unit table, in systemd's order: the first suffix the text
/// starts with wins, so longer spellings come before their prefixes.
const UNITS_USEC: [(&str, u128); 30] = [
    ("seconds", USEC_PER_SEC),
    ("second", USEC_PER_SEC),
    ("sec", USEC_PER_SEC),
    ("s", USEC_PER_SEC),
    ("minutes", USEC_PER_MINUTE),
    ("minute", USEC_PER_MINUTE),
    ("min", USEC_PER_MINUTE),
    ("months", USEC_PER_MONTH),
    ("month", USEC_PER_MONTH),
    ("M", USEC_PER_MONTH),
    ("msec", 1_000),
    ("ms", 1_000),
    ("m", USEC_PER_MINUTE),
    ("hours", USEC_PER_HOUR),
    ("hour", USEC_PER_HOUR),
    ("hr", USEC_PER_HOUR),
    ("h", USEC_PER_HOUR),
    ("days", USEC_PER_DAY),
    ("day", USEC_PER_DAY),
    ("d", USEC_PER_DAY),
    ("weeks", USEC_PER_WEEK),
    ("week", USEC_PER_WEEK),
    ("w", USEC_PER_WEEK),
    ("years", USEC_PER_YEAR),
    ("year", USEC_PER_YEAR),
    ("y", USEC_PER_YEAR),
    ("usec", 1),
    ("us", 1),
    ("\u{b5}s", 1),
    ("\u{3bc}s", 1),
];

/// What one parse counts in: microseconds as systemd's `parse_sec()`, or
/// nanoseconds (with `ns` and `nsec` units, as `parse_nsec()`) so that
/// [`format_timespan`] output always reads back.
#[derive(Clone, Copy, PartialEq)]
enum Base {
    Usec,
    Nsec,
}

impl Base {
    fn unit(self, text: &str) -> Option<(&'static str, u128)> {
        let scale = match self {
            Base::Usec => 1,
            Base::Nsec => NSEC_PER_USEC,
        };
        if self == Base::Nsec {
            for suffix in ["nsec", "ns"] {
                if text.starts_with(suffix) {
                    return Some((suffix, 1));
                }
            }
        }
        UNITS_USEC
            .iter()
            .find(|(suffix, _)| text.starts_with(suffix))
            .map(|&(suffix, n)| (suffix, n * scale))
    }

    fn default_unit(self) -> u128 {
        match self {
            Base::Usec => USEC_PER_SEC,
            Base::Nsec => USEC_PER_SEC * NSEC_PER_USEC,
        }
    }

    /// systemd keeps spans in a u64 and reserves its maximum for infinity.
    fn limit(self) -> u128 {
        match self {
            Base::Usec => u128::from(u64::MAX),
            // Whatever a Duration holds; only reached through serde.
            Base::Nsec => u128::from(u64::MAX) * 1_000_000_000,
        }
    }

    fn to_duration(self, n: u128) -> Duration {
        let per_sec = self.default_unit();
        let secs = u64::try_from(n / per_sec).unwrap_or(u64::MAX);
        // Below one second in the base unit, so below 10^9 nanoseconds.
        let sub = n % per_sec;
        let nanos = match self {
            Base::Usec => sub * NSEC_PER_USEC,
            Base::Nsec => sub,
        };
        Duration::new(secs, u32::try_from(nanos).unwrap_or(0))
    }
}

/// Reads a finite time span: `infinity` is an error.
pub fn parse_timespan(s: &str) -> Result<Duration, DurationError> {
    match parse(s, Base::Usec)? {
        Timespan::Finite(d) => Ok(d),
        Timespan::Infinity => Err(DurationError::Infinity),
    }
}

/// Reads a time span where `infinity` is allowed.
pub fn parse_timespan_or_infinity(s: &str) -> Result<Timespan, DurationError> {
    parse(s, Base::Usec)
}

const WHITESPACE: &[char] = &[' ', '\t', '\n', '\r'];

fn parse(s: &str, base: Base) -> Result<Timespan, DurationError> {
    let invalid = |reason: String| DurationError::Invalid {
        value: s.to_owned(),
        reason,
    };
    let mut p = s.trim_start_matches(WHITESPACE);
    if let Some(rest) = p.strip_prefix("infinity") {
        if rest.trim_start_matches(WHITESPACE).is_empty() {
            return Ok(Timespan::Infinity);
        }
        return Err(invalid("nothing may follow \"infinity\"".to_owned()));
    }
    if p.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: u128 = 0;
    let limit = base.limit();
    let out_of_range = || DurationError::OutOfRange(s.to_owned());
    loop {
        p = p.trim_start_matches(WHITESPACE);
        if p.is_empty() {
            break;
        }
        if p.starts_with('-') {
            return Err(DurationError::Negative(s.to_owned()));
        }
        // strtoll(): an optional '+', then digits.
        let unsigned = p.strip_prefix('+').unwrap_or(p);
        let int_len = unsigned
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(unsigned.len());
        let (int_digits, after_int) = unsigned.split_at(int_len);
        if int_digits.is_empty() && unsigned.len() != p.len() {
            // strtoll() reads no number from "+.5", unlike from ".5".
            return Err(invalid(format!("expected a number at {:?}", excerpt(p))));
        }
        let (frac_digits, after_number) = match after_int.strip_prefix('.') {
            Some(frac) => {
                let len = frac
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(frac.len());
                if len == 0 {
                    return Err(invalid("expected digits after '.'".to_owned()));
                }
                frac.split_at(len)
            }
            None if int_digits.is_empty() => {
                return Err(invalid(format!("expected a number at {:?}", excerpt(p))));
            }
            None => ("", after_int),
        };
        let unit_text = after_number.trim_start_matches(WHITESPACE);
        let unknown_unit = || {
            let word: String = unit_text
                .chars()
                .take_while(|c| !c.is_ascii_digit() && !WHITESPACE.contains(c))
                .collect();
            invalid(format!("unknown unit {word:?}"))
        };
        let (multiplier, rest) = match base.unit(unit_text) {
            // A known unit glued to more letters ("5secs") is an unknown
            // unit; systemd rejects it too, as a term without a number.
            Some((suffix, _)) if unit_text[suffix.len()..].starts_with(char::is_alphabetic) => {
                return Err(unknown_unit());
            }
            Some((suffix, n)) => (n, &unit_text[suffix.len()..]),
            None => {
                // A number may be followed by whitespace and another term,
                // but not glued to an unknown word ("5secs", "1.5.5s").
                if unit_text.len() == after_number.len() && !after_number.is_empty() {
                    return Err(unknown_unit());
                }
                (base.default_unit(), after_number)
            }
        };
        // Digits only, so this fails only by overflow.
        let whole: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| out_of_range())?
        };
        // strtoll() stops at the largest signed 64-bit number.
        if whole > i64::MAX as u128 {
            return Err(out_of_range());
        }
        // systemd's own bound, which is a little conservative.
        if whole >= limit / multiplier {
            return Err(out_of_range());
        }
        total += whole * multiplier;
        if total >= limit {
            return Err(out_of_range());
        }
        // As systemd: each fractional digit adds digit * multiplier / 10^k,
        // rounded down, so precision ends at the base unit.
        let mut m = multiplier / 10;
        for d in frac_digits.bytes() {
            total += u128::from(d - b'0') * m;
            m /= 10;
        }
        if total >= limit {
            return Err(out_of_range());
        }
        p = rest;
    }
    Ok(Timespan::Finite(base.to_duration(total)))
}

fn excerpt(s: &str) -> String {
    s.chars().take(12).collect()
}

/// Units for printing, largest first.
const FORMAT_UNITS: [(&str, u128); 9] = [
    ("y", USEC_PER_YEAR),
    ("month", USEC_PER_MONTH),
    ("w", USEC_PER_WEEK),
    ("d", USEC_PER_DAY),
    ("h", USEC_PER_HOUR),
    ("min", USEC_PER_MINUTE),
    ("s", USEC_PER_SEC),
    ("ms", 1_000),
    ("us", 1),
];

/// Prints a span in systemd's style: `0`, `10s`, `1min 30s`, `2s 500ms`,
/// `1y 2month`. A remainder below a microsecond is printed in `ns`, which
/// systemd's `parse_sec()` does not read; spans from [`parse_timespan`]
/// never have one.
pub fn format_timespan(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0".to_owned();
    }
    let mut usec = nanos / NSEC_PER_USEC;
    let mut out = String::new();
    for (suffix, size) in FORMAT_UNITS {
        if usec >= size {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&format!("{}{suffix}", usec / size));
            usec %= size;
        }
    }
    let ns = nanos % NSEC_PER_USEC;
    if ns > 0 {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&format!("{ns}ns"));
    }
    out
}

/// Serde helpers that write a [`Duration`] as a systemd time span string
/// (`"1min 30s"`), for `#[serde(with = "crate::duration::serde_timespan")]`.
pub mod serde_timespan {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_timespan(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        match super::parse(&text, super::Base::Nsec).map_err(serde::de::Error::custom)? {
            super::Timespan::Finite(d) => Ok(d),
            super::Timespan::Infinity => {
                Err(serde::de::Error::custom(super::DurationError::Infinity))
            }
        }
    }
}

/// As [`serde_timespan`], for an `Option<Duration>`.
pub mod serde_timespan_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serde_timespan::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapper(#[serde(with = "super::serde_timespan")] Duration);
        Ok(Option::<Wrapper>::deserialize(d)?.map(|Wrapper(d)| d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// Each value and what `systemd-analyze timespan` (systemd 252) prints
    /// for it in microseconds.
    #[test]
    fn matches_systemd() {
        let cases: &[(&str, u64)] = &[
            ("1min 30s", 90_000_000),
            ("1h30m", 5_400_000_000),
            ("2.5s", 2_500_000),
            ("90", 90_000_000),
            ("1.5us", 1),
            ("1.9us", 1),
            ("0", 0),
            ("0s", 0),
            ("1 min", 60_000_000),
            ("1M", 2_629_800_000_000),
            ("1.5M", 3_944_700_000_000),
            ("1y", 31_557_600_000_000),
            ("5 minutes 3s", 303_000_000),
            ("1y 2M", 36_817_200_000_000),
            ("3w", 1_814_400_000_000),
            ("3 weeks", 1_814_400_000_000),
            ("10ms", 10_000),
            ("1.05ms", 1_050),
            ("1msec", 1_000),
            ("1.000001s", 1_000_001),
            ("2.123456789s", 2_123_456),
            ("0.0000001s", 0),
            ("2m1.5s", 121_500_000),
            ("+5s", 5_000_000),
            (" 5s ", 5_000_000),
            ("5s5", 10_000_000),
            ("5 5", 10_000_000),
            ("1 2", 3_000_000),
            ("1d 1d", 172_800_000_000),
            ("1d2h", 93_600_000_000),
            ("1µs", 1),
            ("1μs", 1),
            ("1usec", 1),
            ("1 usec", 1),
            (".5s", 500_000),
            ("0.5", 500_000),
            ("1.5", 1_500_000),
            ("1.50s", 1_500_000),
            ("1.5 .5", 2_000_000),
            ("1.5s.5", 2_000_000),
            ("1s.5", 1_500_000),
            ("1m 1.5", 61_500_000),
            ("1min30", 90_000_000),
            ("5 m", 300_000_000),
            ("1hr", 3_600_000_000),
            ("1.5h", 5_400_000_000),
            ("00005s", 5_000_000),
            ("5s\t3m", 185_000_000),
            ("1y1month", 34_187_400_000_000),
            ("1sec 1 seconds 1second", 3_000_000),
            ("1s+5", 6_000_000),
        ];
        for (text, micros) in cases {
            assert_eq!(parse_timespan(text), Ok(us(*micros)), "{text:?}");
        }
    }

    /// Values `systemd-analyze timespan` rejects.
    #[test]
    fn rejects_what_systemd_rejects() {
        for text in [
            "",
            "  ",
            "1e3s",
            "5ss",
            "5secs",
            "5S",
            "5Min",
            "1ns",
            "5.s",
            "1.5.5s",
            "5 .",
            "5s,",
            "Infinity",
            "1 infinity",
            "5s infinity",
            "infinityx",
            "x",
            "+-5",
            "+.5s",
            "1secm",
            "5 x",
        ] {
            assert!(parse_timespan(text).is_err(), "{text:?} should not parse");
        }
        assert!(matches!(
            parse_timespan("-1s"),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            parse_timespan(" -0"),
            Err(DurationError::Negative(_))
        ));
        for text in [
            "600000y",
            "584542y",
            "18446744073709551615us",
            "9223372036854775808us",
            "5000000000000h",
        ] {
            assert!(
                matches!(parse_timespan(text), Err(DurationError::OutOfRange(_))),
                "{text:?} should be out of range"
            );
        }
        assert_eq!(parse_timespan(""), Err(DurationError::Empty));
    }

    #[test]
    fn infinity() {
        assert_eq!(
            parse_timespan_or_infinity("infinity"),
            Ok(Timespan::Infinity)
        );
        assert_eq!(
            parse_timespan_or_infinity(" infinity "),
            Ok(Timespan::Infinity)
        );
        assert_eq!(
            parse_timespan_or_infinity("5s"),
            Ok(Timespan::Finite(us(5_000_000)))
        );
        assert_eq!(parse_timespan("infinity"), Err(DurationError::Infinity));
        assert_eq!(Timespan::Infinity.to_string(), "infinity");
    }

    #[test]
    fn messages() {
        assert_eq!(
            parse_timespan("5secs").unwrap_err().to_string(),
            "expected a time span such as 30s, 1min 30s or 2h, found \"5secs\": unknown unit \"secs\""
        );
        assert_eq!(
            parse_timespan("soon").unwrap_err().to_string(),
            "expected a time span such as 30s, 1min 30s or 2h, found \"soon\": expected a number at \"soon\""
        );
        assert_eq!(
            parse_timespan("5.s").unwrap_err().to_string(),
            "expected a time span such as 30s, 1min 30s or 2h, found \"5.s\": expected digits after '.'"
        );
    }

    /// What systemd prints, except that a remainder under a minute is in
    /// whole units rather than a decimal.
    #[test]
    fn formats() {
        let cases: &[(u64, &str)] = &[
            (0, "0"),
            (1, "1us"),
            (10_000, "10ms"),
            (1_050, "1ms 50us"),
            (5_000_000, "5s"),
            (2_500_000, "2s 500ms"),
            (61_000_000, "1min 1s"),
            (90_000_000, "1min 30s"),
            (3_600_500_000, "1h 500ms"),
            (5_400_000_000, "1h 30min"),
            (93_600_000_000, "1d 2h"),
            (1_814_400_000_000, "3w"),
            (2_629_800_000_000, "1month"),
            (3_944_700_000_000, "1month 2w 1d 5h 15min"),
            (31_536_000_000_000, "11month 4w 2d 4h 30min"),
            (31_557_600_000_000, "1y"),
            (36_817_200_000_000, "1y 2month"),
        ];
        for (micros, text) in cases {
            assert_eq!(format_timespan(us(*micros)), *text, "{micros}");
            assert_eq!(parse_timespan(text), Ok(us(*micros)), "{text}");
        }
        assert_eq!(format_timespan(Duration::from_nanos(1_500)), "1us 500ns");
        assert_eq!(format_timespan(Duration::from_nanos(7)), "7ns");
    }

    #[test]
    fn serde_round_trips() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "serde_timespan")]
            a: Duration,
            #[serde(
                default,
                with = "serde_timespan_option",
                skip_serializing_if = "Option::is_none"
            )]
            b: Option<Duration>,
        }
        for t in [
            T {
                a: us(90_000_000),
                b: None,
            },
            T {
                a: Duration::from_nanos(1_000_000_007),
                b: Some(us(1)),
            },
            T {
                a: us(u64::MAX - 1),
                b: Some(Duration::ZERO),
            },
        ] {
            let json = serde_json::to_string(&t).unwrap();
            let back: T = serde_json::from_str(&json).unwrap();
            assert_eq!(back, t, "{json}");
        }
        let json = serde_json::to_string(&T {
            a: us(90_000_000),
            b: Some(us(2_500_000)),
        })
        .unwrap();
        assert_eq!(json, r#"{"a":"1min 30s","b":"2s 500ms"}"#);
        assert!(serde_json::from_str::<T>(r#"{"a":"infinity"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"a":"soon"}"#).is_err());
    }
}
