//! Acknowledgments: original-mode ACK (AA/AE/AR) and enhanced-mode commit ACK (CA/CE/CR),
//! plus negative acknowledgments for input that could not be parsed.
//!
//! Source: HL7 v2.5.1 chapter 2, sections 2.9 "Message processing rules", 2.14.1 "ACK",
//! 2.15.8 "MSA" (MSA-1 acknowledgment code, table 0008; MSA-2 message control ID) and
//! 2.15.5 "ERR" (ERR-2 error location, ERR-3 HL7 error code from table 0357, ERR-4 severity
//! from table 0516, ERR-8 user message). For versions before 2.5 the error goes into ERR-1
//! (ELD: `SEG^seq^field^code&text&HL70357`) and the text into MSA-3 instead.
//!
//! The ACK's MSH swaps sender and receiver (MSH-3/4 ↔ MSH-5/6), gets a new MSH-10, keeps the
//! encoding characters, MSH-11 (`P` when empty) and MSH-18 of the message it answers, and
//! MSH-12 when it names a real HL7 version (2.1 to 2.8.2; otherwise `2.5.1`). MSH-9 is
//! `ACK^<trigger>^ACK` (`ACK^<trigger>` up to v2.3, which had no message structure).
//! MSA-2 is the incoming MSH-10 as written. Text we add is escaped with the message's
//! delimiters; [`Header::sniff`] makes sniffed fields safe to copy.

use crate::charset::Charset;
use crate::error::ParseError;
use crate::escape::escape;
use crate::header::Header;
use crate::message::Message;
use crate::version::Version;
use chrono::{DateTime, FixedOffset};
use std::sync::atomic::{AtomicU32, Ordering};

/// MSA-1 "Acknowledgment Code" (table 0008).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Original mode: application accept.
    AA,
    /// Original mode: application error.
    AE,
    /// Original mode: application reject.
    AR,
    /// Enhanced mode: commit accept.
    CA,
    /// Enhanced mode: commit error.
    CE,
    /// Enhanced mode: commit reject.
    CR,
}

impl AckCode {
    /// The two-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    /// True for the error and reject codes (AE, AR, CE, CR).
    pub fn is_negative(self) -> bool {
        !matches!(self, AckCode::AA | AckCode::CA)
    }

    /// The original-mode answer to a parse error: AR when MSH-12 or MSH-18 is not acceptable
    /// (section 2.9.2: "unacceptable MSH-12 ..."), AE for every other malformed message.
    pub fn for_parse_error(error: &ParseError) -> AckCode {
        match error {
            ParseError::UnsupportedVersion { .. } | ParseError::UnsupportedCharset(_) => {
                AckCode::AR
            }
            _ => AckCode::AE,
        }
    }
}

/// ERR-3 "HL7 Error Code" (table 0357).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 0: Message accepted.
    MessageAccepted,
    /// 100: Segment sequence error.
    SegmentSequenceError,
    /// 101: Required field missing.
    RequiredFieldMissing,
    /// 102: Data type error.
    DataTypeError,
    /// 103: Table value not found.
    TableValueNotFound,
    /// 200: Unsupported message type.
    UnsupportedMessageType,
    /// 201: Unsupported event code.
    UnsupportedEventCode,
    /// 202: Unsupported processing id.
    UnsupportedProcessingId,
    /// 203: Unsupported version id.
    UnsupportedVersionId,
    /// 204: Unknown key identifier.
    UnknownKeyIdentifier,
    /// 205: Duplicate key identifier.
    DuplicateKeyIdentifier,
    /// 206: Application record locked.
    ApplicationRecordLocked,
    /// 207: Application internal error.
    ApplicationInternalError,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::MessageAccepted => 0,
            ErrorCode::SegmentSequenceError => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataTypeError => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEventCode => 201,
            ErrorCode::UnsupportedProcessingId => 202,
            ErrorCode::UnsupportedVersionId => 203,
            ErrorCode::UnknownKeyIdentifier => 204,
            ErrorCode::DuplicateKeyIdentifier => 205,
            ErrorCode::ApplicationRecordLocked => 206,
            ErrorCode::ApplicationInternalError => 207,
        }
    }

    /// The description from table 0357.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::MessageAccepted => "Message accepted",
            ErrorCode::SegmentSequenceError => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataTypeError => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::UnknownKeyIdentifier => "Unknown key identifier",
            ErrorCode::DuplicateKeyIdentifier => "Duplicate key identifier",
            ErrorCode::ApplicationRecordLocked => "Application record locked",
            ErrorCode::ApplicationInternalError => "Application internal error",
        }
    }
}

/// ERR-4 "Severity" (table 0516).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// E: error, the message was not (fully) processed.
    Error,
    /// W: warning.
    Warning,
    /// I: information.
    Information,
    /// F: fatal error (v2.7+).
    Fatal,
}

impl Severity {
    /// The one-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "E",
            Severity::Warning => "W",
            Severity::Information => "I",
            Severity::Fatal => "F",
        }
    }
}

/// ERR-2 "Error Location" (ERL), written `SEG^sequence^field`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ErrorLocation {
    /// Segment ID, e.g. `PID`.
    pub segment: String,
    /// Occurrence of that segment in the message (1-based).
    pub sequence: usize,
    /// Field position, `None` for the whole segment.
    pub field: Option<usize>,
}

/// One ERR segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorDetail {
    /// ERR-3.
    pub code: ErrorCode,
    /// ERR-4.
    pub severity: Severity,
    /// ERR-2.
    pub location: Option<ErrorLocation>,
    /// ERR-8 (MSA-3 before v2.5).
    pub message: Option<String>,
}

impl ErrorDetail {
    /// An error with severity E, no location and no message.
    pub fn new(code: ErrorCode) -> ErrorDetail {
        ErrorDetail {
            code,
            severity: Severity::Error,
            location: None,
            message: None,
        }
    }

    /// Sets ERR-2 to `segment^sequence^field`.
    pub fn at(mut self, segment: &str, sequence: usize, field: Option<usize>) -> ErrorDetail {
        self.location = Some(ErrorLocation {
            segment: segment.to_owned(),
            sequence,
            field,
        });
        self
    }

    /// Sets ERR-8, the user message.
    pub fn message(mut self, text: impl Into<String>) -> ErrorDetail {
        self.message = Some(text.into());
        self
    }

    /// Sets ERR-4.
    pub fn severity(mut self, severity: Severity) -> ErrorDetail {
        self.severity = severity;
        self
    }

    /// The ERR content for a parse error: code, location (MSH field or none) and the error's
    /// text as user message.
    pub fn from_parse_error(error: &ParseError) -> ErrorDetail {
        use ParseError as E;
        let (code, at) = match error {
            E::InvalidText { .. } => (ErrorCode::DataTypeError, None),
            E::Empty | E::MissingMsh => (ErrorCode::SegmentSequenceError, Some(("MSH", 1, None))),
            E::InvalidSegmentId { .. } => (ErrorCode::SegmentSequenceError, None),
            E::MultipleMessages { .. } => (ErrorCode::SegmentSequenceError, Some(("MSH", 2, None))),
            E::InvalidFieldSeparator { .. } => {
                (ErrorCode::DataTypeError, Some(("MSH", 1, Some(1))))
            }
            E::InvalidEncodingCharacters { .. } => {
                (ErrorCode::DataTypeError, Some(("MSH", 1, Some(2))))
            }
            E::UnsupportedCharset(_) => (ErrorCode::TableValueNotFound, Some(("MSH", 1, Some(18)))),
            E::MissingField { segment, field, .. } => (
                ErrorCode::RequiredFieldMissing,
                Some((*segment, 1, Some(*field))),
            ),
            E::UnsupportedVersion { .. } => {
                (ErrorCode::UnsupportedVersionId, Some(("MSH", 1, Some(12))))
            }
        };
        let detail = ErrorDetail::new(code).message(error.to_string());
        match at {
            Some((segment, sequence, field)) => detail.at(segment, sequence, field),
            None => detail,
        }
    }
}

/// A built acknowledgment: ER7 text with CR segment terminators, and the character set to
/// send it in (that of the message answered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    text: String,
    charset: Charset,
}

impl Ack {
    /// The ER7 text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The ER7 text, owned.
    pub fn into_string(self) -> String {
        self.text
    }

    /// The character set of MSH-18 (UTF-8 when the message answered had none).
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// The bytes to send (e.g. through [`crate::mllp::MllpCodec`]), encoded in
    /// [`Ack::charset`]; characters it cannot hold become `?`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.charset.encode(&self.text)
    }
}

/// Builds an ACK for a message or header.
///
/// ```
/// use hl7::ack::{AckBuilder, AckCode, ErrorCode, ErrorDetail};
/// let msg = hl7::parse(b"MSH|^~\\&|LAB|H1|EHR|H2|20240101||ORU^R01^ORU_R01|42|P|2.5.1\r").unwrap();
/// let ack = AckBuilder::new(AckCode::AE)
///     .control_id("A1")
///     .error(ErrorDetail::new(ErrorCode::RequiredFieldMissing).at("PID", 1, Some(3)))
///     .build(&msg);
/// assert!(ack.as_str().contains("\rMSA|AE|42\rERR||PID^1^3|101^Required field missing^HL70357|E\r"));
/// ```
#[derive(Clone, Debug)]
pub struct AckBuilder {
    code: AckCode,
    control_id: Option<String>,
    timestamp: Option<DateTime<FixedOffset>>,
    errors: Vec<ErrorDetail>,
}

impl AckBuilder {
    /// An acknowledgment with MSA-1 = `code`.
    pub fn new(code: AckCode) -> AckBuilder {
        AckBuilder {
            code,
            control_id: None,
            timestamp: None,
            errors: Vec::new(),
        }
    }

    /// MSH-10 of the ACK. Default: local time `yyyyMMddHHmmss` and a 6-digit process-wide
    /// counter (20 characters, the v2.5 maximum length).
    pub fn control_id(mut self, id: impl Into<String>) -> AckBuilder {
        self.control_id = Some(id.into());
        self
    }

    /// MSH-7 of the ACK. Default: now, local time.
    pub fn timestamp(mut self, at: DateTime<FixedOffset>) -> AckBuilder {
        self.timestamp = Some(at);
        self
    }

    /// Adds an ERR segment. AE/AR/CE/CR without any get one with code 207.
    pub fn error(mut self, detail: ErrorDetail) -> AckBuilder {
        self.errors.push(detail);
        self
    }

    /// The ACK answering `message`.
    pub fn build(&self, message: &Message) -> Ack {
        self.build_for_header(&message.header())
    }

    /// The ACK answering a message of which only the header is known (for example from
    /// [`ParseError::UnsupportedVersion`] or [`Header::sniff`]).
    pub fn build_for_header(&self, h: &Header) -> Ack {
        let d = h.delimiters();
        let at = self
            .timestamp
            .unwrap_or_else(|| chrono::Local::now().fixed_offset());
        let control_id = match &self.control_id {
            Some(id) => escape(id, d),
            None => generated_control_id(&at),
        };
        let known = KNOWN_VERSIONS.iter().find(|(v, _)| *v == h.version_id());
        let comp = d.component().to_string();
        let mut message_type = vec!["ACK", h.component(9, 2)];
        if !known.is_some_and(|(v, _)| ["2.1", "2.2", "2.3"].contains(v)) {
            message_type.push("ACK");
        }
        // Echo MSH-12 when it names a real HL7 version, else answer in 2.5.1.
        let version_field = match known {
            Some(_) => h.field(12).to_owned(),
            None => Version::V2_5_1.as_str().to_owned(),
        };
        let charset_field = if h.field(18).is_empty() {
            String::new()
        } else {
            h.charset().hl7_name()
        };
        let mut msh = vec![
            "MSH".to_owned(),
            d.encoding_characters(),
            h.field(5).to_owned(),
            h.field(6).to_owned(),
            h.field(3).to_owned(),
            h.field(4).to_owned(),
            at.format("%Y%m%d%H%M%S%z").to_string(),
            String::new(),
            message_type.join(&comp),
            control_id,
            match h.field(11) {
                "" => "P".to_owned(),
                p => p.to_owned(),
            },
            version_field,
        ];
        msh.extend(std::iter::repeat_n(String::new(), 5));
        msh.push(charset_field);
        let mut segments = vec![trim_join(msh, d.field())];

        let mut errors = self.errors.clone();
        if errors.is_empty() && self.code.is_negative() {
            errors.push(ErrorDetail::new(ErrorCode::ApplicationInternalError));
        }
        let legacy = known.is_some_and(|(_, legacy)| *legacy);
        // MSA-2 is required: written even when the message had no MSH-10.
        let mut msa = format!(
            "MSA{0}{1}{0}{2}",
            d.field(),
            self.code.as_str(),
            h.field(10)
        );
        if legacy && let Some(text) = errors.iter().find_map(|e| e.message.as_deref()) {
            msa.push(d.field());
            msa.push_str(&escape(text, d));
        }
        segments.push(msa);
        for e in &errors {
            segments.push(err_segment(e, h, legacy));
        }
        let mut text = segments.join("\r");
        text.push('\r');
        Ack {
            text,
            charset: h.charset(),
        }
    }
}

/// HL7 v2 versions that may be echoed in MSH-12 of an ACK, and whether their ERR segment
/// has the pre-2.5 layout (ERR-1 only). 2.1 and 2.2 are not parsed, but may be answered.
const KNOWN_VERSIONS: [(&str, bool); 13] = [
    ("2.1", true),
    ("2.2", true),
    ("2.3", true),
    ("2.3.1", true),
    ("2.4", true),
    ("2.5", false),
    ("2.5.1", false),
    ("2.6", false),
    ("2.7", false),
    ("2.7.1", false),
    ("2.8", false),
    ("2.8.1", false),
    ("2.8.2", false),
];

/// One ERR segment, v2.5+ layout or (legacy) v2.3/v2.4 ERR-1 ELD.
fn err_segment(e: &ErrorDetail, h: &Header, legacy: bool) -> String {
    let d = h.delimiters();
    let (c, s) = (d.component().to_string(), d.subcomponent().to_string());
    let location = e.location.as_ref().map(|l| {
        let mut parts = vec![escape(&l.segment, d), l.sequence.to_string()];
        if let Some(f) = l.field {
            parts.push(f.to_string());
        }
        parts
    });
    let code = e.code.code().to_string();
    if legacy {
        let mut eld = location.unwrap_or_else(|| vec![String::new(); 3]);
        eld.resize(3, String::new());
        eld.push([code.as_str(), e.code.text(), "HL70357"].join(&s));
        return trim_join(vec!["ERR".to_owned(), eld.join(&c)], d.field());
    }
    let fields = vec![
        "ERR".to_owned(),
        String::new(),
        location.map(|l| l.join(&c)).unwrap_or_default(),
        [code.as_str(), e.code.text(), "HL70357"].join(&c),
        e.severity.as_str().to_owned(),
        String::new(),
        String::new(),
        String::new(),
        e.message
            .as_deref()
            .map(|m| escape(m, d))
            .unwrap_or_default(),
    ];
    trim_join(fields, d.field())
}

/// Joins fields with the separator, leaving out trailing empty ones.
fn trim_join(mut fields: Vec<String>, sep: char) -> String {
    while fields.len() > 1 && fields.last().is_some_and(String::is_empty) {
        fields.pop();
    }
    fields.join(&sep.to_string())
}

fn generated_control_id(at: &DateTime<FixedOffset>) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 1_000_000;
    format!("{}{n:06}", at.format("%Y%m%d%H%M%S"))
}

/// AA for `message`.
pub fn accept(message: &Message) -> Ack {
    AckBuilder::new(AckCode::AA).build(message)
}

/// The negative acknowledgment for input that [`crate::parse`] refused: AR or AE (see
/// [`AckCode::for_parse_error`]) with one ERR from [`ErrorDetail::from_parse_error`]. The
/// header is the one kept in [`ParseError::UnsupportedVersion`], else whatever
/// [`Header::sniff`] finds (best effort MSH-10 for MSA-2), else an empty one (MSA-2 empty).
pub fn reject(input: &[u8], error: &ParseError) -> Ack {
    let header = match error {
        ParseError::UnsupportedVersion { header, .. } => (**header).clone(),
        _ => Header::sniff(input).unwrap_or_else(Header::empty),
    };
    AckBuilder::new(AckCode::for_parse_error(error))
        .error(ErrorDetail::from_parse_error(error))
        .build_for_header(&header)
}

/// AR for an MLLP frame longer than `limit` bytes, from its first bytes `head`
/// ([`crate::mllp::MllpFrame::Oversize`]): ERR-3 = 207 with the limit in ERR-8.
pub fn reject_oversize(head: &[u8], limit: usize) -> Ack {
    let header = Header::sniff(head).unwrap_or_else(Header::empty);
    AckBuilder::new(AckCode::AR)
        .error(
            ErrorDetail::new(ErrorCode::ApplicationInternalError)
                .message(format!("message exceeds the maximum size of {limit} bytes")),
        )
        .build_for_header(&header)
}
