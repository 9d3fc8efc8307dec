//! SMART App Launch 2.0 (hl7.org/fhir/smart-app-launch, app-launch.html) through HTTP on
//! both backends (issue 5, items 2, 5, 7, 8 and 10): the authorization-code flow with PKCE
//! (RFC 7636), the login and consent page with unticked scopes, the patient picker of a
//! standalone launch, EHR launch contexts, id_tokens with `fhirUser`, refresh tokens with
//! rotation, role caps on grants, login throttling, and each refusal (wrong verifier,
//! reused code, wrong `aud`, unregistered redirect URI). One test drives the whole
//! standalone launch in headless Chromium (Debian `chromium` + `chromium-driver`) through
//! the Python Selenium WebDriver client, both installed by `.ci/run`.

use std::sync::{Arc, Mutex};

use base64::Engine;
use conformance::*;
use mediflow_auth::pkce;
use serde_json::{Value, json};

backend_tests!(
    standalone_launch_with_login_consent_and_patient_picker,
    authorization_requests_are_refused_per_smart_and_rfc_6749,
    codes_are_single_use_and_bound_to_the_pkce_verifier,
    refresh_tokens_rotate_and_a_replayed_one_revokes_the_grant,
    ehr_launch_carries_the_patient_context,
    roles_cap_what_a_user_is_granted,
    login_is_locked_after_five_failures_and_audited,
    a_one_time_password_is_changed_before_any_code_is_issued,
    headless_chromium_completes_a_standalone_launch,
);

const APP: &str = "growth-chart";
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const PASSWORD: &str = "Correct-Horse-42";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-this-is-long-enough";

/// A client that does not follow redirects (the 303 to the app is what we check).
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn cli(args: &[&str]) {
    let out = run_mediflow(args.iter().map(|s| s.to_string()).collect()).await;
    assert!(
        out.status.success(),
        "mediflow {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Registers the public app `APP` with `redirect` and `scope` as its registration.
async fn register_app(server: &Server, redirect: &str, scope: &str) {
    cli(&[
        "client",
        "add",
        "--client-id",
        APP,
        "--name",
        "Growth Chart",
        "--kind",
        "public",
        "--redirect-uri",
        redirect,
        "--scope",
        scope,
        "--database-url",
        server.db().url(),
    ])
    .await;
}

async fn add_user(server: &Server, username: &str, role: &str, fhir_user: &str) {
    let url = server.db().url().to_string();
    let args: Vec<String> = [
        "user",
        "add",
        "--username",
        username,
        "--role",
        role,
        "--fhir-user",
        fhir_user,
        "--database-url",
        &url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(mediflow_bin())
            .args(&args)
            .env("MEDIFLOW_USER_PASSWORD", PASSWORD)
            .output()
            .expect("run mediflow user add")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The authorization request parameters (SMART § "Obtain authorization code").
fn request(server: &Server, scope: &str, redirect: &str) -> Vec<(String, String)> {
    [
        ("response_type", "code"),
        ("client_id", APP),
        ("redirect_uri", redirect),
        ("scope", scope),
        ("state", "st-98765"),
        ("aud", &server.base()),
        ("code_challenge", &pkce::challenge_s256(VERIFIER)),
        ("code_challenge_method", "S256"),
        ("nonce", "n-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn with(mut pairs: Vec<(String, String)>, more: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    pairs
}

fn without(pairs: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    pairs.into_iter().filter(|(k, _)| k != name).collect()
}

fn set(pairs: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    with(without(pairs, name), &[(name, value)])
}

fn encode(pairs: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn authorize_get(server: &Server, pairs: &[(String, String)]) -> reqwest::Response {
    no_redirects()
        .get(format!(
            "{}/auth/authorize?{}",
            server.root(),
            encode(pairs)
        ))
        .send()
        .await
        .unwrap()
}

async fn authorize_post(server: &Server, pairs: &[(String, String)]) -> reqwest::Response {
    no_redirects()
        .post(format!("{}/auth/authorize", server.root()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(pairs))
        .send()
        .await
        .unwrap()
}

/// The query of a 303's Location to the app.
fn redirected(resp: reqwest::Response, redirect: &str) -> Vec<(String, String)> {
    assert_eq!(
        resp.status().as_u16(),
        303,
        "expected a redirect to the app"
    );
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with(redirect), "{loc}");
    url::Url::parse(&loc)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The value of a hidden field in a page.
fn hidden_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end].to_string()
}

/// Logs in as `username` with the right password, ticking `grants` (or all when `None`),
/// and returns the response.
async fn login(
    server: &Server,
    pairs: &[(String, String)],
    username: &str,
    grants: Option<&[&str]>,
) -> reqwest::Response {
    let mut form = with(
        pairs.to_vec(),
        &[
            ("username", username),
            ("password", PASSWORD),
            ("action", "approve"),
        ],
    );
    if let Some(g) = grants {
        form.push(("consent".into(), "1".into()));
        for s in g {
            form.push(("grant".into(), s.to_string()));
        }
    }
    authorize_post(server, &form).await
}

async fn token_request(server: &Server, form: &[(&str, &str)]) -> Response {
    server
        .request(Method::POST, &format!("{}/auth/token", server.root()))
        .form(form)
        .send()
        .await
}

async fn exchange(server: &Server, code: &str, verifier: &str) -> Response {
    token_request(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", APP),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn get_as(server: &Server, token: &str, path: &str) -> Response {
    server
        .request(Method::GET, path)
        .header("Authorization", &format!("Bearer {token}"))
        .send()
        .await
}

/// The claims of a JWT, unverified (the test checks what the server put in).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Verifies an id_token as an OIDC client would (OIDC Core §3.1.3.7): the keys from the
/// `jwks_uri` of `/.well-known/openid-configuration`, `iss` = its `issuer`, `aud` = the
/// client id. Returns the claims.
async fn verified_id_token(server: &Server, jwt: &str) -> Value {
    let conf = server
        .request(
            Method::GET,
            &format!("{}/.well-known/openid-configuration", server.root()),
        )
        .send()
        .await;
    conf.assert_status(200);
    let conf = conf.json();
    assert_eq!(conf["issuer"], server.root());
    let jwks = server
        .request(Method::GET, conf["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .json();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    let kid = header.kid.expect("kid");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("the id_token's key is published");
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[APP]);
    validation.set_issuer(&[server.root()]);
    jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .expect("the id_token verifies")
        .claims
}

struct World {
    server: Server,
    admin: String,
    /// Two patients: ids of "Ann Alpha" and "Bob Beta".
    ann: String,
    bob: String,
}

async fn world(backend: Backend, app_scope: &str) -> World {
    let server = Server::start_secure(backend).await;
    let admin = server.mint_token("ops", "system/*.cruds", None).await;
    let mut ids = Vec::new();
    for (given, family) in [("Ann", "Alpha"), ("Bob", "Beta")] {
        let resp = server
            .request(Method::POST, "Patient")
            .header("Authorization", &format!("Bearer {admin}"))
            .json(&json!({"resourceType": "Patient", "name": [{"given": [given], "family": family}], "birthDate": "1980-02-03"}))
            .send()
            .await;
        resp.assert_status(201);
        let pid = resp.json()["id"].as_str().unwrap().to_string();
        for (code, text) in [("vital-signs", "Heart rate"), ("laboratory", "Glucose")] {
            server
                .request(Method::POST, "Observation")
                .header("Authorization", &format!("Bearer {admin}"))
                .json(&json!({"resourceType": "Observation", "status": "final",
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": code}]}],
                    "code": {"text": text}, "subject": {"reference": format!("Patient/{pid}")}}))
                .send()
                .await
                .assert_status(201);
        }
        server
            .request(Method::POST, "Condition")
            .header("Authorization", &format!("Bearer {admin}"))
            .json(&json!({"resourceType": "Condition", "code": {"text": "Asthma"}, "subject": {"reference": format!("Patient/{pid}")}}))
            .send()
            .await
            .assert_status(201);
        ids.push(pid);
    }
    register_app(&server, REDIRECT, app_scope).await;
    add_user(&server, "dr.grey", "DOCTOR", "Practitioner/pr-grey").await;
    World {
        server,
        admin,
        bob: ids.pop().unwrap(),
        ann: ids.pop().unwrap(),
    }
}

const APP_SCOPE: &str =
    "openid fhirUser launch launch/patient offline_access online_access patient/*.rs user/*.rs";

/// Standalone launch (SMART § "Standalone launch"): the login page names the app and the
/// scopes; the user unticks `patient/Condition.rs`; a DOCTOR is asked to pick a patient;
/// the app gets a code and `state`, exchanges it with its PKCE verifier, and receives an
/// access token confined to the chosen patient without the unticked scope, an id_token
/// whose `fhirUser` is an absolute URL (SMART § "fhirUser"), and a refresh token.
async fn standalone_launch_with_login_consent_and_patient_picker(backend: Backend) {
    let w = world(backend, APP_SCOPE).await;
    let s = &w.server;
    let scope =
        "openid fhirUser launch/patient patient/Observation.rs patient/Condition.rs offline_access";
    let req = request(s, scope, REDIRECT);
    let page = authorize_get(s, &req).await;
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("Growth Chart"), "{html}");
    assert!(html.contains("value=\"patient/Condition.rs\""), "{html}");
    assert!(
        html.contains("<label for=\"password\">"),
        "labelled controls: {html}"
    );
    // Sign in, leaving Condition unticked: the picker comes next.
    let picker = login(
        s,
        &req,
        "dr.grey",
        Some(&["patient/Observation.rs", "offline_access"]),
    )
    .await;
    assert_eq!(picker.status().as_u16(), 200);
    let html = picker.text().await.unwrap();
    assert!(html.contains("Choose a patient"), "{html}");
    assert!(
        html.contains("Ann Alpha") && html.contains("Bob Beta"),
        "{html}"
    );
    let session = hidden_value(&html, "session");
    // The session belongs to this app's request: another app cannot ride on it.
    cli(&[
        "client",
        "add",
        "--client-id",
        "other-app",
        "--kind",
        "public",
        "--redirect-uri",
        REDIRECT,
        "--scope",
        APP_SCOPE,
        "--database-url",
        s.db().url(),
    ])
    .await;
    let foreign = with(
        set(req.clone(), "client_id", "other-app"),
        &[
            ("session", &session),
            ("patient", &w.bob),
            ("action", "approve"),
        ],
    );
    assert_eq!(authorize_post(s, &foreign).await.status().as_u16(), 401);
    // Searching by name narrows the list (search.html string: starts-with, any case).
    let mut form = with(
        req.clone(),
        &[
            ("session", &session),
            ("consent", "1"),
            ("grant", "patient/Observation.rs"),
            ("grant", "offline_access"),
            ("patient_name", "alp"),
            ("action", "find"),
        ],
    );
    let html = authorize_post(s, &form).await.text().await.unwrap();
    assert!(
        html.contains("Ann Alpha") && !html.contains("Bob Beta"),
        "{html}"
    );
    form = set(form, "action", "approve");
    form.push(("patient".into(), w.ann.clone()));
    let back = redirected(authorize_post(s, &form).await, REDIRECT);
    assert_eq!(get(&back, "state"), Some("st-98765"));
    let code = get(&back, "code").expect("code").to_string();
    // The login session was used up with the code.
    let again = authorize_post(s, &form).await;
    assert_eq!(again.status().as_u16(), 401);
    // The token response (SMART § "Obtain access token").
    let resp = exchange(s, &code, VERIFIER).await;
    resp.assert_status(200);
    assert_eq!(resp.header("cache-control").as_deref(), Some("no-store"));
    let tok = resp.json();
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["patient"], w.ann.as_str());
    assert_eq!(tok["need_patient_banner"], true);
    let granted = tok["scope"].as_str().unwrap();
    assert!(granted.contains("patient/Observation.rs"), "{granted}");
    assert!(!granted.contains("Condition"), "unticked: {granted}");
    assert!(
        granted.contains("offline_access") && granted.contains("openid"),
        "{granted}"
    );
    assert!(tok["refresh_token"].is_string(), "{tok}");
    let id = verified_id_token(s, tok["id_token"].as_str().unwrap()).await;
    assert_eq!(id["aud"], APP);
    assert_eq!(id["sub"], "dr.grey");
    assert_eq!(id["nonce"], "n-1");
    assert_eq!(id["fhirUser"], format!("{}/Practitioner/pr-grey", s.base()));
    let at = tok["access_token"].as_str().unwrap();
    let access = claims(at);
    assert_eq!(access["patient"], w.ann.as_str());
    assert_eq!(access["fhirUser"], "Practitioner/pr-grey");
    assert_eq!(access["role"], "DOCTOR");
    // The token works within its grant only.
    let obs = get_as(s, at, "Observation").await;
    obs.assert_status(200);
    let subjects: Vec<Value> = entries(&obs.json())
        .iter()
        .map(|e| e["resource"]["subject"]["reference"].clone())
        .collect();
    assert_eq!(subjects.len(), 2, "Ann's two observations");
    assert!(
        subjects
            .iter()
            .all(|r| *r == json!(format!("Patient/{}", w.ann)))
    );
    get_as(s, at, "Condition").await.assert_status(403);
    get_as(s, at, &format!("Observation?patient={}", w.bob))
        .await
        .assert_status_in(&[200, 403]);
    let bob_obs = get_as(s, at, &format!("Observation?patient={}", w.bob)).await;
    if bob_obs.status == 200 {
        assert!(
            entries(&bob_obs.json()).is_empty(),
            "another patient's data"
        );
    }
    // The login was audited with the user and the patient (R10).
    let audit = get_as(
        s,
        &w.admin,
        "AuditEvent?subtype=http://dicom.nema.org/resources/ontology/DCM|110122&_count=50",
    )
    .await;
    audit.assert_status(200);
    assert!(
        entries(&audit.json())
            .iter()
            .any(|e| e["resource"]["outcome"] == "0"
                && e["resource"].to_string().contains("dr.grey")),
        "{:?}",
        audit.json()
    );
}

/// RFC 6749 §4.1.2.1: an unknown client or an unregistered redirect URI is shown an
/// error page, never redirected; other errors go back to the app with `error` and
/// `state`. SMART App Launch 2.0: PKCE S256 is required, and an `aud` that is not this
/// FHIR server is rejected. Denying consent gives `access_denied`.
async fn authorization_requests_are_refused_per_smart_and_rfc_6749(backend: Backend) {
    let w = world(backend, APP_SCOPE).await;
    let s = &w.server;
    let req = request(s, "openid patient/*.rs launch/patient", REDIRECT);
    for (pairs, why) in [
        (set(req.clone(), "client_id", "nobody"), "unknown client"),
        (
            set(req.clone(), "redirect_uri", "http://evil.example/cb"),
            "unregistered redirect",
        ),
    ] {
        let resp = authorize_get(s, &pairs).await;
        assert_eq!(resp.status().as_u16(), 400, "{why}");
        assert!(resp.headers().get("location").is_none(), "{why}");
        assert!(
            resp.text().await.unwrap().contains("role=\"alert\""),
            "{why}"
        );
    }
    for (pairs, error) in [
        (
            set(req.clone(), "aud", "https://other.example/fhir"),
            "invalid_request",
        ),
        (without(req.clone(), "code_challenge"), "invalid_request"),
        (
            set(req.clone(), "code_challenge_method", "plain"),
            "invalid_request",
        ),
        (
            set(req.clone(), "response_type", "token"),
            "unsupported_response_type",
        ),
        (
            set(req.clone(), "scope", "patient/Observation.zz"),
            "invalid_scope",
        ),
        (
            with(req.clone(), &[("launch", "no-such-launch")]),
            "invalid_scope",
        ),
    ] {
        let back = redirected(authorize_get(s, &pairs).await, REDIRECT);
        assert_eq!(get(&back, "error"), Some(error), "{back:?}");
        assert_eq!(get(&back, "state"), Some("st-98765"));
    }
    let back = redirected(
        authorize_post(s, &with(req.clone(), &[("action", "deny")])).await,
        REDIRECT,
    );
    assert_eq!(get(&back, "error"), Some("access_denied"));
    // A wrong password shows the page again, with an alert, and issues nothing.
    let resp = authorize_post(
        s,
        &with(
            req,
            &[
                ("username", "dr.grey"),
                ("password", "wrong"),
                ("action", "approve"),
            ],
        ),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 401);
    let html = resp.text().await.unwrap();
    assert!(html.contains("Wrong username or password"), "{html}");
}

/// RFC 6749 §4.1.2 and §4.1.3, RFC 7636 §4.6: a code works once, for its client and
/// redirect URI, with the verifier of its challenge; a second use is refused and revokes
/// the tokens issued from the first.
async fn codes_are_single_use_and_bound_to_the_pkce_verifier(backend: Backend) {
    let w = world(backend, APP_SCOPE).await;
    let s = &w.server;
    let req = request(s, "user/Patient.rs", REDIRECT);
    let code_of = |resp| async move {
        get(&redirected(resp, REDIRECT), "code")
            .unwrap()
            .to_string()
    };
    // Wrong verifier: invalid_grant, and the code is used up.
    let code = code_of(login(s, &req, "dr.grey", None).await).await;
    let wrong = "x".repeat(50);
    let resp = exchange(s, &code, &wrong).await;
    assert_eq!(resp.json()["error"], "invalid_grant", "{resp:?}");
    // Other redirect URI or client: invalid_grant.
    let code = code_of(login(s, &req, "dr.grey", None).await).await;
    let resp = token_request(
        s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("client_id", APP),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(resp.json()["error"], "invalid_grant", "{resp:?}");
    let resp = token_request(
        s,
        &[
            ("grant_type", "authorization_code"),
            ("code", "made-up"),
            ("client_id", APP),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(resp.json()["error"], "invalid_grant");
    // A good exchange, then a replay: refused, and the first token is revoked.
    let code = code_of(login(s, &req, "dr.grey", None).await).await;
    let tok = exchange(s, &code, VERIFIER).await;
    tok.assert_status(200);
    let at = tok.json()["access_token"].as_str().unwrap().to_string();
    get_as(s, &at, "Patient").await.assert_status(200);
    let replay = exchange(s, &code, VERIFIER).await;
    replay.assert_status(400);
    assert_eq!(replay.json()["error"], "invalid_grant");
    let after = get_as(s, &at, "Patient").await;
    after.assert_status(401);
    assert!(after.header("www-authenticate").is_some());
}

/// RFC 6749 §6 with rotation (RFC 9700 §4.14.2): each refresh gives a new access and
/// refresh token; a narrower scope may be asked for, a wider one not; replaying a used
/// refresh token revokes the whole grant. RFC 7662: a live refresh token introspects as
/// active; RFC 7009: revoking it ends the grant.
async fn refresh_tokens_rotate_and_a_replayed_one_revokes_the_grant(backend: Backend) {
    let w = world(backend, APP_SCOPE).await;
    let s = &w.server;
    let req = request(
        s,
        "user/Patient.rs user/Observation.rs offline_access",
        REDIRECT,
    );
    let back = redirected(login(s, &req, "dr.grey", None).await, REDIRECT);
    let tok = exchange(s, get(&back, "code").unwrap(), VERIFIER)
        .await
        .json();
    let r1 = tok["refresh_token"].as_str().unwrap().to_string();
    let refresh = |token: String, scope: Option<&'static str>| async move {
        let mut form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", token),
            ("client_id", APP.to_string()),
        ];
        if let Some(sc) = scope {
            form.push(("scope", sc.to_string()));
        }
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        token_request(s, &pairs).await
    };
    // A wider scope is refused, and the refresh token survives the refusal.
    let wider = refresh(r1.clone(), Some("user/Patient.rs user/Condition.rs")).await;
    assert_eq!(wider.json()["error"], "invalid_scope", "{wider:?}");
    let t2 = refresh(r1.clone(), Some("user/Patient.rs")).await;
    t2.assert_status(200);
    let t2 = t2.json();
    assert_eq!(t2["scope"], "user/Patient.rs");
    let r2 = t2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2, "rotated");
    let at2 = t2["access_token"].as_str().unwrap().to_string();
    get_as(s, &at2, "Patient").await.assert_status(200);
    get_as(s, &at2, "Observation").await.assert_status(403);
    // Introspection by an admin bearer: the live refresh token is active.
    let intro = s
        .request(Method::POST, &format!("{}/auth/introspect", s.root()))
        .header("Authorization", &format!("Bearer {}", w.admin))
        .form(&[("token", &r2)])
        .send()
        .await
        .json();
    assert_eq!(intro["active"], true, "{intro}");
    assert_eq!(intro["client_id"], APP);
    // Replaying r1: refused, and r2 and at2 die with it.
    assert_eq!(refresh(r1, None).await.json()["error"], "invalid_grant");
    assert_eq!(
        refresh(r2.clone(), None).await.json()["error"],
        "invalid_grant"
    );
    get_as(s, &at2, "Patient").await.assert_status(401);
    // RFC 7009 on a fresh grant's refresh token.
    let back = redirected(login(s, &req, "dr.grey", None).await, REDIRECT);
    let tok = exchange(s, get(&back, "code").unwrap(), VERIFIER)
        .await
        .json();
    let r = tok["refresh_token"].as_str().unwrap().to_string();
    let at = tok["access_token"].as_str().unwrap().to_string();
    s.request(Method::POST, &format!("{}/auth/revoke", s.root()))
        .header("Authorization", &format!("Bearer {}", w.admin))
        .form(&[("token", &r)])
        .send()
        .await
        .assert_status(200);
    assert_eq!(refresh(r, None).await.json()["error"], "invalid_grant");
    get_as(s, &at, "Patient").await.assert_status(401);
}

/// SMART § "EHR launch": the EHR creates a launch context for the open patient; the app
/// passes `launch` with the `launch` scope; no picker is shown and the token carries the
/// EHR's patient. A caller who may not read the patient cannot create a context.
async fn ehr_launch_carries_the_patient_context(backend: Backend) {
    let w = world(backend, APP_SCOPE).await;
    let s = &w.server;
    let created = s
        .request(Method::POST, &format!("{}/auth/launch", s.root()))
        .header("Authorization", &format!("Bearer {}", w.admin))
        .json(&json!({"patient": w.bob}))
        .send()
        .await;
    created.assert_status(201);
    let launch = created.json()["launch"].as_str().unwrap().to_string();
    let narrow = s.mint_token("ehr2", "system/Observation.rs", None).await;
    s.request(Method::POST, &format!("{}/auth/launch", s.root()))
        .header("Authorization", &format!("Bearer {narrow}"))
        .json(&json!({"patient": w.bob}))
        .send()
        .await
        .assert_status(403);
    s.request(Method::POST, &format!("{}/auth/launch", s.root()))
        .json(&json!({"patient": w.bob}))
        .send()
        .await
        .assert_status(401);
    let req = with(
        request(s, "launch openid fhirUser patient/*.rs", REDIRECT),
        &[("launch", &launch)],
    );
    let back = redirected(login(s, &req, "dr.grey", None).await, REDIRECT);
    let tok = exchange(s, get(&back, "code").unwrap(), VERIFIER).await;
    tok.assert_status(200);
    let tok = tok.json();
    assert_eq!(tok["patient"], w.bob.as_str());
    let at = tok["access_token"].as_str().unwrap();
    let conds = get_as(s, at, "Condition").await;
    conds.assert_status(200);
    assert_eq!(entries(&conds.json()).len(), 1, "Bob's condition only");
}

/// Hospital roles (hospital-model.md § Roles): the grant is `requested ∩ registration ∩
/// role cap`. A BILLING user asking for clinical data gets the billing types only; a
/// PATIENT user is confined to their own record with no picker.
async fn roles_cap_what_a_user_is_granted(backend: Backend) {
    let w = world(backend, APP_SCOPE).await;
    let s = &w.server;
    add_user(s, "bill", "BILLING", "Practitioner/pr-bill").await;
    let req = request(s, "user/Observation.rs user/Invoice.rs", REDIRECT);
    let back = redirected(login(s, &req, "bill", None).await, REDIRECT);
    let tok = exchange(s, get(&back, "code").unwrap(), VERIFIER)
        .await
        .json();
    assert_eq!(tok["scope"], "user/Invoice.rs", "{tok}");
    let at = tok["access_token"].as_str().unwrap();
    get_as(s, at, "Observation").await.assert_status(403);
    get_as(s, at, "Invoice").await.assert_status(200);
    // Nothing grantable at all: invalid_scope back to the app.
    let req = request(s, "user/Observation.rs", REDIRECT);
    let back = redirected(login(s, &req, "bill", None).await, REDIRECT);
    assert_eq!(get(&back, "error"), Some("invalid_scope"));
    // A PATIENT user: own record, no picker, even asking for launch/patient.
    add_user(s, "ann", "PATIENT", &format!("Patient/{}", w.ann)).await;
    let req = request(s, "launch/patient patient/*.rs user/*.rs", REDIRECT);
    let back = redirected(login(s, &req, "ann", None).await, REDIRECT);
    assert!(get(&back, "error").is_none(), "{back:?}");
    let tok = exchange(s, get(&back, "code").unwrap(), VERIFIER)
        .await
        .json();
    assert_eq!(tok["patient"], w.ann.as_str());
    assert!(!tok["scope"].as_str().unwrap().contains("user/"), "{tok}");
    let at = tok["access_token"].as_str().unwrap();
    get_as(s, at, &format!("Patient/{}", w.bob))
        .await
        .assert_status(403);
    get_as(s, at, &format!("Patient/{}", w.ann))
        .await
        .assert_status(200);
    // The access log about Ann is in her compartment but not hers to read (R10: the
    // audit trail needs an administrator's scope).
    get_as(s, at, "AuditEvent").await.assert_status(403);
    get_as(
        s,
        at,
        &format!("Patient?_id={}&_revinclude=AuditEvent:patient", w.ann),
    )
    .await
    .assert_status(403);
}

/// Seed 004 NFR-SEC-001: five failed logins within 15 minutes lock the account; the right
/// password is then refused too. Each attempt is audited (R10, DICOM 110122 Login).
async fn login_is_locked_after_five_failures_and_audited(backend: Backend) {
    let w = world(backend, APP_SCOPE).await;
    let s = &w.server;
    let req = request(s, "user/Patient.rs", REDIRECT);
    for _ in 0..5 {
        let resp = authorize_post(
            s,
            &with(
                req.clone(),
                &[
                    ("username", "dr.grey"),
                    ("password", "nope"),
                    ("action", "approve"),
                ],
            ),
        )
        .await;
        assert_eq!(resp.status().as_u16(), 401);
    }
    let resp = login(s, &req, "dr.grey", None).await;
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.text().await.unwrap().contains("locked"));
    // Audited: six refused logins of dr.grey.
    let mut refused = 0;
    for _ in 0..100 {
        let audit = get_as(
            s,
            &w.admin,
            "AuditEvent?subtype=http://dicom.nema.org/resources/ontology/DCM|110122&_count=100",
        )
        .await;
        refused = entries(&audit.json())
            .iter()
            .filter(|e| {
                e["resource"]["outcome"] == "4" && e["resource"].to_string().contains("dr.grey")
            })
            .count();
        if refused >= 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(refused, 6);
}

/// Issue 5 item 1: a one-time password (first start, or set by an admin with
/// `mustChangePassword`) signs in only to choose a new password; the code comes after.
async fn a_one_time_password_is_changed_before_any_code_is_issued(backend: Backend) {
    let w = world(backend, APP_SCOPE).await;
    let s = &w.server;
    s.request(Method::PUT, &format!("{}/admin/users/dr.grey", s.root()))
        .header("Authorization", &format!("Bearer {}", w.admin))
        .json(
            &json!({"role": "DOCTOR", "fhirUser": "Practitioner/pr-grey",
            "password": "Temp-pass-1", "mustChangePassword": true}),
        )
        .send()
        .await
        .assert_status(200);
    let req = request(s, "user/Patient.rs", REDIRECT);
    let signin = |password: &'static str| {
        let form = with(
            req.clone(),
            &[
                ("username", "dr.grey"),
                ("password", password),
                ("action", "approve"),
            ],
        );
        async move { authorize_post(s, &form).await }
    };
    let page = signin("Temp-pass-1").await;
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Choose a new password"), "{html}");
    let session = hidden_value(&html, "session");
    let change = |new: &str, again: &str| {
        with(
            req.clone(),
            &[
                ("session", &session),
                ("new_password", new),
                ("confirm_password", again),
                ("action", "change_password"),
            ],
        )
    };
    let differ = authorize_post(s, &change("My-own-pass-9", "My-own-pass-8")).await;
    assert_eq!(differ.status().as_u16(), 400);
    let short = authorize_post(s, &change("short", "short")).await;
    assert_eq!(short.status().as_u16(), 400);
    assert!(short.text().await.unwrap().contains("at least 8"));
    let back = redirected(
        authorize_post(s, &change("My-own-pass-9", "My-own-pass-9")).await,
        REDIRECT,
    );
    let tok = exchange(s, get(&back, "code").unwrap(), VERIFIER).await;
    tok.assert_status(200);
    // The one-time password is gone; the new one works without the extra step.
    assert_eq!(signin("Temp-pass-1").await.status().as_u16(), 401);
    let again = redirected(signin("My-own-pass-9").await, REDIRECT);
    assert!(get(&again, "code").is_some());
}

// ---------------------------------------------------------------------------------------
// Headless Chromium.

const BROWSER_SCRIPT: &str = r#"
import json, sys
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

url, user, password, untick, find, pick, redirect = sys.argv[1:8]
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    driver.get(url)
    seen = {"title": driver.title, "app": "Growth Chart" in driver.page_source}
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    for box in driver.find_elements(By.CSS_SELECTOR, "input[name=grant]"):
        if box.get_attribute("value") == untick and box.is_selected():
            # Untick through its label, as a user would.
            driver.find_element(By.CSS_SELECTOR, "label[for=%s]" % box.get_attribute("id")).click()
    driver.find_element(By.CSS_SELECTOR, "button[value=approve]").click()
    WebDriverWait(driver, 20).until(lambda d: "Choose a patient" in d.page_source)
    driver.find_element(By.ID, "patient_name").send_keys(find)
    driver.find_element(By.CSS_SELECTOR, "button[value=find]").click()
    WebDriverWait(driver, 20).until(lambda d: pick in d.page_source and "Bob Beta" not in d.page_source)
    for label in driver.find_elements(By.CSS_SELECTOR, "label"):
        if pick in label.text:
            label.click()
    driver.find_element(By.CSS_SELECTOR, "button[value=approve]").click()
    WebDriverWait(driver, 20).until(lambda d: d.current_url.startswith(redirect))
    seen["url"] = driver.current_url
    print(json.dumps(seen))
finally:
    driver.quit()
"#;

/// Serves the app's redirect URI: answers every request with a small page (so that the
/// browser lands on a real page) and remembers the request lines.
async fn fake_app() -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                if let Some(line) = head.lines().next() {
                    log.lock().unwrap().push(line.to_string());
                }
                let body = "<!DOCTYPE html><title>Growth Chart</title><p>Signed in.</p>";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://127.0.0.1:{}/callback", addr.port()), seen)
}

/// Issue 5 item 7: the full standalone launch of a test app in headless Chromium: the
/// login page, unticking a scope, the patient picker's search, the redirect to the app;
/// the app then exchanges the code and reads with the token.
async fn headless_chromium_completes_a_standalone_launch(backend: Backend) {
    let have = std::path::Path::new("/usr/bin/chromium").exists()
        && std::path::Path::new("/usr/bin/chromedriver").exists()
        && python_has("selenium");
    if !have {
        // .ci/run installs them; elsewhere say so loudly.
        println!("SKIPPED: needs Debian chromium + chromium-driver and python3 selenium");
        return;
    }
    let (redirect, app_log) = fake_app().await;
    let w = world(backend, APP_SCOPE).await;
    let s = &w.server;
    // The app registers its real callback too.
    register_app(s, &redirect, APP_SCOPE).await;
    let req = request(
        s,
        "openid fhirUser launch/patient patient/Observation.rs patient/Condition.rs",
        &redirect,
    );
    let mut url = url::Url::parse(&format!("{}/auth/authorize", s.root())).unwrap();
    url.query_pairs_mut().extend_pairs(req.iter());
    let args: Vec<String> = vec![
        "-c".into(),
        BROWSER_SCRIPT.into(),
        url.to_string(),
        "dr.grey".into(),
        PASSWORD.into(),
        "patient/Condition.rs".into(),
        "alp".into(),
        "Ann Alpha".into(),
        redirect.clone(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(&args)
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "browser run failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("script prints JSON");
    assert_eq!(seen["title"], "Sign in · MediFlow");
    assert_eq!(seen["app"], true);
    let landed = url::Url::parse(seen["url"].as_str().unwrap()).unwrap();
    let back: Vec<(String, String)> = landed.query_pairs().into_owned().collect();
    assert_eq!(get(&back, "state"), Some("st-98765"));
    assert!(
        app_log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("GET /callback?")),
        "the browser reached the app"
    );
    let resp = token_request(
        s,
        &[
            ("grant_type", "authorization_code"),
            ("code", get(&back, "code").unwrap()),
            ("redirect_uri", &redirect),
            ("client_id", APP),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    resp.assert_status(200);
    let tok = resp.json();
    assert_eq!(tok["patient"], w.ann.as_str());
    assert!(
        !tok["scope"].as_str().unwrap().contains("Condition"),
        "{tok}"
    );
    let at = tok["access_token"].as_str().unwrap();
    get_as(s, at, "Observation").await.assert_status(200);
    get_as(s, at, "Condition").await.assert_status(403);
}
