//! Black-box conformance harness for the `mediflow` FHIR R4 server.
//!
//! Every test starts the real `mediflow` binary (`mediflow serve ...`) on a free
//! loopback port against a fresh database (a temp SQLite file or a freshly created
//! PostgreSQL database) and talks to it over HTTP only. Tests are written once as an
//! `async fn(Server)` (or `async fn(Backend)`) and instantiated for both backends with
//! [`server_tests!`] / [`backend_tests!`].

mod db;
mod fhir;
mod http;
pub mod mllp;
mod server;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use db::TestDb;
pub use fhir::*;
pub use http::{Req, Response, assert_error_outcome, outcome_expressions};
pub use pastey;
pub use reqwest::Method;
pub use reqwest::header::HeaderMap;
pub use server::Server;

/// FHIR JSON mime type used for request bodies.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Instantiate `async fn NAME(server: Server)` test cases for both backends:
/// generates `NAME_sqlite` and `NAME_postgres` `#[tokio::test]`s.
#[macro_export]
macro_rules! server_tests {
    ($($name:ident),* $(,)?) => {
        $(
            $crate::pastey::paste! {
                #[tokio::test]
                async fn [<$name _sqlite>]() {
                    $name($crate::Server::start($crate::Backend::Sqlite).await).await
                }
                #[tokio::test]
                async fn [<$name _postgres>]() {
                    $name($crate::Server::start($crate::Backend::Postgres).await).await
                }
            }
        )*
    };
}

/// Instantiate `async fn NAME(backend: Backend)` test cases (for tests that start their
/// own server with extra flags, or none at all): generates `NAME_sqlite` and
/// `NAME_postgres` `#[tokio::test]`s.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            $crate::pastey::paste! {
                #[tokio::test]
                async fn [<$name _sqlite>]() {
                    $name($crate::Backend::Sqlite).await
                }
                #[tokio::test]
                async fn [<$name _postgres>]() {
                    $name($crate::Backend::Postgres).await
                }
            }
        )*
    };
}

/// Storage backend a test server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Sqlite => f.write_str("sqlite"),
            Backend::Postgres => f.write_str("postgres"),
        }
    }
}

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

/// The Cargo workspace root (`/work/main`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("conformance crate lives inside the workspace")
        .to_path_buf()
}

/// The `shared/` folder next to the repository.
pub fn shared_dir() -> PathBuf {
    workspace_root()
        .parent()
        .expect("workspace has a parent")
        .join("shared")
}

/// Whether `python3` can import `module` (the independent clients of the tests: `hl7`,
/// `authlib`, `selenium`, installed by `.ci/run`).
pub fn python_has(module: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Path of the `mediflow` binary: `$MEDIFLOW_BIN`, else `<target>/debug/mediflow`.
pub fn mediflow_bin() -> PathBuf {
    let path = match std::env::var_os("MEDIFLOW_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let target = match std::env::var_os("CARGO_TARGET_DIR") {
                Some(t) => {
                    let t = PathBuf::from(t);
                    if t.is_absolute() {
                        t
                    } else {
                        workspace_root().join(t)
                    }
                }
                None => workspace_root().join("target"),
            };
            target.join("debug").join("mediflow")
        }
    };
    if !path.is_file() {
        panic!(
            "mediflow binary not found at {}: build it first: cargo build -p mediflow",
            path.display()
        );
    }
    path
}

/// A fresh temporary directory (kept when the test fails so logs can be read).
pub(crate) fn fresh_temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mediflow-conformance-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

/// Run `mediflow ARGS...` to completion (off the async runtime) and capture its output.
pub async fn run_mediflow(args: Vec<String>) -> Output {
    let bin = mediflow_bin();
    tokio::task::spawn_blocking(move || {
        Command::new(&bin)
            .args(&args)
            .envs_remove_all()
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
    })
    .await
    .expect("join mediflow command")
}

/// Remove every `MEDIFLOW_*` setting variable of the caller's shell from a command's
/// environment, so only the flags the tests pass count.
pub(crate) trait EnvExt {
    fn envs_remove_all(&mut self) -> &mut Self;
}

impl EnvExt for Command {
    fn envs_remove_all(&mut self) -> &mut Self {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MEDIFLOW_") {
                self.env_remove(key);
            }
        }
        self
    }
}

/// `N` distinct free loopback ports (bound together, then released; the server binds them
/// right after). Binding them one at a time could hand out the same port twice, once the
/// first listener was dropped.
pub(crate) fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
}
