//! The v2 → FHIR mapping, as the listener uses it: `hl7::fhir` (HL7 V2-to-FHIR IG segment
//! maps; each message becomes one transaction Bundle with conditional references), plus the
//! configuration built from `mediflow serve` flags.

pub use hl7::fhir::{MappingConfig, MappingError};

/// The mapping configuration of the listener: patients auto-created unless
/// `--hl7-no-auto-create`; other settings at their defaults.
pub fn config(auto_create_patients: bool) -> MappingConfig {
    MappingConfig {
        auto_create_patients,
        ..MappingConfig::default()
    }
}

/// Maps one parsed message to a FHIR transaction Bundle (`hl7::fhir::to_transaction`).
///
/// Errors: [`MappingError`], which names its MSA-1 (AR for an unsupported MSH-9 message
/// type or event, AE otherwise), its ERR-3 code and its ERR-2 location.
pub fn to_transaction(
    message: &hl7::Message,
    config: &MappingConfig,
) -> Result<serde_json::Value, MappingError> {
    hl7::fhir::to_transaction(message, config)
}
