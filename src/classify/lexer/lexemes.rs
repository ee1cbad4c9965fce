//! PostgreSQL's lexical rules, one kind of lexeme at a time: which bytes make identifiers
//! and whitespace, and where a comment, a string literal (with its continuations), a quoted
//! identifier, a dollar-quoted body or parameter, or a number ends. The scanner (`super`)
//! and the tokeniser (`token.rs`) call these, so the rules exist once.

use super::{Kind, LexError};

/// Byte classes, looked up in one table (this runs for every byte of every statement).
const SPACE: u8 = 1;
const IDENT_START: u8 = 2;
const IDENT_CONT: u8 = 4;
const DIGIT: u8 = 8;

static CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut class = 0;
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            class |= SPACE;
        }
        // PostgreSQL: identifiers are `[A-Za-z\200-\377_][A-Za-z\200-\377_0-9\$]*`.
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            class |= IDENT_START | IDENT_CONT;
        }
        if c.is_ascii_digit() {
            class |= IDENT_CONT | DIGIT;
        }
        if c == b'$' {
            class |= IDENT_CONT;
        }
        table[b] = class;
        b += 1;
    }
    table
};

fn has(b: u8, class: u8) -> bool {
    CLASSES[b as usize] & class != 0
}

pub(super) fn is_space(b: u8) -> bool {
    has(b, SPACE)
}

/// First byte of an identifier (PostgreSQL: `[A-Za-z\200-\377_]`).
pub(crate) fn is_ident_start(b: u8) -> bool {
    has(b, IDENT_START)
}

/// Later bytes of an identifier (PostgreSQL: `[A-Za-z\200-\377_0-9\$]`).
pub(crate) fn is_ident_cont(b: u8) -> bool {
    has(b, IDENT_CONT)
}

/// Dollar-quote tags may not contain `$` or start with a digit.
fn is_tag_cont(b: u8) -> bool {
    is_ident_start(b) || has(b, DIGIT)
}

/// Index of the first byte at or after `i` that fails `pred` (or the end of `sql`).
pub(super) fn scan_while(sql: &[u8], i: usize, pred: impl Fn(u8) -> bool) -> usize {
    match sql.get(i..) {
        Some(rest) => i + rest.iter().position(|&b| !pred(b)).unwrap_or(rest.len()),
        None => i,
    }
}

/// `i` is at `--`; returns the index of the line end (or the end of input).
pub(super) fn skip_line_comment(sql: &[u8], i: usize) -> usize {
    scan_while(sql, i, |b| b != b'\n' && b != b'\r')
}

/// `i` is at `/*`; returns the index just past the matching `*/` (comments nest), or `None`.
pub(super) fn skip_block_comment(sql: &[u8], i: usize) -> Option<usize> {
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
pub(super) fn is_hint(body: &[u8]) -> bool {
    body.trim_ascii().eq_ignore_ascii_case(b"pgsplit:primary")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Quote {
    /// `'...'` with `standard_conforming_strings = on`: only `''` escapes a quote.
    Standard,
    /// `E'...'` (or plain strings with `standard_conforming_strings = off`): `\x` escapes too.
    Escape,
    /// `B''`, `X''`, `U&''`: like `Standard`; backslashes carry no meaning for the extent.
    Bits,
}

/// `i` is just past the opening quote. Consumes the literal (and any continuation literals
/// separated by whitespace containing a newline) and returns the end index.
pub(super) fn string(
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
pub(super) fn quoted_identifier(sql: &[u8], quote: usize) -> Result<usize, LexError> {
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
pub(super) fn dollar(sql: &[u8], i: usize) -> Result<(Kind, usize), LexError> {
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
pub(super) fn number(sql: &[u8], i: usize) -> usize {
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
