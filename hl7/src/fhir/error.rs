//! [`MappingError`]: why a message could not be mapped, and how to acknowledge it.

use crate::ack::{AckCode, ErrorCode};

/// Why [`super::to_transaction`] refused a message. Every variant knows its acknowledgment
/// code ([`MappingError::ack_code`], MSA-1), its table 0357 code ([`MappingError::error_code`],
/// ERR-3) and, where it applies, the field concerned ([`MappingError::location`], ERR-2).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MappingError {
    /// MSH-9.1 is not ADT, ORU, ORM or OML (answer AR, ERR-3 = 200).
    #[error("unsupported message type {message_type:?} (MSH-9)")]
    UnsupportedMessageType {
        /// MSH-9 as received, e.g. `MDM^T02`.
        message_type: String,
    },
    /// MSH-9.1 is supported but not the trigger event MSH-9.2 (answer AR, ERR-3 = 201).
    #[error("unsupported trigger event {event:?} for message type {message_type:?} (MSH-9.2)")]
    UnsupportedEvent {
        /// MSH-9.1, e.g. `ADT`.
        message_type: String,
        /// MSH-9.2 (or EVN-1 when MSH-9.2 is empty), e.g. `A06`.
        event: String,
    },
    /// A segment the message needs is absent, e.g. no PID (answer AE, ERR-3 = 100).
    #[error("required segment {segment} missing")]
    MissingSegment {
        /// The segment ID, e.g. `PID`.
        segment: String,
    },
    /// A field the mapping needs is empty (answer AE, ERR-3 = 101).
    #[error("required field {location} ({name}) missing")]
    MissingField {
        /// The field, e.g. `PID-3`.
        location: String,
        /// The HL7 field name, e.g. `Patient Identifier List`.
        name: String,
    },
    /// A field holds a value of the wrong data type or outside its table (answer AE, ERR-3 =
    /// 102), e.g. a malformed timestamp or a non-numeric NM value.
    #[error("invalid value {value:?} in {location}: {reason}")]
    InvalidValue {
        /// The field, e.g. `OBX-5` or `PID-7`.
        location: String,
        /// The value as received (unescaped).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl MappingError {
    /// MSA-1: AR for an unsupported message type or event, AE for everything else.
    pub fn ack_code(&self) -> AckCode {
        match self {
            MappingError::UnsupportedMessageType { .. } | MappingError::UnsupportedEvent { .. } => {
                AckCode::AR
            }
            _ => AckCode::AE,
        }
    }

    /// ERR-3 (table 0357): 200 unsupported message type, 201 unsupported event code,
    /// 100 segment sequence error (segment missing), 101 required field missing,
    /// 102 data type error.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            MappingError::UnsupportedMessageType { .. } => ErrorCode::UnsupportedMessageType,
            MappingError::UnsupportedEvent { .. } => ErrorCode::UnsupportedEventCode,
            MappingError::MissingSegment { .. } => ErrorCode::SegmentSequenceError,
            MappingError::MissingField { .. } => ErrorCode::RequiredFieldMissing,
            MappingError::InvalidValue { .. } => ErrorCode::DataTypeError,
        }
    }

    /// ERR-2: the field (`PID-3`) or segment (`PID`) concerned, when there is one; `MSH-9`
    /// for unsupported types and events.
    pub fn location(&self) -> Option<&str> {
        match self {
            MappingError::UnsupportedMessageType { .. } => Some("MSH-9"),
            MappingError::UnsupportedEvent { .. } => Some("MSH-9.2"),
            MappingError::MissingSegment { segment } => Some(segment),
            MappingError::MissingField { location, .. }
            | MappingError::InvalidValue { location, .. } => Some(location),
        }
    }

    pub(crate) fn missing(location: impl Into<String>, name: &str) -> MappingError {
        MappingError::MissingField {
            location: location.into(),
            name: name.to_owned(),
        }
    }

    pub(crate) fn invalid(
        location: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> MappingError {
        MappingError::InvalidValue {
            location: location.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}
