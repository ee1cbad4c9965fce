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
mod tests;
