//! MLLP codec: framing, reassembly, resynchronisation, maximum frame size.

use bytes::BytesMut;
use hl7::mllp::{MllpCodec, MllpError, MllpFrame, OVERSIZE_HEAD};
use tokio_util::codec::{Decoder, Encoder};

fn frame(content: &[u8]) -> Vec<u8> {
    let mut v = vec![0x0B];
    v.extend_from_slice(content);
    v.extend_from_slice(&[0x1C, 0x0D]);
    v
}

fn message(item: Option<MllpFrame>) -> Vec<u8> {
    match item {
        Some(MllpFrame::Message(b)) => b.to_vec(),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Feeds `chunks` one after another, collecting every item.
fn decode_all(codec: &mut MllpCodec, chunks: &[&[u8]]) -> Vec<MllpFrame> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
    }
    out
}

#[test]
fn frame_split_across_several_reads_is_reassembled() {
    let data = frame(b"MSH|^~\\&|A\rPID|1\r");
    let chunks: Vec<&[u8]> = data.chunks(1).collect();
    let items = decode_all(&mut MllpCodec::default(), &chunks);
    assert_eq!(
        items,
        vec![MllpFrame::Message("MSH|^~\\&|A\rPID|1\r".into())]
    );
    // Split right between the end block and its CR.
    let cut = data.len() - 1;
    let items = decode_all(&mut MllpCodec::default(), &[&data[..cut], &data[cut..]]);
    assert_eq!(items.len(), 1);
}

#[test]
fn two_frames_in_one_read_yield_two_messages() {
    let mut data = frame(b"first");
    data.extend(frame(b"second"));
    let mut codec = MllpCodec::default();
    let mut buf = BytesMut::from(&data[..]);
    assert_eq!(message(codec.decode(&mut buf).unwrap()), b"first");
    assert_eq!(message(codec.decode(&mut buf).unwrap()), b"second");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.is_empty());
}

#[test]
fn bytes_outside_frames_are_skipped() {
    let mut data = b"noise\r\n".to_vec();
    data.extend(frame(b"one"));
    data.extend_from_slice(b"\x00\x1c\x0djunk");
    data.extend(frame(b"two"));
    let items = decode_all(&mut MllpCodec::default(), &[&data]);
    assert_eq!(
        items,
        vec![
            MllpFrame::Message("one".into()),
            MllpFrame::Message("two".into())
        ]
    );
}

#[test]
fn end_block_without_carriage_return_is_content() {
    let items = decode_all(&mut MllpCodec::default(), &[b"\x0ba\x1cb\x1c\x0d"]);
    assert_eq!(items, vec![MllpFrame::Message("a\x1cb".into())]);
}

#[test]
fn start_block_inside_a_frame_drops_the_unfinished_frame() {
    let items = decode_all(
        &mut MllpCodec::default(),
        &[b"\x0bhalf a mess", b"age\x0bwhole\x1c\x0d"],
    );
    assert_eq!(items, vec![MllpFrame::Message("whole".into())]);
}

#[test]
fn oversize_frame_yields_oversize_then_resynchronises_on_the_next_start_block() {
    let big = vec![b'x'; 10_000];
    // Arriving in pieces: reported as soon as it passes the limit, rest skipped.
    let mut data = frame(&big);
    data.extend(frame(b"small"));
    let chunks: Vec<&[u8]> = data.chunks(700).collect();
    let items = decode_all(&mut MllpCodec::new(5_000), &chunks);
    assert_eq!(items.len(), 2, "{items:?}");
    let MllpFrame::Oversize { limit, head } = &items[0] else {
        panic!("expected Oversize, got {:?}", items[0]);
    };
    assert_eq!(*limit, 5_000);
    assert_eq!(head.len(), OVERSIZE_HEAD);
    assert_eq!(items[1], MllpFrame::Message("small".into()));
    // Arriving whole, with the next frame in the same read.
    let items = decode_all(&mut MllpCodec::new(5_000), &[&data]);
    assert!(matches!(items[0], MllpFrame::Oversize { .. }));
    assert_eq!(items[1], MllpFrame::Message("small".into()));
    assert_eq!(items.len(), 2);
}

#[test]
fn frame_of_exactly_the_maximum_size_is_accepted() {
    let items = decode_all(&mut MllpCodec::new(4), &[&frame(b"abcd"), &frame(b"abcde")]);
    assert_eq!(items[0], MllpFrame::Message("abcd".into()));
    assert!(matches!(items[1], MllpFrame::Oversize { limit: 4, .. }));
}

#[test]
fn end_of_stream_inside_a_frame_is_an_incomplete_frame_error() {
    let mut codec = MllpCodec::default();
    let mut buf = BytesMut::from(&b"\x0bMSH|partial"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(matches!(
        codec.decode_eof(&mut buf),
        Err(MllpError::IncompleteFrame { len: 11 })
    ));
    let mut buf = BytesMut::from(&b"trailing noise"[..]);
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
}

#[test]
fn encoder_wraps_messages_and_refuses_block_bytes() {
    let mut codec = MllpCodec::new(16);
    let mut dst = BytesMut::new();
    codec.encode("MSH|x\r", &mut dst).unwrap();
    assert_eq!(&dst[..], b"\x0bMSH|x\r\x1c\x0d");
    let decoded = decode_all(&mut MllpCodec::default(), &[&dst]);
    assert_eq!(decoded, vec![MllpFrame::Message("MSH|x\r".into())]);
    assert!(matches!(
        codec.encode(&b"a\x1cb"[..], &mut dst),
        Err(MllpError::ForbiddenByte {
            byte: 0x1C,
            offset: 1
        })
    ));
    assert!(matches!(
        codec.encode(vec![b'a'; 17], &mut dst),
        Err(MllpError::TooLarge { len: 17, limit: 16 })
    ));
}
