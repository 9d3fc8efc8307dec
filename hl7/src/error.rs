//! Parse errors. Each carries where it happened (segment index and ID, or MSH field) when
//! that is known; [`crate::ack`] maps them to MSA-1 and ERR-2/ERR-3 in one place
//! ([`crate::ack::AckCode::for_parse_error`], [`crate::ack::ErrorDetail::from_parse_error`]).

use crate::header::Header;

/// Why [`crate::parse`] refused its input. Malformed input always ends here, never in a panic.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Nothing but an optional BOM and line breaks.
    #[error("input is empty")]
    Empty,

    /// The first segment is not MSH (HL7 v2.5.1 section 2.5.2: a message starts with MSH).
    #[error("input does not start with an MSH segment")]
    MissingMsh,

    /// MSH-1 is missing, alphanumeric, a space, a control or a non-ASCII byte.
    #[error("MSH-1: invalid field separator 0x{found:02X}")]
    InvalidFieldSeparator {
        /// The byte after `MSH`.
        found: u8,
    },

    /// MSH-2 is not 4 or 5 distinct printable, non-alphanumeric ASCII characters.
    #[error("MSH-2: invalid encoding characters {found:?}: {reason}")]
    InvalidEncodingCharacters {
        /// MSH-2 as found (lossy UTF-8).
        found: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// MSH-18 names a character set that is unknown or not supported (see [`crate::Charset`]).
    #[error("MSH-18: unsupported character set {0:?}")]
    UnsupportedCharset(String),

    /// The bytes are not valid in the message's character set (MSH-18, UTF-8 when empty).
    #[error("byte {offset}: not valid {charset} text")]
    InvalidText {
        /// Name of the character set used (table 0211 name, or "UTF-8").
        charset: String,
        /// Offset of the first bad byte in the input (after any BOM).
        offset: usize,
    },

    /// A segment does not start with a 3-character ID (`[A-Z][A-Z0-9]{2}`) followed by the
    /// field separator or the end of the segment.
    #[error("segment {index}: invalid segment ID in {found:?}")]
    InvalidSegmentId {
        /// 1-based index of the segment in the message.
        index: usize,
        /// The start of the segment (at most 16 characters).
        found: String,
    },

    /// A second MSH: the input holds several messages; see [`crate::split_messages`].
    #[error("segment {index}: second MSH segment (use split_messages for files and batches)")]
    MultipleMessages {
        /// 1-based index of the second MSH.
        index: usize,
    },

    /// A required MSH field is empty: MSH-9 (message type) or MSH-12 (version ID).
    #[error("{segment}-{field} ({name}) is required but empty")]
    MissingField {
        /// Segment ID (`"MSH"`).
        segment: &'static str,
        /// Field position.
        field: usize,
        /// Field name from the standard.
        name: &'static str,
    },

    /// MSH-12 holds a version outside 2.3..=2.8.2. The header is kept so that the caller can
    /// still answer with an AR (ERR-3 = 203) that echoes MSH-10.
    #[error("MSH-12: unsupported HL7 version {version:?} (2.3 to 2.8.2 are accepted)")]
    UnsupportedVersion {
        /// MSH-12.1 as found.
        version: String,
        /// The message header (MSH), parsed.
        header: Box<Header>,
    },
}
