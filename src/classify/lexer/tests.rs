//! Unit tests for `crate::classify::lexer`.

use super::*;

fn canon(sql: &str) -> String {
    let mut out = Vec::new();
    let scan = canonicalize(sql.as_bytes(), true, &mut out);
    assert_eq!(scan.result, Ok(()), "{sql}");
    String::from_utf8(out).expect("utf8")
}

fn canon_err(sql: &[u8]) -> LexError {
    let mut out = Vec::new();
    canonicalize(sql, true, &mut out)
        .result
        .expect_err("should fail")
}

#[test]
fn literals_become_placeholders() {
    assert_eq!(
        canon("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"),
        "SELECT abalance FROM pgbench_accounts WHERE aid = 0;"
    );
    assert_eq!(canon("select 'it''s', E'\\'x', 'a\\'"), "select '', '', ''");
    assert_eq!(
        canon("select $$a;b$$, $fn$ $$ x $fn$, $1"),
        "select '', '', $1"
    );
    assert_eq!(
        canon("select 1.5e10, .5, 0x1F, 1_000, 2E-3, 7."),
        "select 0, 0, 0, 0, 0, 0"
    );
    assert_eq!(
        canon("select B'0101', X'1F', N'x', U&'d\\0061t'"),
        "select '', '', '', ''"
    );
    assert_eq!(canon("select date '2020-01-01'"), "select date ''");
    assert_eq!(canon("select x::numeric(10,2)"), "select x::numeric(0,0)");
    assert_eq!(canon("select a[1:2]"), "select a[0:0]");
}

#[test]
fn identifiers_and_operators_stay() {
    assert_eq!(
        canon(r#"SELECT "Weird ""name"";" FROM "t" WHERE col1 = $2"#),
        r#"SELECT "Weird ""name"";" FROM "t" WHERE col1 = $2"#
    );
    assert_eq!(canon("select a$b$ from t"), "select a$b$ from t");
    assert_eq!(
        canon("select U&\"d\\0061t\" from t"),
        "select U&\"d\\0061t\" from t"
    );
    assert_eq!(
        canon("select a ->> 'k', b @> '{}'"),
        "select a ->> '', b @> ''"
    );
    assert_eq!(canon("select e, x, typE'x'"), "select e, x, typE''");
}

#[test]
fn comments_and_whitespace_collapse() {
    assert_eq!(canon("  SELECT\n\t1 -- c\n FROM/**/t  "), "SELECT 0 FROM t");
    assert_eq!(canon("select /* a /* nested */ still */ 1"), "select 0");
    assert_eq!(canon("select 1 +--x\n1"), "select 0 + 0");
    assert_eq!(canon("select 1 -/**/-1"), "select 0 - -0");
    assert_eq!(canon(""), "");
    assert_eq!(canon(" -- only\n /* comments */ "), "");
}

#[test]
fn string_continuation() {
    assert_eq!(canon("select 'a'\n'b' , 'c' 'd'"), "select '' , '' ''");
    assert_eq!(canon("select 'a' -- x\n  'b'"), "select ''");
    assert_eq!(canon("select E'a\\''\n'b'"), "select ''");
}

#[test]
fn hint() {
    let mut out = Vec::new();
    let h = |sql: &str, out: &mut Vec<u8>| canonicalize(sql.as_bytes(), true, out).hint_primary;
    assert!(h("/* pgsplit:primary */ SELECT 1", &mut out));
    assert!(h("  \n/*PGSPLIT:Primary*/SELECT 1", &mut out));
    assert!(h("/* app */ /* pgsplit:primary */ SELECT 1", &mut out));
    assert!(!h("SELECT 1 /* pgsplit:primary */", &mut out));
    assert!(!h("/* pgsplit:replica */ SELECT 1", &mut out));
    assert!(!h("-- pgsplit:primary\nSELECT 1", &mut out));
    assert!(!h("SELECT '/* pgsplit:primary */'", &mut out));
}

#[test]
fn errors() {
    assert_eq!(canon_err(b"select 'abc"), LexError::UnterminatedString);
    assert_eq!(canon_err(b"select E'abc\\'"), LexError::UnterminatedString);
    assert_eq!(canon_err(b"select \"abc"), LexError::UnterminatedIdentifier);
    assert_eq!(
        canon_err(b"select $a$ abc $b$"),
        LexError::UnterminatedDollarQuote
    );
    assert_eq!(
        canon_err(b"select /* /* */ 1"),
        LexError::UnterminatedComment
    );
    assert_eq!(canon_err(b"select \x01"), LexError::BadByte(1));
    assert_eq!(canon_err(b"select 1\0"), LexError::BadByte(0));
}

#[test]
fn non_utf8_bytes_are_identifier_bytes() {
    let mut out = Vec::new();
    let scan = canonicalize(
        b"select caf\xe9 from t where x = '\xff\xfe'",
        true,
        &mut out,
    );
    assert_eq!(scan.result, Ok(()));
    assert_eq!(out, b"select caf\xe9 from t where x = ''");
}

#[test]
fn standard_conforming_strings() {
    let sql = b"select 'a\\' , 'b'";
    let mut on = Vec::new();
    let mut off = Vec::new();
    let scan = canonicalize(sql, true, &mut on);
    assert!(scan.plain_backslash);
    assert_eq!(on, b"select '' , ''");
    // With standard_conforming_strings off, `\'` does not close the string.
    let scan = canonicalize(sql, false, &mut off);
    assert_eq!(scan.result, Err(LexError::UnterminatedString));
    let scan = canonicalize(b"select 'a\\\\' , 'c'", false, &mut off);
    assert_eq!(scan.result, Ok(()));
    assert_eq!(off, b"select '' , ''");
    let mut plain = Vec::new();
    assert!(!canonicalize(b"select E'a\\''", true, &mut plain).plain_backslash);
}

#[test]
fn tokenises_canonical_text() {
    let text = b"SELECT \"a\"\"b\", U&\"x\", f(0), '' FROM s.t WHERE x = $1;";
    let toks = tokens(text);
    let kinds: Vec<Kind> = toks.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        vec![
            Kind::Word,
            Kind::Quoted,
            Kind::Punct(b','),
            Kind::UnicodeQuoted,
            Kind::Punct(b','),
            Kind::Word,
            Kind::Punct(b'('),
            Kind::Num,
            Kind::Punct(b')'),
            Kind::Punct(b','),
            Kind::Str,
            Kind::Word,
            Kind::Word,
            Kind::Punct(b'.'),
            Kind::Word,
            Kind::Word,
            Kind::Word,
            Kind::Punct(b'='),
            Kind::Param,
            Kind::Punct(b';'),
        ]
    );
    assert!(toks[0].is_kw(text, "SELECT"));
    assert_eq!(toks[1].name(text).as_deref(), Some(&b"a\"b"[..]));
    assert_eq!(toks[3].name(text), None);
    assert_eq!(toks[11].name(text).as_deref(), Some(&b"from"[..]));
}

fn split(sql: &str) -> Vec<&str> {
    statements(sql.as_bytes())
        .into_iter()
        .map(|s| std::str::from_utf8(s).expect("utf8"))
        .collect()
}

#[test]
fn statements_split_at_top_level_semicolons() {
    assert_eq!(split("SET a = 1; SET b = 2;"), ["SET a = 1", "SET b = 2"]);
    assert_eq!(split(" ;; -- nothing\n ; /* x */ "), Vec::<&str>::new());
    assert_eq!(
        split("  /* lead */ SET a = 1 -- trail\n; SELECT 2"),
        ["SET a = 1", "SELECT 2"]
    );
    // E'' strings: `\'` does not close, `\\` is one backslash and the next `'` closes.
    assert_eq!(
        split(r"SELECT E'it\'s; SET x=1'; SET y = 2"),
        [r"SELECT E'it\'s; SET x=1'", "SET y = 2"]
    );
    assert_eq!(
        split(r"SELECT E'\\'; SET search_path = x"),
        [r"SELECT E'\\'", "SET search_path = x"]
    );
    // Standard strings: `''` is a quote, a backslash is just a backslash.
    assert_eq!(
        split(r"SELECT 'it''s; x', 'a\'; SET b = 1"),
        [r"SELECT 'it''s; x', 'a\'", "SET b = 1"]
    );
    // Dollar quotes with tags, holding other tags and `;`.
    assert_eq!(
        split("SELECT $a$ $b$ ; $b$ ; $a$; SET c = 1"),
        ["SELECT $a$ $b$ ; $b$ ; $a$", "SET c = 1"]
    );
    // `$` inside an identifier starts no dollar quote.
    assert_eq!(
        split("SELECT a$b FROM t; SET x.y = 1; SELECT $1, c$"),
        ["SELECT a$b FROM t", "SET x.y = 1", "SELECT $1, c$"]
    );
    // Nested comments holding `'` and `;`.
    assert_eq!(
        split("SELECT 1 /* it's /* ; */ still ; */ + 2; SET d = 1"),
        ["SELECT 1 /* it's /* ; */ still ; */ + 2", "SET d = 1"]
    );
    assert_eq!(
        split("SELECT 'a /* '; SET x.y = 1"),
        ["SELECT 'a /* '", "SET x.y = 1"]
    );
    // Quoted identifiers, also U&"...", holding `;`, `'` and doubled quotes.
    assert_eq!(
        split(r#"SELECT "a;""b'" FROM t; SELECT U&"x;\0061" FROM t"#),
        [r#"SELECT "a;""b'" FROM t"#, r#"SELECT U&"x;\0061" FROM t"#]
    );
    // Parentheses: `;` inside them does not end a statement.
    assert_eq!(
        split("CREATE RULE r AS ON INSERT TO t DO (SELECT 1; SELECT 2); SET e = 1"),
        [
            "CREATE RULE r AS ON INSERT TO t DO (SELECT 1; SELECT 2)",
            "SET e = 1"
        ]
    );
}

#[test]
fn unterminated_text_is_one_last_statement() {
    assert_eq!(
        split("SET a = 1; SELECT 'x; SET b = 2 "),
        ["SET a = 1", "SELECT 'x; SET b = 2"]
    );
    assert_eq!(
        split("SET a = 1; 'x; SET b = 2"),
        ["SET a = 1", "'x; SET b = 2"]
    );
    assert_eq!(split("SELECT $q$ ; SET b = 2"), ["SELECT $q$ ; SET b = 2"]);
    assert_eq!(
        split("SELECT /* /* */ ; SET b = 2"),
        ["SELECT /* /* */ ; SET b = 2"]
    );
    assert_eq!(split("SELECT \"x; SET b = 2"), ["SELECT \"x; SET b = 2"]);
    assert_eq!(
        split(r"SELECT E'\'; SET b = 2"),
        [r"SELECT E'\'; SET b = 2"]
    );
    assert_eq!(
        split("SELECT 1\u{1}; SET b = 2"),
        ["SELECT 1\u{1}; SET b = 2"]
    );
}

#[test]
fn source_tokens_keep_original_text() {
    let sql = br#"SET "My ""x""".Y = E'a\'b' -- c
        , 1.5, $$d$$, U&"e", f$g, $1"#;
    let toks: Vec<Token> = source_tokens(sql).collect();
    let texts: Vec<&[u8]> = toks.iter().map(|t| t.text(sql)).collect();
    assert_eq!(
        texts,
        [
            &b"SET"[..],
            br#""My ""x""""#,
            b".",
            b"Y",
            b"=",
            br"E'a\'b'",
            b",",
            b"1.5",
            b",",
            b"$$d$$",
            b",",
            br#"U&"e""#,
            b",",
            b"f$g",
            b",",
            b"$1"
        ]
    );
    let kinds: Vec<Kind> = toks.iter().map(|t| t.kind).collect();
    assert_eq!(kinds[5], Kind::Str);
    assert_eq!(kinds[7], Kind::Num);
    assert_eq!(kinds[9], Kind::Str);
    assert_eq!(kinds[11], Kind::UnicodeQuoted);
    assert_eq!(kinds[13], Kind::Word);
    assert_eq!(kinds[15], Kind::Param);
    assert_eq!(toks[1].name(sql).as_deref(), Some(&br#"My "x""#[..]));
    assert_eq!(toks[0].name(sql).as_deref(), Some(&b"set"[..]));
    assert_eq!(
        dotted_name(sql, &toks[1..]),
        Some((br#"My "x".y"#.to_vec(), 3))
    );
    assert_eq!(dotted_name(sql, &toks[4..]), None);
    // Tokens stop at the first lexical error.
    assert_eq!(source_tokens(b"SELECT 'x").count(), 1);
    assert_eq!(source_tokens(b"").count(), 0);
}

#[test]
fn plain_string_values() {
    let value = |sql: &[u8]| source_tokens(sql).next().and_then(|t| t.plain_string(sql));
    assert_eq!(value(b"'it''s'"), Some(b"it's".to_vec()));
    assert_eq!(value(br"'a\'"), Some(br"a\".to_vec()));
    assert_eq!(value(b"''"), Some(Vec::new()));
    assert_eq!(value(br"E'x'"), None);
    assert_eq!(value(b"'a'\n'b'"), None);
    assert_eq!(value(b"$$x$$"), None);
    assert_eq!(value(b"x"), None);
}

#[test]
fn tokens_never_panic_on_garbage() {
    for input in [&b"\"abc"[..], b"'abc", b"U&\"", b"$", b"$1", b"\xff\x00'"] {
        let _ = tokens(input);
    }
}

/// `starts_with_any_kw` reads the first word without the scanner: it must agree with it.
#[test]
fn the_first_word_is_what_the_scanner_reads_first() {
    use rand::{Rng, SeedableRng};
    let scanned = |sql: &[u8], kws: &[&str]| {
        source_tokens(sql)
            .next()
            .is_some_and(|t| t.is_any_kw(sql, kws))
    };
    let kws = ["SET", "E", "U", "SELECT"];
    let examples: [&[u8]; 16] = [
        b"set x = 1",
        b"  \t\nSET x",
        b"SELECT 1",
        b"SETTING",
        b"/* c */ SET x",
        b"-- c\nset x",
        b"- SET",
        b"E'x'",
        b"e",
        b"U&'x'",
        b"u&\"x\"",
        b"\"SET\" x",
        b"",
        b"   ",
        b"\x01SET",
        b"s\xc3\xa9t",
    ];
    for sql in examples {
        assert_eq!(
            starts_with_any_kw(sql, &kws),
            scanned(sql, &kws),
            "{:?}",
            String::from_utf8_lossy(sql)
        );
    }
    // Random texts over the bytes that matter, with a fixed seed.
    let alphabet = b" \t\n-/*'\"&$_eEuUsStT1;\xc3\xa9";
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let len = rng.gen_range(0..8);
        let sql: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        for kws in [&["SET"][..], &["E", "U"], &["ST", "tt"]] {
            assert_eq!(
                starts_with_any_kw(&sql, kws),
                scanned(&sql, kws),
                "{sql:?} {kws:?}"
            );
        }
    }
}

/// `canonicalize` reads spaces and plain words itself: on any text it must give what the
/// scanner's lexemes give.
#[test]
fn canonical_text_is_what_the_lexemes_make() {
    use rand::{Rng, SeedableRng};
    // The same text written from every lexeme the scanner yields.
    fn by_lexemes(sql: &[u8], standard: bool) -> (Vec<u8>, Scan) {
        let mut out = Vec::new();
        let mut canon = Canon::new(&mut out);
        let mut result = Ok(());
        let mut lexer = Lexer::new(sql, standard);
        for piece in lexer.by_ref() {
            match piece {
                Ok(p) => canon.put(p.lexeme, &sql[p.start..p.end]),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let scan = Scan {
            hint_primary: canon.hint_primary,
            plain_backslash: lexer.plain_backslash,
            result,
        };
        (out, scan)
    }
    let pieces: [&[u8]; 32] = [
        b" ",
        b"  ",
        b"\t",
        b"\n",
        b"a",
        b"E",
        b"e",
        b"U",
        b"u",
        b"N",
        b"x",
        b"B",
        b"sel",
        b"_",
        b"1",
        b"1.5e3",
        b"'",
        b"''",
        b"\"",
        b"$",
        b"$$",
        b"&",
        b"-",
        b"--",
        b"/",
        b"/*",
        b"*/",
        b";",
        b"\\",
        b"\xc3\xa9",
        b"/* pgsplit:primary */",
        b"(",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut out = Vec::new();
    for _ in 0..50_000 {
        let sql: Vec<u8> = (0..rng.gen_range(0..12))
            .flat_map(|_| pieces[rng.gen_range(0..pieces.len())].iter().copied())
            .collect();
        for standard in [true, false] {
            let scan = canonicalize(&sql, standard, &mut out);
            let shown = String::from_utf8_lossy(&sql);
            let (expected, expected_scan) = by_lexemes(&sql, standard);
            assert_eq!(scan, expected_scan, "{shown:?} standard_strings={standard}");
            assert_eq!(out, expected, "{shown:?} standard_strings={standard}");
        }
    }
}
