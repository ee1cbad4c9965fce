//! Settings that change while pgsplit runs: the `[lag]` keys an operator may `SET` in the
//! admin console. Each value is parsed like the file would parse it and the whole section is
//! checked by the same rules as the file, so a value the file would refuse is refused here
//! too, and the old value stays.

use super::{ByteSize, Duration, LagConfig};

/// The keys `SET` accepts, in `SHOW CONFIG` order.
pub const SETTABLE: [&str; 7] = [
    "check_interval",
    "max_replica_lag",
    "max_replica_delay",
    "readmit_percent",
    "readmit_after",
    "down_after_failures",
    "up_after_successes",
];

/// Why a `SET` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    #[error("unrecognized setting \"{0}\" (settable: {list})", list = SETTABLE.join(", "))]
    UnknownKey(String),
    #[error("invalid value for \"{key}\": {message}")]
    InvalidValue { key: String, message: String },
}

/// A live (`[lag]`) setting's key as the admin console's `SET` and `SHOW` take it: any
/// case, with or without the `lag.` prefix (`LAG.Max_Replica_Lag` is `max_replica_lag`).
pub fn live_setting_key(key: &str) -> String {
    let key = key.trim().to_ascii_lowercase();
    key.strip_prefix("lag.").unwrap_or(&key).to_owned()
}

impl LagConfig {
    /// This section with `key` set to `value` (e.g. `max_replica_lag`, `"2MB"`), if the result
    /// is valid. `key` may carry the section prefix: `lag.max_replica_lag`.
    pub fn with(&self, key: &str, value: &str) -> Result<LagConfig, SetError> {
        let key = live_setting_key(key);
        let value = value.trim();
        let invalid = |message: String| SetError::InvalidValue {
            key: key.clone(),
            message,
        };
        let duration = || {
            value
                .parse::<Duration>()
                .map_err(|e| invalid(e.to_string()))
        };
        let count = || {
            value
                .parse::<u32>()
                .map_err(|_| invalid(format!("{value:?} is not a whole number")))
        };
        let mut new = self.clone();
        match key.as_str() {
            "check_interval" => new.check_interval = duration()?,
            "max_replica_lag" => {
                new.max_replica_lag = value
                    .parse::<ByteSize>()
                    .map_err(|e| invalid(e.to_string()))?
            }
            "max_replica_delay" => new.max_replica_delay = duration()?,
            "readmit_percent" => new.readmit_percent = count()?,
            "readmit_after" => new.readmit_after = duration()?,
            "down_after_failures" => new.down_after_failures = count()?,
            "up_after_successes" => new.up_after_successes = count()?,
            _ => return Err(SetError::UnknownKey(key)),
        }
        if let Some(problem) = super::validate::lag_rules(&new).into_iter().next() {
            return Err(invalid(format!("{}: {}", problem.key, problem.message)));
        }
        Ok(new)
    }

    /// The current value of a settable key, as `SET` would take it.
    pub fn value_of(&self, key: &str) -> Option<String> {
        Some(match key {
            "check_interval" => self.check_interval.to_string(),
            "max_replica_lag" => self.max_replica_lag.to_string(),
            "max_replica_delay" => self.max_replica_delay.to_string(),
            "readmit_percent" => self.readmit_percent.to_string(),
            "readmit_after" => self.readmit_after.to_string(),
            "down_after_failures" => self.down_after_failures.to_string(),
            "up_after_successes" => self.up_after_successes.to_string(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_value_is_taken_in_file_syntax() {
        let lag = LagConfig::default();
        let new = lag.with("max_replica_lag", "2MB").unwrap();
        assert_eq!(new.max_replica_lag, ByteSize::mb(2));
        let new = new.with("LAG.check_interval", " 100ms ").unwrap();
        assert_eq!(new.check_interval, Duration::from_millis(100));
        assert_eq!(new.max_replica_lag, ByteSize::mb(2), "other keys stay");
        assert_eq!(new.value_of("max_replica_lag").as_deref(), Some("2MB"));
        assert_eq!(new.value_of("check_interval").as_deref(), Some("100ms"));
    }

    #[test]
    fn every_settable_key_round_trips() {
        let lag = LagConfig::default();
        for key in SETTABLE {
            let value = lag.value_of(key).unwrap();
            assert_eq!(lag.with(key, &value).unwrap(), lag, "{key} = {value}");
        }
    }

    #[test]
    fn invalid_values_are_refused_with_the_reason() {
        let lag = LagConfig::default();
        let e = lag.with("max_replica_lag", "lots").unwrap_err();
        assert!(
            matches!(&e, SetError::InvalidValue { key, .. } if key == "max_replica_lag"),
            "{e}"
        );
        assert!(e.to_string().contains("lots"), "{e}");
        let e = lag.with("readmit_percent", "150").unwrap_err();
        assert!(e.to_string().contains("between 1 and 100"), "{e}");
        let e = lag.with("check_interval", "0").unwrap_err();
        assert!(e.to_string().contains("greater than 0"), "{e}");
        let both_off = lag.with("max_replica_lag", "0").unwrap_err();
        assert!(
            both_off.to_string().contains("cannot both be 0"),
            "{both_off}"
        );
        assert!(matches!(
            lag.with("pool_size", "3"),
            Err(SetError::UnknownKey(k)) if k == "pool_size"
        ));
    }
}
