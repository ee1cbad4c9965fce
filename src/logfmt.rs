//! How log lines are written: every field value, the message included, has its control
//! characters escaped (`\n`, `\r`, `\u{1b}`...), so a name, an SQL text or an error from a
//! client cannot forge log lines or drive a terminal. One place for it: the binary and the
//! tests install [`EscapedFields`] as the log formatter's field formatter, and no call site
//! has to remember to escape.

use std::fmt::{self, Write};

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, FormatFields, Writer};

/// The default `key=value` field format, with control characters escaped.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut escaping = Escaping(&mut writer);
        DefaultFields::new().format_fields(Writer::new(&mut escaping), fields)
    }
}

/// Passes text on with control characters (and the Unicode line separators) escaped.
struct Escaping<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                write!(self.0, "{}", c.escape_default())?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn client_text_cannot_add_lines_or_terminal_codes() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(EscapedFields)
            .finish();
        let user = "evil\nINFO pgsplit: admin logged in\r\u{1b}[2J\u{2028}";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(%user, error = %format!("no user \"{user}\""), "refused {user}");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(text.ends_with('\n'));
        assert!(!text.contains(['\r', '\u{1b}', '\u{2028}']), "{text}");
        assert!(
            text.contains(r"user=evil\nINFO pgsplit: admin logged in\r\u{1b}[2J\u{2028}"),
            "{text}"
        );
        assert!(text.contains(r#"refused evil\nINFO"#), "{text}");
        assert!(text.contains(r#"error=no user "evil\nINFO"#), "{text}");
    }
}
