//! The transaction Bundle under construction: entries keyed by their match criteria, so one
//! resource is written once per Bundle however many segments name it, and deterministic
//! `urn:uuid:` fullUrls (a hash of type and criteria), so mapping a message twice gives the
//! same Bundle.
//!
//! FHIR R4 http.html#transaction, bundle.html#references: an entry's `fullUrl` may be a
//! `urn:uuid:`, and references to it are rewritten by the server; conditional update
//! (`PUT Type?criteria`) and conditional create (`POST` with `ifNoneExist`).

use super::datatypes::Ident;
use serde_json::{Map, Value, json};

/// How an entry is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// `PUT Type?identifier=...`: create when absent, replace when present (the message is
    /// the source of truth for this resource).
    Upsert,
    /// `POST Type` with `ifNoneExist: identifier=...`: create when absent, otherwise leave the
    /// stored resource as it is and resolve references to it.
    CreateIfAbsent,
}

pub(crate) struct Bundle {
    entries: Vec<Value>,
    /// (resource type, criteria) → index in `entries`.
    keys: Vec<(String, String, usize)>,
}

impl Bundle {
    pub(crate) fn new() -> Bundle {
        Bundle {
            entries: Vec::new(),
            keys: Vec::new(),
        }
    }

    /// Adds `resource` (its `resourceType` names the type) matched on `key`; returns the
    /// entry's fullUrl, to be used as a reference. When an entry with the same type and
    /// criteria exists already, the first one is kept and its fullUrl returned; an upsert
    /// then replaces an earlier create-if-absent of the same resource.
    pub(crate) fn add(&mut self, mut resource: Value, key: &Ident, write: Write) -> String {
        let rtype = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("Basic")
            .to_owned();
        let criteria = key.criteria();
        let full_url = format!("urn:uuid:{}", name_uuid(&format!("{rtype}?{criteria}")));
        prune(&mut resource);
        let request = match write {
            Write::Upsert => json!({"method": "PUT", "url": format!("{rtype}?{criteria}")}),
            Write::CreateIfAbsent => {
                json!({"method": "POST", "url": rtype, "ifNoneExist": criteria})
            }
        };
        // Built by moving `resource` in: `json!` would copy it through `to_value`.
        let mut entry = Map::with_capacity(3);
        entry.insert("fullUrl".into(), Value::String(full_url.clone()));
        entry.insert("resource".into(), resource);
        entry.insert("request".into(), request);
        let entry = Value::Object(entry);
        if let Some(&(_, _, i)) = self
            .keys
            .iter()
            .find(|(t, c, _)| *t == rtype && *c == criteria)
        {
            let earlier_is_create = self.entries[i]["request"]["method"] == "POST";
            if write == Write::Upsert && earlier_is_create {
                self.entries[i] = entry;
            }
            return full_url;
        }
        self.keys.push((rtype, criteria, self.entries.len()));
        self.entries.push(entry);
        full_url
    }

    /// The finished `Bundle` of type `transaction`.
    pub(crate) fn finish(self) -> Value {
        let mut bundle = Map::with_capacity(3);
        bundle.insert("resourceType".into(), "Bundle".into());
        bundle.insert("type".into(), "transaction".into());
        bundle.insert("entry".into(), Value::Array(self.entries));
        Value::Object(bundle)
    }
}

/// Percent-encodes a criteria value: everything but unreserved characters (RFC 3986 section
/// 2.3) and `:` `/` (harmless in a query, common in system URIs) becomes `%XX` of its UTF-8
/// bytes, so `&`, `=`, `#`, `%`, `+`, space, `?` and `|` inside a value are encoded.
pub fn encode_criteria_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The UUID of the entry for `rtype` matched on `key` (what [`Bundle::add`] gives it).
pub(crate) fn name_uuid_for(rtype: &str, key: &Ident) -> String {
    name_uuid(&format!("{rtype}?{}", key.criteria()))
}

/// A version-5-shaped UUID from two FNV-1a 64-bit hashes of `name` (stable across runs and
/// platforms; not cryptographic, only needs to be unique within one Bundle).
fn name_uuid(name: &str) -> String {
    fn fnv(seed: u64, s: &str) -> u64 {
        let mut h = seed;
        for b in s.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
    let a = fnv(0xcbf2_9ce4_8422_2325, name);
    let b = fnv(0x8422_2325_cbf2_9ce4, name);
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_5000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// Removes nulls, empty strings, empty arrays and empty objects, recursively (FHIR ele-1:
/// every element has a value or children; json.html: no nulls outside primitive arrays).
pub(crate) fn prune(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let mut kept = Map::new();
            for (k, mut child) in std::mem::take(map) {
                prune(&mut child);
                if !is_empty(&child) {
                    kept.insert(k, child);
                }
            }
            *map = kept;
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                prune(item);
            }
            items.retain(|i| !is_empty(i));
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}
