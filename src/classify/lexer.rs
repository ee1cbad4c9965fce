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
//! The scan itself is the [`Lexer`], which reads the original text lexeme by lexeme. Besides
//! [`canonicalize`], it serves everything else in pgsplit that reads SQL text, so there is
//! one set of quoting rules: [`statements`] splits a query string into statements,
//! [`source_tokens`] gives the tokens of original text (with [`Token::name`],
//! [`Token::plain_string`] and [`dotted_name`] to read names and values).
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
    // Calls `lex` directly rather than iterating: this is the hot path.
    let mut lexer = Lexer::new(sql, standard_strings);
    let mut pending_space = false;
    let mut i = 0;
    while i < sql.len() {
        let (lexeme, end) = match lexer.lex(i) {
            Ok(step) => step,
            Err(e) => {
                scan.result = Err(e);
                break;
            }
        };
        let text = sql.get(i..end).unwrap_or_default();
        i = end;
        match lexeme {
            Lexeme::Space => pending_space = true,
            Lexeme::Comment => {
                let body = text.strip_prefix(b"/*").and_then(|t| t.strip_suffix(b"*/"));
                if out.is_empty() && body.is_some_and(is_hint) {
                    scan.hint_primary = true;
                }
                pending_space = true;
            }
            Lexeme::Token(kind) => {
                if pending_space && !out.is_empty() {
                    out.push(b' ');
                }
                pending_space = false;
                match kind {
                    Kind::Str => out.extend_from_slice(b"''"),
                    Kind::Num => out.push(b'0'),
                    Kind::Punct(b) => out.push(b),
                    _ => out.extend_from_slice(text),
                }
            }
        }
    }
    scan.plain_backslash = lexer.plain_backslash;
    scan
}

/// What the scanner finds at one place of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lexeme {
    /// A run of whitespace.
    Space,
    /// A `--` or `/* */` comment.
    Comment,
    /// A token ([`Kind::Str`] covers a literal with its continuations, [`Kind::Num`] a number).
    Token(Kind),
}

/// A lexeme and its byte range in the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub lexeme: Lexeme,
    pub start: usize,
    pub end: usize,
}

/// The scanner: yields the lexemes of SQL text in order, following PostgreSQL's lexical
/// rules. After an error it yields nothing more, and [`Lexer::offset`] is where the failing
/// lexeme starts.
pub(crate) struct Lexer<'a> {
    sql: &'a [u8],
    pos: usize,
    standard_strings: bool,
    failed: bool,
    /// See [`Scan::plain_backslash`].
    plain_backslash: bool,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(sql: &'a [u8], standard_strings: bool) -> Self {
        Lexer {
            sql,
            pos: 0,
            standard_strings,
            failed: false,
            plain_backslash: false,
        }
    }

    /// Where the next lexeme starts.
    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    /// The lexeme at `i` (which is inside the text) and where it ends.
    fn lex(&mut self, i: usize) -> Result<(Lexeme, usize), LexError> {
        let sql = self.sql;
        let b = sql.get(i).copied().unwrap_or_default();
        let next = sql.get(i + 1).copied();
        if is_space(b) {
            return Ok((Lexeme::Space, scan_while(sql, i, is_space)));
        }
        if b == b'-' && next == Some(b'-') {
            return Ok((Lexeme::Comment, skip_line_comment(sql, i)));
        }
        if b == b'/' && next == Some(b'*') {
            let end = skip_block_comment(sql, i).ok_or(LexError::UnterminatedComment)?;
            return Ok((Lexeme::Comment, end));
        }
        let plain = if self.standard_strings {
            Quote::Standard
        } else {
            Quote::Escape
        };
        let backslash = &mut self.plain_backslash;
        let (kind, end) = match b {
            b'\'' => (Kind::Str, string(sql, i + 1, plain, backslash)?),
            b'"' => (Kind::Quoted, quoted_identifier(sql, i)?),
            b'$' => dollar(sql, i)?,
            b'.' if next.is_some_and(|n| n.is_ascii_digit()) => (Kind::Num, number(sql, i)),
            b'0'..=b'9' => (Kind::Num, number(sql, i)),
            b'e' | b'E' if next == Some(b'\'') => {
                (Kind::Str, string(sql, i + 2, Quote::Escape, backslash)?)
            }
            b'n' | b'N' if next == Some(b'\'') => {
                (Kind::Str, string(sql, i + 2, plain, backslash)?)
            }
            b'b' | b'B' | b'x' | b'X' if next == Some(b'\'') => {
                (Kind::Str, string(sql, i + 2, Quote::Bits, backslash)?)
            }
            b'u' | b'U' if next == Some(b'&') && sql.get(i + 2) == Some(&b'\'') => {
                (Kind::Str, string(sql, i + 3, Quote::Bits, backslash)?)
            }
            b'u' | b'U' if next == Some(b'&') && sql.get(i + 2) == Some(&b'"') => {
                (Kind::UnicodeQuoted, quoted_identifier(sql, i + 2)?)
            }
            _ if is_ident_start(b) => (Kind::Word, scan_while(sql, i + 1, is_ident_cont)),
            0..=0x1f | 0x7f => return Err(LexError::BadByte(b)),
            _ => (Kind::Punct(b), i + 1),
        };
        Ok((Lexeme::Token(kind), end))
    }
}

impl Iterator for Lexer<'_> {
    type Item = Result<Piece, LexError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.sql.len() {
            return None;
        }
        let start = self.pos;
        match self.lex(start) {
            Ok((lexeme, end)) => {
                self.pos = end.max(start + 1);
                Some(Ok(Piece { lexeme, start, end }))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// The tokens of original SQL text (not canonical text), in order, with their byte ranges in
/// it; whitespace and comments are left out. `standard_conforming_strings` is taken to be on.
/// An unterminated literal, identifier or comment, or a control byte, ends the tokens.
pub(crate) fn source_tokens(sql: &[u8]) -> impl Iterator<Item = Token> + '_ {
    Lexer::new(sql, true)
        .map_while(Result::ok)
        .filter_map(|p| match p.lexeme {
            Lexeme::Token(kind) => Some(Token {
                kind,
                start: p.start,
                end: p.end,
            }),
            _ => None,
        })
}

/// The statements of a query string, as PostgreSQL's parser separates them: the text of
/// each from its first token to its last (the comments and whitespace around it left out),
/// split at each `;` outside literals, quoted identifiers, comments, dollar quotes and
/// parentheses. Empty statements are dropped. Whatever follows an unterminated literal,
/// identifier or comment, or a control byte, belongs to the statement it starts in.
pub(crate) fn statements(sql: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    // The current statement's range so far (from its first token to its last).
    let mut current: Option<(usize, usize)> = None;
    let mut depth = 0usize;
    let mut lexer = Lexer::new(sql, true);
    while let Some(piece) = lexer.next() {
        let piece = match piece {
            Ok(piece) => piece,
            Err(_) => {
                let start = current.map_or(lexer.offset(), |(start, _)| start);
                let rest = sql.get(start..).unwrap_or_default().trim_ascii_end();
                out.push(rest);
                return out;
            }
        };
        let Lexeme::Token(kind) = piece.lexeme else {
            continue;
        };
        match kind {
            Kind::Punct(b'(') => depth += 1,
            Kind::Punct(b')') => depth = depth.saturating_sub(1),
            Kind::Punct(b';') if depth == 0 => {
                if let Some((start, end)) = current.take() {
                    out.push(sql.get(start..end).unwrap_or_default());
                }
                continue;
            }
            _ => {}
        }
        let start = current.map_or(piece.start, |(start, _)| start);
        current = Some((start, piece.end));
    }
    if let Some((start, end)) = current {
        out.push(sql.get(start..end).unwrap_or_default());
    }
    out
}

/// A short command that pgsplit answers itself (`SET pgsplit.route ...`, `DEALLOCATE name`):
/// when the text's first token is one of the keywords `heads`, that token and the tokens
/// after it, at most `max` of them, without the trailing `;`s. `None` for any other text,
/// which costs only its first token.
pub(crate) fn short_command(sql: &[u8], heads: &[&str], max: usize) -> Option<(Token, Vec<Token>)> {
    let mut toks = source_tokens(sql);
    let head = toks.next()?;
    if !head.is_any_kw(sql, heads) {
        return None;
    }
    let mut rest: Vec<Token> = toks.take(max + 1).collect();
    if rest.len() > max {
        return None;
    }
    while rest.last().is_some_and(|t| t.kind == Kind::Punct(b';')) {
        rest.pop();
    }
    Some((head, rest))
}

/// Reads a dotted name `a.b.c` (each part a word or a `"quoted"` identifier) at the start of
/// `toks`, as PostgreSQL stores it: the parts' names joined by `.`. Returns the name and how
/// many tokens it took, or `None` when `toks` does not start with a name.
pub(crate) fn dotted_name(sql: &[u8], toks: &[Token]) -> Option<(Vec<u8>, usize)> {
    let mut name = toks.first()?.name(sql)?.into_owned();
    let mut used = 1;
    while let (Some(dot), Some(part)) = (toks.get(used), toks.get(used + 1)) {
        let Some(part) = part.name(sql).filter(|_| dot.kind == Kind::Punct(b'.')) else {
            break;
        };
        name.push(b'.');
        name.extend_from_slice(&part);
        used += 2;
    }
    Some((name, used))
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
/// separated by whitespace containing a newline) and returns the end index.
fn string(
    sql: &[u8],
    mut i: usize,
    mode: Quote,
    plain_backslash: &mut bool,
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

/// `quote` is the index of the opening `"`; returns the index past the closing one.
fn quoted_identifier(sql: &[u8], quote: usize) -> Result<usize, LexError> {
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
    Ok(i)
}

/// `i` is at `$`: a `$n` parameter, a `$tag$...$tag$` string, or a lone `$`. Returns the
/// token's kind and end index.
fn dollar(sql: &[u8], i: usize) -> Result<(Kind, usize), LexError> {
    let next = sql.get(i + 1).copied();
    if next.is_some_and(|b| b.is_ascii_digit()) {
        let end = scan_while(sql, i + 1, |b| b.is_ascii_digit());
        return Ok((Kind::Param, end));
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
        return Ok((Kind::Punct(b'$'), i + 1));
    };
    let tag = sql.get(i..tag_end).unwrap_or_default();
    let mut j = tag_end;
    while let Some(&b) = sql.get(j) {
        if b == b'$' && sql.get(j..).is_some_and(|rest| rest.starts_with(tag)) {
            return Ok((Kind::Str, j + tag.len()));
        }
        j += 1;
    }
    Err(LexError::UnterminatedDollarQuote)
}

/// `i` is at a digit or at `.` followed by a digit. Returns the end index.
fn number(sql: &[u8], i: usize) -> usize {
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
    j
}

/// What a token is (of canonical text, or of original text read by [`source_tokens`]).
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

/// A token: its kind and its byte range in the text it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// The token's bytes in `canon`, the text it was read from.
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

    /// The value of a plain `'...'` literal of original text, its doubled quotes undone.
    /// `None` for other tokens, including `E''` and other prefixed literals, and literals
    /// continued on the next line.
    pub(crate) fn plain_string(&self, sql: &[u8]) -> Option<Vec<u8>> {
        if self.kind != Kind::Str {
            return None;
        }
        let inner = self.text(sql).strip_prefix(b"'")?.strip_suffix(b"'")?;
        let mut value = Vec::with_capacity(inner.len());
        let mut k = 0;
        while let Some(&b) = inner.get(k) {
            if b == b'\'' {
                if inner.get(k + 1) != Some(&b'\'') {
                    return None;
                }
                k += 1;
            }
            value.push(b);
            k += 1;
        }
        Some(value)
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
mod tests;
