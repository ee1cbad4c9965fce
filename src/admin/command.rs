//! The admin console's language: `SHOW NODES | REPLICAS | LAG | POOLS | CLIENTS | STATS | CONFIG`,
//! `SHOW <setting>`, `SET <setting> = <value>` (or `TO`), `RELOAD` and `SHOW HELP`.
//! Case does not matter; a trailing `;` is fine; several commands may be sent in one query
//! separated by `;`. Pure parsing: no proxy state here.

/// A `SHOW` that lists something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Nodes,
    Replicas,
    Lag,
    Pools,
    Clients,
    Stats,
    Config,
    Help,
}

impl Listing {
    pub const ALL: [(&'static str, Listing); 8] = [
        ("nodes", Listing::Nodes),
        ("replicas", Listing::Replicas),
        ("lag", Listing::Lag),
        ("pools", Listing::Pools),
        ("clients", Listing::Clients),
        ("stats", Listing::Stats),
        ("config", Listing::Config),
        ("help", Listing::Help),
    ];
}

/// One admin command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Show(Listing),
    /// `SHOW max_replica_lag`: one setting's value.
    ShowSetting(String),
    /// `SET key = value`.
    Set {
        key: String,
        value: String,
    },
    Reload,
}

/// Why a command was not understood (answered with SQLSTATE 42601).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

/// The commands in one line, for syntax errors.
pub const HELP_SHORT: &str =
    "SHOW NODES | REPLICAS | LAG | POOLS | CLIENTS | STATS | CONFIG | <setting>; SET <setting> = '<value>'; RELOAD";

/// What the console understands, for `SHOW HELP`.
pub const HELP: [&str; 11] = [
    "SHOW NODES     -- each node's discovered role and timeline, and why it takes writes, reads or nothing",
    "SHOW REPLICAS  -- state, lag, reason and reads served of each replica",
    "SHOW LAG       -- lag percentiles over 5 min and the share ejected at 1x, 0.5x, 2x the threshold",
    "SHOW POOLS     -- server connections by node, database and user",
    "SHOW CLIENTS   -- connected clients, the node serving each, its read-your-writes pin",
    "SHOW STATS     -- statements by node and routing reason, pins, cache hits",
    "SHOW CONFIG    -- every setting in force; changeable ones can be SET",
    "SHOW <setting> -- one [lag] setting, e.g. SHOW max_replica_lag",
    "SET <setting> = '<value>'  -- change a [lag] setting live, e.g. SET max_replica_lag = '2MB'",
    "RELOAD         -- read the configuration file again (like SIGHUP)",
    "SHOW HELP      -- this list",
];

/// Splits a query into commands (on `;` outside quotes) and parses each. An empty query
/// gives no commands.
pub fn parse_all(query: &str) -> Vec<Result<Command, SyntaxError>> {
    split(query)
        .into_iter()
        .filter(|c| !c.trim().is_empty())
        .map(|c| parse(&c))
        .collect()
}

/// Parses one command.
pub fn parse(text: &str) -> Result<Command, SyntaxError> {
    let text = text.trim().trim_end_matches(';').trim();
    let (verb, rest) = split_word(text);
    match verb.to_ascii_lowercase().as_str() {
        "show" => {
            let (what, extra) = split_word(rest);
            if what.is_empty() {
                return Err(SyntaxError("SHOW needs something to show".into()));
            }
            if !extra.is_empty() {
                return Err(SyntaxError(format!(
                    "unexpected {extra:?} after SHOW {what}"
                )));
            }
            let what = what.to_ascii_lowercase();
            Ok(Listing::ALL
                .iter()
                .find(|(name, _)| *name == what)
                .map(|(_, l)| Command::Show(*l))
                .unwrap_or(Command::ShowSetting(what)))
        }
        "set" => parse_set(rest),
        "reload" if rest.is_empty() => Ok(Command::Reload),
        "" => Err(SyntaxError("empty command".into())),
        _ => Err(SyntaxError(format!("unknown command {text:?}"))),
    }
}

/// `key = value`, `key TO value`; the value may be quoted with `'`.
fn parse_set(rest: &str) -> Result<Command, SyntaxError> {
    let usage = || SyntaxError("expected SET <setting> = '<value>'".into());
    let end = rest
        .find(|c: char| c == '=' || c.is_whitespace())
        .ok_or_else(usage)?;
    let key = rest[..end].trim();
    let mut value = rest[end..].trim_start();
    if let Some(v) = value.strip_prefix('=') {
        value = v;
    } else if let Some(v) = value
        .get(..2)
        .filter(|to| to.eq_ignore_ascii_case("to"))
        .and_then(|_| value.get(2..))
        .filter(|v| !v.is_empty())
    {
        // `get` refuses to cut inside a character (`SET k xé` is a syntax error).
        value = v;
    } else {
        return Err(usage());
    }
    let value = value.trim();
    if key.is_empty() || value.is_empty() {
        return Err(usage());
    }
    let value = match value.strip_prefix('\'') {
        Some(quoted) => quoted
            .strip_suffix('\'')
            .map(|v| v.replace("''", "'"))
            .ok_or_else(|| SyntaxError(format!("unterminated quoted value {value}")))?,
        None => value.to_owned(),
    };
    Ok(Command::Set {
        key: key.to_ascii_lowercase(),
        value,
    })
}

/// The first word and the rest, trimmed.
fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim();
    match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim()),
        None => (text, ""),
    }
}

/// Splits on `;` outside single quotes.
fn split(query: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in query.chars() {
        match c {
            '\'' => quoted = !quoted,
            ';' if !quoted => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> Command {
        Command::Set {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn listings_in_any_case() {
        assert_eq!(parse("SHOW REPLICAS"), Ok(Command::Show(Listing::Replicas)));
        assert_eq!(parse("show nodes;"), Ok(Command::Show(Listing::Nodes)));
        assert_eq!(parse("show lag;"), Ok(Command::Show(Listing::Lag)));
        assert_eq!(
            parse("  Show   Pools ; "),
            Ok(Command::Show(Listing::Pools))
        );
        assert_eq!(
            parse("show max_replica_lag"),
            Ok(Command::ShowSetting("max_replica_lag".into()))
        );
        assert_eq!(parse("RELOAD"), Ok(Command::Reload));
    }

    #[test]
    fn set_takes_equals_or_to_and_quoted_or_bare_values() {
        assert_eq!(
            parse("SET max_replica_lag = '2MB'"),
            Ok(set("max_replica_lag", "2MB"))
        );
        assert_eq!(
            parse("set MAX_REPLICA_LAG='2MB';"),
            Ok(set("max_replica_lag", "2MB"))
        );
        assert_eq!(
            parse("SET check_interval TO 100ms"),
            Ok(set("check_interval", "100ms"))
        );
        assert_eq!(
            parse("SET readmit_percent = 40"),
            Ok(set("readmit_percent", "40"))
        );
        assert_eq!(parse("SET x = 'it''s'"), Ok(set("x", "it's")));
    }

    #[test]
    fn nonsense_is_a_syntax_error_with_what_was_wrong() {
        for bad in [
            "SELECT 1",
            "SHOW",
            "SHOW lag now",
            "SET max_replica_lag",
            "SET max_replica_lag 2MB",
            "SET max_replica_lag = ",
            "SET max_replica_lag = '2MB",
            "RELOAD everything",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse("SELECT 1").unwrap_err().0.contains("SELECT 1"));
    }

    #[test]
    fn several_commands_in_one_query() {
        let all = parse_all("SET max_replica_lag = '1;2'; SHOW lag;;");
        assert_eq!(
            all,
            vec![
                Ok(set("max_replica_lag", "1;2")),
                Ok(Command::Show(Listing::Lag))
            ]
        );
        assert!(parse_all("  ").is_empty());
    }

    #[test]
    fn a_multibyte_value_after_the_key_is_a_syntax_error() {
        assert!(parse("SET max_replica_lag xé").is_err());
        assert!(parse("SET max_replica_lag é").is_err());
        assert_eq!(parse("SET k TO é"), Ok(set("k", "é")));
    }

    /// Random text, with the console's own words, quotes, multibyte and control characters
    /// mixed in: parsing, then applying what parsed to a `[lag]` section, answers Ok or Err
    /// and never panics. Fixed seed, so a failure reproduces.
    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        const PIECES: [&str; 16] = [
            "SET",
            "show",
            "TO",
            "to",
            "=",
            "'",
            "''",
            ";",
            " ",
            "\t",
            "max_replica_lag",
            "lag.check_interval",
            "RELOAD",
            "2MB",
            "é",
            "x",
        ];
        const CHARS: [char; 12] = [
            'é', 'ß', '€', '😀', '\u{0}', '\n', '\r', '\u{1b}', '\u{7f}', '\u{85}', '\u{2028}', 't',
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let lag = crate::config::LagConfig::default();
        for _ in 0..20_000 {
            // Mostly a verb first, then tokens, often separated by a space.
            let mut text = String::new();
            if rng.gen_bool(0.75) {
                text.push_str(["SET ", "show ", "RELOAD", "set\t"][rng.gen_range(0..4)]);
            }
            for _ in 0..rng.gen_range(0..6) {
                for _ in 0..rng.gen_range(1..4) {
                    match rng.gen_range(0..3) {
                        0 => text.push_str(PIECES[rng.gen_range(0..PIECES.len())]),
                        1 => text.push(CHARS[rng.gen_range(0..CHARS.len())]),
                        _ => text.push(rng.gen::<char>()),
                    }
                }
                if rng.gen_bool(0.5) {
                    text.push(' ');
                }
            }
            for command in parse_all(&text).into_iter().flatten() {
                match command {
                    Command::Set { key, value } => {
                        let _ = lag.with(&key, &value);
                    }
                    Command::ShowSetting(key) => {
                        let _ = lag.value_of(&crate::config::live_setting_key(&key));
                    }
                    Command::Show(_) | Command::Reload => {}
                }
            }
        }
    }
}
