//! Unit tests for `crate::wire::message`.

use super::*;
use crate::wire::frame::split_frame;

#[test]
fn reads_and_rewrites_parse_and_bind() {
    let parse = parse_message(b"P_1", b"select $1", &[0, 1, 0, 0, 0, 23]);
    let p = read_parse(&parse[5..]).unwrap();
    assert_eq!(p.name, b"P_1");
    assert_eq!(p.query, b"select $1");
    assert_eq!(p.param_types, &[0, 1, 0, 0, 0, 23]);
    let renamed = parse_message(b"s7", p.query, p.param_types);
    assert_eq!(read_parse(&renamed[5..]).unwrap().name, b"s7");

    let bind = bind_message(b"", b"P_1", &[0, 0, 0, 0, 0, 0]);
    let (portal, stmt, rest) = read_bind(&bind[5..]).unwrap();
    assert_eq!((portal, stmt), (&b""[..], &b"P_1"[..]));
    let rebound = bind_message(portal, b"s7", rest);
    assert_eq!(read_bind(&rebound[5..]).unwrap().1, b"s7");
    assert_eq!(rebound.len(), bind.len() + 2 - 3);
}

#[test]
fn builds_frames_with_right_lengths() {
    let mut buf = BytesMut::new();
    auth_ok(&mut buf);
    ready_for_query(TxStatus::InTransaction, &mut buf);
    parse_complete(&mut buf);
    command_complete("DEALLOCATE", &mut buf);
    let f = split_frame(&mut buf, 1024).unwrap().unwrap();
    assert_eq!(f.tag, b'R');
    let f = split_frame(&mut buf, 1024).unwrap().unwrap();
    assert_eq!(read_ready(f.body()), Some(TxStatus::InTransaction));
    assert_eq!(split_frame(&mut buf, 1024).unwrap().unwrap().tag, b'1');
    let f = split_frame(&mut buf, 1024).unwrap().unwrap();
    assert_eq!(read_command_tag(f.body()), b"DEALLOCATE");
    assert!(buf.is_empty());
}

#[test]
fn rejects_truncated_bodies() {
    assert!(read_parse(b"name\0select").is_none());
    assert!(read_bind(b"portal").is_none());
    assert!(read_target(b"").is_none());
    assert!(read_ready(b"X").is_none());
}

#[test]
fn data_rows_read_back_with_nulls() {
    let mut buf = BytesMut::new();
    data_row(&[Some("0/1C"), None, Some("")], &mut buf);
    let f = split_frame(&mut buf, 1024).unwrap().unwrap();
    assert_eq!(
        read_data_row(f.body()),
        Some(vec![Some("0/1C"), None, Some("")])
    );
    assert_eq!(read_data_row(&[0, 1, 0, 0, 0, 9, b'x']), None, "truncated");
}

#[test]
fn bind_values_follow_the_format_code_rules() {
    // Two parameters (text 'ab', NULL), no parameter formats; one result format: binary.
    let mut rest = Vec::new();
    rest.extend_from_slice(&0u16.to_be_bytes());
    rest.extend_from_slice(&2u16.to_be_bytes());
    rest.extend_from_slice(&2i32.to_be_bytes());
    rest.extend_from_slice(b"ab");
    rest.extend_from_slice(&(-1i32).to_be_bytes());
    rest.extend_from_slice(&1u16.to_be_bytes());
    rest.extend_from_slice(&1u16.to_be_bytes());
    let values = read_bind_values(&rest).expect("well formed");
    assert_eq!(values.param(0), Some((Some(&b"ab"[..]), false)));
    assert_eq!(values.param(1), Some((None, false)));
    assert_eq!(values.param(2), None);
    assert!(values.result_binary(0) && values.result_binary(3));

    // Per-parameter formats: text then binary; no result formats.
    let mut rest = Vec::new();
    rest.extend_from_slice(&2u16.to_be_bytes());
    rest.extend_from_slice(&[0, 0, 0, 1]);
    rest.extend_from_slice(&2u16.to_be_bytes());
    rest.extend_from_slice(&1i32.to_be_bytes());
    rest.push(b'7');
    rest.extend_from_slice(&4i32.to_be_bytes());
    rest.extend_from_slice(&7i32.to_be_bytes());
    rest.extend_from_slice(&0u16.to_be_bytes());
    let values = read_bind_values(&rest).expect("well formed");
    assert_eq!(values.param(0), Some((Some(&b"7"[..]), false)));
    assert_eq!(values.param(1), Some((Some(&7i32.to_be_bytes()[..]), true)));
    assert!(!values.result_binary(0));

    // Truncated bodies are refused, not read past their end.
    for cut in 0..rest.len() - 2 {
        assert!(read_bind_values(&rest[..cut]).is_none(), "cut at {cut}");
    }
}
