//! The operator commands of issue 5, run on the server host against its database:
//!
//! * `mediflow client add --client-id ID (--jwks FILE | --jwks-url URL) --scope "…"
//!   [--name N]`: registers (or replaces) a SMART Backend Services client
//!   (backend-services.html § "Registering a SMART Backend Service": a client id and a JWK
//!   Set, inline or by URL); `mediflow client list`; `mediflow client remove --client-id
//!   ID`.
//! * `mediflow keys rotate`: a new signing key becomes current, the old one is retired
//!   and stays in the JWKS until its tokens have expired.
//! * `mediflow token --client-id ID --scope "…" [--patient ID]`: mints an access token
//!   with the stored signing key and prints it (nothing else) on stdout, for scripts and
//!   the README's "a token in one command". An operator with access to the database
//!   could do anything anyway; for a registered client the scope is capped by its
//!   registration, for any other client id the scope is granted as asked. The token's
//!   `iss`/`aud` follow `--base-url` (as for `serve`). The grant is audited.
//! * `mediflow user add --username U --role ROLE [--fhir-user Practitioner/1]`: adds (or
//!   replaces) a user with an Argon2id password hash; the password is read from stdin
//!   (`--password-stdin`) or `MEDIFLOW_USER_PASSWORD`, never printed.
//!   `mediflow user passwd --username U` sets a new password the same way and clears the
//!   user's "must change the password" flag and login lock (the way out of the first
//!   start's one-time password); `mediflow user list`; `mediflow user remove --username U`.
//!
//! Input is checked by [`super::accounts`], as for the admin API. Changes to users and
//! clients are audited (DICOM 110113/110137, see [`super::audit`]) with agent `mediflow`
//! (the CLI run by an operator on the server host).

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use mediflow_auth::{KeyAlgorithm, ScopeSet};
use serde_json::Value;

use super::accounts::{self, AccountError};
use super::audit::{self, AuditRecord, Auditor, EventKind};
use super::{Principal, Security, SecurityError, now_secs};
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
    /// Register (or replace) a client: a SMART Backend Services client (`--kind backend`,
    /// the default), or an app of the authorization-code flow (`--kind public` with PKCE
    /// only, or `--kind confidential` authenticating with private_key_jwt).
    Add {
        /// The client id (`iss` and `sub` of its client assertions).
        #[arg(long)]
        client_id: String,
        /// backend, public or confidential (SMART client-public,
        /// client-confidential-asymmetric).
        #[arg(long, default_value = "backend", value_parser = ["backend", "public", "confidential"])]
        kind: String,
        /// A redirect URI of an app (repeat for several); exact match (RFC 6749 §3.1.2).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// A file with the client's public JWK Set (`{"keys": [...]}`); backend and
        /// confidential clients need it or --jwks-url.
        #[arg(long, conflicts_with = "jwks_url")]
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
    /// Remove a client registration (its tokens stay valid until they expire).
    Remove {
        /// The client id.
        #[arg(long)]
        client_id: String,
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
    /// Set a user's password (stdin or MEDIFLOW_USER_PASSWORD); clears the "must change
    /// the password" flag of a one-time password and the login lock.
    Passwd {
        /// Login name.
        #[arg(long)]
        username: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// List the users (never their password hashes).
    List {
        #[command(flatten)]
        db: DbArg,
    },
    /// Remove a user (tokens already issued stay valid until they expire).
    Remove {
        /// Login name.
        #[arg(long)]
        username: String,
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
            kind,
            redirect_uris,
            jwks,
            jwks_url,
            scope,
            name,
            db,
        } => {
            let jwks_value: Option<Value> = match &jwks {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| input(format!("{}: {e}", path.display())))?;
                    Some(
                        serde_json::from_str(&text)
                            .map_err(|e| input(format!("{}: not JSON: {e}", path.display())))?,
                    )
                }
                None => None,
            };
            let record = accounts::new_client(
                accounts::ClientKind::parse(&kind)?,
                &client_id,
                name.as_deref(),
                jwks_value.as_ref(),
                jwks_url.as_deref(),
                &redirect_uris,
                &scope,
            )?;
            let store = db.open().await?;
            store.auth_put_client(&record).await?;
            audit_change(store, "C", (audit::CLIENT_SYSTEM, client_id.clone())).await;
            println!(
                "client {client_id} registered ({kind}) with scope \"{}\"",
                record.scopes
            );
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
        ClientCommand::Remove { client_id, db } => {
            let store = db.open().await?;
            if !store.auth_delete_client(&client_id).await? {
                return Err(AccountError::NotFound(format!("no client {client_id:?}")).into());
            }
            audit_change(store, "D", (audit::CLIENT_SYSTEM, client_id.clone())).await;
            println!("client {client_id} removed");
            Ok(())
        }
    }
}

/// Audits a change made by a command (module doc): `action` C, U or D on `account`.
async fn audit_change(
    store: Arc<dyn Store>,
    action: &'static str,
    account: (&'static str, String),
) {
    let (auditor, task) = Auditor::start(store);
    let operator = Principal {
        client_id: "mediflow".into(),
        sub: "mediflow".into(),
        ..Principal::anonymous()
    };
    let mut record = AuditRecord::new(
        EventKind::Admin,
        audit::ADMIN_CHANGE,
        action,
        200,
        Some(&operator),
    );
    record.user_agent = Some("mediflow (CLI)".into());
    record.account = Some(account);
    auditor.record(record).await;
    drop(auditor);
    let _ = task.await;
}

/// The password of `mediflow user add|passwd`: the first line of stdin with
/// `--password-stdin`, else `MEDIFLOW_USER_PASSWORD`.
fn read_password(password_stdin: bool) -> Result<String, SecurityError> {
    if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| input(format!("reading the password from stdin: {e}")))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    } else {
        std::env::var("MEDIFLOW_USER_PASSWORD").map_err(|_| {
            input(
                "give the password on stdin (--password-stdin) or in MEDIFLOW_USER_PASSWORD".into(),
            )
        })
    }
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
            // Check what needs no secret first: a bad role fails before asking for one.
            accounts::check_username(&username)?;
            accounts::parse_role(&role)?;
            if let Some(f) = &fhir_user {
                accounts::check_fhir_user(f)?;
            }
            let password = read_password(password_stdin)?;
            let record =
                accounts::new_user(&username, &password, &role, fhir_user.as_deref(), false)?;
            let store = db.open().await?;
            store.auth_put_user(&record).await?;
            audit_change(store, "C", (audit::USER_SYSTEM, username.clone())).await;
            println!("user {username} saved with role {}", record.role);
            Ok(())
        }
        UserCommand::Passwd {
            username,
            password_stdin,
            db,
        } => {
            let password = read_password(password_stdin)?;
            let store = db.open().await?;
            accounts::set_password(store.as_ref(), &username, &password).await?;
            audit_change(store, "U", (audit::USER_SYSTEM, username.clone())).await;
            println!("password of {username} changed");
            Ok(())
        }
        UserCommand::List { db } => {
            let store = db.open().await?;
            let now = now_secs();
            for u in store.auth_users().await? {
                let mut flags = Vec::new();
                if u.must_change_password {
                    flags.push("must-change-password");
                }
                if u.locked_until.is_some_and(|t| t > now) {
                    flags.push("locked");
                }
                println!(
                    "{}\t{}\t{}\t{}",
                    u.username,
                    u.role,
                    u.fhir_user.as_deref().unwrap_or("-"),
                    if flags.is_empty() {
                        "-".to_string()
                    } else {
                        flags.join(",")
                    }
                );
            }
            Ok(())
        }
        UserCommand::Remove { username, db } => {
            let store = db.open().await?;
            accounts::keep_an_admin(store.as_ref(), &username, None).await?;
            if !store.auth_delete_user(&username).await? {
                return Err(AccountError::NotFound(format!("no user {username:?}")).into());
            }
            audit_change(store, "D", (audit::USER_SYSTEM, username.clone())).await;
            println!("user {username} removed");
            Ok(())
        }
    }
}
