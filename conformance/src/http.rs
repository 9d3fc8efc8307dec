//! HTTP requests and responses with assertion helpers.

use std::fmt;
use std::path::PathBuf;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::FHIR_JSON;

/// A request under construction (wraps `reqwest::RequestBuilder`, remembers what it is
/// for error messages).
pub struct Req {
    pub(crate) inner: reqwest::RequestBuilder,
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) log: PathBuf,
}

impl Req {
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.inner = self.inner.header(name, value);
        self
    }

    /// JSON body with `Content-Type: application/fhir+json`.
    pub fn json(mut self, body: &Value) -> Req {
        self.inner = self
            .inner
            .header("Content-Type", FHIR_JSON)
            .body(serde_json::to_vec(body).expect("serialize body"));
        self
    }

    /// Raw body; set the Content-Type yourself with [`Req::header`].
    pub fn body(mut self, body: impl Into<reqwest::Body>) -> Req {
        self.inner = self.inner.body(body);
        self
    }

    /// `application/x-www-form-urlencoded` body.
    pub fn form(mut self, pairs: &[(&str, &str)]) -> Req {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            ser.append_pair(k, v);
        }
        self.inner = self
            .inner
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(ser.finish());
        self
    }

    pub async fn send(self) -> Response {
        let what = format!("{} {}", self.method, self.url);
        let log = self.log.clone();
        self.try_send()
            .await
            .unwrap_or_else(|e| panic!("{what}: request failed: {e}; server log {}", log.display()))
    }

    /// Like [`Req::send`] but a transport error (e.g. the server closing the connection
    /// while the body is still being sent) is returned instead of panicking.
    pub async fn try_send(self) -> Result<Response, reqwest::Error> {
        let what = format!("{} {}", self.method, self.url);
        let resp = self.inner.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?.to_vec();
        Ok(Response {
            what,
            status,
            headers,
            body,
            log: self.log,
        })
    }
}

/// A complete HTTP response.
pub struct Response {
    /// `METHOD url`, for messages.
    pub what: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    log: PathBuf,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} {:?}\n{}",
            self.what,
            self.status,
            self.headers,
            self.text_snippet()
        )
    }
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn text_snippet(&self) -> String {
        let t = self.text();
        if t.len() > 2000 {
            let mut end = 2000;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}... ({} bytes)", &t[..end], t.len())
        } else {
            t
        }
    }

    /// Parse the body as JSON (panics with the body text if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}); status {}; body: {}",
                self.what,
                self.status,
                self.text_snippet()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn etag(&self) -> Option<String> {
        self.header("etag")
    }

    pub fn location(&self) -> Option<String> {
        self.header("location")
    }

    /// Assert the status code, with the request, body and server log path on failure.
    pub fn assert_status(&self, expected: u16) -> &Response {
        self.assert_status_in(&[expected])
    }

    /// Assert the status is one of `expected`.
    pub fn assert_status_in(&self, expected: &[u16]) -> &Response {
        if !expected.contains(&self.status) {
            panic!(
                "{}: expected status {:?}, got {}\nbody: {}\nserver log: {}",
                self.what,
                expected,
                self.status,
                self.text_snippet(),
                self.log.display()
            );
        }
        self
    }

    /// Assert an error response: the given status and an OperationOutcome body with at
    /// least one issue of severity error or fatal. Returns the OperationOutcome.
    pub fn assert_outcome(&self, expected: &[u16]) -> Value {
        self.assert_status_in(expected);
        self.assert_fhir_json_content_type();
        let oo = self.json();
        assert_error_outcome(&oo, &self.what);
        oo
    }

    /// Assert `Content-Type: application/fhir+json; charset=utf-8`.
    pub fn assert_fhir_json_content_type(&self) -> &Response {
        let ct = self
            .header("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let compact: String = ct.chars().filter(|c| !c.is_whitespace()).collect();
        assert!(
            compact.starts_with("application/fhir+json") && compact.contains("charset=utf-8"),
            "{}: Content-Type should be application/fhir+json; charset=utf-8, got {ct:?}",
            self.what
        );
        self
    }
}

/// Assert `oo` is an OperationOutcome with at least one error/fatal issue.
pub fn assert_error_outcome(oo: &Value, context: &str) {
    assert_eq!(
        oo["resourceType"], "OperationOutcome",
        "{context}: expected an OperationOutcome, got {oo}"
    );
    let issues = oo["issue"].as_array().cloned().unwrap_or_default();
    assert!(
        issues
            .iter()
            .any(|i| matches!(i["severity"].as_str(), Some("error") | Some("fatal"))),
        "{context}: OperationOutcome has no error/fatal issue: {oo}"
    );
    for i in &issues {
        assert!(i["code"].is_string(), "{context}: issue without code: {oo}");
    }
}

/// All `issue[].expression[]` (and deprecated `issue[].location[]`) strings.
pub fn outcome_expressions(oo: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for issue in oo["issue"].as_array().into_iter().flatten() {
        for key in ["expression", "location"] {
            for e in issue[key].as_array().into_iter().flatten() {
                if let Some(s) = e.as_str() {
                    out.push(s.to_string());
                }
            }
        }
    }
    out
}
