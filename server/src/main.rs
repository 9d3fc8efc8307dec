//! The `mediflow` command: `serve`, `import`, `bench`, `hl7`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc: the import and search paths allocate many small JSON nodes; glibc malloc
/// showed up as ~15% of import CPU time in perf.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use mediflow::auth::cli as auth_cli;
use mediflow::auth::oidc as auth_oidc;
use mediflow::mllp;
use mediflow::server::{self, DEFAULT_MAX_BODY_BYTES, ServeConfig};

/// MediFlow: a FHIR R4 server for hospitals.
#[derive(Parser)]
#[command(name = "mediflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the FHIR server.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "MEDIFLOW_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Database: sqlite://PATH or postgres://user@host/db. Default: an embedded SQLite
        /// file, ./mediflow-data/mediflow.db.
        #[arg(long, env = "MEDIFLOW_DATABASE_URL")]
        database_url: Option<String>,
        /// Public FHIR base URL used in Location and fullUrl (default http://LISTEN/fhir).
        #[arg(long, env = "MEDIFLOW_BASE_URL")]
        base_url: Option<String>,
        /// Largest accepted request body in bytes (413 above).
        #[arg(long, env = "MEDIFLOW_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
        max_body_bytes: usize,
        /// Address of the HL7 v2 MLLP listener.
        #[arg(long, env = "MEDIFLOW_MLLP_LISTEN", default_value = mllp::DEFAULT_LISTEN)]
        mllp_listen: SocketAddr,
        /// Do not listen for HL7 v2 over MLLP.
        #[arg(long, env = "MEDIFLOW_NO_MLLP")]
        no_mllp: bool,
        /// Close an MLLP connection after this many seconds without a byte.
        #[arg(long, env = "MEDIFLOW_MLLP_IDLE_TIMEOUT_SECS", default_value_t = mllp::DEFAULT_IDLE_TIMEOUT_SECS)]
        mllp_idle_timeout_secs: u64,
        /// Largest HL7 v2 message accepted over MLLP, in bytes (AR above).
        #[arg(long, env = "MEDIFLOW_MLLP_MAX_MESSAGE_BYTES", default_value_t = mllp::DEFAULT_MAX_MESSAGE_BYTES)]
        mllp_max_message_bytes: usize,
        /// Do not create patients that HL7 results and orders refer to: such messages are
        /// answered AE (ERR-3 204) unless the patient exists.
        #[arg(long, env = "MEDIFLOW_HL7_NO_AUTO_CREATE")]
        hl7_no_auto_create: bool,
        /// Serve the FHIR API without authentication (local experiments only: logs a loud
        /// warning). Requests are still audited, as agent "anonymous".
        #[arg(long, env = "MEDIFLOW_NO_AUTH")]
        no_auth: bool,
        /// An external OpenID Connect identity provider (README § Security).
        #[command(flatten)]
        oidc: auth_oidc::OidcArgs,
    },
    /// Load FHIR Bundles (transaction, batch, collection) and NDJSON files or folders.
    Import {
        /// Files or folders (*.json, *.ndjson), searched recursively.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write directly into this database (server not running).
        #[arg(long, env = "MEDIFLOW_DATABASE_URL", conflicts_with = "server")]
        database_url: Option<String>,
        /// Send to a running server instead, e.g. http://127.0.0.1:8080/fhir.
        #[arg(long)]
        server: Option<String>,
        /// Bundles processed at once.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// No progress bar (for logs and CI).
        #[arg(long)]
        quiet: bool,
        /// Write resources without search-index rows (faster); run `mediflow reindex`
        /// afterwards. Direct database imports only.
        #[arg(long, conflicts_with = "server")]
        defer_index: bool,
    },
    /// Rebuild the search indexes of every resource (resumable; see docs/storage.md).
    Reindex {
        /// The database (default: the embedded SQLite file).
        #[arg(long, env = "MEDIFLOW_DATABASE_URL")]
        database_url: Option<String>,
        /// Resources per transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Start over instead of resuming an interrupted run.
        #[arg(long)]
        restart: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Benchmarks: import throughput and read latency (see docs/performance/).
    Bench(mediflow::bench::BenchArgs),
    /// HL7 v2: list and reprocess stored messages, send files over MLLP.
    #[command(subcommand)]
    Hl7(mllp::admin::Hl7Command),
    /// OAuth clients (SMART Backend Services): add, list, remove.
    #[command(subcommand)]
    Client(auth_cli::ClientCommand),
    /// Signing keys: rotate.
    #[command(subcommand)]
    Keys(auth_cli::KeysCommand),
    /// Mint an access token with the stored signing key and print it (operators on the
    /// server host; see README § Security).
    Token(auth_cli::TokenArgs),
    /// Users (hospital staff, patients): add, passwd, list, remove.
    #[command(subcommand)]
    User(auth_cli::UserCommand),
}

/// The embedded default database: `./mediflow-data/mediflow.db`.
fn default_database_url() -> String {
    "sqlite://mediflow-data/mediflow.db".to_string()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            listen,
            database_url,
            base_url,
            max_body_bytes,
            mllp_listen,
            no_mllp,
            mllp_idle_timeout_secs,
            mllp_max_message_bytes,
            hl7_no_auto_create,
            no_auth,
            oidc,
        } => {
            let oidc = match oidc.into_config() {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("error: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            let database_url = database_url.unwrap_or_else(|| {
                let url = default_database_url();
                let path = std::env::current_dir()
                    .map(|d| d.join("mediflow-data").join("mediflow.db"))
                    .unwrap_or_else(|_| "mediflow-data/mediflow.db".into());
                tracing::info!(
                    path = %path.display(),
                    "no --database-url: using the embedded SQLite file (created if missing)"
                );
                url
            });
            server::serve(ServeConfig {
                listen,
                database_url,
                base_url,
                max_body_bytes,
                mllp: (!no_mllp).then(|| mllp::MllpConfig {
                    listen: mllp_listen,
                    idle_timeout: std::time::Duration::from_secs(mllp_idle_timeout_secs.max(1)),
                    max_message_bytes: mllp_max_message_bytes,
                    auto_create_patients: !hl7_no_auto_create,
                }),
                auth: !no_auth,
                // Read from the environment only (a flag would show in `ps`).
                admin_password: std::env::var(mediflow::auth::accounts::ADMIN_PASSWORD_ENV)
                    .ok()
                    .filter(|p| !p.is_empty())
                    .map(mediflow::auth::accounts::Password),
                oidc,
            })
            .await
        }
        Command::Import {
            paths,
            database_url,
            server,
            concurrency,
            quiet,
            defer_index,
        } => {
            let target = match server {
                Some(url) => mediflow::import::Target::Server(url),
                None => mediflow::import::Target::Database(
                    database_url.unwrap_or_else(default_database_url),
                ),
            };
            match mediflow::import::run(&paths, target, concurrency, !quiet, defer_index).await {
                Ok(summary) if summary.failures.is_empty() => Ok(()),
                Ok(_) => return std::process::ExitCode::from(1),
                Err(e) => Err(e),
            }
        }
        Command::Reindex {
            database_url,
            batch,
            restart,
            quiet,
        } => {
            let url = database_url.unwrap_or_else(default_database_url);
            mediflow::reindex::run(&url, batch, restart, !quiet)
                .await
                .map(|_| ())
        }
        Command::Bench(args) => mediflow::bench::run(args).await,
        Command::Client(c) => auth_cli::client(c).await.map_err(Into::into),
        Command::Keys(c) => auth_cli::keys(c).await.map_err(Into::into),
        Command::Token(a) => auth_cli::token(a).await.map_err(Into::into),
        Command::User(c) => auth_cli::user(c).await.map_err(Into::into),
        Command::Hl7(command) => match mllp::admin::run(command).await {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::from(1),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
