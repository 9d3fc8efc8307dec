//! Start-up: connect the store (running its migrations), compile the validator, create the
//! first administrator on an empty user table (`crate::auth::accounts`), bind the HTTP
//! listener and the HL7 v2 MLLP listener (`crate::mllp`), and serve until SIGTERM or
//! Ctrl-C (graceful shutdown: in-flight requests and messages finish).

use std::net::SocketAddr;
use std::sync::Arc;

use fhir_model::validation::Validator;

use crate::auth::accounts::{self, FirstAdmin};
use crate::http::{AppState, router};
use crate::interaction::Context;
use crate::storage;

/// Default request body limit: 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Settings of `mediflow serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on, e.g. `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://…`.
    pub database_url: String,
    /// Public FHIR base URL; `http://<listen>/fhir` when `None`.
    pub base_url: Option<String>,
    /// Request body limit in bytes.
    pub max_body_bytes: usize,
    /// The HL7 v2 MLLP listener (`--mllp-listen`, default 127.0.0.1:2575); `None` with
    /// `--no-mllp`.
    pub mllp: Option<crate::mllp::MllpConfig>,
    /// Require bearer tokens on the FHIR API (issue 5); false with `--no-auth`.
    pub auth: bool,
    /// The first administrator's password (`MEDIFLOW_ADMIN_PASSWORD`), used only when
    /// authorization is on and there is no user yet; generated when `None`.
    pub admin_password: Option<crate::auth::accounts::Password>,
    /// An external OpenID Connect issuer whose tokens are accepted too (`--oidc-*`).
    pub oidc: Option<crate::auth::oidc::OidcConfig>,
}

/// Builds the interaction context: connects the store and compiles the validator.
pub async fn context(database_url: &str, base_url: String) -> StartResult<Context> {
    let store = storage::connect(database_url).await?;
    let validator = Arc::new(Validator::new()?);
    Ok(Context {
        store,
        validator,
        base_url: base_url.trim_end_matches('/').to_string(),
        defer_index: false,
    })
}

/// Start-up errors, reported to the operator as text.
pub type StartResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Runs the server until a shutdown signal.
pub async fn serve(config: ServeConfig) -> StartResult<()> {
    let base_url = config
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}/fhir", config.listen));
    let ctx = context(&config.database_url, base_url.clone()).await?;
    tracing::info!(backend = ctx.store.backend(), database = %redact(&config.database_url), "database ready");
    if ctx
        .store
        .index_state(crate::reindex::STALE_KEY)
        .await?
        .is_some()
    {
        tracing::warn!(
            "search indexes do not cover every resource (an import with --defer-index, an \
             interrupted reindex, or an upgrade): run `mediflow reindex`"
        );
    }
    // One shutdown signal for both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // One audit writer for the HTTP API and the MLLP listener.
    let (auditor, audit_task) = crate::auth::audit::Auditor::start(ctx.store.clone());
    let mllp = match &config.mllp {
        Some(mllp_config) => {
            let mllp_ctx = ctx.clone();
            let processor = Arc::new(
                crate::mllp::Processor::new(
                    mllp_ctx,
                    crate::mllp::mapping::config(mllp_config.auto_create_patients),
                )
                .with_auditor(auditor.clone()),
            );
            let listener = crate::mllp::Listener::bind(mllp_config, processor)
                .await
                .map_err(|e| format!("MLLP listener on {}: {e}", mllp_config.listen))?;
            tracing::info!(
                listen = %listener.local_addr()?,
                auto_create_patients = mllp_config.auto_create_patients,
                "HL7 v2 MLLP listener ready"
            );
            Some(tokio::spawn(listener.run(stopped.clone())))
        }
        None => None,
    };
    let mut security =
        crate::auth::Security::load(ctx.store.clone(), &base_url, config.auth).await?;
    if let Some(oidc) = config.oidc.clone() {
        let external = crate::auth::oidc::start(oidc, &security.audience).await?;
        tracing::info!(
            issuer = %external.issuer(),
            audience = %external.audience(),
            "accepting access tokens of an external OpenID Connect issuer"
        );
        security = security.with_external(external)?;
    }
    let security = Arc::new(security);
    if config.auth {
        tracing::info!(
            issuer = %security.issuer,
            smart_configuration = %format!("{}/.well-known/smart-configuration", security.issuer),
            "authorization on: FHIR requests need a bearer token"
        );
    } else {
        tracing::warn!(
            "!!! AUTHENTICATION IS OFF (--no-auth / MEDIFLOW_NO_AUTH): anyone who can reach \
             this port can read and change every resource. For local experiments only. !!!"
        );
    }
    if config.auth {
        first_admin(&ctx, config.admin_password.as_ref(), &auditor).await?;
    }
    let state = Arc::new(AppState {
        ctx,
        max_body_bytes: config.max_body_bytes,
        security,
        auditor,
    });
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, base_url = %base_url, "MediFlow FHIR server listening");
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let mut http_stopped = stopped.clone();
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = http_stopped.wait_for(|v| *v).await;
    })
    .await?;
    if let Some(task) = mllp {
        let _ = task.await;
    }
    // Every AppState and the MLLP processor (and so every Auditor) are gone: the writer
    // drains its queue and ends.
    if tokio::time::timeout(std::time::Duration::from_secs(10), audit_task)
        .await
        .is_err()
    {
        tracing::warn!("the audit writer did not finish within 10 s");
    }
    tracing::info!("shut down cleanly");
    Ok(())
}

/// First start (issue 5, item 1): creates the administrator when there is no user at all
/// ([`accounts::ensure_first_admin`]) and audits it. A generated password is printed once,
/// on stdout (never in the log, which goes to stderr and may be collected); a password
/// from `MEDIFLOW_ADMIN_PASSWORD` is never printed.
async fn first_admin(
    ctx: &Context,
    given: Option<&accounts::Password>,
    auditor: &crate::auth::audit::Auditor,
) -> StartResult<()> {
    use crate::auth::audit::{self, AuditRecord, EventKind};
    let outcome = accounts::ensure_first_admin(ctx.store.as_ref(), given).await?;
    let admin = accounts::FIRST_ADMIN;
    match &outcome {
        FirstAdmin::NotNeeded => return Ok(()),
        FirstAdmin::CreatedWithGivenPassword => tracing::info!(
            username = admin,
            "no user yet: created the administrator with the password of {}",
            accounts::ADMIN_PASSWORD_ENV
        ),
        FirstAdmin::CreatedWithOneTimePassword(password) => {
            tracing::info!(
                username = admin,
                "no user yet: created the administrator; its one-time password is on stdout"
            );
            println!("{}", one_time_password_notice(&password.0));
        }
    }
    let operator = crate::auth::Principal {
        client_id: "mediflow".into(),
        sub: "mediflow".into(),
        ..crate::auth::Principal::anonymous()
    };
    let mut record = AuditRecord::new(
        EventKind::Admin,
        audit::ADMIN_CHANGE,
        "C",
        201,
        Some(&operator),
    );
    record.user_agent = Some("mediflow serve (first start)".into());
    record.account = Some((audit::USER_SYSTEM, admin.to_string()));
    auditor.record(record).await;
    Ok(())
}

/// The message that shows the first administrator's generated password, once.
fn one_time_password_notice(password: &str) -> String {
    let admin = accounts::FIRST_ADMIN;
    format!(
        "\n\
         ================================================================================\n\
         MediFlow first start: created the administrator account\n\
         \n    username:           {admin}\n    one-time password:  {password}\n\n\
         This password is shown only now and is not stored in clear anywhere. It is good\n\
         for one thing: setting a new password. No token is issued for {admin} until then:\n\
         \n    mediflow user passwd --username {admin} --password-stdin\n\n\
         (Set {env} before the first start to choose the password instead.)\n\
         ================================================================================",
        env = accounts::ADMIN_PASSWORD_ENV
    )
}

/// Hides a password in a database URL before logging it.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
