//! Reading original SQL text (not canonical text) with the scanner: its tokens, its
//! statements, the short commands pgsplit answers itself, and dotted names.

use super::lexemes::{is_ident_cont, is_ident_start, is_space, scan_while};
use super::{Kind, Lexeme, Lexer, Token};

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
    if !starts_with_any_kw(sql, heads) {
        return None;
    }
    let mut toks = source_tokens(sql);
    let head = toks.next()?;
    let mut rest: Vec<Token> = toks.take(max + 1).collect();
    if rest.len() > max {
        return None;
    }
    while rest.last().is_some_and(|t| t.kind == Kind::Punct(b';')) {
        rest.pop();
    }
    Some((head, rest))
}

/// Whether the first token of `sql` (as [`source_tokens`] reads it) is one of the unquoted
/// keywords `kws`, in any case. Every statement pgsplit receives is asked this a few times,
/// so the usual start (whitespace, then a word) is read here without the scanner.
pub(crate) fn starts_with_any_kw(sql: &[u8], kws: &[&str]) -> bool {
    match first_word(sql) {
        Some(word) => kws
            .iter()
            .any(|kw| word.eq_ignore_ascii_case(kw.as_bytes())),
        None => false,
    }
}

/// The first token of `sql` when it is a word (a keyword or unquoted identifier), as
/// [`source_tokens`] reads it. Text that starts with a comment goes through the scanner;
/// so does a one-letter word, which may be a literal's prefix (`E'...'`, `U&'...'`).
fn first_word(sql: &[u8]) -> Option<&[u8]> {
    let start = scan_while(sql, 0, is_space);
    let first = *sql.get(start)?;
    if !is_ident_start(first) {
        if first == b'-' || first == b'/' {
            return first_word_scanned(sql);
        }
        return None;
    }
    let end = scan_while(sql, start + 1, is_ident_cont);
    if end - start == 1 {
        return first_word_scanned(sql);
    }
    sql.get(start..end)
}

/// [`first_word`] by the scanner.
fn first_word_scanned(sql: &[u8]) -> Option<&[u8]> {
    source_tokens(sql)
        .next()
        .filter(|t| t.kind == Kind::Word)
        .map(|t| t.text(sql))
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
