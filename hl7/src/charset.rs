//! Character sets named in MSH-18 (HL7 table 0211) and their conversion to and from UTF-8.
//!
//! Source: HL7 v2.5.1 chapter 2, section 2.15.9.18 "MSH-18 Character Set" and table 0211.
//! The decoders are `encoding_rs` (WHATWG Encoding Standard). Two labels map to the WHATWG
//! superset of the ISO set, as browsers do: `8859/1` decodes as windows-1252 and `8859/9` as
//! windows-1254 (they differ only in 0x80..=0x9F, C1 controls that HL7 text never carries).
//! Not supported (error [`crate::ParseError::UnsupportedCharset`]): `UNICODE`, `UNICODE UTF-16`,
//! `UNICODE UTF-32`, `ISO IR14`, `ISO IR87`, `ISO IR159`, `CNS 11643-1992`: none of them is
//! ASCII-compatible, or encoding_rs has no decoder for it.

use encoding_rs::{DecoderResult, EncoderResult, Encoding};
use std::fmt;

/// A character set from HL7 table 0211 that this crate can read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Charset {
    /// `ASCII`: 7-bit; the HL7 default when MSH-18 is empty.
    Ascii,
    /// `8859/n`: ISO 8859 part `n` (1..=10, 13..=16). [`Charset::from_hl7_name`] only makes
    /// these; a hand-made part outside that list is read and written as ASCII.
    Iso8859(u8),
    /// `UNICODE UTF-8`.
    Utf8,
    /// `GB 18030-2000`.
    Gb18030,
    /// `KS X 1001` (as EUC-KR).
    KsX1001,
    /// `BIG-5`.
    Big5,
}

impl Charset {
    /// Looks up an MSH-18 value (HL7 table 0211), ignoring case and surrounding spaces.
    /// `None` for unknown or unsupported sets.
    pub fn from_hl7_name(name: &str) -> Option<Charset> {
        let name = name.trim().to_ascii_uppercase();
        match name.as_str() {
            "ASCII" => Some(Charset::Ascii),
            "UNICODE UTF-8" => Some(Charset::Utf8),
            "GB 18030-2000" => Some(Charset::Gb18030),
            "KS X 1001" => Some(Charset::KsX1001),
            "BIG-5" => Some(Charset::Big5),
            _ => {
                let part: u8 = name.strip_prefix("8859/")?.parse().ok()?;
                iso8859(part).map(|_| Charset::Iso8859(part))
            }
        }
    }

    /// The table 0211 name, as written into MSH-18.
    pub fn hl7_name(self) -> String {
        match self {
            Charset::Ascii => "ASCII".to_owned(),
            Charset::Iso8859(n) => format!("8859/{n}"),
            Charset::Utf8 => "UNICODE UTF-8".to_owned(),
            Charset::Gb18030 => "GB 18030-2000".to_owned(),
            Charset::KsX1001 => "KS X 1001".to_owned(),
            Charset::Big5 => "BIG-5".to_owned(),
        }
    }

    /// The encoding_rs encoding, `None` for ASCII (handled by hand, strictly 7-bit).
    fn encoding(self) -> Option<&'static Encoding> {
        match self {
            Charset::Ascii => None,
            Charset::Iso8859(n) => iso8859(n),
            Charset::Utf8 => Some(encoding_rs::UTF_8),
            Charset::Gb18030 => Some(encoding_rs::GB18030),
            Charset::KsX1001 => Some(encoding_rs::EUC_KR),
            Charset::Big5 => Some(encoding_rs::BIG5),
        }
    }

    /// Decodes `bytes` to UTF-8. Error: the byte offset of the first byte that is not valid in
    /// this set (for ASCII: any byte above 0x7F).
    pub fn decode(self, bytes: &[u8]) -> Result<String, usize> {
        match self.encoding() {
            None => match bytes.iter().position(|b| !b.is_ascii()) {
                Some(offset) => Err(offset),
                // All ASCII, so valid UTF-8.
                None => Ok(String::from_utf8_lossy(bytes).into_owned()),
            },
            Some(enc) if enc == encoding_rs::UTF_8 => std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|e| e.valid_up_to()),
            Some(enc) => decode_strict(enc, bytes),
        }
    }

    /// Decodes `bytes`, replacing invalid sequences with U+FFFD. Used for `\Xhh\` escapes,
    /// whose bytes are in the message's character set.
    pub fn decode_lossy(self, bytes: &[u8]) -> String {
        match self.encoding() {
            None => bytes
                .iter()
                .map(|&b| {
                    if b.is_ascii() {
                        char::from(b)
                    } else {
                        '\u{FFFD}'
                    }
                })
                .collect(),
            Some(enc) => enc.decode_without_bom_handling(bytes).0.into_owned(),
        }
    }

    /// Encodes `text` in this set; characters it cannot represent become `?`.
    pub fn encode(self, text: &str) -> Vec<u8> {
        let Some(enc) = self.encoding() else {
            return text
                .chars()
                .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
                .collect();
        };
        if enc == encoding_rs::UTF_8 {
            return text.as_bytes().to_vec();
        }
        let mut encoder = enc.new_encoder();
        let mut out = Vec::with_capacity(text.len() + 16);
        let mut rest = text;
        loop {
            let room = encoder
                .max_buffer_length_from_utf8_without_replacement(rest.len())
                .unwrap_or(rest.len() * 4 + 16);
            out.reserve(room);
            let (result, read) =
                encoder.encode_from_utf8_to_vec_without_replacement(rest, &mut out, true);
            rest = &rest[read..];
            match result {
                EncoderResult::InputEmpty => return out,
                EncoderResult::OutputFull => {}
                EncoderResult::Unmappable(_) => out.push(b'?'),
            }
        }
    }
}

impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hl7_name())
    }
}

/// ISO 8859 parts that encoding_rs can decode (1 and 9 through their windows supersets).
fn iso8859(part: u8) -> Option<&'static Encoding> {
    Some(match part {
        1 => encoding_rs::WINDOWS_1252,
        2 => encoding_rs::ISO_8859_2,
        3 => encoding_rs::ISO_8859_3,
        4 => encoding_rs::ISO_8859_4,
        5 => encoding_rs::ISO_8859_5,
        6 => encoding_rs::ISO_8859_6,
        7 => encoding_rs::ISO_8859_7,
        8 => encoding_rs::ISO_8859_8,
        9 => encoding_rs::WINDOWS_1254,
        10 => encoding_rs::ISO_8859_10,
        13 => encoding_rs::ISO_8859_13,
        14 => encoding_rs::ISO_8859_14,
        15 => encoding_rs::ISO_8859_15,
        16 => encoding_rs::ISO_8859_16,
        _ => return None,
    })
}

/// Decodes without replacement, reporting the offset of the first malformed byte.
fn decode_strict(enc: &'static Encoding, bytes: &[u8]) -> Result<String, usize> {
    let mut decoder = enc.new_decoder_without_bom_handling();
    let cap = decoder
        .max_utf8_buffer_length_without_replacement(bytes.len())
        .unwrap_or(bytes.len() * 3 + 16);
    let mut out = String::with_capacity(cap);
    let mut consumed = 0;
    loop {
        let (result, read) =
            decoder.decode_to_string_without_replacement(&bytes[consumed..], &mut out, true);
        consumed += read;
        match result {
            DecoderResult::InputEmpty => return Ok(out),
            DecoderResult::OutputFull => out.reserve(bytes.len() - consumed + 16),
            DecoderResult::Malformed(bad, extra) => {
                return Err(consumed.saturating_sub(usize::from(bad) + usize::from(extra)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_0211_names_map_to_charsets() {
        assert_eq!(Charset::from_hl7_name("8859/1"), Some(Charset::Iso8859(1)));
        assert_eq!(
            Charset::from_hl7_name(" unicode utf-8 "),
            Some(Charset::Utf8)
        );
        assert_eq!(
            Charset::from_hl7_name("8859/15"),
            Some(Charset::Iso8859(15))
        );
        assert_eq!(Charset::from_hl7_name("8859/12"), None);
        assert_eq!(Charset::from_hl7_name("UNICODE UTF-16"), None);
        assert_eq!(Charset::from_hl7_name("EBCDIC"), None);
    }

    #[test]
    fn latin_and_cyrillic_bytes_decode_and_encode_back() {
        assert_eq!(Charset::Iso8859(1).decode(b"Jos\xe9").unwrap(), "José");
        assert_eq!(
            Charset::Iso8859(5).decode(b"\xb8\xd2\xd0\xdd").unwrap(),
            "Иван"
        );
        assert_eq!(Charset::Iso8859(1).encode("José €"), b"Jos\xe9 \x80");
        assert_eq!(Charset::Iso8859(2).encode("Ωx"), b"?x");
        assert_eq!(Charset::Ascii.encode("é"), b"?");
    }

    #[test]
    fn invalid_bytes_report_their_offset() {
        assert_eq!(Charset::Ascii.decode(b"abc\xe9"), Err(3));
        assert_eq!(Charset::Utf8.decode(b"ab\xff"), Err(2));
        assert_eq!(Charset::Iso8859(3).decode(b"ab\xa5cd"), Err(2));
    }
}
