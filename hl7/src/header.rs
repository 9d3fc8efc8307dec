//! The message header (MSH) on its own: what an acknowledgment needs from the message it
//! answers (MSH-3..6 applications and facilities, MSH-9 type, MSH-10 control ID, MSH-11
//! processing ID, MSH-12 version, MSH-18 character set).
//!
//! A header comes from a parsed message ([`crate::Message::header`]), from an
//! [`crate::ParseError::UnsupportedVersion`], or, for input that could not be parsed at all,
//! from [`Header::sniff`], which reads what it can and never fails on garbage.
//! Source: HL7 v2.5.1 chapter 2, section 2.15.9 "MSH - message header segment".

use crate::charset::Charset;
use crate::delimiters::Delimiters;
use crate::escape::{escape, unescape};
use crate::version::Version;
use std::fmt;

/// MSH fields as ER7 text (escapes kept) in the message's own delimiters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    delimiters: Delimiters,
    charset: Charset,
    /// `fields[n - 1]` is MSH-n: MSH-1 the field separator, MSH-2 the encoding characters.
    fields: Vec<String>,
}

/// MSH-9 "Message Type" (MSG): message code, trigger event, message structure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// MSH-9.1, e.g. `ADT` (table 0076).
    pub code: String,
    /// MSH-9.2, e.g. `A01` (table 0003).
    pub trigger: String,
    /// MSH-9.3, e.g. `ADT_A01` (table 0354; absent before v2.3.1).
    pub structure: String,
}

impl fmt::Display for MessageType {
    /// `ADT^A01^ADT_A01`, trailing empty components left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [&self.code, &self.trigger, &self.structure];
        let last = parts.iter().rposition(|p| !p.is_empty()).unwrap_or(0);
        for (i, p) in parts[..=last].iter().enumerate() {
            if i > 0 {
                f.write_str("^")?;
            }
            f.write_str(p)?;
        }
        Ok(())
    }
}

/// Most bytes of one field kept by [`Header::sniff`].
const SNIFF_FIELD_MAX: usize = 256;

impl Header {
    /// Builds a header from MSH field texts (`fields[0]` = MSH-1). Crate-internal: fields must
    /// already be valid ER7 for `delimiters`.
    pub(crate) fn new(delimiters: Delimiters, charset: Charset, fields: Vec<String>) -> Header {
        Header {
            delimiters,
            charset,
            fields,
        }
    }

    /// A header with the default delimiters, no fields besides MSH-1/MSH-2, and UTF-8.
    /// Used for negative acknowledgments when nothing could be read.
    pub fn empty() -> Header {
        let d = Delimiters::default();
        Header::new(
            d,
            Charset::Utf8,
            vec![d.field().to_string(), d.encoding_characters()],
        )
    }

    /// Best effort for input that [`crate::parse`] refused: finds the first `MSH`, reads its
    /// line (up to the first CR or LF) and splits it on the byte after `MSH`. When MSH-1/MSH-2
    /// are valid they are kept; otherwise the default `|^~\&` is used and every field text is
    /// escaped for it. Control characters are hex-escaped, invalid UTF-8 is replaced and each
    /// field is cut to 256 bytes, so the result is always safe to copy into an ACK.
    /// `None` when there is no `MSH` followed by at least one byte.
    pub fn sniff(input: &[u8]) -> Option<Header> {
        let start = input.windows(3).position(|w| w == b"MSH")?;
        let line = &input[start..];
        let end = line
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(line.len());
        let line = &line[..end];
        let &sep = line.get(3)?;
        let mut parts = line[4..].split(|&b| b == sep);
        let msh2 = parts.next().unwrap_or_default();
        let (delimiters, trusted) = match Delimiters::from_msh(sep, msh2) {
            Ok(d) => (d, true),
            Err(_) => (Delimiters::default(), false),
        };
        let mut fields = vec![
            delimiters.field().to_string(),
            delimiters.encoding_characters(),
        ];
        for part in parts {
            let part = &part[..part.len().min(SNIFF_FIELD_MAX)];
            let text = String::from_utf8_lossy(part);
            let text = if trusted {
                escape_controls(&text, &delimiters)
            } else {
                escape(&text, &delimiters)
            };
            fields.push(text);
        }
        Some(Header::new(delimiters, Charset::Utf8, fields))
    }

    /// The delimiters of the message (MSH-1, MSH-2).
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// The character set the message was read in (MSH-18; UTF-8 when MSH-18 is empty).
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// MSH-`n` as ER7 text with escapes, all repetitions; `""` when absent.
    pub fn field(&self, n: usize) -> &str {
        n.checked_sub(1)
            .and_then(|i| self.fields.get(i))
            .map_or("", String::as_str)
    }

    /// Component `c` (1-based) of the first repetition of MSH-`n`, escapes kept.
    pub fn component(&self, n: usize, c: usize) -> &str {
        let d = &self.delimiters;
        let first_rep = self.field(n).split(d.repetition()).next().unwrap_or("");
        c.checked_sub(1)
            .and_then(|i| first_rep.split(d.component()).nth(i))
            .unwrap_or("")
    }

    fn unescaped(&self, raw: &str) -> String {
        unescape(raw, &self.delimiters, self.charset).into_owned()
    }

    /// MSH-9 "Message Type", unescaped.
    pub fn message_type(&self) -> MessageType {
        MessageType {
            code: self.unescaped(self.component(9, 1)),
            trigger: self.unescaped(self.component(9, 2)),
            structure: self.unescaped(self.component(9, 3)),
        }
    }

    /// MSH-10 "Message Control ID", unescaped (`""` when absent).
    pub fn control_id(&self) -> String {
        self.unescaped(self.field(10))
    }

    /// MSH-12.1 "Version ID" as written (e.g. `2.5.1`).
    pub fn version_id(&self) -> &str {
        self.component(12, 1).trim()
    }

    /// MSH-12 as a supported [`Version`], `None` when absent or unsupported.
    pub fn version(&self) -> Option<Version> {
        Version::parse(self.version_id())
    }
}

/// Replaces control characters with `\Xhh\` (delimiters left alone: the text is ER7 already).
fn escape_controls(text: &str, d: &Delimiters) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_control() {
            out.push_str(&escape(&c.to_string(), d));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_reads_a_header_with_valid_delimiters() {
        let h = Header::sniff(b"\0\0MSH|^~\\&|APP|FAC|||x||ADT^A01|ID\x01 9|P|2.2\r???").unwrap();
        assert_eq!(h.field(3), "APP");
        assert_eq!(h.component(9, 2), "A01");
        assert_eq!(h.field(10), "ID\\X01\\ 9");
        assert_eq!(h.control_id(), "ID\u{1} 9");
        assert_eq!(h.version_id(), "2.2");
        assert_eq!(h.version(), None);
    }

    #[test]
    fn sniff_escapes_fields_when_delimiters_are_invalid() {
        let h = Header::sniff(b"MSH|0000|A^B||||||00|ID~1|P|2.7").unwrap();
        assert_eq!(h.delimiters(), &Delimiters::default());
        assert_eq!(h.field(3), "A\\S\\B");
        assert_eq!(h.control_id(), "ID~1");
        assert!(Header::sniff(b"garbage").is_none());
        assert!(Header::sniff(b"MSH").is_none());
    }

    #[test]
    fn message_type_display_drops_trailing_empty_components() {
        let t = MessageType {
            code: "ACK".into(),
            ..Default::default()
        };
        assert_eq!(t.to_string(), "ACK");
    }
}
