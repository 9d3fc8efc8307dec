//! The `mediflow serve` process under test.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{Req, Response};
use crate::{Backend, EnvExt, Method, TestDb, bundle_link, entries, free_ports, mediflow_bin};

/// How long the readiness poll of `GET /fhir/metadata` may take in total.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Interval between readiness attempts.
const READY_RETRY: Duration = Duration::from_millis(50);

/// A running `mediflow serve` process, killed on drop.
pub struct Server {
    child: Option<Child>,
    port: u16,
    /// Port of the HL7 v2 MLLP listener (`--mllp-listen`), kept across restarts.
    mllp_port: u16,
    extra_args: Vec<String>,
    /// Started without `--no-auth` ([`Server::start_secure`]).
    secure: bool,
    /// Extra environment variables of the process ([`Server::start_secure_with_env`]).
    env: Vec<(String, String)>,
    /// stderr (the tracing log), appended across restarts.
    log_path: PathBuf,
    /// stdout of the current process (truncated at each start): where `serve` prints the
    /// first administrator's one-time password.
    stdout_path: PathBuf,
    client: reqwest::Client,
    // Declared last: dropped after the process is gone.
    db: TestDb,
}

fn new_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("reqwest client")
}

fn log_tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// What the log at `path` gained after byte `start` (this start attempt's lines).
fn log_since(path: &Path, start: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let _ = f.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

impl Server {
    /// Start a server on a fresh database of the given backend. Authentication is off
    /// (`--no-auth`): the FHIR tests of the other issues talk to it without tokens; see
    /// [`Server::start_secure`] for the real thing.
    pub async fn start(backend: Backend) -> Server {
        Self::start_with_args(backend, &[]).await
    }

    /// Start a server on a fresh database with extra `mediflow serve` flags (and
    /// `--no-auth`, as [`Server::start`]).
    pub async fn start_with_args(backend: Backend, args: &[&str]) -> Server {
        let db = TestDb::new(backend).await;
        Self::start_on(db, args).await
    }

    /// Start a server with authentication on (the default of `mediflow serve`: every FHIR
    /// request but `metadata` needs a bearer token) on a fresh database. Tokens come from
    /// `mediflow token` ([`Server::mint_token`]) or from `/auth/token`.
    pub async fn start_secure(backend: Backend) -> Server {
        let db = TestDb::new(backend).await;
        Self::start_secure_on(db, &[]).await
    }

    /// [`Server::start_secure`] on an existing test database, with extra flags.
    pub async fn start_secure_on(db: TestDb, args: &[&str]) -> Server {
        Self::launch(db, args, true, &[]).await
    }

    /// [`Server::start_secure_on`] with environment variables for the process (e.g.
    /// `MEDIFLOW_ADMIN_PASSWORD`), kept across restarts.
    pub async fn start_secure_with_env(db: TestDb, args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::launch(db, args, true, env).await
    }

    /// Start a server (`--no-auth`) on an existing test database (e.g. one filled by
    /// `mediflow import`).
    pub async fn start_on(db: TestDb, args: &[&str]) -> Server {
        Self::launch(db, args, false, &[]).await
    }

    async fn launch(db: TestDb, args: &[&str], secure: bool, env: &[(&str, &str)]) -> Server {
        let log_path = db.dir().join("server.log");
        let stdout_path = db.dir().join("server.stdout");
        let [port, mllp_port] = free_ports();
        let mut server = Server {
            child: None,
            port,
            mllp_port,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            secure,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log_path,
            stdout_path,
            client: new_client(),
            db,
        };
        // The ports are free when picked but another test may take one before the server
        // binds it: on "Address already in use", pick new ports and start again.
        for attempt in 0.. {
            let log_start = std::fs::metadata(&server.log_path).map_or(0, |m| m.len());
            match server.try_spawn().await {
                Ok(()) => break,
                Err(_)
                    if attempt < 4
                        && log_since(&server.log_path, log_start)
                            .contains("Address already in use") =>
                {
                    [server.port, server.mllp_port] = free_ports();
                }
                Err(log) => panic!("{log}"),
            }
        }
        server
    }

    async fn spawn(&mut self) {
        if let Err(log) = self.try_spawn().await {
            panic!("{log}");
        }
    }

    /// Starts the process and waits until it answers; `Err` with the reason and log tail
    /// when it exits first.
    async fn try_spawn(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open server log");
        let log_start = std::fs::metadata(&self.log_path).map_or(0, |m| m.len());
        let stdout = File::create(&self.stdout_path).expect("create server stdout file");
        let listen = format!("127.0.0.1:{}", self.port);
        let mut cmd = Command::new(mediflow_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg(&listen)
            .arg("--database-url")
            .arg(self.db.url())
            .args(&self.extra_args)
            .args(if self.secure { None } else { Some("--no-auth") })
            .envs_remove_all()
            // The server also listens for HL7 v2 over MLLP (default port 2575): give each
            // test server its own port so servers running in parallel do not collide.
            // (An environment variable, so binaries without MLLP simply ignore it.)
            .env("MEDIFLOW_MLLP_LISTEN", self.mllp_addr())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(log));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", mediflow_bin()));
        self.child = Some(child);
        self.wait_ready(log_start).await
    }

    /// Waits until this process has bound its HTTP port and answers `GET /metadata`.
    ///
    /// A 200 alone is not proof: when two tests are handed the same free port, the other
    /// test's server answers while ours fails to bind. So the server's own log (written
    /// from `log_start` on) must also show it listening on our address.
    async fn wait_ready(&mut self, log_start: u64) -> Result<(), String> {
        let started = Instant::now();
        let url = self.url("metadata");
        let listening = format!(
            "MediFlow FHIR server listening listen=127.0.0.1:{} ",
            self.port
        );
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "mediflow exited before becoming ready ({status}); log {}:\n{}",
                    self.log_path.display(),
                    log_tail(&self.log_path, 4000)
                ));
            }
            let last = match self
                .client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => {
                    if log_since(&self.log_path, log_start).contains(&listening) {
                        return Ok(());
                    }
                    "a server answered, but not yet ours (our log has no listening line)"
                        .to_string()
                }
                Ok(r) => format!("status {}", r.status()),
                Err(e) => format!("error {e}"),
            };
            if started.elapsed() > READY_TIMEOUT {
                panic!(
                    "mediflow not ready after {:?} (GET {url}: {last}); log {}:\n{}",
                    READY_TIMEOUT,
                    self.log_path.display(),
                    log_tail(&self.log_path, 4000)
                );
            }
            tokio::time::sleep(READY_RETRY).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop the server process and start it again on the same database and port.
    pub async fn restart(&mut self) {
        self.kill();
        self.client = new_client();
        self.spawn().await;
    }

    /// `mediflow token --client-id CLIENT --scope SCOPE [--patient ID]` on this server's
    /// database and base URL: a valid access token.
    pub async fn mint_token(&self, client_id: &str, scope: &str, patient: Option<&str>) -> String {
        let mut args: Vec<String> = [
            "token",
            "--client-id",
            client_id,
            "--scope",
            scope,
            "--base-url",
            &self.base(),
            "--database-url",
            self.db.url(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(p) = patient {
            args.extend(["--patient".to_string(), p.to_string()]);
        }
        let out = crate::run_mediflow(args).await;
        assert!(
            out.status.success(),
            "mediflow token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The server root (the token issuer), e.g. `http://127.0.0.1:4321`.
    pub fn root(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    pub fn db(&self) -> &TestDb {
        &self.db
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HL7 v2 MLLP address of this server, `127.0.0.1:<port>`.
    pub fn mllp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.mllp_port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the server wrote on stderr (its log), over all its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// What the current server process wrote on stdout since it started.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// FHIR base URL, e.g. `http://127.0.0.1:4321/fhir`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/fhir", self.port)
    }

    /// Absolute URL for a path relative to the FHIR base (`"Patient/123"`); absolute
    /// URLs are returned unchanged; `""` is the base itself.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            return path.to_string();
        }
        let path = path.trim_start_matches('/');
        if path.is_empty() {
            self.base()
        } else if path.starts_with('?') {
            format!("{}{}", self.base(), path)
        } else {
            format!("{}/{}", self.base(), path)
        }
    }

    /// A request builder for `method` on `path` (relative to the FHIR base).
    pub fn request(&self, method: Method, path: &str) -> Req {
        let url = self.url(path);
        Req {
            inner: self.client.request(method.clone(), &url),
            method,
            url,
            log: self.log_path.clone(),
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path).json(body).send().await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.request(Method::PUT, path).json(body).send().await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path).send().await
    }

    /// POST `resource` to its type endpoint, assert 201 and return the created resource.
    pub async fn create(&self, resource: &Value) -> Value {
        let ty = resource["resourceType"]
            .as_str()
            .expect("resource has resourceType");
        let resp = self.post(ty, resource).await;
        resp.assert_status(201);
        resp.json()
    }

    /// GET `path`, assert 200 and return the JSON body.
    pub async fn read(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        resp.assert_status(200);
        resp.json()
    }

    /// GET a search/history URL and follow `next` links until exhausted; returns every page.
    pub async fn all_pages(&self, path: &str) -> Vec<Value> {
        let mut pages = Vec::new();
        let mut next = Some(self.url(path));
        while let Some(url) = next.take() {
            assert!(
                pages.len() < 1000,
                "more than 1000 pages following next links from {path}"
            );
            let page = self.read(&url).await;
            assert_eq!(page["resourceType"], "Bundle", "page is a Bundle: {page}");
            next = bundle_link(&page, "next");
            pages.push(page);
        }
        pages
    }

    /// Resources of every entry of every page of a search (following `next`).
    pub async fn search(&self, path: &str) -> Vec<Value> {
        self.all_pages(path)
            .await
            .iter()
            .flat_map(|p| entries(p).into_iter().map(|e| e["resource"].clone()))
            .collect()
    }

    /// Ids of the resources a search returns (following `next`).
    pub async fn search_ids(&self, path: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .search(path)
            .await
            .iter()
            .map(|r| r["id"].as_str().unwrap_or_default().to_string())
            .collect();
        ids.sort();
        ids
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "mediflow ({}) log: {}\n--- log tail ---\n{}\n--- stdout tail ---\n{}",
                self.db.backend(),
                self.log_path.display(),
                log_tail(&self.log_path, 3000),
                log_tail(&self.stdout_path, 1000)
            );
        }
    }
}
