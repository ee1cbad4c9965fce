//! Tokens: what a token is, and the tokeniser of canonical text, which the keyword-level
//! statement rules (`statement/`) read.

use std::borrow::Cow;

use super::lexemes::{is_ident_cont, is_ident_start, scan_while};

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
