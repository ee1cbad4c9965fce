//! Unit tests for `crate::config::duration`.

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
