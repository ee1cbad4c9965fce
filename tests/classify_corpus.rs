//! The classifier against a corpus of real statements (pgbench, Django, Rails, Hibernate,
//! psql `\d`, pg_dump, and the tricky cases), plus robustness over every truncation of them.

use pgsplit::classify::{Class, Classifier, ClassifierOptions, FunctionCatalog};

const CORPUS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/classify_corpus.tsv"
));

/// The built-in function names of PostgreSQL 15, as the catalog loader finds them.
const BUILTINS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/pg15_builtin_functions.txt"
));

struct Case {
    line: usize,
    expected: &'static str,
    sql: String,
}

/// `\n`, `\t` and `\\` escapes of the corpus format.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn corpus() -> Vec<Case> {
    CORPUS
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(i, line)| {
            let (expected, sql) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("line {}: no tab", i + 1));
            Case {
                line: i + 1,
                expected,
                sql: unescape(sql),
            }
        })
        .collect()
}

fn name(class: Class) -> &'static str {
    match class {
        Class::Read {
            primary_table: false,
        } => "read",
        Class::Read {
            primary_table: true,
        } => "read_primary_table",
        Class::Write => "write",
        Class::Begin { read_only: false } => "begin",
        Class::Begin { read_only: true } => "begin_read_only",
        Class::End => "end",
        Class::TransactionControl => "txn",
        Class::Session => "session",
        Class::SessionBound => "session_bound",
    }
}

fn classifier() -> Classifier {
    Classifier::new(ClassifierOptions {
        primary_tables: vec!["inventory".into()],
        ..ClassifierOptions::default()
    })
}

/// The hint rule, stated independently of the lexer: the text starts (after whitespace)
/// with a `/* pgsplit:primary */` comment.
fn expected_hint(sql: &str) -> bool {
    let rest = sql.trim_start();
    rest.starts_with("/*")
        && rest
            .find("*/")
            .is_some_and(|end| rest[2..end].trim().eq_ignore_ascii_case("pgsplit:primary"))
}

#[test]
fn corpus_is_large_and_well_formed() {
    let cases = corpus();
    assert!(cases.len() >= 150, "corpus has {} statements", cases.len());
    let known = [
        "read",
        "read_primary_table",
        "write",
        "begin",
        "begin_read_only",
        "end",
        "txn",
        "session",
        "session_bound",
    ];
    for case in &cases {
        assert!(
            known.contains(&case.expected),
            "line {}: unknown class {:?}",
            case.line,
            case.expected
        );
    }
}

/// Classifies every corpus statement twice (the second answer comes from the cache and
/// must agree) and fails with every mismatch of class or hint.
fn check_corpus(classifier: &Classifier) {
    let mut mismatches = Vec::new();
    let cases = corpus();
    for case in &cases {
        for round in ["cold", "warm"] {
            let got = classifier.classify(case.sql.as_bytes());
            if name(got.class) != case.expected {
                mismatches.push(format!(
                    "line {} ({round}): expected {}, got {}: {}",
                    case.line,
                    case.expected,
                    name(got.class),
                    case.sql.replace('\n', "\\n")
                ));
            }
            if got.hint_primary != expected_hint(&case.sql) {
                mismatches.push(format!(
                    "line {} ({round}): hint_primary {}: {}",
                    case.line, got.hint_primary, case.sql
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} corpus statements misclassified:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

#[test]
fn corpus_classes() {
    check_corpus(&classifier());
}

#[test]
fn corpus_classes_with_the_primarys_catalog() {
    // Once the primary's catalog is loaded, calls of functions it does not know go to the
    // primary; every built-in the corpus calls is known, so nothing changes class.
    let classifier = classifier();
    let builtins = BUILTINS
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|name| ("pg_catalog", name, "v"));
    assert!(classifier.set_catalog(FunctionCatalog::from_rows(builtins)));
    check_corpus(&classifier);
}

#[test]
fn literal_values_do_not_change_the_class() {
    // Same shape, different literals: one cache entry, one class.
    let classifier = classifier();
    let first = classifier.classify(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1;");
    for aid in [2, 99_999, 123_456_789] {
        let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
        assert_eq!(classifier.classify(sql.as_bytes()), first);
    }
    let stats = classifier.stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (3, 1, 1));
}

#[test]
fn every_truncation_of_every_statement_is_safe() {
    // No panic on any prefix (cut anywhere, even inside a UTF-8 sequence), and a prefix that
    // cuts a literal, identifier or comment open is a write.
    let classifier = Classifier::new(ClassifierOptions {
        cache_capacity: 256,
        ..ClassifierOptions::default()
    });
    for case in corpus() {
        let bytes = case.sql.as_bytes();
        for end in 0..=bytes.len() {
            let got = classifier.classify(&bytes[..end]);
            let prefix = &bytes[..end];
            let quotes = prefix.iter().filter(|&&b| b == b'\'').count();
            if case.sql.is_ascii()
                && !case.sql.contains("--")
                && !case.sql.contains('$')
                && !case.sql.contains('\\')
                && !case.sql.contains('"')
                && quotes % 2 == 1
            {
                assert_eq!(
                    got.class,
                    Class::Write,
                    "unterminated string in {:?}",
                    String::from_utf8_lossy(prefix)
                );
            }
        }
    }
}

#[test]
fn random_mutations_of_the_corpus_never_panic() {
    let classifier = classifier();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let specials = b"'\"$;()/*-\\\nEU&:.0\xff\x00";
    for case in corpus() {
        let original = case.sql.into_bytes();
        if original.is_empty() {
            continue;
        }
        for _ in 0..20 {
            let mut bytes = original.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % bytes.len();
                let r = next();
                match r % 3 {
                    0 => bytes[at] = specials[(r >> 8) as usize % specials.len()],
                    1 => bytes.insert(at, (r >> 16) as u8),
                    _ => {
                        bytes.remove(at);
                        if bytes.is_empty() {
                            bytes.push(b';');
                        }
                    }
                }
            }
            let _ = classifier.classify(&bytes);
        }
    }
}
