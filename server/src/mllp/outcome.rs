//! How a processed message is answered: MSA-1 (table 0008) and the ERR segment (ERR-2
//! location, ERR-3 table 0357 code, ERR-8 user message) for each way processing can end.
//!
//! Source: HL7 v2.5.1 chapter 2, sections 2.9.2 (original mode: AA accepted and applied, AE
//! application error, AR application reject), 2.9.3 (enhanced mode: commit ACK CA/CE/CR per
//! MSH-15, application ACK per MSH-16), 2.15.5 (ERR) and 2.15.8 (MSA).
//!
//! | what happened | MSA-1 | ERR-3 |
//! |---|---|---|
//! | applied (transaction committed) | AA | — |
//! | unparseable, unsupported MSH-12 version or MSH-18 charset | AR | from the parse error (100–103, 203) |
//! | unsupported MSH-9 type/event (mapping) | AR | 200 / 201 |
//! | a segment or field the mapping needs is missing or malformed | AE | 100 / 101 / 102 |
//! | conditional reference matches no resource (unknown patient, auto-create off; FHIR 412) | AE | 204 |
//! | conditional reference or update matches several resources (412) | AE | 205 |
//! | a mapped resource fails R4 validation (422) | AE | 102, diagnostics in ERR-8 |
//! | version conflict (409) | AE | 206 |
//! | any other failure (storage, mapping bug) | AE | 207 |

use hl7::ack::{AckBuilder, AckCode, ErrorCode, ErrorDetail};
use hl7::{Header, Location, ParseError};

use super::mapping::MappingError;
use crate::error::ApiError;
use crate::storage::StoreError;

/// ERR-8 is a TX of at most 250 characters in v2.5.1; longer texts are cut (the full
/// reason is kept in `hl7_messages.reason`).
pub const ERR8_MAX_CHARS: usize = 250;

/// Why a message was not applied. Its [`Display`](std::fmt::Display) text is what
/// `hl7_messages.reason` records.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The message could not be parsed, or names an unsupported version or character set.
    #[error("parse error: {0}")]
    Parse(#[from] ParseError),
    /// The message parsed but could not be mapped to FHIR.
    #[error("mapping error: {0}")]
    Mapping(#[from] MappingError),
    /// The FHIR transaction failed and was rolled back (nothing applied).
    #[error("FHIR transaction failed ({status}): {0}", status = .0.status().as_u16())]
    Transaction(#[from] ApiError),
    /// The message could not be stored before processing.
    #[error("could not store the message: {0}")]
    Store(#[from] StoreError),
    /// The message is longer than the configured maximum.
    #[error("message exceeds the maximum size of {limit} bytes")]
    Oversize {
        /// The maximum, in bytes.
        limit: usize,
    },
}

impl Rejection {
    /// MSA-1 in original mode (application ACK): AR for input that cannot be accepted at
    /// all (unparseable, unsupported version, type or event, oversize), AE otherwise.
    pub fn ack_code(&self) -> AckCode {
        match self {
            Rejection::Parse(_) | Rejection::Oversize { .. } => AckCode::AR,
            Rejection::Mapping(e) => e.ack_code(),
            Rejection::Transaction(_) | Rejection::Store(_) => AckCode::AE,
        }
    }

    /// The ERR segment: ERR-2 location, ERR-3 code, ERR-8 message.
    pub fn error_detail(&self) -> ErrorDetail {
        match self {
            Rejection::Parse(e) => {
                let d = ErrorDetail::from_parse_error(e);
                let message = d.message.clone().unwrap_or_default();
                d.message(cut(&message))
            }
            Rejection::Mapping(e) => {
                let d = ErrorDetail::new(e.error_code()).message(cut(&e.to_string()));
                match e.location().and_then(error_location) {
                    Some((segment, sequence, field)) => d.at(&segment, sequence, field),
                    None => d,
                }
            }
            Rejection::Transaction(e) => {
                ErrorDetail::new(transaction_error_code(e)).message(cut(&e.to_string()))
            }
            Rejection::Store(e) => ErrorDetail::new(ErrorCode::ApplicationInternalError)
                .message(cut(&format!("could not store the message: {e}"))),
            Rejection::Oversize { .. } => {
                ErrorDetail::new(ErrorCode::ApplicationInternalError).message(self.to_string())
            }
        }
    }

    /// The negative application ACK answering `header` (MSA-1 from [`Rejection::ack_code`]).
    pub fn ack(&self, header: &Header) -> hl7::ack::Ack {
        AckBuilder::new(self.ack_code())
            .error(self.error_detail())
            .build_for_header(header)
    }
}

/// ERR-3 for a failed FHIR transaction (see the table in the module documentation).
pub fn transaction_error_code(error: &ApiError) -> ErrorCode {
    let inner = match error {
        ApiError::InEntry { source, .. } => source.as_ref(),
        other => other,
    };
    match inner {
        ApiError::InEntry { .. } => transaction_error_code(inner),
        ApiError::PreconditionFailed(text) if text.contains("matches no resource") => {
            ErrorCode::UnknownKeyIdentifier
        }
        ApiError::PreconditionFailed(text) if text.contains("more than one") => {
            ErrorCode::DuplicateKeyIdentifier
        }
        ApiError::Invalid(_) => ErrorCode::DataTypeError,
        ApiError::Conflict(_) | ApiError::Store(StoreError::VersionConflict(_)) => {
            ErrorCode::ApplicationRecordLocked
        }
        _ => ErrorCode::ApplicationInternalError,
    }
}

/// An ERR-2 location (segment, occurrence, field) from a mapping location such as `PID-3`,
/// `OBX[2]-5.1`, `MSH-9.2` or a bare segment ID `PID`.
pub fn error_location(text: &str) -> Option<(String, usize, Option<usize>)> {
    if let Ok(loc) = text.parse::<Location>() {
        return Some((loc.segment, loc.occurrence, Some(loc.field)));
    }
    let id = text.trim();
    let is_segment = id.len() == 3
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    is_segment.then(|| (id.to_string(), 1, None))
}

/// `text` cut to [`ERR8_MAX_CHARS`] characters, with `...` when cut.
pub fn cut(text: &str) -> String {
    if text.chars().count() <= ERR8_MAX_CHARS {
        return text.to_string();
    }
    let mut out: String = text.chars().take(ERR8_MAX_CHARS - 3).collect();
    out.push_str("...");
    out
}

/// What MSH-15 "Accept Acknowledgment Type" or MSH-16 "Application Acknowledgment Type"
/// asks for (table 0155).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCondition {
    /// AL: always.
    Always,
    /// NE: never.
    Never,
    /// ER: only on error or reject.
    OnError,
    /// SU: only on success.
    OnSuccess,
}

impl AckCondition {
    /// Reads table 0155; an empty or unknown value counts as AL.
    pub fn parse(value: &str) -> AckCondition {
        match value.trim() {
            "NE" => AckCondition::Never,
            "ER" => AckCondition::OnError,
            "SU" => AckCondition::OnSuccess,
            _ => AckCondition::Always,
        }
    }

    /// Whether an acknowledgment with `code` is to be sent.
    pub fn wants(self, code: AckCode) -> bool {
        match self {
            AckCondition::Always => true,
            AckCondition::Never => false,
            AckCondition::OnError => code.is_negative(),
            AckCondition::OnSuccess => !code.is_negative(),
        }
    }
}

/// The acknowledgment mode a message asks for (HL7 v2.5.1 section 2.9.1: enhanced mode when
/// MSH-15 or MSH-16 is valued, original mode when both are empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Original mode: one application ACK (AA/AE/AR) after processing.
    Original,
    /// Enhanced mode: a commit ACK (CA/CE/CR) per MSH-15 after storing, then the application
    /// ACK per MSH-16.
    Enhanced {
        /// MSH-15.
        accept: AckCondition,
        /// MSH-16.
        application: AckCondition,
    },
}

impl AckMode {
    /// The mode of a message from its header (MSH-15, MSH-16).
    pub fn of(header: &Header) -> AckMode {
        let (msh15, msh16) = (header.field(15).trim(), header.field(16).trim());
        if msh15.is_empty() && msh16.is_empty() {
            AckMode::Original
        } else {
            AckMode::Enhanced {
                accept: AckCondition::parse(msh15),
                application: AckCondition::parse(msh16),
            }
        }
    }

    /// Whether the application ACK with `code` is sent (always in original mode).
    pub fn sends_application_ack(self, code: AckCode) -> bool {
        match self {
            AckMode::Original => true,
            AckMode::Enhanced { application, .. } => application.wants(code),
        }
    }

    /// Whether the commit ACK with `code` (CA/CE/CR) is sent (never in original mode).
    pub fn sends_commit_ack(self, code: AckCode) -> bool {
        match self {
            AckMode::Original => false,
            AckMode::Enhanced { accept, .. } => accept.wants(code),
        }
    }
}

/// A commit acknowledgment (enhanced mode): CA when the message was stored, CE when storing
/// failed, CR when it cannot be accepted (unparseable, unsupported version or charset).
pub fn commit_ack(header: &Header, code: AckCode, error: Option<ErrorDetail>) -> hl7::ack::Ack {
    let mut b = AckBuilder::new(code);
    if let Some(e) = error {
        b = b.error(e);
    }
    b.build_for_header(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_patient_is_unknown_key_identifier() {
        let e = ApiError::InEntry {
            index: 2,
            source: Box::new(ApiError::PreconditionFailed(
                "conditional reference 'Patient?identifier=a|1' matches no resource".into(),
            )),
        };
        assert_eq!(transaction_error_code(&e), ErrorCode::UnknownKeyIdentifier);
        let r = Rejection::Transaction(e);
        assert_eq!(r.ack_code(), AckCode::AE);
        assert!(r.to_string().contains("412"));
    }

    #[test]
    fn mapping_locations_become_err2() {
        assert_eq!(
            error_location("OBX[2]-5"),
            Some(("OBX".to_string(), 2, Some(5)))
        );
        assert_eq!(error_location("PID"), Some(("PID".to_string(), 1, None)));
        assert_eq!(error_location("nonsense here"), None);
    }

    #[test]
    fn enhanced_mode_follows_msh15_and_msh16() {
        let h = hl7::parse(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5.1|||AL|ER\r")
            .unwrap()
            .header();
        let mode = AckMode::of(&h);
        assert!(mode.sends_commit_ack(AckCode::CA));
        assert!(!mode.sends_application_ack(AckCode::AA));
        assert!(mode.sends_application_ack(AckCode::AE));
        let h = hl7::parse(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5.1\r")
            .unwrap()
            .header();
        assert_eq!(AckMode::of(&h), AckMode::Original);
    }

    #[test]
    fn err8_is_cut_to_250_characters() {
        let long = "x".repeat(400);
        assert_eq!(cut(&long).chars().count(), ERR8_MAX_CHARS);
        assert_eq!(cut("short"), "short");
    }
}
