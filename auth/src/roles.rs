//! Hospital roles and the scopes each may be granted, from
//! `shared/design/hospital-model.md` § Roles (issue 5, item 5).
//!
//! A user's role gives a *cap*: the most a token for that user may carry. What a token
//! finally gets is `requested ∩ client's registered scopes ∩ role cap`
//! ([`ScopeSet::intersect`]). Every cap includes all identity, context and refresh
//! scopes (`openid fhirUser profile launch launch/patient launch/encounter
//! offline_access online_access`): roles restrict resource access only.
//!
//! Reading of the table:
//! * "read clinical data" is [`CLINICAL_TYPES`] with `rs`.
//! * "write X" is `cruds` on X (writing includes reading what one writes and deleting,
//!   which is logical and versioned: R11).
//! * Every staff role may also read the directory ([`DIRECTORY_TYPES`]: who and where,
//!   needed to display references); PATIENT reaches only its own compartment.
//! * "ServiceRequest (lab)" and "ServiceRequest (imaging)" are restricted by category
//!   ([`LAB_ORDER_CATEGORY`], [`IMAGING_ORDER_CATEGORY`]); the NURSE's "Observation
//!   (vitals)" write and the LAB_TECH's Observation write are restricted to the
//!   `vital-signs` and `laboratory` categories, as SMART v2 query restrictions.
//! * RECEPTIONIST's "Encounter (check-in)" is `crus` (no delete).

use std::fmt;
use std::str::FromStr;

use crate::scopes::{Permissions, ResourceScope, ScopeContext, ScopeSet};

/// Resource types holding clinical data: what "read clinical data" in the Roles table
/// means. Billing, scheduling and directory resources are not in it.
pub const CLINICAL_TYPES: &[&str] = &[
    "Patient",
    "RelatedPerson",
    "Encounter",
    "EpisodeOfCare",
    "Condition",
    "Procedure",
    "Observation",
    "DiagnosticReport",
    "ServiceRequest",
    "Specimen",
    "ImagingStudy",
    "MedicationRequest",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationStatement",
    "Medication",
    "AllergyIntolerance",
    "Immunization",
    "FamilyMemberHistory",
    "ClinicalImpression",
    "CarePlan",
    "CareTeam",
    "Goal",
    "Composition",
    "DocumentReference",
    "Binary",
    "Task",
    "Communication",
    "Flag",
    "DetectedIssue",
    "RiskAssessment",
    "NutritionOrder",
    "DeviceRequest",
    "Device",
    "QuestionnaireResponse",
    "Provenance",
    "Consent",
];

/// Directory resource types every staff role may read (`rs`): practitioners,
/// departments, wards and beds, services.
pub const DIRECTORY_TYPES: &[&str] = &[
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "HealthcareService",
];

/// `ServiceRequest.category` of lab orders (SNOMED CT 108252007 "Laboratory procedure"),
/// as a token search value. The HL7 v2 mapping must use the same code.
pub const LAB_ORDER_CATEGORY: &str = "http://snomed.info/sct|108252007";
/// `ServiceRequest.category` of imaging orders (SNOMED CT 363679005 "Imaging").
pub const IMAGING_ORDER_CATEGORY: &str = "http://snomed.info/sct|363679005";

/// A hospital role (hospital-model.md § Roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Everything, users and clients, AuditEvent.
    Admin,
    /// Reads clinical data; writes encounters, diagnoses, procedures, notes, orders,
    /// prescriptions, observations.
    Doctor,
    /// Reads clinical data; writes vital signs, administrations, nursing notes.
    Nurse,
    /// Lab orders in, lab results out.
    LabTech,
    /// Imaging orders in, imaging studies and reports out.
    Radiologist,
    /// Prescriptions and allergies in, dispenses and the drug catalogue out.
    Pharmacist,
    /// Registration, scheduling, insurance, check-in.
    Receptionist,
    /// Invoices, charges, accounts, payments, claims.
    Billing,
    /// A patient: their own compartment, read only.
    Patient,
}

/// An unknown role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown role `{0}` (expected one of ADMIN, DOCTOR, NURSE, LAB_TECH, RADIOLOGIST, PHARMACIST, RECEPTIONIST, BILLING, PATIENT)"
)]
pub struct UnknownRole(pub String);

impl Role {
    /// All roles, in table order.
    pub const ALL: [Role; 9] = [
        Role::Admin,
        Role::Doctor,
        Role::Nurse,
        Role::LabTech,
        Role::Radiologist,
        Role::Pharmacist,
        Role::Receptionist,
        Role::Billing,
        Role::Patient,
    ];

    /// The name as stored and shown (`LAB_TECH`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::Doctor => "DOCTOR",
            Role::Nurse => "NURSE",
            Role::LabTech => "LAB_TECH",
            Role::Radiologist => "RADIOLOGIST",
            Role::Pharmacist => "PHARMACIST",
            Role::Receptionist => "RECEPTIONIST",
            Role::Billing => "BILLING",
            Role::Patient => "PATIENT",
        }
    }

    /// Whether the role is staff (linked to a Practitioner), as opposed to PATIENT.
    pub fn is_staff(self) -> bool {
        self != Role::Patient
    }

    /// The most a user of this role may be granted (see the module doc for how the
    /// Roles table is read).
    pub fn cap(self) -> ScopeSet {
        let mut cap = ScopeSet::all_context_scopes();
        let user = |t: &str, p: Permissions| ResourceScope::new(ScopeContext::User, Some(t), p);
        let rs = Permissions::READ_SEARCH;
        let all = Permissions::ALL;
        let mut add = |r: ResourceScope| cap.resources.push(r);
        let staff_directory = |add: &mut dyn FnMut(ResourceScope)| {
            for t in DIRECTORY_TYPES {
                add(user(t, rs));
            }
        };
        let clinical_read = |add: &mut dyn FnMut(ResourceScope)| {
            for t in CLINICAL_TYPES {
                add(user(t, rs));
            }
        };
        match self {
            Role::Admin => {
                add(ResourceScope::new(ScopeContext::User, None, all));
                add(ResourceScope::new(ScopeContext::System, None, all));
            }
            Role::Doctor => {
                clinical_read(&mut add);
                staff_directory(&mut add);
                for t in [
                    "Encounter",
                    "Condition",
                    "Procedure",
                    "Composition",
                    "ServiceRequest",
                    "MedicationRequest",
                    "Observation",
                ] {
                    add(user(t, all));
                }
            }
            Role::Nurse => {
                clinical_read(&mut add);
                staff_directory(&mut add);
                add(user("Observation", all).with_query("category", "vital-signs"));
                add(user("MedicationAdministration", all));
                add(user("Composition", all));
            }
            Role::LabTech => {
                staff_directory(&mut add);
                add(user("ServiceRequest", rs).with_query("category", LAB_ORDER_CATEGORY));
                add(user("Specimen", all));
                add(user("Observation", all).with_query("category", "laboratory"));
                add(user("DiagnosticReport", all));
            }
            Role::Radiologist => {
                staff_directory(&mut add);
                add(user("ServiceRequest", rs).with_query("category", IMAGING_ORDER_CATEGORY));
                add(user("ImagingStudy", all));
                add(user("DiagnosticReport", all));
            }
            Role::Pharmacist => {
                staff_directory(&mut add);
                add(user("MedicationRequest", rs));
                add(user("AllergyIntolerance", rs));
                add(user("MedicationDispense", all));
                add(user("Medication", all));
            }
            Role::Receptionist => {
                staff_directory(&mut add);
                for t in ["Patient", "Appointment", "Slot", "Schedule", "Coverage"] {
                    add(user(t, all));
                }
                add(user(
                    "Encounter",
                    Permissions {
                        delete: false,
                        ..all
                    },
                ));
            }
            Role::Billing => {
                staff_directory(&mut add);
                for t in [
                    "Invoice",
                    "ChargeItem",
                    "Account",
                    "PaymentReconciliation",
                    "Claim",
                    "Coverage",
                ] {
                    add(user(t, all));
                }
            }
            Role::Patient => {
                add(ResourceScope::new(ScopeContext::Patient, None, rs));
            }
        }
        cap
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownRole;
    /// Case-insensitive; `ACCOUNTANT` (seed 004) is accepted as BILLING.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        if upper == "ACCOUNTANT" {
            return Ok(Role::Billing);
        }
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == upper)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scopes::{Access, Interaction};

    fn grant(role: Role, requested: &str) -> ScopeSet {
        ScopeSet::parse(requested).unwrap().intersect(&role.cap())
    }

    fn can(role: Role, i: Interaction, t: &str) -> bool {
        role.cap().allows(i, t).is_allowed()
    }

    #[test]
    fn role_names_round_trip_and_accountant_is_billing() {
        for r in Role::ALL {
            assert_eq!(r.to_string().parse::<Role>().unwrap(), r);
        }
        assert_eq!("lab_tech".parse::<Role>().unwrap(), Role::LabTech);
        assert_eq!("ACCOUNTANT".parse::<Role>().unwrap(), Role::Billing);
        assert!("HOD".parse::<Role>().is_err());
    }

    #[test]
    fn admin_gets_everything_including_audit_events_and_system_scopes() {
        let g = grant(Role::Admin, "user/*.cruds system/*.rs user/AuditEvent.rs");
        assert_eq!(g.to_string(), "user/*.cruds system/*.rs");
        assert!(g.allows(Interaction::Read, "AuditEvent").is_allowed());
    }

    #[test]
    fn doctor_reads_clinical_data_and_writes_orders_but_not_invoices() {
        let g = grant(Role::Doctor, "user/*.cruds");
        for t in [
            "Observation",
            "MedicationRequest",
            "Encounter",
            "Composition",
        ] {
            assert!(g.allows(Interaction::Create, t).is_allowed(), "{t}");
        }
        assert!(
            g.allows(Interaction::Read, "AllergyIntolerance")
                .is_allowed()
        );
        assert!(
            !g.allows(Interaction::Create, "AllergyIntolerance")
                .is_allowed()
        );
        assert!(!g.allows(Interaction::Create, "Invoice").is_allowed());
        assert!(!g.allows(Interaction::Read, "Invoice").is_allowed());
        assert!(!g.allows(Interaction::Read, "AuditEvent").is_allowed());
    }

    #[test]
    fn nurse_asking_cruds_on_medication_request_gets_read_search_only() {
        let g = grant(Role::Nurse, "user/MedicationRequest.cruds");
        assert_eq!(g.to_string(), "user/MedicationRequest.rs");
    }

    #[test]
    fn nurse_writes_vital_signs_administrations_and_notes() {
        let g = grant(Role::Nurse, "user/Observation.cruds");
        assert_eq!(
            g.to_string(),
            "user/Observation.rs user/Observation.cruds?category=vital-signs"
        );
        assert_eq!(
            g.allows(Interaction::Create, "Observation"),
            Access::Allowed {
                patient_compartment_only: false,
                restrictions: vec![vec![("category".into(), "vital-signs".into())]]
            }
        );
        assert!(can(
            Role::Nurse,
            Interaction::Update,
            "MedicationAdministration"
        ));
        assert!(can(Role::Nurse, Interaction::Create, "Composition"));
        assert!(!can(Role::Nurse, Interaction::Create, "MedicationRequest"));
    }

    #[test]
    fn lab_tech_reads_lab_orders_and_writes_results_but_not_prescriptions() {
        assert_eq!(
            Role::LabTech
                .cap()
                .allows(Interaction::Search, "ServiceRequest"),
            Access::Allowed {
                patient_compartment_only: false,
                restrictions: vec![vec![("category".into(), LAB_ORDER_CATEGORY.into())]]
            }
        );
        assert!(can(Role::LabTech, Interaction::Create, "DiagnosticReport"));
        assert!(can(Role::LabTech, Interaction::Update, "Specimen"));
        assert!(can(Role::LabTech, Interaction::Create, "Observation"));
        assert!(!can(Role::LabTech, Interaction::Read, "MedicationRequest"));
        assert!(!can(Role::LabTech, Interaction::Create, "ServiceRequest"));
    }

    #[test]
    fn radiologist_reads_imaging_orders_and_writes_studies_and_reports() {
        assert!(can(Role::Radiologist, Interaction::Read, "ServiceRequest"));
        assert!(!can(
            Role::Radiologist,
            Interaction::Update,
            "ServiceRequest"
        ));
        assert!(can(Role::Radiologist, Interaction::Create, "ImagingStudy"));
        assert!(can(
            Role::Radiologist,
            Interaction::Create,
            "DiagnosticReport"
        ));
        assert!(!can(Role::Radiologist, Interaction::Read, "Condition"));
    }

    #[test]
    fn pharmacist_dispenses_but_cannot_write_prescriptions() {
        let g = grant(
            Role::Pharmacist,
            "user/MedicationRequest.cruds user/MedicationDispense.cruds",
        );
        assert_eq!(
            g.to_string(),
            "user/MedicationRequest.rs user/MedicationDispense.cruds"
        );
        assert!(can(
            Role::Pharmacist,
            Interaction::Read,
            "AllergyIntolerance"
        ));
        assert!(can(Role::Pharmacist, Interaction::Create, "Medication"));
    }

    #[test]
    fn receptionist_gets_no_observation() {
        let g = grant(Role::Receptionist, "user/Observation.rs user/Patient.cruds");
        assert_eq!(g.to_string(), "user/Patient.cruds");
        for t in ["Appointment", "Slot", "Schedule", "Coverage"] {
            assert!(can(Role::Receptionist, Interaction::Create, t), "{t}");
        }
        assert!(can(Role::Receptionist, Interaction::Update, "Encounter"));
        assert!(!can(Role::Receptionist, Interaction::Delete, "Encounter"));
        assert!(!can(Role::Receptionist, Interaction::Read, "Condition"));
    }

    #[test]
    fn billing_handles_money_but_no_clinical_resources() {
        for t in [
            "Invoice",
            "ChargeItem",
            "Account",
            "PaymentReconciliation",
            "Claim",
            "Coverage",
        ] {
            assert!(can(Role::Billing, Interaction::Update, t), "{t}");
        }
        for t in ["Observation", "Condition", "MedicationRequest", "Patient"] {
            assert!(!can(Role::Billing, Interaction::Read, t), "{t}");
        }
    }

    #[test]
    fn patient_gets_only_patient_read_and_search() {
        let g = grant(
            Role::Patient,
            "openid fhirUser launch/patient patient/*.cruds user/*.rs patient/Observation.rs",
        );
        assert_eq!(g.to_string(), "openid fhirUser launch/patient patient/*.rs");
        assert_eq!(
            g.allows(Interaction::Read, "Observation"),
            Access::Allowed {
                patient_compartment_only: true,
                restrictions: vec![]
            }
        );
        assert!(!g.allows(Interaction::Create, "Observation").is_allowed());
    }

    #[test]
    fn every_staff_role_reads_the_directory() {
        for r in Role::ALL.into_iter().filter(|r| r.is_staff()) {
            assert!(can(r, Interaction::Read, "Practitioner"), "{r}");
        }
    }

    #[test]
    fn caps_keep_identity_and_refresh_scopes() {
        for r in Role::ALL {
            let g = grant(r, "openid fhirUser offline_access");
            assert!(g.openid && g.fhir_user && g.offline_access, "{r}");
        }
    }
}
