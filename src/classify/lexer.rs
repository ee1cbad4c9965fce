//! The fast scanner: turns raw SQL bytes into a canonical text, and tokenises that text.
//!
//! [`canonicalize`] walks the bytes once, following PostgreSQL's lexical rules (nested `/* */`
//! comments, `--` comments, `'...'` with doubled quotes, `E'...'` with backslash escapes,
//! `B''`/`X''`/`N''`/`U&''` strings, string continuation across newlines, `$tag$...$tag$`
//! bodies, `"quoted"` and `U&"quoted"` identifiers, numbers such as `1.5e10`, `.5`, `0x1F`,
//! `1_000`, and `$1` parameters). It writes the *canonical text*:
//!
//! - every string literal (of any kind, including dollar-quoted bodies) becomes `''`;
//! - every numeric literal becomes `0`; `$n` parameters stay as they are;
//! - comments are dropped, and every run of whitespace and comments becomes one space;
//! - everything else (keywords, identifiers, quoted identifiers, operators) is copied as is.
//!
//! The canonical text is both the cache key and the only input of classification (the parser
//! reads it, not the original), so two statements that differ only in literal values or layout
//! share one cache entry and provably get the same class. The scan also notes a leading
//! `/* pgsplit:primary */` hint, which is not part of the class.
//!
//! [`tokens`] splits canonical text into [`Token`]s for the keyword-level rules in
//! `statement.rs` (locking clauses the parser cannot read, function-call syntax, statement
//! heads and boundaries).
//!
//! Nothing here panics on any input: all indexing goes through `get`, and the scan is linear.

use std::borrow::Cow;

/// Why the scanner gave up. Any of these makes the statement a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LexError {
    #[error("unterminated quoted string")]
    UnterminatedString,
    #[error("unterminated quoted identifier")]
    UnterminatedIdentifier,
    #[error("unterminated dollar-quoted string")]
    UnterminatedDollarQuote,
    #[error("unterminated /* comment")]
    UnterminatedComment,
    #[error("byte {0:#04x} is not allowed outside a literal")]
    BadByte(u8),
}

/// What [`canonicalize`] learned besides the canonical text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scan {
    /// A leading `/* pgsplit:primary */` comment was present.
    pub hint_primary: bool,
    /// A plain `'...'` (or `N'...'`) literal contained a backslash: its extent depends on
    /// `standard_conforming_strings`.
    pub plain_backslash: bool,
    /// The text scanned completely.
    pub result: Result<(), LexError>,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// First byte of an identifier (PostgreSQL: `[A-Za-z\200-\377_]`).
pub(crate) fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Later bytes of an identifier (PostgreSQL: `[A-Za-z\200-\377_0-9\$]`).
pub(crate) fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Dollar-quote tags may not contain `$` or start with a digit.
fn is_tag_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

/// Canonicalises `sql` into `out` (which is cleared first).
///
/// `standard_strings` is the server's `standard_conforming_strings`: when `false`, backslashes
/// escape in plain `'...'` literals too.
pub(crate) fn canonicalize(sql: &[u8], standard_strings: bool, out: &mut Vec<u8>) -> Scan {
    out.clear();
    let mut scan = Scan {
        hint_primary: false,
        plain_backslash: false,
        result: Ok(()),
    };
    let mut i = 0;
    let mut pending_space = false;
    while let Some(&b) = sql.get(i) {
        if is_space(b) {
            pending_space = true;
            i += 1;
            continue;
        }
        let next = sql.get(i + 1).copied();
        if b == b'-' && next == Some(b'-') {
            i = skip_line_comment(sql, i);
            pending_space = true;
            continue;
        }
        if b == b'/' && next == Some(b'*') {
            match skip_block_comment(sql, i) {
                Some(end) => {
                    if out.is_empty() && is_hint(sql.get(i + 2..end - 2).unwrap_or_default()) {
                        scan.hint_primary = true;
                    }
                    i = end;
                    pending_space = true;
                    continue;
                }
                None => {
                    scan.result = Err(LexError::UnterminatedComment);
                    return scan;
                }
            }
        }
        if pending_space && !out.is_empty() {
            out.push(b' ');
        }
        pending_space = false;
        let step = match b {
            b'\'' => {
                let mode = if standard_strings {
                    Quote::Standard
                } else {
                    Quote::Escape
                };
                string(sql, i + 1, mode, &mut scan.plain_backslash, out)
            }
            b'"' => quoted_identifier(sql, i, i, out),
            b'$' => dollar(sql, i, out),
            b'.' if next.is_some_and(|n| n.is_ascii_digit()) => Ok(number(sql, i, out)),
            b'0'..=b'9' => Ok(number(sql, i, out)),
            b'e' | b'E' if next == Some(b'\'') => {
                string(sql, i + 2, Quote::Escape, &mut scan.plain_backslash, out)
            }
            b'n' | b'N' if next == Some(b'\'') => {
                let mode = if standard_strings {
                    Quote::Standard
                } else {
                    Quote::Escape
                };
                string(sql, i + 2, mode, &mut scan.plain_backslash, out)
            }
            b'b' | b'B' | b'x' | b'X' if next == Some(b'\'') => {
                string(sql, i + 2, Quote::Bits, &mut scan.plain_backslash, out)
            }
            b'u' | b'U' if next == Some(b'&') && sql.get(i + 2) == Some(&b'\'') => {
                string(sql, i + 3, Quote::Bits, &mut scan.plain_backslash, out)
            }
            b'u' | b'U' if next == Some(b'&') && sql.get(i + 2) == Some(&b'"') => {
                quoted_identifier(sql, i, i + 2, out)
            }
            _ if is_ident_start(b) => {
                let end = scan_while(sql, i + 1, is_ident_cont);
                out.extend_from_slice(sql.get(i..end).unwrap_or_default());
                Ok(end)
            }
            0..=0x1f | 0x7f => Err(LexError::BadByte(b)),
            _ => {
                out.push(b);
                Ok(i + 1)
            }
        };
        match step {
            Ok(end) => i = end,
            Err(e) => {
                scan.result = Err(e);
                return scan;
            }
        }
    }
    scan
}

/// Index of the first byte at or after `i` that fails `pred`.
fn scan_while(sql: &[u8], mut i: usize, pred: impl Fn(u8) -> bool) -> usize {
    while sql.get(i).is_some_and(|&b| pred(b)) {
        i += 1;
    }
    i
}

/// `i` is at `--`; returns the index of the line end (or the end of input).
fn skip_line_comment(sql: &[u8], i: usize) -> usize {
    scan_while(sql, i, |b| b != b'\n' && b != b'\r')
}

/// `i` is at `/*`; returns the index just past the matching `*/` (comments nest), or `None`.
fn skip_block_comment(sql: &[u8], i: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = i;
    while let Some(&b) = sql.get(j) {
        let next = sql.get(j + 1).copied();
        if b == b'/' && next == Some(b'*') {
            depth += 1;
            j += 2;
        } else if b == b'*' && next == Some(b'/') {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return Some(j);
            }
        } else {
            j += 1;
        }
    }
    None
}

/// Whether a block comment's body is the routing hint `pgsplit:primary` (case-insensitive).
fn is_hint(body: &[u8]) -> bool {
    body.trim_ascii().eq_ignore_ascii_case(b"pgsplit:primary")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    /// `'...'` with `standard_conforming_strings = on`: only `''` escapes a quote.
    Standard,
    /// `E'...'` (or plain strings with `standard_conforming_strings = off`): `\x` escapes too.
    Escape,
    /// `B''`, `X''`, `U&''`: like `Standard`; backslashes carry no meaning for the extent.
    Bits,
}

/// `i` is just past the opening quote. Consumes the literal (and any continuation literals
/// separated by whitespace containing a newline), writes `''`, and returns the end index.
fn string(
    sql: &[u8],
    mut i: usize,
    mode: Quote,
    plain_backslash: &mut bool,
    out: &mut Vec<u8>,
) -> Result<usize, LexError> {
    loop {
        loop {
            match sql.get(i) {
                None => return Err(LexError::UnterminatedString),
                Some(b'\\') if mode == Quote::Escape => i += 2,
                Some(b'\\') => {
                    if mode == Quote::Standard {
                        *plain_backslash = true;
                    }
                    i += 1;
                }
                Some(b'\'') if sql.get(i + 1) == Some(&b'\'') => i += 2,
                Some(b'\'') => {
                    i += 1;
                    break;
                }
                Some(_) => i += 1,
            }
        }
        match continuation(sql, i) {
            Some(next) => i = next,
            None => break,
        }
    }
    out.extend_from_slice(b"''");
    Ok(i)
}

/// PostgreSQL joins `'a'` and `'b'` into one literal when only whitespace with at least one
/// newline (and `--` comments) separates them. Returns the index past the next opening quote.
fn continuation(sql: &[u8], mut i: usize) -> Option<usize> {
    let mut newline = false;
    loop {
        match sql.get(i)? {
            b'\n' => {
                newline = true;
                i += 1;
            }
            b' ' | b'\t' | b'\r' | 0x0b | 0x0c => i += 1,
            b'-' if sql.get(i + 1) == Some(&b'-') => i = skip_line_comment(sql, i),
            b'\'' if newline => return Some(i + 1),
            _ => return None,
        }
    }
}

/// `quote` is the index of the opening `"` (`start` is where the token starts, which differs
/// for `U&"`). Copies the identifier as is and returns the end index.
fn quoted_identifier(
    sql: &[u8],
    start: usize,
    quote: usize,
    out: &mut Vec<u8>,
) -> Result<usize, LexError> {
    let mut i = quote + 1;
    loop {
        match sql.get(i) {
            None => return Err(LexError::UnterminatedIdentifier),
            Some(b'"') if sql.get(i + 1) == Some(&b'"') => i += 2,
            Some(b'"') => {
                i += 1;
                break;
            }
            Some(_) => i += 1,
        }
    }
    out.extend_from_slice(sql.get(start..i).unwrap_or_default());
    Ok(i)
}

/// `i` is at `$`: a `$n` parameter, a `$tag$...$tag$` string, or a lone `$`.
fn dollar(sql: &[u8], i: usize, out: &mut Vec<u8>) -> Result<usize, LexError> {
    let next = sql.get(i + 1).copied();
    if next.is_some_and(|b| b.is_ascii_digit()) {
        let end = scan_while(sql, i + 1, |b| b.is_ascii_digit());
        out.extend_from_slice(sql.get(i..end).unwrap_or_default());
        return Ok(end);
    }
    let tag_end = if next == Some(b'$') {
        Some(i + 2)
    } else if next.is_some_and(is_ident_start) {
        let j = scan_while(sql, i + 1, is_tag_cont);
        (sql.get(j) == Some(&b'$')).then_some(j + 1)
    } else {
        None
    };
    let Some(tag_end) = tag_end else {
        out.push(b'$');
        return Ok(i + 1);
    };
    let tag = sql.get(i..tag_end).unwrap_or_default();
    let mut j = tag_end;
    while let Some(&b) = sql.get(j) {
        if b == b'$' && sql.get(j..).is_some_and(|rest| rest.starts_with(tag)) {
            out.extend_from_slice(b"''");
            return Ok(j + tag.len());
        }
        j += 1;
    }
    Err(LexError::UnterminatedDollarQuote)
}

/// `i` is at a digit or at `.` followed by a digit. Writes `0` and returns the end index.
fn number(sql: &[u8], i: usize, out: &mut Vec<u8>) -> usize {
    let at = |k: usize| sql.get(k).copied();
    let digit = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_digit());
    let mut j = i;
    let radix = at(i) == Some(b'0')
        && matches!(at(i + 1), Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B'))
        && at(i + 2).is_some_and(|b| b.is_ascii_alphanumeric());
    if radix {
        j = scan_while(sql, i + 2, |b| b.is_ascii_alphanumeric() || b == b'_');
    } else {
        j = scan_while(sql, j, |b| b.is_ascii_digit() || b == b'_');
        if at(j) == Some(b'.') && at(j + 1) != Some(b'.') {
            j = scan_while(sql, j + 1, |b| b.is_ascii_digit() || b == b'_');
        }
        if matches!(at(j), Some(b'e' | b'E')) {
            if digit(at(j + 1)) {
                j = scan_while(sql, j + 1, |b| b.is_ascii_digit());
            } else if matches!(at(j + 1), Some(b'+' | b'-')) && digit(at(j + 2)) {
                j = scan_while(sql, j + 2, |b| b.is_ascii_digit());
            }
        }
    }
    out.push(b'0');
    j
}

/// A token of canonical text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A keyword or unquoted identifier.
    Word,
    /// A `"quoted"` identifier.
    Quoted,
    /// A `U&"quoted"` identifier (its real name needs escape processing: treated as unknown).
    UnicodeQuoted,
    /// A string literal (always `''` in canonical text).
    Str,
    /// A numeric literal (always `0` in canonical text).
    Num,
    /// A `$n` parameter.
    Param,
    /// Any other single byte: `(`, `)`, `;`, `,`, `.`, operator characters...
    Punct(u8),
}

/// A token: its kind and its byte range in the canonical text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// The token's bytes.
    pub(crate) fn text<'a>(&self, canon: &'a [u8]) -> &'a [u8] {
        canon.get(self.start..self.end).unwrap_or_default()
    }

    /// Whether this is the unquoted keyword `kw` (given in uppercase).
    pub(crate) fn is_kw(&self, canon: &[u8], kw: &str) -> bool {
        self.kind == Kind::Word && self.text(canon).eq_ignore_ascii_case(kw.as_bytes())
    }

    /// Whether this is one of the unquoted keywords `kws`.
    pub(crate) fn is_any_kw(&self, canon: &[u8], kws: &[&str]) -> bool {
        kws.iter().any(|kw| self.is_kw(canon, kw))
    }

    /// The name this identifier token denotes, as PostgreSQL would store it: unquoted words
    /// fold to lowercase, quoted identifiers lose their quotes. `None` for other tokens
    /// (including `U&"..."`, whose name is unknown here).
    pub(crate) fn name<'a>(&self, canon: &'a [u8]) -> Option<Cow<'a, [u8]>> {
        let text = self.text(canon);
        match self.kind {
            Kind::Word => Some(if text.iter().any(u8::is_ascii_uppercase) {
                Cow::Owned(text.to_ascii_lowercase())
            } else {
                Cow::Borrowed(text)
            }),
            Kind::Quoted => {
                let inner = text
                    .get(1..text.len().saturating_sub(1))
                    .unwrap_or_default();
                Some(if inner.windows(2).any(|w| w == b"\"\"") {
                    let mut name = Vec::with_capacity(inner.len());
                    let mut k = 0;
                    while let Some(&b) = inner.get(k) {
                        name.push(b);
                        k += if b == b'"' { 2 } else { 1 };
                    }
                    Cow::Owned(name)
                } else {
                    Cow::Borrowed(inner)
                })
            }
            _ => None,
        }
    }
}

/// Splits canonical text into tokens. Also accepts arbitrary bytes without panicking.
pub(crate) fn tokens(canon: &[u8]) -> Vec<Token> {
    let mut toks = Vec::with_capacity(canon.len() / 4 + 1);
    let mut i = 0;
    while let Some(&b) = canon.get(i) {
        if b == b' ' {
            i += 1;
            continue;
        }
        let next = canon.get(i + 1).copied();
        let (kind, end) = match b {
            b'\'' => {
                let close = canon
                    .get(i + 1..)
                    .and_then(|rest| rest.iter().position(|&c| c == b'\''))
                    .map_or(canon.len(), |p| i + 2 + p);
                (Kind::Str, close)
            }
            b'"' => (Kind::Quoted, quoted_end(canon, i + 1)),
            b'u' | b'U' if next == Some(b'&') && canon.get(i + 2) == Some(&b'"') => {
                (Kind::UnicodeQuoted, quoted_end(canon, i + 3))
            }
            b'$' if next.is_some_and(|n| n.is_ascii_digit()) => (
                Kind::Param,
                scan_while(canon, i + 1, |c| c.is_ascii_digit()),
            ),
            b'0'..=b'9' => (
                Kind::Num,
                scan_while(canon, i + 1, |c| c.is_ascii_alphanumeric()),
            ),
            _ if is_ident_start(b) => (Kind::Word, scan_while(canon, i + 1, is_ident_cont)),
            _ => (Kind::Punct(b), i + 1),
        };
        toks.push(Token {
            kind,
            start: i,
            end,
        });
        i = end.max(i + 1);
    }
    toks
}

/// `i` is just past an opening `"`; returns the index past the closing one (or the end).
fn quoted_end(canon: &[u8], mut i: usize) -> usize {
    while let Some(&b) = canon.get(i) {
        if b == b'"' {
            if canon.get(i + 1) == Some(&b'"') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    canon.len()
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn tokens_never_panic_on_garbage() {
        for input in [&b"\"abc"[..], b"'abc", b"U&\"", b"$", b"$1", b"\xff\x00'"] {
            let _ = tokens(input);
        }
    }
}
