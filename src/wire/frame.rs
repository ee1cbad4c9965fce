//! Framing of typed protocol messages: one type byte, a four-byte length that counts
//! itself, then the body. A frame keeps the original bytes so they can be forwarded as
//! they came.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

/// Why a buffer could not be cut into a message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is smaller than the four bytes it occupies.
    #[error("invalid message length {0}")]
    BadLength(u32),
    /// The declared length is above the configured limit.
    #[error("message of type '{tag}' declares {len} bytes, more than the limit of {limit}")]
    TooLarge { tag: char, len: u64, limit: usize },
}

/// One whole message: its type byte and its bytes (header included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub bytes: Bytes,
}

impl Frame {
    /// The message body, after the type byte and the length.
    pub fn body(&self) -> &[u8] {
        &self.bytes[5..]
    }
}

/// The total size (type byte included) of the message at the start of `buf`, once its
/// header has arrived. Checks the declared length against `limit` first.
pub fn peek_frame_len(buf: &[u8], limit: usize) -> Result<Option<usize>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength(len));
    }
    if len as u64 + 1 > limit as u64 {
        return Err(FrameError::TooLarge {
            tag: buf[0] as char,
            len: len as u64,
            limit,
        });
    }
    Ok(Some(len as usize + 1))
}

/// Cuts the first whole message off `buf`, if it has fully arrived. When only part of it
/// is there, reserves room for the rest (never more than the checked length) and returns
/// `None`.
pub fn split_frame(buf: &mut BytesMut, limit: usize) -> Result<Option<Frame>, FrameError> {
    let Some(total) = peek_frame_len(buf, limit)? else {
        return Ok(None);
    };
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let tag = buf[0];
    Ok(Some(Frame {
        tag,
        bytes: buf.split_to(total).freeze(),
    }))
}

/// Reads a C string (NUL-terminated) from the front of `body`, returning it and the rest.
pub fn cstr(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = body.iter().position(|&b| b == 0)?;
    Some((&body[..end], &body[end + 1..]))
}

/// Reads a big-endian i32 from the front of `body`.
pub fn int32(mut body: &[u8]) -> Option<(i32, &[u8])> {
    if body.len() < 4 {
        return None;
    }
    let v = body.get_i32();
    Some((v, body))
}

/// Reads a big-endian i16 from the front of `body`.
pub fn int16(mut body: &[u8]) -> Option<(i16, &[u8])> {
    if body.len() < 2 {
        return None;
    }
    let v = body.get_i16();
    Some((v, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn splits_whole_messages_and_waits_for_partial_ones() {
        let mut all = msg(b'Q', b"select 1\0");
        all.extend(msg(b'S', b""));
        let mut buf = BytesMut::from(&all[..all.len() - 2]);
        let f = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f.tag, b'Q');
        assert_eq!(f.body(), b"select 1\0");
        assert_eq!(split_frame(&mut buf, 1024).unwrap(), None);
        buf.extend_from_slice(&all[all.len() - 2..]);
        let f = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f.tag, b'S');
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_lengths_below_four() {
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert_eq!(split_frame(&mut buf, 1024), Err(FrameError::BadLength(3)));
    }

    #[test]
    fn rejects_oversized_before_allocating() {
        let mut buf = BytesMut::from(&[b'Q', 0x40, 0, 0, 0][..]);
        let cap = buf.capacity();
        assert!(matches!(
            split_frame(&mut buf, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn reads_cstrings_and_ints() {
        let (s, rest) = cstr(b"abc\0\0\0\0\x07").unwrap();
        assert_eq!(s, b"abc");
        assert_eq!(int32(rest).unwrap().0, 7);
        assert!(cstr(b"no terminator").is_none());
        assert!(int16(b"\x01").is_none());
    }
}
