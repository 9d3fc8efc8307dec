//! MediFlow: a FHIR R4 (4.0.1) server for hospitals.
//!
//! Module map, top to bottom along a request:
//! - [`http`]: the axum edge — routes under `/fhir`, content negotiation, body limits,
//!   `Prefer`, request logging; errors rendered once as OperationOutcome ([`error`]).
//! - [`interaction`]: what each RESTful interaction does (read, create, update, delete,
//!   history, search, transaction/batch, capabilities), independent of HTTP.
//! - [`search`]: typed search parameters parsed from query strings; [`indexing`]: the index
//!   rows extracted from a resource at write time.
//! - [`storage`]: the `Store` trait and its SQLite and PostgreSQL implementations; all SQL.
//! - [`server`]: start-up (config, database, validator, listener, graceful shutdown).
//! - [`mllp`]: HL7 v2 over MLLP — listener, processing into FHIR transactions, ACKs,
//!   stored messages (`hl7_messages`), `mediflow hl7 …` and `bench mllp`.
//! - [`auth`]: security (issue 5) — signing keys, bearer-token authentication, scope
//!   enforcement ([`auth::authz`]), the AuditEvent trail ([`auth::audit`]) and the
//!   `mediflow client|keys|token|user` commands; the OAuth endpoints are
//!   `http::oauth`, the policy and crypto core the `mediflow-auth` crate.
//! - [`import`]: the `mediflow import` command; [`reindex`]: `mediflow reindex`;
//!   [`bench`]: `mediflow bench`.

pub mod auth;
pub mod bench;
pub mod clock;
pub mod error;
pub mod http;
pub mod import;
pub mod indexing;
pub mod interaction;
pub mod mllp;
pub mod reindex;
pub mod search;
pub mod server;
pub mod storage;
