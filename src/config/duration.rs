//! Human-friendly durations ("250ms", "5s", "10m") and byte sizes ("8kB", "64MB").
//!
//! Both types read from a config file as a string or as a bare integer (milliseconds for
//! [`Duration`], bytes for [`ByteSize`]), implement [`FromStr`] for live `SET key = 'value'`
//! in the admin console, and [`Display`](fmt::Display) back in the shortest exact form, so
//! `value.to_string().parse()` gives the same value back.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};

/// Why a duration or byte size string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {input:?}: {reason}")]
pub struct ParseUnitError {
    kind: &'static str,
    input: String,
    reason: String,
}

impl ParseUnitError {
    fn new(kind: &'static str, input: &str, reason: impl Into<String>) -> Self {
        ParseUnitError {
            kind,
            input: input.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Splits `"  64 MB "` into `(64, "MB")`. The number is a plain unsigned integer.
fn split_number(kind: &'static str, input: &str) -> Result<(u64, String), ParseUnitError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(ParseUnitError::new(kind, input, "empty value"));
    }
    if text.starts_with('-') {
        return Err(ParseUnitError::new(kind, input, "must not be negative"));
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(ParseUnitError::new(
            kind,
            input,
            "expected a whole number followed by a unit",
        ));
    }
    let number = digits
        .parse::<u64>()
        .map_err(|_| ParseUnitError::new(kind, input, "number is too large"))?;
    Ok((number, unit.trim().to_ascii_lowercase()))
}

/// A length of time, written as `"250ms"`, `"5s"`, `"10m"`, `"1h"`, `"0"`, or an integer number
/// of milliseconds. Units (case-insensitive): `ns`, `us`, `ms`, `s`, `m`/`min`, `h`, `d`;
/// a number without a unit means milliseconds. At most [`Duration::MAX`] (365 days).
///
/// Zero usually means "off" for timeouts; see [`Duration::non_zero`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Zero, which the timeouts in the config read as "off".
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);
    /// The longest duration accepted from text or config: 365 days. Larger values are
    /// certainly mistakes, and adding one to an `Instant` could overflow.
    pub const MAX: Duration = Duration(std::time::Duration::from_secs(365 * 86_400));

    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    /// The wrapped `std::time::Duration`.
    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    /// True for a zero duration.
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// `None` for zero (the "off" value of timeouts), otherwise the duration.
    pub const fn non_zero(self) -> Option<std::time::Duration> {
        if self.0.is_zero() {
            None
        } else {
            Some(self.0)
        }
    }

    fn checked(input: &str, value: std::time::Duration) -> Result<Self, ParseUnitError> {
        if value > Self::MAX.0 {
            Err(ParseUnitError::new(
                "duration",
                input,
                format!("too large (at most {})", Self::MAX),
            ))
        } else {
            Ok(Duration(value))
        }
    }
}

impl From<std::time::Duration> for Duration {
    fn from(value: std::time::Duration) -> Self {
        Duration(value)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(value: Duration) -> Self {
        value.0
    }
}

impl FromStr for Duration {
    type Err = ParseUnitError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "duration";
        let (n, unit) = split_number(KIND, input)?;
        let too_large = || ParseUnitError::new(KIND, input, "number is too large");
        let value = match unit.as_str() {
            "ns" => std::time::Duration::from_nanos(n),
            "us" => std::time::Duration::from_micros(n),
            "" | "ms" => std::time::Duration::from_millis(n),
            "s" => std::time::Duration::from_secs(n),
            "m" | "min" => std::time::Duration::from_secs(n.checked_mul(60).ok_or_else(too_large)?),
            "h" => std::time::Duration::from_secs(n.checked_mul(3_600).ok_or_else(too_large)?),
            "d" => std::time::Duration::from_secs(n.checked_mul(86_400).ok_or_else(too_large)?),
            other => {
                return Err(ParseUnitError::new(
                    KIND,
                    input,
                    format!("unknown unit {other:?} (expected ms, s, m, h or d)"),
                ))
            }
        };
        Duration::checked(input, value)
    }
}

impl fmt::Display for Duration {
    /// The largest unit that shows the value exactly: `"1h"`, `"90s"`, `"1500ms"`, `"0"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u128, &str); 6] = [
            (86_400_000_000_000, "d"),
            (3_600_000_000_000, "h"),
            (60_000_000_000, "m"),
            (1_000_000_000, "s"),
            (1_000_000, "ms"),
            (1_000, "us"),
        ];
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.pad("0");
        }
        let text = UNITS
            .iter()
            .find(|(size, _)| nanos.is_multiple_of(*size))
            .map(|(size, unit)| format!("{}{unit}", nanos / size))
            .unwrap_or_else(|| format!("{nanos}ns"));
        f.pad(&text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration such as \"5s\" or \"250ms\", or an integer number of milliseconds",
                )
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Duration, E> {
                value.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Duration, E> {
                Duration::checked(&value.to_string(), std::time::Duration::from_millis(value))
                    .map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Duration, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(E::custom(ParseUnitError::new(
                        "duration",
                        &value.to_string(),
                        "must not be negative",
                    ))),
                }
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A number of bytes, written as `"64MB"`, `"8kB"`, `"1GB"`, `"512"`, or an integer number of
/// bytes. Units are 1024-based and case-insensitive: `B`, `kB`, `MB`, `GB`, `TB`
/// (`KiB`, `MiB`, `GiB`, `TiB` are accepted too); a number without a unit means bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    const KB: u64 = 1 << 10;
    const MB: u64 = 1 << 20;
    const GB: u64 = 1 << 30;
    const TB: u64 = 1 << 40;

    /// `n` bytes.
    pub const fn bytes(n: u64) -> Self {
        ByteSize(n)
    }

    /// `n` kilobytes (1024 bytes each).
    pub const fn kb(n: u64) -> Self {
        ByteSize(n * Self::KB)
    }

    /// `n` megabytes (1024 × 1024 bytes each).
    pub const fn mb(n: u64) -> Self {
        ByteSize(n * Self::MB)
    }

    /// `n` gigabytes (1024³ bytes each).
    pub const fn gb(n: u64) -> Self {
        ByteSize(n * Self::GB)
    }

    /// The number of bytes.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The number of bytes as a `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl From<u64> for ByteSize {
    fn from(value: u64) -> Self {
        ByteSize(value)
    }
}

impl From<ByteSize> for u64 {
    fn from(value: ByteSize) -> Self {
        value.0
    }
}

impl FromStr for ByteSize {
    type Err = ParseUnitError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "byte size";
        let (n, unit) = split_number(KIND, input)?;
        let multiplier = match unit.as_str() {
            "" | "b" => 1,
            "kb" | "kib" => Self::KB,
            "mb" | "mib" => Self::MB,
            "gb" | "gib" => Self::GB,
            "tb" | "tib" => Self::TB,
            other => {
                return Err(ParseUnitError::new(
                    KIND,
                    input,
                    format!("unknown unit {other:?} (expected B, kB, MB, GB or TB)"),
                ))
            }
        };
        n.checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| ParseUnitError::new(KIND, input, "number is too large"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that shows the value exactly: `"64MB"`, `"8kB"`, `"1000B"`, `"0B"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (ByteSize::TB, "TB"),
            (ByteSize::GB, "GB"),
            (ByteSize::MB, "MB"),
            (ByteSize::KB, "kB"),
        ];
        let n = self.0;
        let text = UNITS
            .iter()
            .find(|(size, _)| n != 0 && n.is_multiple_of(*size))
            .map(|(size, unit)| format!("{}{unit}", n / size))
            .unwrap_or_else(|| format!("{n}B"));
        f.pad(&text)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByteSizeVisitor;

        impl Visitor<'_> for ByteSizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a byte size such as \"64MB\" or \"8kB\", or an integer number of bytes",
                )
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<ByteSize, E> {
                value.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(value))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ByteSize, E> {
                u64::try_from(value).map(ByteSize).map_err(|_| {
                    E::custom(ParseUnitError::new(
                        "byte size",
                        &value.to_string(),
                        "must not be negative",
                    ))
                })
            }
        }

        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

impl Serialize for Duration {
    /// As the file would write it: `"250ms"`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Serialize for ByteSize {
    /// As the file would write it: `"16MB"`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(s: &str) -> Duration {
        s.parse().unwrap()
    }

    fn size(s: &str) -> ByteSize {
        s.parse().unwrap()
    }

    #[test]
    fn durations_parse_every_unit() {
        assert_eq!(dur("250ms"), Duration::from_millis(250));
        assert_eq!(dur("5s"), Duration::from_secs(5));
        assert_eq!(dur("10m"), Duration::from_secs(600));
        assert_eq!(dur("10min"), Duration::from_secs(600));
        assert_eq!(dur("1h"), Duration::from_secs(3_600));
        assert_eq!(dur("2d"), Duration::from_secs(2 * 86_400));
        assert_eq!(dur("15us"), Duration(std::time::Duration::from_micros(15)));
        assert_eq!(dur("7ns"), Duration(std::time::Duration::from_nanos(7)));
        assert_eq!(dur("0"), Duration::ZERO);
        assert_eq!(
            dur("1500"),
            Duration::from_millis(1_500),
            "no unit means ms"
        );
        assert_eq!(
            dur(" 5 S "),
            Duration::from_secs(5),
            "spaces and case are forgiven"
        );
    }

    #[test]
    fn durations_reject_garbage() {
        for bad in [
            "5 parsecs",
            "-1s",
            "",
            "  ",
            "s",
            "1.5s",
            "+5s",
            "5s5",
            "5 s s",
            "ten seconds",
            "99999999999999999999999s",
            "18446744073709551615m",
            "366d",
        ] {
            assert!(
                bad.parse::<Duration>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn duration_errors_say_what_is_wrong() {
        let err = "5 parsecs".parse::<Duration>().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid duration \"5 parsecs\": unknown unit \"parsecs\" (expected ms, s, m, h or d)"
        );
        let err = "-1s".parse::<Duration>().unwrap_err().to_string();
        assert!(err.ends_with("must not be negative"), "{err}");
        let err = "18446744073709551615h"
            .parse::<Duration>()
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("number is too large"), "{err}");
        let err = "1000d".parse::<Duration>().unwrap_err().to_string();
        assert!(err.ends_with("too large (at most 365d)"), "{err}");
    }

    #[test]
    fn durations_display_in_the_shortest_exact_form() {
        assert_eq!(Duration::ZERO.to_string(), "0");
        assert_eq!(Duration::from_millis(250).to_string(), "250ms");
        assert_eq!(Duration::from_millis(1_500).to_string(), "1500ms");
        assert_eq!(Duration::from_secs(5).to_string(), "5s");
        assert_eq!(Duration::from_secs(90).to_string(), "90s");
        assert_eq!(Duration::from_secs(600).to_string(), "10m");
        assert_eq!(Duration::from_secs(3_600).to_string(), "1h");
        assert_eq!(Duration::from_secs(86_400).to_string(), "1d");
        assert_eq!(Duration::MAX.to_string(), "365d");
        assert_eq!(
            Duration(std::time::Duration::from_nanos(1_001)).to_string(),
            "1001ns"
        );
        assert_eq!(format!("{:>6}", Duration::from_secs(5)), "    5s");
    }

    #[test]
    fn duration_display_round_trips() {
        for text in [
            "0", "1ns", "3us", "250ms", "5s", "90s", "10m", "1h", "36h", "365d",
        ] {
            assert_eq!(dur(text).to_string(), text);
        }
    }

    #[test]
    fn duration_non_zero_maps_zero_to_off() {
        assert_eq!(Duration::ZERO.non_zero(), None);
        assert_eq!(
            Duration::from_secs(1).non_zero(),
            Some(std::time::Duration::from_secs(1))
        );
    }

    #[test]
    fn sizes_parse_every_unit() {
        assert_eq!(size("512"), ByteSize(512));
        assert_eq!(size("512B"), ByteSize(512));
        assert_eq!(size("8kB"), ByteSize(8 * 1024));
        assert_eq!(size("8KB"), ByteSize(8 * 1024));
        assert_eq!(size("8kib"), ByteSize(8 * 1024));
        assert_eq!(size("64MB"), ByteSize(64 << 20));
        assert_eq!(size("64mb"), ByteSize::mb(64));
        assert_eq!(size("1GB"), ByteSize::gb(1));
        assert_eq!(size("2TB"), ByteSize(2 << 40));
        assert_eq!(size("0"), ByteSize(0));
        assert_eq!(size(" 2 MB "), ByteSize::mb(2));
    }

    #[test]
    fn sizes_reject_garbage() {
        for bad in [
            "5 parsecs",
            "-1MB",
            "",
            "MB",
            "1.5MB",
            "64 M B",
            "64MBs",
            "lots",
            "99999999999999999999999",
            "18446744073709551615kB",
            "17179869184GB",
        ] {
            assert!(
                bad.parse::<ByteSize>().is_err(),
                "{bad:?} should be refused"
            );
        }
        let err = "5 parsecs".parse::<ByteSize>().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid byte size \"5 parsecs\": unknown unit \"parsecs\" (expected B, kB, MB, GB or TB)"
        );
    }

    #[test]
    fn sizes_display_in_the_shortest_exact_form() {
        assert_eq!(ByteSize(0).to_string(), "0B");
        assert_eq!(ByteSize(512).to_string(), "512B");
        assert_eq!(ByteSize(1_000).to_string(), "1000B");
        assert_eq!(ByteSize::kb(8).to_string(), "8kB");
        assert_eq!(ByteSize::kb(1_536).to_string(), "1536kB");
        assert_eq!(ByteSize::mb(64).to_string(), "64MB");
        assert_eq!(ByteSize::gb(1).to_string(), "1GB");
        assert_eq!(ByteSize::gb(2048).to_string(), "2TB");
        for text in ["0B", "1B", "8kB", "2MB", "64MB", "1GB", "3TB"] {
            assert_eq!(size(text).to_string(), text);
        }
    }

    #[derive(serde::Deserialize)]
    struct Holder {
        d: Option<Duration>,
        s: Option<ByteSize>,
    }

    fn holder(text: &str) -> Result<Holder, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn toml_values_may_be_strings_or_integers() {
        let h = holder("d = \"5s\"\ns = \"64MB\"").unwrap();
        assert_eq!(h.d, Some(Duration::from_secs(5)));
        assert_eq!(h.s, Some(ByteSize::mb(64)));
        let h = holder("d = 250\ns = 512").unwrap();
        assert_eq!(
            h.d,
            Some(Duration::from_millis(250)),
            "integers are milliseconds"
        );
        assert_eq!(h.s, Some(ByteSize(512)), "integers are bytes");
    }

    #[test]
    fn toml_values_reject_garbage_with_position() {
        let err = holder("d = \"5 parsecs\"").err().unwrap();
        assert!(err.contains("line 1"), "{err}");
        assert!(err.contains("unknown unit \"parsecs\""), "{err}");
        let err = holder("d = -1").err().unwrap();
        assert!(err.contains("must not be negative"), "{err}");
        let err = holder("s = -1").err().unwrap();
        assert!(err.contains("must not be negative"), "{err}");
        let err = holder("d = 1.5").err().unwrap();
        assert!(err.contains("expected a duration"), "{err}");
        let err = holder("s = true").err().unwrap();
        assert!(err.contains("expected a byte size"), "{err}");
        let err = holder("d = 9223372036854775807").err().unwrap();
        assert!(err.contains("too large"), "{err}");
    }
}
