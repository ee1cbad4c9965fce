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
//! `statement/` (locking clauses the parser cannot read, function-call syntax, statement
//! heads and boundaries).
//!
//! The scan itself is the [`Lexer`], which reads the original text lexeme by lexeme. Besides
//! [`canonicalize`], it serves everything else in pgsplit that reads SQL text, so there is
//! one set of quoting rules: [`statements`] splits a query string into statements,
//! [`source_tokens`] gives the tokens of original text (with [`Token::name`],
//! [`Token::plain_string`] and [`dotted_name`] to read names and values).
//!
//! Nothing here panics on any input: all indexing goes through `get`, and the scan is linear.
//!
//! The lexer's parts: the scan and [`canonicalize`] here, the rules for each kind of
//! lexeme in `lexemes.rs`, the tokens of canonical text in `token.rs`, and what reads
//! original text (statements, short commands, names) in `text.rs`.

mod lexemes;
mod text;
mod token;

use lexemes::{
    dollar, is_hint, is_ident_cont, is_ident_start, is_space, number, quoted_identifier,
    scan_while, skip_block_comment, skip_line_comment, string, Quote,
};
pub(crate) use text::{dotted_name, short_command, source_tokens, starts_with_any_kw, statements};
pub(crate) use token::{tokens, Kind, Token};

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

/// Canonicalises `sql` into `out` (which is cleared first).
///
/// `standard_strings` is the server's `standard_conforming_strings`: when `false`, backslashes
/// escape in plain `'...'` literals too.
pub(crate) fn canonicalize(sql: &[u8], standard_strings: bool, out: &mut Vec<u8>) -> Scan {
    out.clear();
    // The canonical text is never longer than the original: this is its only allocation.
    out.reserve(sql.len());
    let mut canon = Canon::new(out);
    let mut result = Ok(());
    // Calls `lex` directly rather than iterating: this is the hot path.
    let mut lexer = Lexer::new(sql, standard_strings);
    let mut i = 0;
    while let Some(&b) = sql.get(i) {
        // The lexemes most statements are made of, read here as `lex` would read them: a
        // space, and a word whose next byte cannot make it a literal's prefix (`E'`, `U&`).
        // (Each `put` is inlined with its lexeme known.)
        let end = if b == b' ' {
            canon.put(Lexeme::Space, b" ");
            i + 1
        } else if is_ident_start(b) && !matches!(sql.get(i + 1), Some(b'\'' | b'&')) {
            let end = scan_while(sql, i + 1, is_ident_cont);
            canon.put(
                Lexeme::Token(Kind::Word),
                sql.get(i..end).unwrap_or_default(),
            );
            end
        } else {
            match lexer.lex(i) {
                Ok((lexeme, end)) => {
                    canon.put(lexeme, sql.get(i..end).unwrap_or_default());
                    end
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        };
        i = end;
    }
    Scan {
        hint_primary: canon.hint_primary,
        plain_backslash: lexer.plain_backslash,
        result,
    }
}

/// Canonical text being written, one lexeme at a time.
struct Canon<'a> {
    out: &'a mut Vec<u8>,
    /// Whitespace or a comment came since the last token.
    pending_space: bool,
    /// See [`Scan::hint_primary`].
    hint_primary: bool,
}

impl<'a> Canon<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Canon {
            out,
            pending_space: false,
            hint_primary: false,
        }
    }

    /// Writes what `lexeme`, whose text is `text`, becomes: literals a placeholder,
    /// whitespace and comments one space between tokens.
    #[inline(always)]
    fn put(&mut self, lexeme: Lexeme, text: &[u8]) {
        let out = &mut *self.out;
        match lexeme {
            Lexeme::Space => self.pending_space = true,
            Lexeme::Comment => {
                let body = text.strip_prefix(b"/*").and_then(|t| t.strip_suffix(b"*/"));
                if out.is_empty() && body.is_some_and(is_hint) {
                    self.hint_primary = true;
                }
                self.pending_space = true;
            }
            Lexeme::Token(kind) => {
                if self.pending_space && !out.is_empty() {
                    out.push(b' ');
                }
                self.pending_space = false;
                match kind {
                    Kind::Str => out.extend_from_slice(b"''"),
                    Kind::Num => out.push(b'0'),
                    Kind::Punct(b) => out.push(b),
                    _ => out.extend_from_slice(text),
                }
            }
        }
    }
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

    /// The lexeme at `i` (which is inside the text) and where it ends. (Inlined into
    /// `canonicalize`, the hot path, where the result then needs no building.)
    #[inline(always)]
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

#[cfg(test)]
mod tests;
