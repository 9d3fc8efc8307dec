//! An external OpenID Connect identity provider (issue 5, item 6) through HTTP on both
//! backends. Each test runs its own tiny identity provider (a tokio TCP listener speaking
//! just enough HTTP/1.1) serving a discovery document (OpenID Connect Discovery 1.0 §4)
//! and a JWK Set (RFC 7517 §5) of keys the test generates, starts `mediflow serve
//! --oidc-issuer …`, and signs tokens as that provider would: accepted when signature,
//! `iss`, `aud`, `exp` and `nbf` check out (401 with `WWW-Authenticate` and an
//! OperationOutcome otherwise, RFC 6750 §3), scopes, `fhirUser` and the patient taken from
//! the configured claims, and a key rotation at the provider picked up on the unknown `kid`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conformance::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mediflow_auth::{KeyAlgorithm, SigningKey};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

backend_tests!(
    external_role_claim_caps_scopes_by_hospital_role,
    external_tokens_are_accepted_per_their_scope_claim_and_audited_with_their_subject,
    external_tokens_failing_a_check_get_401_with_a_challenge,
    external_keys_rotated_at_the_provider_are_fetched_on_an_unknown_kid,
    external_patient_claim_confines_patient_scopes_with_configured_claim_names,
);

const ADMIN: &str = "system/*.cruds";
/// The provider's realm path: an issuer with a path, as Keycloak's.
const REALM: &str = "/realms/staff";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// What the test identity provider serves, and how often its keys were fetched.
struct IdpState {
    issuer: String,
    jwks: Mutex<Value>,
    jwks_fetches: AtomicUsize,
}

/// A minimal OpenID Connect provider: `GET {REALM}/.well-known/openid-configuration` and
/// `GET {REALM}/certs` (its `jwks_uri`); every other path is 404.
struct Idp {
    state: Arc<IdpState>,
    task: tokio::task::JoinHandle<()>,
}

impl Idp {
    async fn start(keys: &[&SigningKey]) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind idp");
        let addr = listener.local_addr().expect("idp addr");
        let state = Arc::new(IdpState {
            issuer: format!("http://{addr}{REALM}"),
            jwks: Mutex::new(Value::Null),
            jwks_fetches: AtomicUsize::new(0),
        });
        let idp_state = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let state = idp_state.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let (status, body) = state.answer(&path);
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(resp.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        let idp = Idp { state, task };
        idp.serve_keys(keys);
        idp
    }

    fn issuer(&self) -> String {
        self.state.issuer.clone()
    }

    fn jwks_url(&self) -> String {
        format!("{}/certs", self.state.issuer)
    }

    /// Publishes exactly these keys from now on.
    fn serve_keys(&self, keys: &[&SigningKey]) {
        let set = json!({"keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>()});
        *self.state.jwks.lock().unwrap() = set;
    }

    fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
}

impl IdpState {
    fn answer(&self, path: &str) -> (&'static str, String) {
        let discovery = format!("{REALM}/.well-known/openid-configuration");
        let certs = format!("{REALM}/certs");
        if path == discovery {
            let doc = json!({
                "issuer": self.issuer,
                "jwks_uri": format!("{}/certs", self.issuer),
                "authorization_endpoint": format!("{}/auth", self.issuer),
                "token_endpoint": format!("{}/token", self.issuer),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256", "ES384"],
            });
            ("200 OK", doc.to_string())
        } else if path == certs {
            self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            ("200 OK", self.jwks.lock().unwrap().to_string())
        } else {
            ("404 Not Found", "{}".to_string())
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A JWT signed by `key` with its `kid` (`typ: JWT`, as identity providers issue them).
fn sign(key: &SigningKey, claims: &Value) -> String {
    let alg = match key.alg() {
        KeyAlgorithm::Es256 => Algorithm::ES256,
        KeyAlgorithm::Es384 => Algorithm::ES384,
    };
    let mut header = Header::new(alg);
    header.kid = Some(key.kid().to_string());
    header.typ = Some("JWT".into());
    let enc = EncodingKey::from_ec_der(&key.to_pkcs8_der());
    jsonwebtoken::encode(&header, claims, &enc).expect("sign")
}

/// The claims of a valid token of `idp` for `server`: a practitioner using the ward app.
fn staff_claims(idp: &Idp, server: &Server) -> Value {
    json!({
        "iss": idp.issuer(),
        "sub": "u-42",
        "aud": ["account", server.base()],
        "azp": "ward-app",
        "exp": now() + 300,
        "iat": now(),
        "nbf": now() - 5,
        "scope": "openid profile user/Patient.rs",
        "fhirUser": "Practitioner/7",
    })
}

async fn start_server(backend: Backend, idp: &Idp, extra: &[&str]) -> Server {
    let issuer = idp.issuer();
    let mut args = vec!["--oidc-issuer", issuer.as_str()];
    args.extend_from_slice(extra);
    Server::start_secure_on(TestDb::new(backend).await, &args).await
}

async fn get_as(server: &Server, token: &str, path: &str) -> Response {
    server
        .request(Method::GET, path)
        .header("Authorization", &format!("Bearer {token}"))
        .send()
        .await
}

async fn create_as(server: &Server, token: &str, resource: &Value) -> String {
    let ty = resource["resourceType"].as_str().unwrap();
    let resp = server
        .request(Method::POST, ty)
        .header("Authorization", &format!("Bearer {token}"))
        .json(resource)
        .send()
        .await;
    resp.assert_status(201);
    resp.json()["id"].as_str().unwrap().to_string()
}

/// RFC 6750 §3: 401 with the `Bearer` challenge, and an OperationOutcome body.
fn assert_unauthorized(resp: &Response, what: &str) {
    assert_eq!(resp.status, 401, "{what}: {resp:?}");
    assert_eq!(
        resp.header("www-authenticate").as_deref(),
        Some(r#"Bearer realm="MediFlow", error="invalid_token""#),
        "{what}"
    );
    assert_error_outcome(&resp.json(), what);
}

fn assert_forbidden(resp: &Response, what: &str) {
    assert_eq!(resp.status, 403, "{what}: {resp:?}");
    assert_eq!(resp.json()["resourceType"], "OperationOutcome", "{what}");
}

/// SMART scopes from the provider's `scope` claim (a string mixing OpenID and SMART
/// scopes): `user/Patient.rs` reads and searches Patients, and nothing else. The request
/// is audited with the subject named by issuer and `sub`, the client by `azp`, and the
/// `fhirUser` as `agent.who.reference` (searchable with `agent=`).
async fn external_tokens_are_accepted_per_their_scope_claim_and_audited_with_their_subject(
    backend: Backend,
) {
    let key = SigningKey::generate();
    let idp = Idp::start(&[&key]).await;
    let server = start_server(backend, &idp, &[]).await;
    let admin = server.mint_token("ops", ADMIN, None).await;
    let pid = create_as(&server, &admin, &patient("urn:mrn", "oidc-1")).await;

    let token = sign(&key, &staff_claims(&idp, &server));
    get_as(&server, &token, &format!("Patient/{pid}"))
        .await
        .assert_status(200);
    let found = get_as(&server, &token, "Patient?identifier=urn:mrn|oidc-1").await;
    found.assert_status(200);
    assert_eq!(entries(&found.json()).len(), 1);
    // The same token again: served from the verified-token cache, same answer.
    get_as(&server, &token, "Patient").await.assert_status(200);
    assert_forbidden(&get_as(&server, &token, "Observation").await, "Observation");
    let write = server
        .request(Method::POST, "Patient")
        .header("Authorization", &format!("Bearer {token}"))
        .json(&patient("urn:mrn", "oidc-2"))
        .send()
        .await;
    assert_forbidden(&write, "create");

    let mut ev = Value::Null;
    for _ in 0..100 {
        let found = get_as(
            &server,
            &admin,
            &format!("AuditEvent?agent=Practitioner/7&entity=Patient/{pid}"),
        )
        .await;
        found.assert_status(200);
        if let Some(e) = entries(&found.json()).first() {
            ev = e["resource"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ev.is_object(), "no AuditEvent with agent=Practitioner/7");
    let agent = &ev["agent"][0];
    assert_eq!(agent["who"]["reference"], "Practitioner/7", "{ev}");
    assert_eq!(agent["who"]["identifier"]["system"], idp.issuer().as_str());
    assert_eq!(agent["who"]["identifier"]["value"], "u-42");
    assert_eq!(agent["altId"], "u-42");
    assert_eq!(agent["name"], "ward-app");
    assert_eq!(ev["subtype"][0]["code"], "read");
}

/// Each check of a provider token, one at a time on an otherwise valid token: another
/// audience, expired, not yet valid (`nbf`), an issuer nobody configured, a key the
/// provider never published, and a signature by another key under the provider's `kid`.
async fn external_tokens_failing_a_check_get_401_with_a_challenge(backend: Backend) {
    let key = SigningKey::generate();
    let idp = Idp::start(&[&key]).await;
    let server = start_server(backend, &idp, &[]).await;
    let good = staff_claims(&idp, &server);
    get_as(&server, &sign(&key, &good), "Patient")
        .await
        .assert_status(200);

    let with = |name: &str, value: Value| {
        let mut c = good.clone();
        c[name] = value;
        c
    };
    let cases = [
        ("wrong aud", with("aud", json!("http://elsewhere/fhir"))),
        ("expired", with("exp", json!(now() - 600))),
        ("nbf in the future", with("nbf", json!(now() + 600))),
        (
            "unknown issuer",
            with("iss", json!("http://idp.invalid/realms/x")),
        ),
    ];
    for (what, claims) in cases {
        assert_unauthorized(
            &get_as(&server, &sign(&key, &claims), "Patient").await,
            what,
        );
    }
    // Signed by a key the provider does not publish (its kid is unknown: the server
    // refetches the provider's keys, finds it still missing, refuses).
    let stranger = SigningKey::generate();
    assert_unauthorized(
        &get_as(&server, &sign(&stranger, &good), "Patient").await,
        "unknown key",
    );
    // Signed by another key but claiming the provider's kid.
    let forged = sign(&stranger, &good);
    let genuine = sign(&key, &good);
    let mut parts: Vec<&str> = forged.split('.').collect();
    parts[0] = genuine.split('.').next().unwrap();
    assert_unauthorized(
        &get_as(&server, &parts.join("."), "Patient").await,
        "forged signature under the provider's kid",
    );
    // A token without the user's bearer header at all.
    assert_unauthorized(&server.get("Patient").await, "no token");
}

/// The provider rotates its keys (serves a new JWK Set): a token with the new `kid` is
/// accepted once the server refetched the set, which it does on meeting the unknown
/// `kid`, at most once per `--oidc-jwks-refresh-secs`.
async fn external_keys_rotated_at_the_provider_are_fetched_on_an_unknown_kid(backend: Backend) {
    let old = SigningKey::generate();
    let idp = Idp::start(&[&old]).await;
    let server = start_server(backend, &idp, &["--oidc-jwks-refresh-secs", "3"]).await;
    assert_eq!(idp.jwks_fetches(), 1, "keys are loaded at start-up");
    let claims = staff_claims(&idp, &server);
    get_as(&server, &sign(&old, &claims), "Patient")
        .await
        .assert_status(200);
    assert_eq!(idp.jwks_fetches(), 1, "a known kid needs no fetch");

    // Past the refresh interval of the start-up fetch, unknown kids in quick succession:
    // one refetch, then the rate limit holds.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let stranger = SigningKey::generate();
    for _ in 0..3 {
        assert_unauthorized(
            &get_as(&server, &sign(&stranger, &claims), "Patient").await,
            "unknown key",
        );
    }
    assert_eq!(idp.jwks_fetches(), 2, "one refetch per refresh interval");

    tokio::time::sleep(Duration::from_millis(3200)).await;
    let new = SigningKey::generate_with(KeyAlgorithm::Es384);
    idp.serve_keys(&[&new]);
    let rotated = sign(&new, &staff_claims(&idp, &server));
    get_as(&server, &rotated, "Patient")
        .await
        .assert_status(200);
    assert_eq!(idp.jwks_fetches(), 3);
    // The old key is gone from the provider's set: its new tokens are refused.
    let mut fresh_old = staff_claims(&idp, &server);
    fresh_old["jti"] = json!("another token");
    assert_unauthorized(
        &get_as(&server, &sign(&old, &fresh_old), "Patient").await,
        "key no longer published",
    );
}

/// `--oidc-jwks-url` instead of discovery, and claim names of another provider:
/// `--oidc-scope-claim scp` (an array), `--oidc-patient-claim ext.patient` (a dotted path),
/// `--oidc-fhir-user-claim ext.fhir_user`. `patient/` scopes are confined to the patient
/// of the token: its own data is found, another patient's is refused.
async fn external_patient_claim_confines_patient_scopes_with_configured_claim_names(
    backend: Backend,
) {
    let key = SigningKey::generate();
    let idp = Idp::start(&[&key]).await;
    let jwks_url = idp.jwks_url();
    let server = start_server(
        backend,
        &idp,
        &[
            "--oidc-jwks-url",
            &jwks_url,
            "--oidc-audience",
            "mediflow",
            "--oidc-scope-claim",
            "scp",
            "--oidc-patient-claim",
            "ext.patient",
            "--oidc-fhir-user-claim",
            "ext.fhir_user",
        ],
    )
    .await;
    let admin = server.mint_token("ops", ADMIN, None).await;
    let mut ids = Vec::new();
    for mrn in ["mine", "other"] {
        let pid = create_as(&server, &admin, &patient("urn:mrn", mrn)).await;
        create_as(
            &server,
            &admin,
            &json!({"resourceType": "Observation", "status": "final", "code": {"text": mrn},
                    "subject": {"reference": format!("Patient/{pid}")}}),
        )
        .await;
        ids.push(pid);
    }
    let (mine, other) = (&ids[0], &ids[1]);
    let claims = json!({
        "iss": idp.issuer(),
        "sub": "p-1",
        "aud": "mediflow",
        "client_id": "patient-portal",
        "exp": now() + 300,
        "scp": ["openid", "launch/patient", "patient/*.rs"],
        "ext": {"patient": format!("Patient/{mine}"), "fhir_user": format!("Patient/{mine}")},
    });
    let token = sign(&key, &claims);
    let found = get_as(&server, &token, "Observation").await;
    found.assert_status(200);
    let codes: Vec<Value> = entries(&found.json())
        .iter()
        .map(|e| e["resource"]["code"]["text"].clone())
        .collect();
    assert_eq!(codes, [json!("mine")]);
    get_as(&server, &token, &format!("Patient/{mine}"))
        .await
        .assert_status(200);
    assert_forbidden(
        &get_as(&server, &token, &format!("Patient/{other}")).await,
        "another patient",
    );
    // The default audience (the FHIR base URL) no longer applies.
    let mut for_base = claims.clone();
    for_base["aud"] = json!(server.base());
    assert_unauthorized(
        &get_as(&server, &sign(&key, &for_base), "Observation").await,
        "audience other than --oidc-audience",
    );
}

/// `--oidc-role-claim`: the provider's role claim (here an array, as Keycloak puts realm
/// roles) caps the token's scopes by the hospital role (hospital-model.md § Roles), as
/// for our own login: a BILLING user with `user/*.rs` reads invoices but no clinical
/// data; a token without a known role is refused.
async fn external_role_claim_caps_scopes_by_hospital_role(backend: Backend) {
    let key = SigningKey::generate();
    let idp = Idp::start(&[&key]).await;
    let server = start_server(backend, &idp, &["--oidc-role-claim", "realm_access.roles"]).await;
    let mut claims = staff_claims(&idp, &server);
    claims["scope"] = json!("openid user/*.rs");
    claims["realm_access"] = json!({"roles": ["offline_access", "billing"]});
    let billing = sign(&key, &claims);
    get_as(&server, &billing, "Invoice")
        .await
        .assert_status(200);
    assert_forbidden(
        &get_as(&server, &billing, "Observation").await,
        "clinical data",
    );
    claims["realm_access"] = json!({"roles": ["surgeon"]});
    assert_unauthorized(
        &get_as(&server, &sign(&key, &claims), "Invoice").await,
        "unknown role",
    );
    claims.as_object_mut().unwrap().remove("realm_access");
    assert_unauthorized(
        &get_as(&server, &sign(&key, &claims), "Invoice").await,
        "no role claim",
    );
}
