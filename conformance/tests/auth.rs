//! Security (issue 5) through HTTP on both backends: bearer tokens on every FHIR endpoint
//! but `metadata` and the SMART configuration (RFC 6750, SMART App Launch 2.0), SMART
//! Backend Services token requests with an ES384 client assertion (backend-services.html,
//! RFC 7523), each refusal (replayed `jti`, wrong `aud`, expired token, scope too narrow,
//! patient scope reaching another patient), and the AuditEvent trail (R4 auditevent.html).

use std::time::Duration;

use conformance::*;
use mediflow_auth::{KeyAlgorithm, SigningKey};
use serde_json::{Value, json};

backend_tests!(
    requests_without_a_valid_token_get_401_with_a_challenge,
    backend_services_client_gets_a_token_and_searches,
    token_requests_are_refused_per_rfc_6749,
    scopes_are_enforced_per_interaction_and_type,
    patient_scopes_confine_to_the_patients_compartment,
    expired_tokens_are_refused,
    reads_and_refusals_are_audited_and_audit_events_are_immutable,
    rotated_keys_keep_earlier_tokens_valid,
    no_auth_serves_without_a_token_and_still_audits,
    python_authlib_client_completes_backend_services_and_searches,
    introspection_and_revocation,
    backend_client_registered_by_jwks_url_gets_a_token,
    user_add_stores_an_argon2id_hash_and_prints_no_secret,
);

const ADMIN: &str = "system/*.cruds";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn get_as(server: &Server, token: &str, path: &str) -> Response {
    server
        .request(Method::GET, path)
        .header("Authorization", &bearer(token))
        .send()
        .await
}

async fn post_as(server: &Server, token: &str, path: &str, body: &Value) -> Response {
    server
        .request(Method::POST, path)
        .header("Authorization", &bearer(token))
        .json(body)
        .send()
        .await
}

fn assert_forbidden(resp: &Response) {
    resp.assert_status(403);
    let oo = resp.json();
    assert_eq!(oo["resourceType"], "OperationOutcome", "{resp:?}");
    assert_eq!(oo["issue"][0]["code"], "forbidden", "{resp:?}");
}

/// `mediflow client add --client-id ID KEYS… --scope SCOPE` on `db_url`, where `keys` is
/// `["--jwks", path]` or `["--jwks-url", url]`; asserts success.
async fn add_backend_client(db_url: &str, id: &str, keys: [&str; 2], scope: &str) {
    let out = run_mediflow(
        [
            "client",
            "add",
            "--client-id",
            id,
            keys[0],
            keys[1],
            "--scope",
            scope,
            "--database-url",
            db_url,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert!(
        out.status.success(),
        "client add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A SMART Backend Services client: its ES384 key, registered with `mediflow client add`.
struct Client {
    id: String,
    key: SigningKey,
}

impl Client {
    /// Generates a key, writes its public JWK Set into the test dir and registers it.
    async fn register(db: &TestDb, id: &str, scope: &str) -> Client {
        let key = SigningKey::generate_with(KeyAlgorithm::Es384);
        let path = db.dir().join(format!("{id}-jwks.json"));
        std::fs::write(&path, json!({"keys": [key.public_jwk()]}).to_string()).unwrap();
        add_backend_client(db.url(), id, ["--jwks", path.to_str().unwrap()], scope).await;
        Client {
            id: id.to_string(),
            key,
        }
    }

    /// A client assertion (RFC 7523 §3) for `aud`, signed ES384 with the client's `kid`.
    fn assertion(&self, aud: &str, jti: &str, exp: i64) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
        header.kid = Some(self.key.kid().to_string());
        let claims = json!({"iss": self.id, "sub": self.id, "aud": aud, "exp": exp, "jti": jti});
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.key.to_pkcs8_der());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    async fn request_token(&self, server: &Server, assertion: &str, scope: &str) -> Response {
        server
            .request(Method::POST, &format!("{}/auth/token", server.root()))
            .form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
                ("scope", scope),
            ])
            .send()
            .await
    }

    /// A fresh assertion for the server's token endpoint.
    fn fresh(&self, server: &Server) -> String {
        self.assertion(
            &format!("{}/auth/token", server.root()),
            &uuid::Uuid::new_v4().to_string(),
            now() + 240,
        )
    }
}

fn assert_oauth_error(resp: &Response, status: u16, error: &str) {
    resp.assert_status(status);
    assert_eq!(resp.json()["error"], error, "{resp:?}");
}

/// Polls an AuditEvent search (the trail is written in the background, within moments)
/// until `pred` holds for one of its resources.
async fn find_audit(
    server: &Server,
    token: &str,
    query: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..100 {
        let resp = get_as(server, token, &format!("AuditEvent?{query}&_count=100")).await;
        resp.assert_status(200);
        if let Some(e) = entries(&resp.json())
            .into_iter()
            .map(|e| e["resource"].clone())
            .find(|r| pred(r))
        {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no AuditEvent matching AuditEvent?{query}");
}

fn agent_client(ev: &Value) -> &str {
    ev["agent"][0]["who"]["identifier"]["value"]
        .as_str()
        .unwrap_or("")
}

/// SMART App Launch 2.0 § "SMART on FHIR OAuth authorization": every FHIR endpoint but the
/// CapabilityStatement and the SMART configuration needs a bearer token; RFC 6750 §3: a
/// 401 carries `WWW-Authenticate: Bearer`; the body is an OperationOutcome.
async fn requests_without_a_valid_token_get_401_with_a_challenge(backend: Backend) {
    let server = Server::start_secure(backend).await;
    for path in [
        "Patient",
        "Patient/1",
        "",
        "_history",
        "Patient/1/$everything",
    ] {
        let resp = server.get(path).await;
        resp.assert_status(401);
        assert_eq!(
            resp.header("www-authenticate").as_deref(),
            Some(r#"Bearer realm="MediFlow", error="invalid_token""#),
            "{path}"
        );
        assert_error_outcome(&resp.json(), path);
    }
    get_as(&server, "not.a.token", "Patient")
        .await
        .assert_status(401);
    let forged = server.mint_token("c", ADMIN, None).await;
    let mut parts: Vec<&str> = forged.split('.').collect();
    parts[2] = "AAAA";
    get_as(&server, &parts.join("."), "Patient")
        .await
        .assert_status(401);

    server.get("metadata").await.assert_status(200);
    for url in [
        format!("{}/.well-known/smart-configuration", server.root()),
        server.url(".well-known/smart-configuration"),
    ] {
        let conf = server.read(&url).await;
        assert_eq!(
            conf["token_endpoint"],
            format!("{}/auth/token", server.root())
        );
        assert_eq!(conf["jwks_uri"], format!("{}/auth/jwks", server.root()));
        for (field, value) in [
            ("grant_types_supported", "client_credentials"),
            ("token_endpoint_auth_methods_supported", "private_key_jwt"),
            ("token_endpoint_auth_signing_alg_values_supported", "ES384"),
            ("token_endpoint_auth_signing_alg_values_supported", "RS384"),
            ("capabilities", "client-confidential-asymmetric"),
            ("capabilities", "permission-v1"),
            ("capabilities", "permission-v2"),
            ("code_challenge_methods_supported", "S256"),
        ] {
            assert!(
                conf[field]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v == value)),
                "{field} lists {value}: {conf}"
            );
        }
    }
    let jwks = server.read(&format!("{}/auth/jwks", server.root())).await;
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("d").is_none(), "no private key is published");
}

/// SMART Backend Services (backend-services.html): a registered client authenticates with
/// an ES384 assertion and gets `requested ∩ registered` system scopes for 15 minutes.
async fn backend_services_client_gets_a_token_and_searches(backend: Backend) {
    let db = TestDb::new(backend).await;
    let lab = Client::register(&db, "lab-system", "system/Patient.rs system/Observation.rs").await;
    let server = Server::start_secure_on(db, &[]).await;
    let admin = server.mint_token("ops", ADMIN, None).await;
    post_as(&server, &admin, "Patient", &patient("urn:mrn", "42"))
        .await
        .assert_status(201);

    let resp = lab
        .request_token(
            &server,
            &lab.fresh(&server),
            "system/Patient.rs system/Observation.cruds system/Encounter.rs",
        )
        .await;
    resp.assert_status(200);
    assert_eq!(resp.header("cache-control").as_deref(), Some("no-store"));
    let body = resp.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let mut granted: Vec<&str> = body["scope"].as_str().unwrap().split(' ').collect();
    granted.sort();
    assert_eq!(granted, ["system/Observation.rs", "system/Patient.rs"]);
    let token = body["access_token"].as_str().unwrap();

    let found = get_as(&server, token, "Patient?identifier=urn:mrn|42").await;
    found.assert_status(200);
    assert_eq!(entries(&found.json()).len(), 1);
    get_as(&server, token, "Observation")
        .await
        .assert_status(200);
    assert_forbidden(&get_as(&server, token, "Encounter").await);
    assert_forbidden(&post_as(&server, token, "Patient", &patient("urn:mrn", "43")).await);
}

/// RFC 6749 §5.2 errors of the token endpoint, and RFC 7523 §3: a replayed `jti` and an
/// assertion for another audience are refused.
async fn token_requests_are_refused_per_rfc_6749(backend: Backend) {
    let db = TestDb::new(backend).await;
    let lab = Client::register(&db, "lab", "system/Observation.rs").await;
    let stranger = Client {
        id: "stranger".into(),
        key: SigningKey::generate_with(KeyAlgorithm::Es384),
    };
    let server = Server::start_secure_on(db, &[]).await;
    let token_url = format!("{}/auth/token", server.root());

    let once = lab.fresh(&server);
    lab.request_token(&server, &once, "system/Observation.rs")
        .await
        .assert_status(200);
    let replay = lab
        .request_token(&server, &once, "system/Observation.rs")
        .await;
    assert_oauth_error(&replay, 401, "invalid_client");

    let wrong_aud = lab.assertion(&server.base(), "j-aud", now() + 240);
    assert_oauth_error(
        &lab.request_token(&server, &wrong_aud, "system/Observation.rs")
            .await,
        401,
        "invalid_client",
    );
    let expired = lab.assertion(&token_url, "j-exp", now() - 600);
    assert_oauth_error(
        &lab.request_token(&server, &expired, "system/Observation.rs")
            .await,
        401,
        "invalid_client",
    );
    assert_oauth_error(
        &stranger
            .request_token(&server, &stranger.fresh(&server), "system/Observation.rs")
            .await,
        401,
        "invalid_client",
    );
    // Signed by another key than the registered one.
    let forged = Client {
        id: "lab".into(),
        key: SigningKey::generate_with(KeyAlgorithm::Es384),
    };
    assert_oauth_error(
        &forged
            .request_token(&server, &forged.fresh(&server), "system/Observation.rs")
            .await,
        401,
        "invalid_client",
    );
    assert_oauth_error(
        &lab.request_token(&server, &lab.fresh(&server), "system/Patient.rs")
            .await,
        400,
        "invalid_scope",
    );
    assert_oauth_error(
        &lab.request_token(&server, &lab.fresh(&server), "patient/Observation.rs")
            .await,
        400,
        "invalid_scope",
    );
    let wrong_grant = server
        .request(Method::POST, &token_url)
        .form(&[("grant_type", "password"), ("username", "x")])
        .send()
        .await;
    assert_oauth_error(&wrong_grant, 400, "unsupported_grant_type");
}

/// SMART scopes (scopes-and-launch-context.html § "Clinical Scope Syntax") on each
/// interaction: `r` for read, `s` for search (also of `_include`d, `_revinclude`d and
/// chained types), `c`/`u`/`d` for writes, each Bundle entry on its own; 403 otherwise.
async fn scopes_are_enforced_per_interaction_and_type(backend: Backend) {
    let server = Server::start_secure(backend).await;
    let admin = server.mint_token("ops", ADMIN, None).await;
    let p = post_as(&server, &admin, "Patient", &patient("urn:mrn", "1"))
        .await
        .json();
    let pid = p["id"].as_str().unwrap().to_string();
    let o = post_as(
        &server,
        &admin,
        "Observation",
        &json!({"resourceType": "Observation", "status": "final", "code": {"text": "hr"},
                "subject": {"reference": format!("Patient/{pid}")}}),
    )
    .await
    .json();
    let oid = o["id"].as_str().unwrap().to_string();

    let reader = server.mint_token("reader", "system/Patient.rs", None).await;
    get_as(&server, &reader, &format!("Patient/{pid}"))
        .await
        .assert_status(200);
    get_as(&server, &reader, &format!("Patient/{pid}/_history/1"))
        .await
        .assert_status(200);
    assert_forbidden(&get_as(&server, &reader, &format!("Observation/{oid}")).await);
    assert_forbidden(&get_as(&server, &reader, "Observation").await);
    assert_forbidden(&get_as(&server, &reader, "Patient?_revinclude=Observation:subject").await);
    assert_forbidden(&get_as(&server, &reader, "Patient?_has:Observation:subject:code=hr").await);
    assert_forbidden(&get_as(&server, &reader, "?_type=Patient,Observation").await);
    assert_forbidden(&get_as(&server, &reader, "_history").await);
    assert_forbidden(&get_as(&server, &reader, &format!("Patient/{pid}/Observation")).await);
    assert_forbidden(&post_as(&server, &reader, "Patient", &patient("urn:mrn", "2")).await);
    let mut changed = p.clone();
    changed["active"] = json!(true);
    assert_forbidden(
        &server
            .request(Method::PUT, &format!("Patient/{pid}"))
            .header("Authorization", &bearer(&reader))
            .json(&changed)
            .send()
            .await,
    );
    assert_forbidden(
        &server
            .request(Method::DELETE, &format!("Patient/{pid}"))
            .header("Authorization", &bearer(&reader))
            .send()
            .await,
    );
    // An Observation search may include the Patients it refers to only with Patient
    // scope; without it, the included Patient is refused.
    let obs_reader = server
        .mint_token("obs", "system/Observation.rs", None)
        .await;
    assert_forbidden(
        &get_as(
            &server,
            &obs_reader,
            "Observation?_include=Observation:subject:Patient",
        )
        .await,
    );
    let unnamed = get_as(
        &server,
        &obs_reader,
        "Observation?_include=Observation:subject",
    )
    .await;
    unnamed.assert_status(200);
    let modes: Vec<Value> = entries(&unnamed.json())
        .iter()
        .map(|e| e["search"]["mode"].clone())
        .collect();
    assert_eq!(modes, [json!("match")], "the Patient is left out");
    // Bundle entries are checked one by one.
    let writer = server
        .mint_token("w", "system/Observation.cruds", None)
        .await;
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
    ]});
    assert_forbidden(&post_as(&server, &writer, "", &tx).await);
    let ok = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
         "request": {"method": "POST", "url": "Observation"}},
    ]});
    post_as(&server, &writer, "", &ok).await.assert_status(200);
    // v1 syntax.
    let v1 = server
        .mint_token("v1", "system/Observation.read", None)
        .await;
    get_as(&server, &v1, &format!("Observation/{oid}"))
        .await
        .assert_status(200);
}

/// SMART § "patient/ scopes": with a `patient` in context, access is confined to that
/// patient's compartment; reading another patient's data is refused.
async fn patient_scopes_confine_to_the_patients_compartment(backend: Backend) {
    let server = Server::start_secure(backend).await;
    let admin = server.mint_token("ops", ADMIN, None).await;
    let mut ids = Vec::new();
    for mrn in ["a", "b"] {
        let p = post_as(&server, &admin, "Patient", &patient("urn:mrn", mrn))
            .await
            .json();
        let pid = p["id"].as_str().unwrap().to_string();
        for code in ["laboratory", "vital-signs"] {
            post_as(
                &server,
                &admin,
                "Observation",
                &json!({"resourceType": "Observation", "status": "final",
                        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": code}]}],
                        "code": {"text": code},
                        "subject": {"reference": format!("Patient/{pid}")}}),
            )
            .await
            .assert_status(201);
        }
        ids.push(pid);
    }
    let (mine, other) = (&ids[0], &ids[1]);
    let token = server.mint_token("app", "patient/*.rs", Some(mine)).await;
    let found = get_as(&server, &token, "Observation").await;
    found.assert_status(200);
    let subjects: Vec<Value> = entries(&found.json())
        .iter()
        .map(|e| e["resource"]["subject"]["reference"].clone())
        .collect();
    assert_eq!(subjects.len(), 2);
    assert!(
        subjects
            .iter()
            .all(|s| *s == json!(format!("Patient/{mine}")))
    );
    let pats = get_as(&server, &token, "Patient").await.json();
    assert_eq!(entries(&pats).len(), 1);
    get_as(&server, &token, &format!("Patient/{mine}"))
        .await
        .assert_status(200);
    assert_forbidden(&get_as(&server, &token, &format!("Patient/{other}")).await);
    assert_forbidden(&get_as(&server, &token, &format!("Patient/{other}/$everything")).await);
    get_as(&server, &token, &format!("Patient/{mine}/$everything"))
        .await
        .assert_status(200);

    // A query restriction (SMART v2): only laboratory results.
    let lab_only = server
        .mint_token(
            "app2",
            "patient/Observation.rs?category=laboratory patient/Patient.rs",
            Some(mine),
        )
        .await;
    let found = get_as(&server, &lab_only, "Observation").await.json();
    let codes: Vec<Value> = entries(&found)
        .iter()
        .map(|e| e["resource"]["code"]["text"].clone())
        .collect();
    assert_eq!(codes, [json!("laboratory")]);
}

/// RFC 6750 §3.1 `invalid_token`: an expired access token is refused with 401.
async fn expired_tokens_are_refused(backend: Backend) {
    let server = Server::start_secure(backend).await;
    // Make sure the server's key exists, then sign an expired token with it.
    server.mint_token("ops", ADMIN, None).await;
    let pem = current_key_pem(server.db()).await;
    let key = SigningKey::from_pkcs8_pem(&pem).unwrap();
    let t = now() - 3600;
    let claims = mediflow_auth::AccessClaims {
        iss: server.root(),
        sub: "ops".into(),
        aud: server.base(),
        exp: t + 900,
        iat: t,
        jti: "expired".into(),
        scope: ADMIN.into(),
        client_id: "ops".into(),
        patient: None,
        encounter: None,
        fhir_user: None,
        role: None,
    };
    let expired = mediflow_auth::tokens::issue_access_token(&key, &claims).unwrap();
    let resp = get_as(&server, &expired, "Patient").await;
    resp.assert_status(401);
    assert!(resp.header("www-authenticate").is_some());
    // The same token, not expired, passes: only the expiry made the difference.
    let fresh = mediflow_auth::AccessClaims {
        exp: now() + 600,
        iat: now(),
        jti: "fresh".into(),
        ..claims.clone()
    };
    let fresh = mediflow_auth::tokens::issue_access_token(&key, &fresh).unwrap();
    get_as(&server, &fresh, "Patient").await.assert_status(200);
    // A token for another audience is refused too.
    let other_aud = mediflow_auth::AccessClaims {
        aud: "http://elsewhere/fhir".into(),
        exp: now() + 600,
        ..claims
    };
    let other_aud = mediflow_auth::tokens::issue_access_token(&key, &other_aud).unwrap();
    get_as(&server, &other_aud, "Patient")
        .await
        .assert_status(401);
}

async fn current_key_pem(db: &TestDb) -> String {
    let sql = "SELECT pkcs8_pem FROM auth_signing_keys WHERE retired_at IS NULL";
    match db.backend() {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(db.url()).await.unwrap();
            let pem: String = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            pem
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
            let pem: String = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            pem
        }
    }
}

/// R10 / issue 5 item 9: every read writes an AuditEvent (type rest, subtype read, action
/// R, agent = the client with its address), refusals are audited (outcome 4), token
/// grants are audited; AuditEvents need an AuditEvent scope to read and cannot be updated
/// or deleted.
async fn reads_and_refusals_are_audited_and_audit_events_are_immutable(backend: Backend) {
    let db = TestDb::new(backend).await;
    let lab = Client::register(&db, "lab", "system/Patient.rs").await;
    let server = Server::start_secure_on(db, &[]).await;
    let admin = server.mint_token("ops", ADMIN, None).await;
    let p = post_as(&server, &admin, "Patient", &patient("urn:mrn", "9"))
        .await
        .json();
    let pid = p["id"].as_str().unwrap().to_string();
    let token = lab
        .request_token(&server, &lab.fresh(&server), "system/Patient.rs")
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    get_as(&server, &token, &format!("Patient/{pid}"))
        .await
        .assert_status(200);

    let ev = find_audit(&server, &admin, &format!("entity=Patient/{pid}"), |e| {
        e["subtype"][0]["code"] == "read" && agent_client(e) == "lab"
    })
    .await;
    assert_eq!(ev["type"]["code"], "rest");
    assert_eq!(
        ev["type"]["system"],
        "http://terminology.hl7.org/CodeSystem/audit-event-type"
    );
    assert_eq!(
        ev["subtype"][0]["system"],
        "http://hl7.org/fhir/restful-interaction"
    );
    assert_eq!(ev["action"], "R");
    assert_eq!(ev["outcome"], "0");
    assert_eq!(ev["agent"][0]["requestor"], true);
    assert_eq!(ev["agent"][0]["network"]["address"], "127.0.0.1");
    assert_eq!(ev["source"]["observer"]["display"], "MediFlow");
    assert_eq!(
        ev["entity"][0]["what"]["reference"],
        format!("Patient/{pid}")
    );

    // The create by the admin client: action C.
    find_audit(&server, &admin, &format!("entity=Patient/{pid}"), |e| {
        e["action"] == "C" && agent_client(e) == "ops"
    })
    .await;
    // A refused request (403) and an unauthenticated one (401): outcome 4.
    assert_forbidden(&get_as(&server, &token, "Observation").await);
    find_audit(&server, &admin, "outcome=4", |e| agent_client(e) == "lab").await;
    server.get("Patient").await.assert_status(401);
    find_audit(&server, &admin, "outcome=4", |e| {
        agent_client(e) == "unauthenticated"
    })
    .await;
    // The token grant (DICOM 110122 Login).
    find_audit(&server, &admin, "subtype=110122", |e| {
        agent_client(e) == "lab"
    })
    .await;

    // Reading the trail needs a scope granting AuditEvent.
    assert_forbidden(&get_as(&server, &token, "AuditEvent").await);
    // Never updatable or deletable.
    let id = ev["id"].as_str().unwrap();
    let del = server
        .request(Method::DELETE, &format!("AuditEvent/{id}"))
        .header("Authorization", &bearer(&admin))
        .send()
        .await;
    del.assert_status(405);
    let put = server
        .request(Method::PUT, &format!("AuditEvent/{id}"))
        .header("Authorization", &bearer(&admin))
        .json(&ev)
        .send()
        .await;
    put.assert_status(405);
    get_as(&server, &admin, &format!("AuditEvent/{id}"))
        .await
        .assert_status(200);
}

/// Issue 5 item 8: after `mediflow keys rotate`, tokens signed with the old key stay valid
/// (the old key stays in the JWKS) and tokens of the new key are accepted by the running
/// server.
async fn rotated_keys_keep_earlier_tokens_valid(backend: Backend) {
    let server = Server::start_secure(backend).await;
    let before = server.mint_token("ops", ADMIN, None).await;
    let out = run_mediflow(
        ["keys", "rotate", "--database-url", server.db().url()]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = server.mint_token("ops", ADMIN, None).await;
    get_as(&server, &after, "Patient").await.assert_status(200);
    get_as(&server, &before, "Patient").await.assert_status(200);
    let jwks = server.read(&format!("{}/auth/jwks", server.root())).await;
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2));
}

/// `serve --no-auth`: no token needed; requests are still audited, as "anonymous".
async fn no_auth_serves_without_a_token_and_still_audits(backend: Backend) {
    let server = Server::start(backend).await;
    let p = server.create(&patient("urn:mrn", "open")).await;
    let pid = p["id"].as_str().unwrap();
    server.read(&format!("Patient/{pid}")).await;
    for _ in 0..100 {
        let found = server
            .read(&format!("AuditEvent?entity=Patient/{pid}&subtype=read"))
            .await;
        if let Some(e) = entries(&found).first() {
            assert_eq!(agent_client(&e["resource"]), "anonymous");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no AuditEvent for the anonymous read");
}

/// An independent client (issue 5, item 10): a Python script with Authlib (`pip install
/// authlib requests`, installed by `.ci/run`) discovers the token endpoint from the SMART
/// configuration, authenticates with Authlib's own RFC 7523 `private_key_jwt` (an RS384
/// client assertion signed with the RSA test key of `auth/testdata`), obtains a token with
/// the `client_credentials` grant and searches with Authlib's session, which sends the
/// bearer token.
const PY_CLIENT: &str = r#"
import json, sys, time
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT

fhir_base, client_id, key_file, kid = sys.argv[1:5]
conf = requests.get(fhir_base + "/.well-known/smart-configuration", timeout=10).json()
token_url = conf["token_endpoint"]
assert "private_key_jwt" in conf["token_endpoint_auth_methods_supported"], conf
# SMART Backend Services: the assertion lives at most five minutes (Authlib's default
# is an hour).
auth = PrivateKeyJWT(token_url, alg="RS384", headers={"kid": kid},
                     claims={"exp": int(time.time()) + 240})
session = OAuth2Session(client_id, open(key_file).read(),
                        token_endpoint_auth_method="private_key_jwt",
                        scope="system/Patient.rs")
session.register_client_auth_method(auth)
tok = session.fetch_token(token_url, grant_type="client_credentials", timeout=10)
s = session.get(fhir_base + "/Patient", headers={"Accept": "application/fhir+json"},
                timeout=10)
print(json.dumps({"scope": tok["scope"], "token_type": tok["token_type"],
                  "status": s.status_code, "entries": len(s.json().get("entry", []))}))
"#;

async fn python_authlib_client_completes_backend_services_and_searches(backend: Backend) {
    if !python_has("authlib") || !python_has("requests") {
        println!(
            "SKIPPED: python3 with Authlib and requests is missing (pip install authlib requests)"
        );
        return;
    }
    let db = TestDb::new(backend).await;
    let testdata = workspace_root().join("auth").join("testdata");
    let jwk: Value = serde_json::from_str(
        &std::fs::read_to_string(testdata.join("client-rsa-test-key.jwk.json")).unwrap(),
    )
    .unwrap();
    let jwks_path = db.dir().join("py-client-jwks.json");
    std::fs::write(&jwks_path, json!({"keys": [jwk]}).to_string()).unwrap();
    add_backend_client(
        db.url(),
        "py-client",
        ["--jwks", jwks_path.to_str().unwrap()],
        "system/Patient.rs",
    )
    .await;
    let script = db.dir().join("client.py");
    std::fs::write(&script, PY_CLIENT).unwrap();
    let server = Server::start_secure_on(db, &[]).await;
    let admin = server.mint_token("ops", ADMIN, None).await;
    post_as(&server, &admin, "Patient", &patient("urn:mrn", "py"))
        .await
        .assert_status(201);
    let args = vec![
        script.display().to_string(),
        server.base(),
        "py-client".to_string(),
        testdata
            .join("client-rsa-test-key.pem")
            .display()
            .to_string(),
        jwk["kid"].as_str().unwrap().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(&args)
            .output()
            .expect("run python3")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "python client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("python prints JSON");
    assert_eq!(result["token_type"], "Bearer");
    assert_eq!(result["scope"], "system/Patient.rs");
    assert_eq!(result["status"], 200);
    assert_eq!(result["entries"], 1);
}

/// RFC 7662 introspection and RFC 7009 revocation, for a client authenticated by its
/// assertion: its own token is active until revoked, then refused by the FHIR API.
async fn introspection_and_revocation(backend: Backend) {
    let db = TestDb::new(backend).await;
    let lab = Client::register(&db, "lab", "system/Patient.rs").await;
    let server = Server::start_secure_on(db, &[]).await;
    let token = lab
        .request_token(&server, &lab.fresh(&server), "system/Patient.rs")
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let call = |endpoint: &str, assertion: String, token: String| {
        let url = format!("{}/auth/{endpoint}", server.root());
        let req = server.request(Method::POST, &url);
        async move {
            req.form(&[
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
                ("token", &token),
            ])
            .send()
            .await
        }
    };
    let info = call("introspect", lab.fresh(&server), token.clone()).await;
    info.assert_status(200);
    let info = info.json();
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], "lab");
    assert_eq!(info["scope"], "system/Patient.rs");
    let junk = call("introspect", lab.fresh(&server), "junk".into())
        .await
        .json();
    assert_eq!(junk["active"], false);
    // Without client authentication: 401 invalid_client.
    let anon = server
        .request(Method::POST, &format!("{}/auth/introspect", server.root()))
        .form(&[("token", token.as_str())])
        .send()
        .await;
    assert_oauth_error(&anon, 401, "invalid_client");

    get_as(&server, &token, "Patient").await.assert_status(200);
    call("revoke", lab.fresh(&server), token.clone())
        .await
        .assert_status(200);
    get_as(&server, &token, "Patient").await.assert_status(401);
    let info = call("introspect", lab.fresh(&server), token).await.json();
    assert_eq!(info["active"], false);
}

/// `mediflow user add`: the password (from MEDIFLOW_USER_PASSWORD or stdin) is stored as
/// an Argon2id PHC string and never printed; unknown roles are refused.
async fn user_add_stores_an_argon2id_hash_and_prints_no_secret(backend: Backend) {
    let db = TestDb::new(backend).await;
    let secret = "correct horse battery staple";
    let run = |role: &str| {
        std::process::Command::new(mediflow_bin())
            .args([
                "user",
                "add",
                "--username",
                "dr.house",
                "--role",
                role,
                "--fhir-user",
                "Practitioner/pr1",
                "--database-url",
                db.url(),
            ])
            .env("MEDIFLOW_USER_PASSWORD", secret)
            .output()
            .expect("run mediflow user add")
    };
    let out = run("DOCTOR");
    assert!(out.status.success(), "{out:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!printed.contains(secret), "{printed}");
    assert!(!run("SURGEON").status.success());
    let sql = "SELECT password_hash FROM auth_users WHERE username = 'dr.house'";
    let hash: String = match db.backend() {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(db.url()).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
        }
    };
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(mediflow_auth::password::verify(secret, &hash));
}

/// Serves `jwks` (swappable) at `/jwks` on a loopback port; returns its URL.
async fn serve_jwks(jwks: std::sync::Arc<std::sync::Mutex<Value>>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let body = jwks.lock().unwrap().to_string();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/jwk-set+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://127.0.0.1:{port}/jwks")
}

/// SMART Backend Services § "Registering a client": the client's public keys may be
/// registered by URL (`jwks_url`); the server fetches them at each token request, so a
/// key the client stops publishing stops working.
async fn backend_client_registered_by_jwks_url_gets_a_token(backend: Backend) {
    let key = SigningKey::generate_with(KeyAlgorithm::Es384);
    let published = std::sync::Arc::new(std::sync::Mutex::new(json!({"keys": [key.public_jwk()]})));
    let url = serve_jwks(published.clone()).await;
    let server = Server::start_secure(backend).await;
    add_backend_client(
        server.db().url(),
        "url-client",
        ["--jwks-url", &url],
        "system/Patient.rs",
    )
    .await;
    let client = Client {
        id: "url-client".into(),
        key,
    };
    let resp = client
        .request_token(&server, &client.fresh(&server), "system/Patient.rs")
        .await;
    resp.assert_status(200);
    let token = resp.json()["access_token"].as_str().unwrap().to_string();
    get_as(&server, &token, "Patient").await.assert_status(200);
    // The client rotates to a new key and stops publishing the old one.
    let next = SigningKey::generate_with(KeyAlgorithm::Es384);
    *published.lock().unwrap() = json!({"keys": [next.public_jwk()]});
    let refused = client
        .request_token(&server, &client.fresh(&server), "system/Patient.rs")
        .await;
    assert_oauth_error(&refused, 401, "invalid_client");
    let rotated = Client {
        id: "url-client".into(),
        key: next,
    };
    rotated
        .request_token(&server, &rotated.fresh(&server), "system/Patient.rs")
        .await
        .assert_status(200);
}
