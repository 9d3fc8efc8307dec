//! Administration (issue 5, items 1 and 5) on both backends: the administrator created on
//! first start (one-time password on stdout, or `MEDIFLOW_ADMIN_PASSWORD`), `mediflow user
//! list|passwd|remove` and `client remove`, and the admin API `/admin/users`,
//! `/admin/clients` (admins only: RFC 6750 §3.1 errors, no secrets in answers, audited).

use std::time::Duration;

use conformance::*;
use mediflow_auth::{KeyAlgorithm, SigningKey};
use serde_json::{Value, json};

backend_tests!(
    first_start_prints_a_one_time_password_and_creates_one_admin,
    admin_password_from_the_environment_is_never_printed,
    no_admin_is_created_without_auth_or_when_users_exist,
    admin_creates_a_user_and_a_client_that_work,
    admin_api_needs_an_admin_token,
    admin_api_refuses_bad_input_with_clear_json_errors,
    admin_actions_are_audited,
    the_last_admin_can_be_neither_removed_nor_demoted,
);

/// The scope of the README's one-command token (README § Security).
const ADMIN: &str = "system/*.cruds";
const NOTICE: &str = "one-time password:";

/// `mediflow ARGS --database-url DB` with extra environment variables; asserts success
/// and returns stdout and stderr.
fn mediflow(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let out = std::process::Command::new(mediflow_bin())
        .args(args)
        .args(["--database-url", db.url()])
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run mediflow");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "mediflow {args:?}: {stdout}{stderr}");
    (stdout, stderr)
}

/// `mediflow user list`: one `[username, role, fhirUser, flags]` per user.
fn user_list(db: &TestDb) -> Vec<Vec<String>> {
    mediflow(db, &["user", "list"], &[])
        .0
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// The password hash stored for `username`, read with SQL.
async fn stored_hash(db: &TestDb, username: &str) -> String {
    let sql = format!("SELECT password_hash FROM auth_users WHERE username = '{username}'");
    let sql = sqlx::AssertSqlSafe(sql);
    match db.backend() {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(db.url()).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
        }
    }
}

/// The password on the notice's `one-time password:` line.
fn printed_password(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.split_once(NOTICE))
        .map(|(_, p)| p.trim().to_string())
        .unwrap_or_else(|| panic!("no one-time password on stdout: {stdout:?}"))
}

/// Issue 5, item 1: on an empty database `serve` creates one ADMIN user `admin` with a
/// generated password printed once on stdout (not in the log), one-time (flagged until
/// `mediflow user passwd`); a second start creates nothing and prints nothing.
async fn first_start_prints_a_one_time_password_and_creates_one_admin(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut server = Server::start_secure_on(db, &[]).await;
    let stdout = server.stdout();
    let password = printed_password(&stdout);
    assert!(password.len() >= 20, "{password}");
    assert!(
        password.chars().all(|c| c.is_ascii_alphanumeric()),
        "{password}"
    );
    assert!(
        stdout.contains("mediflow user passwd --username admin"),
        "{stdout}"
    );
    assert!(!server.log().contains(&password), "the log never shows it");
    assert_eq!(
        stdout.matches(&password).count(),
        1,
        "printed once: {stdout}"
    );

    let users = user_list(server.db());
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0][..2], ["admin", "ADMIN"]);
    assert_eq!(users[0][3], "must-change-password", "{users:?}");
    let hash = stored_hash(server.db(), "admin").await;
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(mediflow_auth::password::verify(&password, &hash));

    server.restart().await;
    let again = server.stdout();
    assert!(
        !again.contains(NOTICE),
        "second start prints no password: {again}"
    );
    assert!(!again.contains(&password));
    assert_eq!(user_list(server.db()).len(), 1);

    // The way out of the one-time password.
    let new = "a new password of my own";
    let (out, err) = mediflow(
        server.db(),
        &["user", "passwd", "--username", "admin"],
        &[("MEDIFLOW_USER_PASSWORD", new)],
    );
    assert!(!format!("{out}{err}").contains(new));
    assert_eq!(user_list(server.db())[0][3], "-");
    let hash = stored_hash(server.db(), "admin").await;
    assert!(mediflow_auth::password::verify(new, &hash));
    assert!(!mediflow_auth::password::verify(&password, &hash));
}

/// Issue 5, item 1: with `MEDIFLOW_ADMIN_PASSWORD` the administrator gets that password,
/// which is neither printed (stdout) nor logged (stderr), and is not one-time.
async fn admin_password_from_the_environment_is_never_printed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let secret = "operator-chosen secret 42";
    let server =
        Server::start_secure_with_env(db, &[], &[("MEDIFLOW_ADMIN_PASSWORD", secret)]).await;
    let (stdout, log) = (server.stdout(), server.log());
    assert!(!stdout.contains(secret), "{stdout}");
    assert!(!log.contains(secret), "{log}");
    assert!(!stdout.contains(NOTICE), "{stdout}");
    assert!(!stdout.contains("secret"), "{stdout}");
    let users = user_list(server.db());
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0], ["admin", "ADMIN", "-", "-"]);
    assert!(mediflow_auth::password::verify(
        secret,
        &stored_hash(server.db(), "admin").await
    ));
}

/// No administrator appears with `--no-auth`, nor when the database has a user already.
async fn no_admin_is_created_without_auth_or_when_users_exist(backend: Backend) {
    let open = Server::start(backend).await;
    assert!(user_list(open.db()).is_empty());
    assert!(!open.stdout().contains(NOTICE));
    drop(open);

    let db = TestDb::new(backend).await;
    mediflow(
        &db,
        &["user", "add", "--username", "boss", "--role", "ADMIN"],
        &[("MEDIFLOW_USER_PASSWORD", "boss password")],
    );
    let server = Server::start_secure_on(db, &[]).await;
    assert!(!server.stdout().contains(NOTICE), "{}", server.stdout());
    let users = user_list(server.db());
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0][0], "boss");
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A request to the admin API (`{root}/admin/{path}`), JSON body when given.
async fn admin_req(
    server: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let url = format!("{}/admin/{path}", server.root());
    let mut req = server.request(method, &url);
    if let Some(t) = token {
        req = req.header("Authorization", &bearer(t));
    }
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    req.send().await
}

/// A JSON error of the admin API with this status and `error` code.
fn assert_admin_error(resp: &Response, status: u16, code: &str) -> String {
    resp.assert_status(status);
    let body = resp.json();
    assert_eq!(body["error"], code, "{resp:?}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(!description.is_empty(), "{resp:?}");
    description.to_string()
}

/// No answer of the admin API shows a password or its hash.
fn assert_no_secret(resp: &Response) {
    let text = resp.text();
    for secret in ["password_hash", "passwordHash", "argon2", "\"d\":", "pkcs8"] {
        assert!(!text.contains(secret), "{secret} in {resp:?}");
    }
}

/// A SMART Backend Services client key and its assertions (RFC 7523 §3).
struct BackendClient {
    id: String,
    key: SigningKey,
}

impl BackendClient {
    fn new(id: &str) -> BackendClient {
        BackendClient {
            id: id.into(),
            key: SigningKey::generate_with(KeyAlgorithm::Es384),
        }
    }

    fn jwks(&self) -> Value {
        json!({"keys": [self.key.public_jwk()]})
    }

    async fn request_token(&self, server: &Server, scope: &str) -> Response {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
        header.kid = Some(self.key.kid().to_string());
        let claims = json!({
            "iss": self.id, "sub": self.id,
            "aud": format!("{}/auth/token", server.root()),
            "exp": chrono::Utc::now().timestamp() + 240,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.key.to_pkcs8_der());
        let assertion = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        server
            .request(Method::POST, &format!("{}/auth/token", server.root()))
            .form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
                ("scope", scope),
            ])
            .send()
            .await
    }
}

/// Issue 5, item 5: an admin (the README's one-command token) adds a user and a Backend
/// Services client through the API; the client then gets a token and searches; both are
/// listed, shown without secrets, and removed.
async fn admin_creates_a_user_and_a_client_that_work(backend: Backend) {
    let server = Server::start_secure(backend).await;
    let admin = server.mint_token("ops", ADMIN, None).await;
    let token = Some(admin.as_str());

    let password = "correct horse battery staple";
    let resp = admin_req(
        &server,
        Method::POST,
        "users",
        token,
        Some(&json!({"username": "dr.house", "password": password, "role": "doctor", "fhirUser": "Practitioner/pr1"})),
    )
    .await;
    resp.assert_status(201);
    assert_no_secret(&resp);
    assert!(!resp.text().contains(password));
    assert_eq!(
        resp.location().as_deref(),
        Some(format!("{}/admin/users/dr.house", server.root()).as_str())
    );
    let user = resp.json();
    assert_eq!(user["username"], "dr.house");
    assert_eq!(user["role"], "DOCTOR");
    assert_eq!(user["fhirUser"], "Practitioner/pr1");
    assert_eq!(user["mustChangePassword"], false);
    assert!(mediflow_auth::password::verify(
        password,
        &stored_hash(server.db(), "dr.house").await
    ));

    let list = admin_req(&server, Method::GET, "users", token, None).await;
    list.assert_status(200);
    assert_no_secret(&list);
    let names: Vec<String> = list.json()["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["admin", "dr.house"]);
    let one = admin_req(&server, Method::GET, "users/dr.house", token, None).await;
    one.assert_status(200);
    assert_eq!(one.json()["role"], "DOCTOR");

    let changed = admin_req(
        &server,
        Method::PUT,
        "users/dr.house",
        token,
        Some(&json!({"role": "NURSE", "mustChangePassword": true})),
    )
    .await;
    changed.assert_status(200);
    assert_eq!(changed.json()["role"], "NURSE");
    assert_eq!(changed.json()["fhirUser"], Value::Null);
    assert_eq!(changed.json()["mustChangePassword"], true);
    assert_eq!(
        user_list(server.db())[1],
        ["dr.house", "NURSE", "-", "must-change-password"]
    );

    let lab = BackendClient::new("lab-system");
    let resp = admin_req(
        &server,
        Method::POST,
        "clients",
        token,
        Some(&json!({"clientId": "lab-system", "name": "Lab", "jwks": lab.jwks(), "scope": "system/Observation.rs system/Patient.rs"})),
    )
    .await;
    resp.assert_status(201);
    assert_no_secret(&resp);
    let client = resp.json();
    assert_eq!(client["clientId"], "lab-system");
    assert_eq!(client["kind"], "backend");
    assert_eq!(client["jwks"]["keys"][0]["kid"], lab.key.kid());

    let granted = lab.request_token(&server, "system/Observation.rs").await;
    granted.assert_status(200);
    let lab_token = granted.json()["access_token"].as_str().unwrap().to_string();
    server
        .request(Method::GET, "Observation")
        .header("Authorization", &bearer(&lab_token))
        .send()
        .await
        .assert_status(200);
    let clients = admin_req(&server, Method::GET, "clients", token, None).await;
    clients.assert_status(200);
    assert_no_secret(&clients);
    assert_eq!(clients.json()["clients"][0]["clientId"], "lab-system");
    assert!(
        mediflow(server.db(), &["client", "list"], &[])
            .0
            .contains("lab-system")
    );

    // PUT replaces the registration: the client rotates its key and loses Patient.
    let rotated = BackendClient::new("lab-system");
    let put = admin_req(
        &server,
        Method::PUT,
        "clients/lab-system",
        token,
        Some(&json!({"name": "Lab", "jwks": rotated.jwks(), "scope": "system/Observation.rs"})),
    )
    .await;
    put.assert_status(200);
    assert_no_secret(&put);
    assert_eq!(put.json()["scope"], "system/Observation.rs");
    assert_eq!(
        lab.request_token(&server, "system/Observation.rs")
            .await
            .json()["error"],
        "invalid_client",
        "the old key is no longer registered"
    );
    let narrowed = rotated
        .request_token(&server, "system/Observation.rs system/Patient.rs")
        .await;
    narrowed.assert_status(200);
    assert_eq!(narrowed.json()["scope"], "system/Observation.rs");
    let other_id =
        json!({"clientId": "other", "jwks": rotated.jwks(), "scope": "system/Observation.rs"});
    assert_admin_error(
        &admin_req(
            &server,
            Method::PUT,
            "clients/lab-system",
            token,
            Some(&other_id),
        )
        .await,
        400,
        "invalid_request",
    );
    let unknown = json!({"jwks": rotated.jwks(), "scope": "system/Observation.rs"});
    assert_admin_error(
        &admin_req(
            &server,
            Method::PUT,
            "clients/nobody",
            token,
            Some(&unknown),
        )
        .await,
        404,
        "not_found",
    );

    admin_req(&server, Method::DELETE, "clients/lab-system", token, None)
        .await
        .assert_status(204);
    let refused = rotated
        .request_token(&server, "system/Observation.rs")
        .await;
    refused.assert_status(401);
    assert_eq!(refused.json()["error"], "invalid_client");
    assert_admin_error(
        &admin_req(&server, Method::GET, "clients/lab-system", token, None).await,
        404,
        "not_found",
    );

    admin_req(&server, Method::DELETE, "users/dr.house", token, None)
        .await
        .assert_status(204);
    assert_admin_error(
        &admin_req(&server, Method::GET, "users/dr.house", token, None).await,
        404,
        "not_found",
    );
    assert_eq!(user_list(server.db()).len(), 1);
}

/// Admin API access (RFC 6750 §3.1): no or an invalid token → 401 `invalid_token` with
/// `WWW-Authenticate`; a valid token that does not allow everything (not an admin) → 403
/// `insufficient_scope`; the same JSON error shape on every endpoint and method.
async fn admin_api_needs_an_admin_token(backend: Backend) {
    let server = Server::start_secure(backend).await;
    let reader = server.mint_token("reader", "system/*.rs", None).await;
    let doctorish = server
        .mint_token("app", "system/Observation.cruds system/Patient.cruds", None)
        .await;
    let user = json!({"username": "x", "password": "long enough", "role": "DOCTOR"});
    let requests: Vec<(Method, &str, Option<&Value>)> = vec![
        (Method::GET, "users", None),
        (Method::POST, "users", Some(&user)),
        (Method::GET, "users/admin", None),
        (Method::PUT, "users/admin", Some(&user)),
        (Method::DELETE, "users/admin", None),
        (Method::GET, "clients", None),
        (Method::POST, "clients", Some(&user)),
        (Method::GET, "clients/x", None),
        (Method::DELETE, "clients/x", None),
    ];
    for (method, path, body) in &requests {
        for token in [None, Some("not.a.token")] {
            let resp = admin_req(&server, method.clone(), path, token, *body).await;
            assert_admin_error(&resp, 401, "invalid_token");
            assert_eq!(
                resp.header("www-authenticate").as_deref(),
                Some(r#"Bearer realm="MediFlow", error="invalid_token""#),
                "{resp:?}"
            );
        }
        for token in [&reader, &doctorish] {
            let resp = admin_req(&server, method.clone(), path, Some(token), *body).await;
            let why = assert_admin_error(&resp, 403, "insufficient_scope");
            assert!(why.contains(ADMIN), "{why}");
            assert!(
                resp.header("www-authenticate")
                    .is_some_and(|h| h.contains("insufficient_scope")),
                "{resp:?}"
            );
        }
    }
    // Nothing was changed by the refused requests.
    let users = user_list(server.db());
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0][0], "admin");
}

/// 400 `invalid_request` with a message naming the problem (bad role, fhirUser, short
/// password, unknown field, private key, no keys), 404 for unknown accounts, 409 for a
/// taken username or client id.
async fn admin_api_refuses_bad_input_with_clear_json_errors(backend: Backend) {
    let server = Server::start_secure(backend).await;
    let admin = server.mint_token("ops", ADMIN, None).await;
    let token = Some(admin.as_str());
    let post_user = |body: Value| {
        let server = &server;
        async move { admin_req(server, Method::POST, "users", token, Some(&body)).await }
    };

    let bad_role =
        post_user(json!({"username": "u1", "password": "long enough", "role": "SURGEON"})).await;
    let why = assert_admin_error(&bad_role, 400, "invalid_request");
    assert!(why.contains("SURGEON") && why.contains("DOCTOR"), "{why}");
    let bad_fhir_user = post_user(json!({"username": "u1", "password": "long enough", "role": "DOCTOR", "fhirUser": "Observation/1"})).await;
    let why = assert_admin_error(&bad_fhir_user, 400, "invalid_request");
    assert!(why.contains("fhirUser"), "{why}");
    let short = post_user(json!({"username": "u1", "password": "short", "role": "DOCTOR"})).await;
    assert!(assert_admin_error(&short, 400, "invalid_request").contains("8 characters"));
    let typo =
        post_user(json!({"username": "u1", "pasword": "long enough", "role": "DOCTOR"})).await;
    assert!(assert_admin_error(&typo, 400, "invalid_request").contains("pasword"));
    let bad_name =
        post_user(json!({"username": "a b", "password": "long enough", "role": "DOCTOR"})).await;
    assert!(assert_admin_error(&bad_name, 400, "invalid_request").contains("username"));
    let not_json = admin_req(&server, Method::POST, "users", token, None).await;
    assert_admin_error(&not_json, 400, "invalid_request");
    assert_eq!(user_list(server.db()).len(), 1, "nothing was added");

    post_user(json!({"username": "u1", "password": "long enough", "role": "DOCTOR"}))
        .await
        .assert_status(201);
    let taken =
        post_user(json!({"username": "u1", "password": "other password", "role": "NURSE"})).await;
    assert_admin_error(&taken, 409, "conflict");
    let bad_put = admin_req(
        &server,
        Method::PUT,
        "users/u1",
        token,
        Some(&json!({"role": "JANITOR"})),
    )
    .await;
    assert_admin_error(&bad_put, 400, "invalid_request");
    for (method, path) in [
        (Method::GET, "users/nobody"),
        (Method::DELETE, "users/nobody"),
        (Method::GET, "clients/nobody"),
        (Method::DELETE, "clients/nobody"),
        (Method::GET, "elsewhere"),
    ] {
        assert_admin_error(
            &admin_req(&server, method, path, token, None).await,
            404,
            "not_found",
        );
    }
    let put_nobody = admin_req(
        &server,
        Method::PUT,
        "users/nobody",
        token,
        Some(&json!({"role": "NURSE"})),
    )
    .await;
    assert_admin_error(&put_nobody, 404, "not_found");

    let key = SigningKey::generate_with(KeyAlgorithm::Es384);
    let mut private = key.public_jwk();
    private["d"] = json!("c2VjcmV0");
    for (body, needle) in [
        (
            json!({"clientId": "c", "scope": "system/*.rs", "jwks": {"keys": [private]}}),
            "private",
        ),
        (json!({"clientId": "c", "scope": "system/*.rs"}), "jwks"),
        (
            json!({"clientId": "c", "scope": "openid", "jwks": {"keys": [key.public_jwk()]}}),
            "resource access",
        ),
    ] {
        let resp = admin_req(&server, Method::POST, "clients", token, Some(&body)).await;
        let why = assert_admin_error(&resp, 400, "invalid_request");
        assert!(why.contains(needle), "{why}");
        assert_no_secret(&resp);
    }
    let good =
        json!({"clientId": "c", "scope": "system/*.rs", "jwks": {"keys": [key.public_jwk()]}});
    admin_req(&server, Method::POST, "clients", token, Some(&good))
        .await
        .assert_status(201);
    assert_admin_error(
        &admin_req(&server, Method::POST, "clients", token, Some(&good)).await,
        409,
        "conflict",
    );
    let patch = admin_req(&server, Method::PATCH, "users/u1", token, None).await;
    assert_admin_error(&patch, 405, "method_not_allowed");
}

/// Every admin action, refusals included, is an AuditEvent: DICOM 110113 "Security
/// Alert", subtype 110137 (a change) or 110132 (a read or a refusal), naming the account.
async fn admin_actions_are_audited(backend: Backend) {
    let server = Server::start_secure(backend).await;
    let admin = server.mint_token("ops", ADMIN, None).await;
    let reader = server.mint_token("reader", "system/*.rs", None).await;
    admin_req(
        &server,
        Method::POST,
        "users",
        Some(&admin),
        Some(&json!({"username": "nurse.joy", "password": "long enough", "role": "NURSE"})),
    )
    .await
    .assert_status(201);
    admin_req(
        &server,
        Method::DELETE,
        "users/nurse.joy",
        Some(&reader),
        None,
    )
    .await
    .assert_status(403);

    let dcm = "http://dicom.nema.org/resources/ontology/DCM";
    let find = |subtype: &'static str, pred: fn(&Value) -> bool| {
        let server = &server;
        let admin = admin.clone();
        async move {
            for _ in 0..100 {
                let resp = server
                    .request(
                        Method::GET,
                        &format!("AuditEvent?type={dcm}|110113&subtype={dcm}|{subtype}&_count=100"),
                    )
                    .header("Authorization", &bearer(&admin))
                    .send()
                    .await;
                resp.assert_status(200);
                if let Some(ev) = entries(&resp.json())
                    .into_iter()
                    .map(|e| e["resource"].clone())
                    .find(pred)
                {
                    return ev;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("no AuditEvent 110113/{subtype} as expected");
        }
    };
    let account = |ev: &Value| {
        ev["entity"][0]["what"]["identifier"]["value"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let created = find("110137", |ev| {
        ev["action"] == "C"
            && ev["entity"][0]["what"]["identifier"]["value"] == "nurse.joy"
            && ev["agent"][0]["who"]["identifier"]["value"] == "ops"
    })
    .await;
    assert_eq!(created["outcome"], "0");
    assert_eq!(
        created["entity"][0]["what"]["identifier"]["system"],
        "urn:mediflow:user"
    );
    let refused = find("110132", |ev| {
        ev["action"] == "D" && ev["agent"][0]["who"]["identifier"]["value"] == "reader"
    })
    .await;
    assert_eq!(refused["outcome"], "4");
    assert_eq!(refused["outcomeDesc"], "HTTP 403");
    assert_eq!(account(&refused), "nurse.joy");
    // The administrator of the first start was audited too.
    let first = find("110137", |ev| {
        ev["entity"][0]["what"]["identifier"]["value"] == "admin"
    })
    .await;
    assert_eq!(first["agent"][0]["who"]["identifier"]["value"], "mediflow");
}

/// Whoever manages accounts must stay able to: the only ADMIN user can be neither
/// removed nor given another role (409, through the API and the CLI) until a second
/// administrator exists.
async fn the_last_admin_can_be_neither_removed_nor_demoted(backend: Backend) {
    let server = Server::start_secure(backend).await;
    let admin = server.mint_token("ops", ADMIN, None).await;
    let token = Some(admin.as_str());
    let demote = json!({"role": "DOCTOR"});
    let resp = admin_req(&server, Method::PUT, "users/admin", token, Some(&demote)).await;
    assert!(assert_admin_error(&resp, 409, "conflict").contains("only ADMIN"));
    let resp = admin_req(&server, Method::DELETE, "users/admin", token, None).await;
    assert_admin_error(&resp, 409, "conflict");
    let cli = std::process::Command::new(mediflow_bin())
        .args([
            "user",
            "remove",
            "--username",
            "admin",
            "--database-url",
            server.db().url(),
        ])
        .output()
        .expect("run mediflow");
    assert!(!cli.status.success(), "the CLI refuses too");
    assert_eq!(user_list(server.db()).len(), 1);
    let second = json!({"username": "admin2", "password": "long enough", "role": "ADMIN"});
    admin_req(&server, Method::POST, "users", token, Some(&second))
        .await
        .assert_status(201);
    admin_req(&server, Method::DELETE, "users/admin", token, None)
        .await
        .assert_status(204);
    let names: Vec<String> = user_list(server.db())
        .into_iter()
        .map(|u| u[0].clone())
        .collect();
    assert_eq!(names, ["admin2"]);
}
