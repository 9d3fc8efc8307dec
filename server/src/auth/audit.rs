//! The audit trail (issue 5, item 9; requirement R10): one FHIR R4 AuditEvent
//! (auditevent.html) per FHIR request that reads or writes data, per refused request
//! (401, 403) and per token request.
//!
//! An event for a REST interaction:
//! * `type` = `http://terminology.hl7.org/CodeSystem/audit-event-type|rest`; `subtype` =
//!   the interaction code of `http://hl7.org/fhir/restful-interaction` (`read`, `vread`,
//!   `search-type`, `create`, `transaction`, `operation` ...);
//! * `action` C/R/U/D/E (create; read, vread, history, search; update; delete;
//!   transaction, batch, operations), `recorded`, `outcome` 0 (success, status < 400),
//!   4 (minor failure: 4xx, including 401 and 403) or 8 (serious failure: 5xx), and
//!   `outcomeDesc` with the HTTP status;
//! * one `agent`, the requestor: `who.identifier` = the client id (system
//!   [`CLIENT_SYSTEM`]), `altId` = the token's `sub` (user, or the client for Backend
//!   Services), `name` = the client id, `network.address` = the peer IP (type 2), the
//!   `User-Agent` header in the extension [`USER_AGENT_EXTENSION`]; "anonymous" with
//!   `--no-auth`, "unauthenticated" for a refused token. For a token of an external
//!   OpenID Connect issuer, `who.identifier` is the subject itself, system = the issuer,
//!   value = `sub` (OIDC Core §5.7: `iss` + `sub` identify the user). `who.reference` is
//!   the token's `fhirUser`, when it has one;
//! * `source.observer.display` = `MediFlow`, source type 4 (application server);
//! * `entity`: the resource (`what` = `Type/id`) when the request names one (or the
//!   `Location` of a create), the search query (`query`, base64) for searches, and the
//!   patient (`role` 1) when known: a Patient resource itself, a Patient compartment,
//!   a `patient`/`subject` search parameter naming a Patient, or the token's patient.
//!
//! Token grants are audited with `type` DICOM 110114 "User Authentication", `subtype`
//! DICOM 110122 "Login", action E.
//!
//! User and client administration (the admin API `/admin/…`, the `mediflow user|client`
//! commands, the administrator created on first start) is audited with `type` DICOM
//! 110113 "Security Alert" (R4 valueset-audit-event-type) and, from R4
//! valueset-audit-event-sub-type (DICOM PS3.16 CID 403 "Security Alert Type"), `subtype`
//! 110137 "User Security Attributes Changed" for a change (action C, U or D) and 110132
//! "Use of Restricted Function" for a listing or reading (action R) and for a refused
//! attempt; the account concerned is an `entity` with `what.identifier` (system
//! [`USER_SYSTEM`] or [`CLIENT_SYSTEM`]), `type` 2 "System Object" and `role` 11
//! "Security User Entity" (object-role).
//! HL7 v2 messages applied from the MLLP listener (`crate::mllp`) are audited, one event
//! per message, with `type` DICOM 110107 "Import" (the R4 AuditEvent.type binding,
//! valueset-audit-event-type, is extensible and lists the DICOM audit event ids; `rest`
//! is for RESTful interactions only), `subtype` the trigger event of HL7 table 0003
//! (`http://terminology.hl7.org/CodeSystem/v2-0003`, e.g. `R01`, display = MSH-9), action
//! C when the message created a resource, else U; the `agent` is the sender, type DICOM
//! 110153 "Source Role ID" (R4 valueset-participation-role-type), `who.identifier` =
//! MSH-3^MSH-4 (system [`HL7_SENDER_SYSTEM`]) with its network address; the `entity`s are
//! the resources written, the patient (role 1), and the message itself (MSH-9 and MSH-10
//! in `detail`).
//!
//! Cost: events go through a bounded channel to one background task that writes them in
//! batches (one database transaction for whatever has queued up, at most
//! [`MAX_BATCH`]), through the store like any resource (indexed, searchable) but never
//! through the public API. They are not validated (they are built here from fixed
//! parts; a unit test validates one). A read of AuditEvents is itself audited, once per
//! request, and nothing more.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Principal;
use crate::clock;
use crate::indexing;
use crate::storage::{NewVersion, Store};

/// The identifier system of `agent.who` for OAuth client ids.
pub const CLIENT_SYSTEM: &str = "urn:mediflow:oauth-client";
/// The identifier system of user accounts (usernames) in admin events' `entity`.
pub const USER_SYSTEM: &str = "urn:mediflow:user";
/// Subtype of an administrative change: DICOM 110137 "User Security Attributes Changed".
pub const ADMIN_CHANGE: &str = "110137";
/// Subtype of an administrative read or refusal: DICOM 110132 "Use of Restricted
/// Function".
pub const ADMIN_USE: &str = "110132";
/// The identifier system of `agent.who` for HL7 v2 senders (value `MSH-3^MSH-4`).
pub const HL7_SENDER_SYSTEM: &str = "urn:mediflow:hl7-sender";
const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// The extension carrying the requestor's `User-Agent` header on `AuditEvent.agent`.
pub const USER_AGENT_EXTENSION: &str = "urn:mediflow:extension:user-agent";
/// Largest number of events written in one transaction.
pub const MAX_BATCH: usize = 512;
/// Events queued at most before requests wait for the writer.
const QUEUE: usize = 8192;

/// What kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A FHIR RESTful interaction (`subtype` from restful-interaction).
    Rest,
    /// A token request (DICOM 110114 / 110122).
    Login,
    /// User and client administration (DICOM 110113; `subtype` [`ADMIN_CHANGE`] or
    /// [`ADMIN_USE`]).
    Admin,
    /// An HL7 v2 message applied from the MLLP listener (DICOM 110107 Import; `subtype` =
    /// the HL7 table 0003 trigger event).
    Hl7Import,
}

/// The HL7 v2 message of an [`EventKind::Hl7Import`] record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hl7Source {
    /// MSH-9 as sent, e.g. `ORU^R01^ORU_R01`.
    pub message_type: String,
    /// MSH-10.
    pub control_id: String,
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// REST interaction or login.
    pub kind: EventKind,
    /// The restful-interaction code (`read`, `search-type` ...), or the HL7 trigger
    /// event.
    pub subtype: Cow<'static, str>,
    /// C, R, U, D or E.
    pub action: &'static str,
    /// The HTTP status of the answer.
    pub status: u16,
    /// Client id of the requestor (or "anonymous" / "unauthenticated").
    pub client_id: String,
    /// `sub` of the requestor.
    pub sub: String,
    /// The external OpenID Connect issuer of the requestor's token.
    pub issuer: Option<String>,
    /// The requestor's FHIR resource (`fhirUser`).
    pub fhir_user: Option<String>,
    /// Peer IP address.
    pub ip: Option<String>,
    /// `User-Agent` header.
    pub user_agent: Option<String>,
    /// The resources concerned, `Type/id`.
    pub entities: Vec<String>,
    /// The patient concerned, `Patient/id`.
    pub patient: Option<String>,
    /// The query string of a search.
    pub query: Option<String>,
    /// The account an administrative event concerns: identifier system ([`USER_SYSTEM`]
    /// or [`CLIENT_SYSTEM`]) and value.
    pub account: Option<(&'static str, String)>,
    /// The HL7 v2 message, for [`EventKind::Hl7Import`].
    pub hl7: Option<Hl7Source>,
    /// Micro-seconds since the epoch.
    pub recorded: i64,
}

impl AuditRecord {
    /// A record for `principal` (or an unauthenticated requestor when `None`).
    pub fn new(
        kind: EventKind,
        subtype: impl Into<Cow<'static, str>>,
        action: &'static str,
        status: u16,
        principal: Option<&Principal>,
    ) -> AuditRecord {
        let (client_id, sub) = match principal {
            Some(p) => (p.client_id.clone(), p.sub.clone()),
            None => ("unauthenticated".to_string(), "unauthenticated".to_string()),
        };
        AuditRecord {
            kind,
            subtype: subtype.into(),
            action,
            status,
            client_id,
            sub,
            issuer: principal.and_then(|p| p.issuer.clone()),
            fhir_user: principal.and_then(|p| p.fhir_user.clone()),
            ip: None,
            user_agent: None,
            entities: Vec::new(),
            patient: principal.and_then(|p| p.patient.as_ref().map(|id| format!("Patient/{id}"))),
            query: None,
            account: None,
            hl7: None,
            recorded: clock::now_micros(),
        }
    }

    /// A record of an HL7 v2 message applied from `sender` (`MSH-3^MSH-4`) at `ip`:
    /// action C or U, `subtype` = the trigger event of MSH-9.
    pub fn hl7_import(
        sender: &str,
        ip: Option<String>,
        source: Hl7Source,
        action: &'static str,
    ) -> AuditRecord {
        let trigger = source
            .message_type
            .split('^')
            .nth(1)
            .unwrap_or("")
            .to_string();
        AuditRecord {
            kind: EventKind::Hl7Import,
            subtype: trigger.into(),
            action,
            status: 200,
            client_id: sender.to_string(),
            sub: sender.to_string(),
            issuer: None,
            fhir_user: None,
            ip,
            user_agent: None,
            entities: Vec::new(),
            patient: None,
            query: None,
            account: None,
            hl7: Some(source),
            recorded: clock::now_micros(),
        }
    }

    /// The AuditEvent resource (without id and meta).
    pub fn to_resource(&self) -> Value {
        let (type_coding, subtype_coding) = match self.kind {
            EventKind::Rest => (
                json!({"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"}),
                json!({"system": "http://hl7.org/fhir/restful-interaction", "code": self.subtype}),
            ),
            EventKind::Login => (
                json!({"system": DICOM, "code": "110114", "display": "User Authentication"}),
                json!({"system": DICOM, "code": "110122", "display": "Login"}),
            ),
            EventKind::Admin => (
                json!({"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110113", "display": "Security Alert"}),
                json!({"system": "http://dicom.nema.org/resources/ontology/DCM", "code": self.subtype, "display": if self.subtype == ADMIN_CHANGE { "User Security Attributes Changed" } else { "Use of Restricted Function" }}),
            ),
            EventKind::Hl7Import => {
                let mut st = json!({"system": "http://terminology.hl7.org/CodeSystem/v2-0003", "code": self.subtype});
                if let Some(h) = &self.hl7 {
                    st["display"] = json!(h.message_type);
                }
                (
                    json!({"system": DICOM, "code": "110107", "display": "Import"}),
                    st,
                )
            }
        };
        let outcome = match self.status {
            0..=399 => "0",
            400..=499 => "4",
            _ => "8",
        };
        let mut agent = match (&self.kind, &self.issuer) {
            (EventKind::Hl7Import, _) => json!({
                "type": {"coding": [{"system": DICOM, "code": "110153", "display": "Source Role ID"}]},
                "who": {"identifier": {"system": HL7_SENDER_SYSTEM, "value": self.client_id}, "display": self.client_id},
                "name": self.client_id,
                "requestor": true,
            }),
            (_, Some(issuer)) => json!({
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type", "code": "humanuser", "display": "human user"}]},
                "who": {"identifier": {"system": issuer, "value": self.sub}, "display": self.sub},
                "altId": self.sub,
                "name": self.client_id,
                "requestor": true,
            }),
            (_, None) => json!({
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type", "code": "humanuser", "display": "human user"}]},
                "who": {"identifier": {"system": CLIENT_SYSTEM, "value": self.client_id}, "display": self.client_id},
                "altId": self.sub,
                "name": self.client_id,
                "requestor": true,
            }),
        };
        if self.kind != EventKind::Hl7Import && self.sub == self.client_id {
            // Backend Services: the requestor is a system, not a person.
            agent["type"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type", "code": "dataprocessor", "display": "data processor"}]});
        }
        if let Some(user) = &self.fhir_user {
            agent["who"]["reference"] = json!(user);
        }
        if let Some(ip) = &self.ip {
            agent["network"] = json!({"address": ip, "type": "2"});
        }
        if let Some(ua) = &self.user_agent {
            agent["extension"] = json!([{"url": USER_AGENT_EXTENSION, "valueString": ua}]);
        }
        let mut entities = Vec::new();
        for what in &self.entities {
            entities.push(json!({
                "what": {"reference": what},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
            }));
        }
        if let Some((system, value)) = &self.account {
            entities.push(json!({
                "what": {"identifier": {"system": system, "value": value}},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "11", "display": "Security User Entity"},
            }));
        }
        if let Some(h) = &self.hl7 {
            entities.push(json!({
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
                "name": "HL7 v2 message",
                "detail": [
                    {"type": "MSH-9", "valueString": h.message_type},
                    {"type": "MSH-10", "valueString": h.control_id},
                ],
            }));
        }
        if let Some(q) = self.query.as_deref().filter(|q| !q.is_empty()) {
            entities.push(json!({
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24", "display": "Query"},
                "query": base64::engine::general_purpose::STANDARD.encode(q),
            }));
        }
        if let Some(patient) = &self.patient
            && !self.entities.contains(patient)
        {
            entities.push(json!({
                "what": {"reference": patient},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
            }));
        }
        let mut ev = json!({
            "resourceType": "AuditEvent",
            "type": type_coding,
            "subtype": [subtype_coding],
            "action": self.action,
            "recorded": clock::format_instant(self.recorded),
            "outcome": outcome,
            "outcomeDesc": match self.kind {
                EventKind::Hl7Import => "HL7 v2 AA: message applied".to_string(),
                _ => format!("HTTP {}", self.status),
            },
            "agent": [agent],
            "source": {
                "observer": {"display": "MediFlow"},
                "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}],
            },
        });
        if !entities.is_empty() {
            ev["entity"] = Value::Array(entities);
        }
        ev
    }

    /// The row to store: version 1 of a new AuditEvent, indexed.
    fn to_version(&self) -> NewVersion {
        let id = crate::interaction::new_resource_id();
        let now = clock::now_micros();
        let mut value = self.to_resource();
        if let Some(obj) = value.as_object_mut() {
            let mut out = serde_json::Map::with_capacity(obj.len() + 2);
            out.insert("resourceType".into(), json!("AuditEvent"));
            out.insert("id".into(), json!(id));
            out.insert(
                "meta".into(),
                json!({"versionId": "1", "lastUpdated": clock::format_instant(now)}),
            );
            for (k, v) in std::mem::take(obj) {
                if k != "resourceType" {
                    out.insert(k, v);
                }
            }
            value = Value::Object(out);
        }
        NewVersion {
            res_type: "AuditEvent".to_string(),
            id,
            version_id: 1,
            last_updated: now,
            method: "POST",
            content: Some(value.to_string()),
            index: self.index_rows(&value),
            fresh: true,
        }
    }
}

impl AuditRecord {
    /// The search-index rows of the event, built directly from the record instead of by
    /// evaluating the FHIRPath of every AuditEvent SearchParameter for each event. The
    /// unit test
    /// `hand_built_index_rows_equal_the_generic_extraction` keeps them identical to
    /// [`indexing::extract`]; anything unexpected falls back to it.
    fn index_rows(&self, value: &Value) -> Vec<crate::storage::IndexRow> {
        self.try_index_rows(value)
            .unwrap_or_else(|| indexing::extract(value))
    }

    fn try_index_rows(&self, value: &Value) -> Option<Vec<crate::storage::IndexRow>> {
        use crate::storage::{IndexRow, RowValue};
        use fhir_model::search::SearchParamRegistry;
        let reg = SearchParamRegistry::get();
        let key = |code: &str, suffix: &str| -> Option<i64> {
            Some(crate::search::def_key(
                reg.param("AuditEvent", code)?,
                "AuditEvent",
                suffix,
            ))
        };
        let mut rows: Vec<IndexRow> = Vec::new();
        let mut push = |param: i64, value: RowValue| {
            let row = IndexRow {
                param,
                grp: None,
                value,
            };
            if !rows.contains(&row) {
                rows.push(row);
            }
        };
        let token = |system: Option<&str>, code: &str| RowValue::Token {
            system: system.map(str::to_string),
            code: Some(code.to_string()),
        };
        let string = |s: &str| RowValue::String {
            value: fhir_model::search::normalize_string(s),
            exact: s.to_string(),
        };
        // `:text` rows hold the normalised display in both columns.
        let text = |s: &str| {
            let n = fhir_model::search::normalize_string(s);
            RowValue::String {
                value: n.clone(),
                exact: n,
            }
        };
        let reference = |r: &str| -> Option<RowValue> {
            let (t, id) = r.split_once('/')?;
            (!id.contains('/')).then(|| RowValue::Reference {
                target_type: Some(t.to_string()),
                target_id: Some(id.to_string()),
                url: None,
            })
        };
        let coding = |v: &Value| -> Option<(Option<String>, String, Option<String>)> {
            Some((
                v.get("system").and_then(Value::as_str).map(str::to_string),
                v.get("code")?.as_str()?.to_string(),
                v.get("display").and_then(Value::as_str).map(str::to_string),
            ))
        };
        let push_coding = |code: &str, v: &Value, push: &mut dyn FnMut(i64, RowValue)| {
            let (system, c, display) = coding(v)?;
            push(key(code, "")?, token(system.as_deref(), &c));
            if let Some(d) = display {
                push(key(code, ":text")?, text(&d));
            }
            Some(())
        };
        push_coding("type", &value["type"], &mut push)?;
        for st in value["subtype"].as_array()? {
            push_coding("subtype", st, &mut push)?;
        }
        push(key("action", "")?, token(None, value["action"].as_str()?));
        push(key("outcome", "")?, token(None, value["outcome"].as_str()?));
        let (low, high) = fhir_model::datetime::FhirDateTime::parse(value["recorded"].as_str()?)
            .ok()?
            .to_range();
        push(key("date", "")?, RowValue::Date { low, high });
        for agent in value["agent"].as_array()? {
            if let Some(id) = agent.pointer("/who/identifier") {
                push(
                    key("agent", ":identifier")?,
                    token(id["system"].as_str(), id["value"].as_str()?),
                );
            }
            if let Some(name) = agent["name"].as_str() {
                push(key("agent-name", "")?, string(name));
            }
            if let Some(alt) = agent["altId"].as_str() {
                push(key("altid", "")?, token(None, alt));
            }
            if let Some(addr) = agent.pointer("/network/address").and_then(Value::as_str) {
                push(key("address", "")?, string(addr));
            }
            if agent.pointer("/who/reference").is_some() {
                // A `fhirUser` (relative or absolute, maybe a Patient for the `patient`
                // parameter): left to the generic extraction.
                return None;
            }
        }
        for entity in value["entity"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            if entity.pointer("/what/identifier").is_some() {
                return None; // an account (admin events, rare): the generic extraction
            }
            if let Some(r) = entity.pointer("/what/reference").and_then(Value::as_str) {
                push(key("entity", "")?, reference(r)?);
                if r.starts_with("Patient/") {
                    push(key("patient", "")?, reference(r)?);
                }
            }
            if let Some(name) = entity.get("name").and_then(Value::as_str) {
                push(key("entity-name", "")?, string(name));
            }
            if let Some(t) = entity.get("type") {
                push_coding("entity-type", t, &mut push)?;
            }
            if let Some(role) = entity.get("role") {
                push_coding("entity-role", role, &mut push)?;
            }
        }
        Some(rows)
    }
}

/// The sending side of the audit writer; cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<AuditRecord>,
}

impl Auditor {
    /// Starts the background writer on `store`. The task ends (after writing what is
    /// queued) when every [`Auditor`] is dropped; await the handle for a clean shutdown.
    pub fn start(store: Arc<dyn Store>) -> (Auditor, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = tokio::spawn(write_loop(store, rx));
        (Auditor { tx }, handle)
    }

    /// Queues an event (waits only when the queue is full).
    pub async fn record(&self, record: AuditRecord) {
        if self.tx.send(record).await.is_err() {
            tracing::error!("audit writer is gone: an AuditEvent was lost");
        }
    }
}

async fn write_loop(store: Arc<dyn Store>, mut rx: mpsc::Receiver<AuditRecord>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let versions: Vec<NewVersion> = batch.drain(..).map(|r| r.to_version()).collect();
        let n = versions.len();
        let result = async {
            let mut tx = store.begin().await?;
            for v in versions {
                tx.put(v);
            }
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, events = n, "writing AuditEvents failed");
        }
    }
}

/// Classifies a FHIR request for the audit trail: `(subtype, action, entity, patient)`
/// from the method and the path below `/fhir`; `None` for requests that touch no data
/// (`metadata`, the SMART configuration).
pub fn classify(
    method: &str,
    path: &str,
) -> Option<(&'static str, &'static str, Option<String>, Option<String>)> {
    let rest = path.strip_prefix("/fhir")?.trim_start_matches('/');
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let patient_of = |t: &str, id: &str| (t == "Patient").then(|| format!("Patient/{id}"));
    let inst = |t: &str, id: &str| Some(format!("{t}/{id}"));
    Some(match (method, segs.as_slice()) {
        (_, ["metadata"]) | (_, [".well-known", ..]) => return None,
        ("GET", []) | ("POST", ["_search"]) => ("search-system", "R", None, None),
        ("POST", []) => ("transaction", "E", None, None),
        ("GET", ["_history"]) => ("history-system", "R", None, None),
        ("GET", [op]) if op.starts_with('$') => ("operation", "E", None, None),
        ("GET", [_]) | ("POST", [_, "_search"]) => ("search-type", "R", None, None),
        ("POST", [_]) => ("create", "C", None, None),
        ("PUT", [_]) => ("update", "U", None, None),
        ("DELETE", [_]) => ("delete", "D", None, None),
        ("GET", [_, "_history"]) => ("history-type", "R", None, None),
        ("GET", [t, id]) => ("read", "R", inst(t, id), patient_of(t, id)),
        ("PUT", [t, id]) => ("update", "U", inst(t, id), patient_of(t, id)),
        ("DELETE", [t, id]) => ("delete", "D", inst(t, id), patient_of(t, id)),
        ("GET", [t, id, "_history"]) => ("history-instance", "R", inst(t, id), patient_of(t, id)),
        ("GET", [t, id, "_history", v]) => (
            "vread",
            "R",
            Some(format!("{t}/{id}/_history/{v}")),
            patient_of(t, id),
        ),
        ("GET", [c, id, op]) if op.starts_with('$') => {
            ("operation", "E", inst(c, id), patient_of(c, id))
        }
        ("GET", [c, id, _]) => ("search-type", "R", None, patient_of(c, id)),
        _ => ("operation", "E", None, None),
    })
}

/// The patient a search names through a `patient` or `subject` parameter (`Patient/x`
/// or, for `patient`, a bare id).
pub fn patient_in_query(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes()).find_map(|(k, v)| {
        let k = k.split(':').next().unwrap_or("");
        match k {
            "patient" if !v.contains('/') => Some(format!("Patient/{v}")),
            "patient" | "subject" => v
                .rsplit_once("Patient/")
                .map(|(_, id)| format!("Patient/{id}")),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_valid_r4_audit_events() {
        let validator = fhir_model::validation::Validator::new().unwrap();
        let p = Principal::anonymous();
        let mut r = AuditRecord::new(EventKind::Rest, "read", "R", 200, Some(&p));
        r.ip = Some("127.0.0.1".into());
        r.user_agent = Some("curl/8".into());
        r.entities = vec!["Observation/1".into()];
        r.patient = Some("Patient/2".into());
        r.query = Some("code=1".into());
        let v = r.to_version();
        let value: Value = serde_json::from_str(v.content.as_deref().unwrap()).unwrap();
        validator.validate(&value).unwrap();
        assert_eq!(value["entity"].as_array().unwrap().len(), 3);
        let login = AuditRecord::new(EventKind::Login, "login", "E", 401, None).to_version();
        let value: Value = serde_json::from_str(login.content.as_deref().unwrap()).unwrap();
        validator.validate(&value).unwrap();
        assert_eq!(value["outcome"], "4");
        for r in [external_user_record(), hl7_record()] {
            let v = r.to_version();
            let value: Value = serde_json::from_str(v.content.as_deref().unwrap()).unwrap();
            validator.validate(&value).unwrap();
        }
    }

    /// A read by a user with a token of an external OpenID Connect issuer.
    fn external_user_record() -> AuditRecord {
        let p = Principal {
            client_id: "portal".into(),
            sub: "u-42".into(),
            fhir_user: Some("Practitioner/7".into()),
            issuer: Some("http://idp.example/realms/staff".into()),
            anonymous: false,
            ..Principal::anonymous()
        };
        let mut r = AuditRecord::new(EventKind::Rest, "read", "R", 200, Some(&p));
        r.entities = vec!["Observation/1".into()];
        r
    }

    /// An ORU^R01 applied from LAB^HOSP.
    fn hl7_record() -> AuditRecord {
        let mut r = AuditRecord::hl7_import(
            "LAB^HOSP",
            Some("10.0.0.7".into()),
            Hl7Source {
                message_type: "ORU^R01^ORU_R01".into(),
                control_id: "MSG-1".into(),
            },
            "C",
        );
        r.entities = vec!["Patient/2".into(), "Observation/1".into()];
        r.patient = Some("Patient/2".into());
        r
    }

    #[test]
    fn external_subjects_are_named_by_issuer_and_sub_with_their_fhir_user() {
        let ev = external_user_record().to_resource();
        let who = &ev["agent"][0]["who"];
        assert_eq!(
            who["identifier"]["system"],
            "http://idp.example/realms/staff"
        );
        assert_eq!(who["identifier"]["value"], "u-42");
        assert_eq!(who["reference"], "Practitioner/7");
        assert_eq!(ev["agent"][0]["name"], "portal");
        assert_eq!(ev["agent"][0]["type"]["coding"][0]["code"], "humanuser");
    }

    #[test]
    fn hl7_imports_name_the_sender_the_message_and_what_was_written() {
        let ev = hl7_record().to_resource();
        assert_eq!(ev["type"]["code"], "110107");
        assert_eq!(ev["subtype"][0]["code"], "R01");
        assert_eq!(ev["subtype"][0]["display"], "ORU^R01^ORU_R01");
        assert_eq!(ev["action"], "C");
        let agent = &ev["agent"][0];
        assert_eq!(agent["who"]["identifier"]["system"], HL7_SENDER_SYSTEM);
        assert_eq!(agent["who"]["identifier"]["value"], "LAB^HOSP");
        assert_eq!(agent["network"]["address"], "10.0.0.7");
        assert_eq!(agent["type"]["coding"][0]["code"], "110153");
        let whats: Vec<&Value> = ev["entity"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["what"]["reference"])
            .collect();
        assert_eq!(whats[..2], [&json!("Patient/2"), &json!("Observation/1")]);
        assert_eq!(ev["entity"][2]["detail"][1]["valueString"], "MSG-1");
        // the patient is among the written resources: not listed twice
        assert_eq!(ev["entity"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn admin_events_are_valid_security_alerts_naming_the_account() {
        let validator = fhir_model::validation::Validator::new().unwrap();
        let p = Principal::anonymous();
        let mut r = AuditRecord::new(EventKind::Admin, ADMIN_CHANGE, "C", 201, Some(&p));
        r.account = Some((USER_SYSTEM, "dr.house".into()));
        let v = r.to_version();
        let value: Value = serde_json::from_str(v.content.as_deref().unwrap()).unwrap();
        validator.validate(&value).unwrap();
        assert_eq!(value["type"]["code"], "110113");
        assert_eq!(value["subtype"][0]["code"], "110137");
        assert_eq!(
            value["entity"][0]["what"]["identifier"]["value"],
            "dr.house"
        );
        assert_eq!(value["entity"][0]["role"]["code"], "11");
        // Indexed by the generic extraction: searchable by type and subtype.
        assert_eq!(
            sorted(&v.index),
            sorted(&indexing::extract(&value)),
            "{value}"
        );
        let refused = AuditRecord::new(EventKind::Admin, ADMIN_USE, "R", 403, Some(&p));
        let value = refused.to_resource();
        assert_eq!(value["subtype"][0]["display"], "Use of Restricted Function");
        assert_eq!(value["outcome"], "4");
    }

    fn sorted(rows: &[crate::storage::IndexRow]) -> Vec<String> {
        let mut v: Vec<String> = rows.iter().map(|r| format!("{r:?}")).collect();
        v.sort();
        v
    }

    #[test]
    fn hand_built_index_rows_equal_the_generic_extraction() {
        let p = Principal::anonymous();
        let mut full = AuditRecord::new(EventKind::Rest, "read", "R", 200, Some(&p));
        full.ip = Some("127.0.0.1".into());
        full.user_agent = Some("curl/8".into());
        full.entities = vec!["Observation/1".into()];
        full.patient = Some("Patient/2".into());
        full.query = Some("code=1".into());
        let mut own_patient = full.clone();
        own_patient.entities = vec!["Patient/2".into()];
        let bare = AuditRecord::new(EventKind::Login, "login", "E", 401, None);
        let mut external = external_user_record();
        external.fhir_user = None;
        for r in [full, own_patient, bare, external, hl7_record()] {
            let v = r.to_version();
            let value: Value = serde_json::from_str(v.content.as_deref().unwrap()).unwrap();
            let hand = r.try_index_rows(&value).expect("hand-built rows");
            assert_eq!(sorted(&hand), sorted(&indexing::extract(&value)), "{value}");
        }
        // With a fhirUser the generic extraction is used.
        let r = external_user_record();
        let v = r.to_version();
        let value: Value = serde_json::from_str(v.content.as_deref().unwrap()).unwrap();
        assert!(r.try_index_rows(&value).is_none());
        assert_eq!(
            sorted(&r.index_rows(&value)),
            sorted(&indexing::extract(&value))
        );
    }

    #[test]
    fn requests_are_classified_by_interaction() {
        assert_eq!(classify("GET", "/fhir/metadata"), None);
        assert_eq!(
            classify("GET", "/fhir/Patient/1"),
            Some((
                "read",
                "R",
                Some("Patient/1".into()),
                Some("Patient/1".into())
            ))
        );
        assert_eq!(
            classify("GET", "/fhir/Observation").unwrap().0,
            "search-type"
        );
        assert_eq!(classify("POST", "/fhir/Observation").unwrap().1, "C");
        assert_eq!(
            classify("GET", "/fhir/Patient/1/$everything").unwrap().0,
            "operation"
        );
        assert_eq!(
            classify("GET", "/fhir/Patient/1/Observation").unwrap().3,
            Some("Patient/1".into())
        );
        assert_eq!(
            patient_in_query("subject=Patient/7&code=1"),
            Some("Patient/7".into())
        );
        assert_eq!(patient_in_query("patient=7"), Some("Patient/7".into()));
    }
}
