//! The operator commands of issue 5, run on the server host against its database:
//!
//! * `mediflow client add --client-id ID (--jwks FILE | --jwks-url URL) --scope "…"
//!   [--name N]`: registers (or replaces) a SMART Backend Services client
//!   (backend-services.html § "Registering a SMART Backend Service": a client id and a JWK
//!   Set, inline or by URL); `mediflow client list`.
//! * `mediflow keys rotate`: a new signing key becomes current, the old one is retired
//!   and stays in the JWKS until its tokens have expired.
//! * `mediflow token --client-id ID --scope "…" [--patient ID]`: mints an access token
//!   with the stored signing key and prints it (nothing else) on stdout, for scripts and
//!   the README's "a token in one command". An operator with access to the database
//!   could do anything anyway; for a registered client the scope is capped by its
//!   registration, for any other client id the scope is granted as asked. The token's
//!   `iss`/`aud` follow `--base-url` (as for `serve`). The grant is audited.
//! * `mediflow user add --username U --role ROLE [--fhir-user Practitioner/1]`: adds a
//!   user with an Argon2id password hash; the password is read from stdin
//!   (`--password-stdin`) or `MEDIFLOW_USER_PASSWORD`, never printed.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use mediflow_auth::{Jwks, KeyAlgorithm, Role, ScopeSet};
use serde_json::Value;

use super::audit::{AuditRecord, Auditor, EventKind};
use super::{Principal, Security, SecurityError, now_secs};
use crate::storage::auth::{ClientRecord, UserRecord};
use crate::storage::{self, Store};

/// The embedded default database (as for `serve`).
pub const DEFAULT_DATABASE_URL: &str = "sqlite://mediflow-data/mediflow.db";
/// The default FHIR base URL (as for `serve` on its default address).
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080/fhir";

/// `--database-url`, shared by the commands below.
#[derive(Debug, Args)]
pub struct DbArg {
    /// The database (default: the embedded SQLite file).
    #[arg(long, env = "MEDIFLOW_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl DbArg {
    async fn open(&self) -> Result<Arc<dyn Store>, SecurityError> {
        let url = self.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL);
        Ok(storage::connect(url).await?)
    }
}

/// `mediflow client …`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register (or replace) a SMART Backend Services client.
    Add {
        /// The client id (`iss` and `sub` of its client assertions).
        #[arg(long)]
        client_id: String,
        /// A file with the client's public JWK Set (`{"keys": [...]}`).
        #[arg(
            long,
            conflicts_with = "jwks_url",
            required_unless_present = "jwks_url"
        )]
        jwks: Option<PathBuf>,
        /// The URL the client's JWK Set is fetched from at each token request.
        #[arg(long)]
        jwks_url: Option<String>,
        /// The most this client may be granted, e.g. "system/Patient.rs system/Observation.rs".
        #[arg(long)]
        scope: String,
        /// A display name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        db: DbArg,
    },
    /// List the registered clients.
    List {
        #[command(flatten)]
        db: DbArg,
    },
}

/// `mediflow keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key current; the old one stays published until its tokens expire.
    Rotate {
        /// ES256 (default) or ES384.
        #[arg(long, default_value = "ES256")]
        alg: String,
        #[command(flatten)]
        db: DbArg,
    },
}

/// `mediflow token …`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The client the token is for (its `client_id` and `sub`).
    #[arg(long)]
    pub client_id: String,
    /// The scopes, e.g. "system/*.rs" or "patient/*.rs".
    #[arg(long)]
    pub scope: String,
    /// The launch patient (needed by patient/ scopes).
    #[arg(long)]
    pub patient: Option<String>,
    /// The server's public FHIR base URL (the token's audience; the issuer is this
    /// without /fhir).
    #[arg(long, env = "MEDIFLOW_BASE_URL", default_value = DEFAULT_BASE_URL)]
    pub base_url: String,
    #[command(flatten)]
    pub db: DbArg,
}

/// `mediflow user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add (or replace) a user; the password comes from stdin or MEDIFLOW_USER_PASSWORD.
    Add {
        /// Login name.
        #[arg(long)]
        username: String,
        /// ADMIN, DOCTOR, NURSE, LAB_TECH, RADIOLOGIST, PHARMACIST, RECEPTIONIST, BILLING
        /// or PATIENT.
        #[arg(long)]
        role: String,
        /// The user's FHIR resource, e.g. Practitioner/1.
        #[arg(long)]
        fhir_user: Option<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        db: DbArg,
    },
}

fn input(msg: String) -> SecurityError {
    SecurityError::Input(msg)
}

/// Runs `mediflow client …`.
pub async fn client(cmd: ClientCommand) -> Result<(), SecurityError> {
    match cmd {
        ClientCommand::Add {
            client_id,
            jwks,
            jwks_url,
            scope,
            name,
            db,
        } => {
            if client_id.trim().is_empty() {
                return Err(input("--client-id must not be empty".into()));
            }
            let scopes = ScopeSet::parse(&scope)?;
            if scopes.has_no_resource_access() {
                return Err(input(format!(
                    "--scope {scope:?} grants no resource access"
                )));
            }
            let jwks_text = match &jwks {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| input(format!("{}: {e}", path.display())))?;
                    let value: Value = serde_json::from_str(&text)
                        .map_err(|e| input(format!("{}: not JSON: {e}", path.display())))?;
                    check_public_jwks(&value)?;
                    Some(value.to_string())
                }
                None => None,
            };
            if let Some(url) = &jwks_url {
                url::Url::parse(url).map_err(|e| input(format!("--jwks-url {url}: {e}")))?;
            }
            let store = db.open().await?;
            store
                .auth_put_client(&ClientRecord {
                    client_id: client_id.clone(),
                    name: name.unwrap_or_else(|| client_id.clone()),
                    kind: "backend".into(),
                    jwks: jwks_text,
                    jwks_url,
                    scopes: scopes.to_string(),
                    redirect_uris: "[]".into(),
                    created_at: now_secs(),
                })
                .await?;
            println!("client {client_id} registered (backend services) with scope \"{scopes}\"");
            Ok(())
        }
        ClientCommand::List { db } => {
            let store = db.open().await?;
            for c in store.auth_clients().await? {
                let keys = match (&c.jwks, &c.jwks_url) {
                    (_, Some(url)) => format!("jwks_url {url}"),
                    (Some(_), None) => "jwks inline".to_string(),
                    (None, None) => "no keys".to_string(),
                };
                println!(
                    "{}\t{}\t{}\t{keys}\tscope \"{}\"",
                    c.client_id, c.name, c.kind, c.scopes
                );
            }
            Ok(())
        }
    }
}

/// A client's JWK Set must hold at least one usable public signature key and no private
/// key material.
fn check_public_jwks(value: &Value) -> Result<(), SecurityError> {
    let keys = value
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| input("the JWK Set has no \"keys\" array".into()))?;
    if keys.iter().any(|k| k.get("d").is_some()) {
        return Err(input(
            "the JWK Set contains a private key (\"d\"): register the public keys only".into(),
        ));
    }
    if Jwks::from_json(value)?.is_empty() {
        return Err(input(
            "the JWK Set has no usable public signature key (RS384 or ES384)".into(),
        ));
    }
    Ok(())
}

/// Runs `mediflow keys …`.
pub async fn keys(cmd: KeysCommand) -> Result<(), SecurityError> {
    match cmd {
        KeysCommand::Rotate { alg, db } => {
            let alg = match alg.to_ascii_uppercase().as_str() {
                "ES256" => KeyAlgorithm::Es256,
                "ES384" => KeyAlgorithm::Es384,
                other => return Err(input(format!("--alg {other}: expected ES256 or ES384"))),
            };
            let store = db.open().await?;
            let kid = super::rotate_keys(store.as_ref(), alg).await?;
            println!(
                "new signing key {kid} ({}) is current; the previous key stays in the JWKS \
                 until its tokens expire",
                alg.as_str()
            );
            Ok(())
        }
    }
}

/// Runs `mediflow token …`: prints the access token.
pub async fn token(args: TokenArgs) -> Result<(), SecurityError> {
    let store = args.db.open().await?;
    let requested = ScopeSet::parse(&args.scope)?;
    let granted = match store.auth_client(&args.client_id).await? {
        Some(c) => requested.intersect(&ScopeSet::parse_lenient(&c.scopes)),
        None => requested,
    };
    if granted.has_no_resource_access() {
        return Err(input(format!(
            "--scope {:?} grants no resource access to {}",
            args.scope, args.client_id
        )));
    }
    if granted.has_patient_scopes() && args.patient.is_none() {
        return Err(input("patient/ scopes need --patient ID".into()));
    }
    let security = Security::load(store.clone(), &args.base_url, true).await?;
    let (token, _) = security.mint(
        &args.client_id,
        &args.client_id,
        &granted,
        args.patient.clone(),
        now_secs(),
    )?;
    let (auditor, task) = Auditor::start(store);
    let principal = Principal {
        client_id: args.client_id.clone(),
        sub: args.client_id.clone(),
        scopes: granted,
        patient: args.patient,
        fhir_user: None,
        jti: None,
        issuer: None,
        anonymous: false,
    };
    let mut record = AuditRecord::new(EventKind::Login, "login", "E", 200, Some(&principal));
    record.user_agent = Some("mediflow token (CLI)".into());
    auditor.record(record).await;
    drop(auditor);
    let _ = task.await;
    println!("{token}");
    Ok(())
}

/// Runs `mediflow user …`.
pub async fn user(cmd: UserCommand) -> Result<(), SecurityError> {
    match cmd {
        UserCommand::Add {
            username,
            role,
            fhir_user,
            password_stdin,
            db,
        } => {
            let role: Role = role
                .parse()
                .map_err(|e: mediflow_auth::roles::UnknownRole| input(e.to_string()))?;
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| input(format!("reading the password from stdin: {e}")))?;
                line.trim_end_matches(['\r', '\n']).to_string()
            } else {
                std::env::var("MEDIFLOW_USER_PASSWORD").map_err(|_| {
                    input("give the password on stdin (--password-stdin) or in MEDIFLOW_USER_PASSWORD".into())
                })?
            };
            if password.chars().count() < 8 {
                return Err(input("the password must have at least 8 characters".into()));
            }
            let hash = mediflow_auth::password::hash(&password)
                .map_err(|e| input(format!("hashing the password: {e}")))?;
            let store = db.open().await?;
            store
                .auth_put_user(&UserRecord {
                    username: username.clone(),
                    password_hash: hash,
                    role: role.as_str().to_string(),
                    fhir_user,
                    failures: "[]".into(),
                    locked_until: None,
                    created_at: now_secs(),
                })
                .await?;
            println!("user {username} saved with role {role}");
            Ok(())
        }
    }
}
