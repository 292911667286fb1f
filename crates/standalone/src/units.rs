//! Durations and sizes as people write them in the configuration file: `"30m"`,
//! `"500ms"` or a number of seconds; `"4MiB"`, `"512KB"` or a number of bytes.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// A duration read from `"1h30m"`, `"2s"`, `"500ms"`, `"1.5s"`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Span(pub(crate) Duration);

/// A size in bytes read from `"4MiB"`, `"16 MB"`, `"512KiB"`, or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bytes(pub(crate) usize);

const DURATION_EXPECTED: &str =
    "a duration such as \"30m\", \"2s\", \"500ms\", \"1h30m\" or a number of seconds";
const SIZE_EXPECTED: &str = "a size such as \"4MiB\", \"512KiB\", \"16MB\" or a number of bytes";

/// Parses `"1h30m"`, `"2s"`, `"500ms"`, `"1.5s"`, `"90"` (seconds).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not {DURATION_EXPECTED}");
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return seconds_to_duration(seconds).ok_or_else(bad);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let tail = tail.trim_start();
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c.is_whitespace())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds_per_unit = match unit {
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(bad()),
        };
        total += seconds_to_duration(number * seconds_per_unit).ok_or_else(bad)?;
        rest = tail.trim_start();
    }
    Ok(total)
}

fn seconds_to_duration(seconds: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(seconds).ok()
}

/// Parses `"4MiB"`, `"16 MB"`, `"512KiB"`, `"1024"` (bytes).
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let bad = || format!("{text:?} is not {SIZE_EXPECTED}");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: usize = number.parse().map_err(|_| bad())?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    number.checked_mul(factor).ok_or_else(bad)
}

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpanVisitor;
        impl Visitor<'_> for SpanVisitor {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Span, E> {
                parse_duration(text).map(Span).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Span, E> {
                u64::try_from(seconds)
                    .map(|s| Span(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("{seconds} is not {DURATION_EXPECTED}")))
            }
            fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Span, E> {
                Ok(Span(Duration::from_secs(seconds)))
            }
            fn visit_f64<E: de::Error>(self, seconds: f64) -> Result<Span, E> {
                seconds_to_duration(seconds)
                    .map(Span)
                    .ok_or_else(|| E::custom(format!("{seconds} is not {DURATION_EXPECTED}")))
            }
        }
        deserializer.deserialize_any(SpanVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl Visitor<'_> for BytesVisitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SIZE_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Bytes, E> {
                parse_size(text).map(Bytes).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<Bytes, E> {
                usize::try_from(bytes)
                    .map(Bytes)
                    .map_err(|_| E::custom(format!("{bytes} is not {SIZE_EXPECTED}")))
            }
            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<Bytes, E> {
                usize::try_from(bytes)
                    .map(Bytes)
                    .map_err(|_| E::custom(format!("{bytes} is not {SIZE_EXPECTED}")))
            }
        }
        deserializer.deserialize_any(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        let cases = [
            ("30m", 1800.0),
            ("2s", 2.0),
            ("500ms", 0.5),
            ("1h30m", 5400.0),
            ("1h 30m", 5400.0),
            ("1.5s", 1.5),
            ("90", 90.0),
            ("2d", 172_800.0),
            ("10 min", 600.0),
        ];
        for (text, seconds) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs_f64(seconds)),
                "{text}"
            );
        }
        for bad in ["", "m", "30x", "-1s", "1h-5m", "s30", "1..5s"] {
            let error = parse_duration(bad).expect_err(bad);
            assert!(error.contains("is not a duration"), "{error}");
        }
    }

    #[test]
    fn sizes_read_in_binary_and_decimal_units() {
        let cases = [
            ("4MiB", 4 << 20),
            ("4 MiB", 4 << 20),
            ("512KiB", 512 << 10),
            ("16MB", 16_000_000),
            ("1GiB", 1 << 30),
            ("1024", 1024),
            ("10B", 10),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in [
            "",
            "MiB",
            "4 mib",
            "-1",
            "1.5MiB",
            "99999999999999999999GiB",
        ] {
            let error = parse_size(bad).expect_err(bad);
            assert!(error.contains("is not a size"), "{error}");
        }
    }
}
