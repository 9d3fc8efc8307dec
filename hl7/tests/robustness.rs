//! Deterministic mutation testing: thousands of damaged messages never panic, every refusal
//! gives a NAK our parser can read, every accepted message gives an ACK it can read, and
//! ER7 output parses back to the same message.

use bytes::BytesMut;
use hl7::mllp::{MllpCodec, MllpFrame};
use hl7::{Charset, ParseError, parse, split_messages};
use tokio_util::codec::Decoder;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SEEDS: [&[u8]; 4] = [
    b"MSH|^~\\&|SEND|FAC|RECV|FAC|20240101||ADT^A01^ADT_A01|C1|P|2.5.1\rEVN|A01\rPID|1||1^^^H^MR~2||Doe\\S\\X^Jo&n||1980\rZZZ|a\\X41\\b|\\.br\\\r",
    b"MSH|^~\\&#|A|B|C|D|2024||ORU^R01^ORU_R01|C2|T|2.7|||||DEU|8859/1\rOBX|1|ST|x||M\xfcller#\\P\\\r",
    b"\xEF\xBB\xBFMSH^~|\\&^S^F^R^F^2012^^ADT~A24^X1^T^2.4\nPID^1^^11~22|33\r\n",
    b"FHS|^~\\&|F\nBHS|^~\\&\nMSH|^~\\&|A|B|C|D|1||ACK^A01|9|P|2.3\nMSA|AA|1\nBTS|1\nFTS|1\n",
];

const PALETTE: &[u8] = b"|^~\\&#\r\n\x0b\x1c\x00\xff\xc3MSHX0.9 ";

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        let byte = if rng.below(3) == 0 {
            rng.next() as u8
        } else {
            PALETTE[rng.below(PALETTE.len())]
        };
        match rng.below(5) {
            0 if at < v.len() => v[at] = byte,
            1 => v.insert(at, byte),
            2 if at < v.len() => {
                v.remove(at);
            }
            3 => v.truncate(at),
            _ => {
                let from = rng.below(v.len());
                let slice: Vec<u8> = v[from..v.len().min(from + 12)].to_vec();
                let at = at.min(v.len());
                v.splice(at..at, slice);
            }
        }
    }
    v
}

fn check(input: &[u8]) {
    match parse(input) {
        Ok(msg) => {
            for loc in [
                "MSH-9.2",
                "PID-3[2].1",
                "PID-5.2.2",
                "OBX-5",
                "ZZZ-1",
                "MSA-1",
            ] {
                let _ = msg.get(loc);
            }
            let ack = hl7::ack::accept(&msg);
            let back = parse(&ack.to_bytes()).expect("ACK of an accepted message parses");
            assert_eq!(
                back.get("MSA-2").as_deref(),
                Some(msg.control_id().as_str())
            );
            if msg.charset() == Charset::Utf8 {
                assert_eq!(
                    parse(msg.to_er7().as_bytes()).unwrap(),
                    msg,
                    "ER7 round trip"
                );
            }
        }
        Err(e) => {
            let nak = hl7::ack::reject(input, &e);
            match parse(&nak.to_bytes()) {
                Ok(back) => assert!(matches!(back.get("MSA-1").as_deref(), Some("AE" | "AR"))),
                Err(ParseError::UnsupportedVersion { .. }) => {}
                Err(other) => panic!(
                    "NAK {:?} for {input:?} does not parse: {other}",
                    nak.as_str()
                ),
            }
        }
    }
    for part in split_messages(input) {
        let _ = parse(part);
    }
}

#[test]
fn mutated_messages_never_panic_and_always_get_a_readable_answer() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..20_000 {
        let seed = SEEDS[i % SEEDS.len()];
        check(&mutate(&mut rng, seed));
    }
}

#[test]
fn random_byte_streams_never_break_the_mllp_decoder() {
    let mut rng = Rng(42);
    for _ in 0..2_000 {
        let len = rng.below(600);
        let data: Vec<u8> = (0..len)
            .map(|_| match rng.below(6) {
                0 => 0x0B,
                1 => 0x1C,
                2 => 0x0D,
                _ => rng.next() as u8,
            })
            .collect();
        let mut codec = MllpCodec::new(rng.below(64) + 1);
        let mut buf = BytesMut::new();
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = (rng.below(40) + 1).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                if let MllpFrame::Message(m) = item {
                    assert!(m.len() <= codec.max_frame());
                    assert!(!m.contains(&0x0B));
                }
            }
        }
        let _ = codec.decode_eof(&mut buf);
    }
}
