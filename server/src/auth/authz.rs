//! Scope enforcement on every FHIR interaction (issue 5, item 4), with
//! [`ScopeSet::allows`](mediflow_auth::ScopeSet::allows) and SMART App Launch 2.0
//! (scopes-and-launch-context.html) § "Clinical Scope Syntax":
//!
//! * read, vread, history of an instance need `r` on the type; search needs `s` on the
//!   searched type and on every type a search reaches: `_include` targets (when named)
//!   and `_revinclude` sources, chained (`subject:Patient.name`) and `_has` types, the
//!   `_type` list of a system-level search; included resources of unnamed targets are
//!   dropped from the Bundle unless the scopes allow searching their type. History of a
//!   type or of the system needs `s` on the type (or `*`).
//! * create `c`, update `u`, delete `d`; every entry of a transaction or batch Bundle is
//!   checked for its own interaction before the Bundle runs.
//! * `Patient/{id}/$everything` needs `r` on Patient; it returns only the types the scopes
//!   allow searching.
//! * Insufficient scope: 403 OperationOutcome with code `forbidden`.
//!
//! Conditions of a grant ([`Grant`]):
//! * `patient/` scopes with a `patient` claim confine access to that patient's
//!   compartment (R4 compartmentdefinition-patient): searches get the compartment
//!   condition added ([`crate::interaction::search::compartment_param`]); reads, updates
//!   and deletes are checked against it; creates and updates are checked after the write,
//!   inside the transaction, which is rolled back when the new version falls outside.
//!   Types outside the Patient compartment are refused.
//! * Query restrictions (`patient/Observation.rs?category=laboratory`) are added to
//!   searches as extra parameters and checked like the compartment for reads and writes.
//! * Not yet supported with conditional grants (refused with 403 rather than answered
//!   unchecked): conditional create/update/delete, history of a type or the system, a
//!   system-level search, and Bundle entries. vread and instance history are checked
//!   against the current version.

use std::collections::{HashMap, HashSet};

use mediflow_auth::{Access, Interaction};
use serde_json::Value;

use super::Principal;
use crate::error::ApiError;
use crate::interaction::Context;
use crate::interaction::search::compartment_param;
use crate::search::{SearchParam, SearchQuery};
use crate::storage::StoreTx;

/// The audit trail's resource type.
const AUDIT_EVENT: &str = "AuditEvent";

/// What a principal may do on one type, and under which conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// Only resources in this patient's compartment.
    pub patient: Option<String>,
    /// The resource must match one of these lists of search parameters (lists ORed,
    /// parameters of a list ANDed); empty: no restriction.
    pub restrictions: Vec<Vec<(String, String)>>,
}

impl Grant {
    /// Whether the grant has no condition at all.
    pub fn is_unconditional(&self) -> bool {
        self.patient.is_none() && self.restrictions.is_empty()
    }
}

fn interaction_name(i: Interaction) -> &'static str {
    match i {
        Interaction::Create => "create (c)",
        Interaction::Read => "read (r)",
        Interaction::Update => "update (u)",
        Interaction::Delete => "delete (d)",
        Interaction::Search => "search (s)",
    }
}

impl Principal {
    /// The grant for `interaction` on `res_type` (`*` for "every type"), or 403.
    pub fn require(&self, interaction: Interaction, res_type: &str) -> Result<Grant, ApiError> {
        match self.scopes.allows(interaction, res_type) {
            Access::Denied => Err(ApiError::Forbidden(format!(
                "the access token's scopes do not allow {} on {res_type}",
                interaction_name(interaction)
            ))),
            Access::Allowed {
                patient_compartment_only,
                restrictions,
            } => {
                let patient = if patient_compartment_only {
                    Some(self.patient.clone().ok_or_else(|| {
                        ApiError::Forbidden(
                            "patient/ scopes need a patient in the token's launch context".into(),
                        )
                    })?)
                } else {
                    None
                };
                let grant = Grant {
                    patient,
                    restrictions,
                };
                // Issue 5 item 9 (R10): the audit trail is readable only with an
                // administrator's scope, i.e. an unrestricted user/ or system/ grant; a
                // patient/ scope (AuditEvent is in the Patient compartment) or a
                // query-restricted one does not reach it.
                if res_type == AUDIT_EVENT && !grant.is_unconditional() {
                    return Err(ApiError::Forbidden(
                        "AuditEvents are readable only with an administrator's scope (an \
                         unrestricted user/ or system/ scope on AuditEvent)"
                            .into(),
                    ));
                }
                Ok(grant)
            }
        }
    }

    /// [`Principal::require`], refusing a conditional grant: `what` names the
    /// interaction for the message.
    pub fn require_unconditional(
        &self,
        interaction: Interaction,
        res_type: &str,
        what: &str,
    ) -> Result<(), ApiError> {
        let grant = self.require(interaction, res_type)?;
        if grant.is_unconditional() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{what} is not supported with patient-confined or query-restricted scopes \
                 (on {res_type})"
            )))
        }
    }

    /// Whether every interaction on every type is allowed unconditionally (no filtering
    /// needed).
    fn allows_everything(&self, interaction: Interaction) -> bool {
        self.scopes.allows(interaction, "*")
            == Access::Allowed {
                patient_compartment_only: false,
                restrictions: Vec::new(),
            }
    }
}

/// The scope the admin API (`/admin/…`, `crate::http::admin`) asks for: every
/// interaction on every type, unconditionally. Any scope string that allows as much
/// qualifies (`system/*.cruds`, `user/*.cruds`, v1 `system/*.*`). It is the ADMIN role's
/// cap (`mediflow_auth::Role::cap`) and no other role's: whoever can create users and
/// clients can give themselves everything, so only a token that has everything already
/// may do it.
pub const ADMIN_SCOPE: &str = "system/*.cruds";

impl Principal {
    /// Whether this principal may use the admin API: its scopes allow every interaction
    /// (c, r, u, d, s) on every type with no patient or query condition ([`ADMIN_SCOPE`]).
    /// True for the anonymous principal of `--no-auth`.
    pub fn is_admin(&self) -> bool {
        [
            Interaction::Create,
            Interaction::Read,
            Interaction::Update,
            Interaction::Delete,
            Interaction::Search,
        ]
        .into_iter()
        .all(|i| self.allows_everything(i))
    }
}

/// The search parameters that express `grant`'s conditions on `res_type`.
pub fn grant_params(res_type: &str, grant: &Grant) -> Result<Vec<SearchParam>, ApiError> {
    let mut out = Vec::new();
    if let Some(pid) = &grant.patient {
        if res_type == "Patient" {
            out.push(SearchParam::Id(vec![pid.clone()]));
        } else {
            out.push(compartment_param("Patient", pid, res_type).ok_or_else(|| {
                ApiError::Forbidden(format!(
                    "{res_type} is not in the Patient compartment: patient/ scopes do not reach it"
                ))
            })?);
        }
    }
    let mut alternatives = Vec::new();
    for list in &grant.restrictions {
        let q = crate::search::parse_query(res_type, list, true).map_err(|e| {
            ApiError::Forbidden(format!(
                "the scope's query restriction on {res_type} cannot be applied: {e}"
            ))
        })?;
        alternatives.push(q.params);
    }
    match alternatives.len() {
        0 => {}
        1 => out.extend(alternatives.into_iter().flatten()),
        _ if alternatives.iter().all(|a| a.len() == 1) => {
            out.push(SearchParam::Or(
                alternatives.into_iter().flatten().collect(),
            ));
        }
        _ => {
            return Err(ApiError::Forbidden(format!(
                "several multi-parameter query restrictions on {res_type} are not supported"
            )));
        }
    }
    Ok(out)
}

/// The ids among `ids` (of type `res_type`) that `grant` reaches: one search.
pub async fn permitted_ids(
    ctx: &Context,
    res_type: &str,
    ids: Vec<String>,
    grant: &Grant,
) -> Result<HashSet<String>, ApiError> {
    if grant.is_unconditional() {
        return Ok(ids.into_iter().collect());
    }
    let mut q = SearchQuery::new(res_type);
    q.count = ids.len().max(1);
    q.params.push(SearchParam::Id(ids));
    q.params.extend(grant_params(res_type, grant)?);
    let page = ctx.store.search(&q).await?;
    Ok(page.matches.into_iter().map(|v| v.id).collect())
}

/// Checks `interaction` on the existing resource `res_type/id` (read, vread, history):
/// 403 when the scopes do not allow it or the resource is outside the grant's conditions.
pub async fn check_instance(
    ctx: &Context,
    p: &Principal,
    interaction: Interaction,
    res_type: &str,
    id: &str,
) -> Result<(), ApiError> {
    let grant = p.require(interaction, res_type)?;
    if grant.is_unconditional() {
        return Ok(());
    }
    if permitted_ids(ctx, res_type, vec![id.to_string()], &grant)
        .await?
        .contains(id)
    {
        Ok(())
    } else {
        Err(outside(res_type, id))
    }
}

fn outside(res_type: &str, id: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "{res_type}/{id} is outside what the access token's scopes reach (patient compartment \
         or query restriction)"
    ))
}

/// Inside a write transaction: whether the current version of `res_type/id` (queued
/// writes included) meets `grant`'s conditions. `Ok(true)` for an unconditional grant.
pub async fn in_grant_tx(
    tx: &mut dyn StoreTx,
    res_type: &str,
    id: &str,
    grant: &Grant,
) -> Result<bool, ApiError> {
    if grant.is_unconditional() {
        return Ok(true);
    }
    let mut q = SearchQuery::new(res_type);
    q.params.push(SearchParam::Id(vec![id.to_string()]));
    q.params.extend(grant_params(res_type, grant)?);
    Ok(!tx.search_ids(&q, 1).await?.is_empty())
}

/// [`in_grant_tx`] as a 403.
pub async fn check_in_tx(
    tx: &mut dyn StoreTx,
    res_type: &str,
    id: &str,
    grant: &Grant,
) -> Result<(), ApiError> {
    if in_grant_tx(tx, res_type, id, grant).await? {
        Ok(())
    } else {
        Err(outside(res_type, id))
    }
}

/// Authorizes a type-level, compartment or system-level search, adding the grant's
/// conditions to `q` (see the module doc).
pub fn authorize_search(p: &Principal, q: &mut SearchQuery) -> Result<(), ApiError> {
    if q.res_type.is_empty() {
        if q.types.is_empty() {
            p.require_unconditional(Interaction::Search, "*", "a system-level search")?;
        }
        for t in &q.types {
            p.require_unconditional(Interaction::Search, t, "a system-level search")?;
        }
    } else {
        let grant = p.require(Interaction::Search, &q.res_type)?;
        let extra = grant_params(&q.res_type, &grant)?;
        q.params.extend(extra);
    }
    let mut reached = Vec::new();
    for param in &q.params {
        reached_types(param, &mut reached);
    }
    for inc in &q.includes {
        if inc.reverse {
            reached.push(inc.source_type.clone());
        } else if let Some(t) = &inc.target_type {
            reached.push(t.clone());
        }
    }
    for t in reached {
        p.require(Interaction::Search, &t)?;
    }
    Ok(())
}

/// The types a chain or `_has` reaches.
fn reached_types(param: &SearchParam, out: &mut Vec<String>) {
    match param {
        SearchParam::Chain {
            target_type, inner, ..
        } => {
            out.push(target_type.clone());
            reached_types(inner, out);
        }
        SearchParam::Has {
            source_type, inner, ..
        } => {
            out.push(source_type.clone());
            reached_types(inner, out);
        }
        SearchParam::Or(list) => list.iter().for_each(|p| reached_types(p, out)),
        _ => {}
    }
}

/// `$everything`: keeps only the types the principal may search in `patient_id`'s
/// compartment (all of them when the grant is unconditional or confined to this very
/// patient without query restrictions).
pub fn everything_types(p: &Principal, patient_id: &str, types: &mut Vec<String>) {
    types.retain(|t| match p.scopes.allows(Interaction::Search, t) {
        Access::Denied => false,
        Access::Allowed {
            patient_compartment_only,
            restrictions,
        } => {
            restrictions.is_empty()
                && (!patient_compartment_only || p.patient.as_deref() == Some(patient_id))
        }
    });
}

/// Drops from a searchset the `include` entries the principal may not see: types it may
/// not search, and resources outside its grant's conditions (one search per type).
pub async fn filter_includes(
    ctx: &Context,
    p: &Principal,
    bundle: &mut Value,
) -> Result<(), ApiError> {
    if p.allows_everything(Interaction::Search) {
        return Ok(());
    }
    let Some(entries) = bundle.get_mut("entry").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    let mut by_type: HashMap<String, Vec<String>> = HashMap::new();
    for e in entries.iter() {
        if e.pointer("/search/mode").and_then(Value::as_str) == Some("include")
            && let (Some(t), Some(id)) = (
                e.pointer("/resource/resourceType").and_then(Value::as_str),
                e.pointer("/resource/id").and_then(Value::as_str),
            )
        {
            by_type
                .entry(t.to_string())
                .or_default()
                .push(id.to_string());
        }
    }
    let mut keep: HashSet<(String, String)> = HashSet::new();
    for (t, ids) in by_type {
        let Ok(grant) = p.require(Interaction::Search, &t) else {
            continue;
        };
        let Ok(ok) = permitted_ids(ctx, &t, ids, &grant).await else {
            continue;
        };
        keep.extend(ok.into_iter().map(|id| (t.clone(), id)));
    }
    entries.retain(|e| {
        if e.pointer("/search/mode").and_then(Value::as_str) != Some("include") {
            return true;
        }
        let t = e.pointer("/resource/resourceType").and_then(Value::as_str);
        let id = e.pointer("/resource/id").and_then(Value::as_str);
        match (t, id) {
            (Some(t), Some(id)) => keep.contains(&(t.to_string(), id.to_string())),
            _ => false,
        }
    });
    Ok(())
}

/// Checks every entry of a transaction or batch Bundle for its own interaction before
/// anything runs; conditional grants are refused inside Bundles (module doc). AuditEvent
/// entries may not be updated or deleted.
pub fn authorize_bundle(p: &Principal, base_url: &str, bundle: &Value) -> Result<(), ApiError> {
    let Some(entries) = bundle.get("entry").and_then(Value::as_array) else {
        return Ok(());
    };
    if p.allows_everything(Interaction::Search)
        && p.allows_everything(Interaction::Create)
        && p.allows_everything(Interaction::Update)
        && p.allows_everything(Interaction::Delete)
    {
        return entries.iter().enumerate().try_for_each(|(index, e)| {
            check_audit_write(e).map_err(|source| ApiError::InEntry {
                index,
                source: Box::new(source),
            })
        });
    }
    for (index, e) in entries.iter().enumerate() {
        entry_allowed(p, base_url, e).map_err(|source| ApiError::InEntry {
            index,
            source: Box::new(source),
        })?;
    }
    Ok(())
}

fn entry_request(e: &Value) -> Option<(&str, &str)> {
    Some((
        e.pointer("/request/method")?.as_str()?,
        e.pointer("/request/url")?.as_str()?,
    ))
}

fn check_audit_write(e: &Value) -> Result<(), ApiError> {
    if let Some((method, url)) = entry_request(e)
        && matches!(method, "PUT" | "DELETE" | "PATCH")
        && url.trim_start_matches('/').starts_with("AuditEvent")
    {
        return Err(audit_immutable());
    }
    Ok(())
}

/// 405 for an update or delete of an AuditEvent (R4 auditevent.html: the trail is
/// append-only).
pub fn audit_immutable() -> ApiError {
    ApiError::MethodNotAllowed(
        "AuditEvent resources cannot be updated or deleted: the audit trail is append-only".into(),
    )
}

fn entry_allowed(p: &Principal, base_url: &str, e: &Value) -> Result<(), ApiError> {
    check_audit_write(e)?;
    let Some((method, url)) = entry_request(e) else {
        return Ok(()); // the Bundle processing reports the missing request
    };
    let url = url.strip_prefix(base_url).unwrap_or(url);
    let url = url.trim_start_matches('/');
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(t) = segs.first().copied() else {
        return Ok(());
    };
    let what = "a Bundle entry";
    let interaction = match (method, segs.len()) {
        ("POST", _) => Interaction::Create,
        ("PUT" | "PATCH", _) => Interaction::Update,
        ("DELETE", _) => Interaction::Delete,
        ("GET" | "HEAD", 1) => Interaction::Search,
        ("GET" | "HEAD", _) if segs.get(1) == Some(&"_history") => Interaction::Search,
        ("GET" | "HEAD", _) => Interaction::Read,
        _ => return Ok(()),
    };
    p.require_unconditional(interaction, t, what)?;
    if interaction == Interaction::Search {
        let reaches_further = url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| {
            k.starts_with("_include") || k.starts_with("_revinclude") || k.starts_with("_has")
        }) || query.split('&').any(|kv| {
            kv.split('=')
                .next()
                .is_some_and(|k| k.contains('.') || k.contains("%2E"))
        });
        if reaches_further {
            p.require_unconditional(
                Interaction::Search,
                "*",
                "a Bundle search entry with includes, chains or _has",
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mediflow_auth::ScopeSet;
    use serde_json::json;

    fn principal(scope: &str, patient: Option<&str>) -> Principal {
        Principal {
            scopes: ScopeSet::parse(scope).unwrap(),
            patient: patient.map(str::to_string),
            ..Principal::anonymous()
        }
    }

    #[test]
    fn only_a_token_allowing_everything_is_admin() {
        for admin in [
            ADMIN_SCOPE,
            "user/*.cruds",
            "system/*.*",
            "system/*.read system/*.write",
        ] {
            assert!(principal(admin, None).is_admin(), "{admin}");
        }
        for not_admin in [
            "system/*.rs",
            "system/*.crus",
            "system/Patient.cruds",
            "patient/*.cruds",
            "system/*.cruds?category=laboratory",
        ] {
            assert!(!principal(not_admin, Some("p1")).is_admin(), "{not_admin}");
        }
        // Every role's cap but ADMIN's falls short.
        for role in mediflow_auth::Role::ALL {
            let p = Principal {
                scopes: role.cap(),
                ..principal("openid", None)
            };
            assert_eq!(p.is_admin(), role == mediflow_auth::Role::Admin, "{role}");
        }
    }

    #[test]
    fn require_answers_403_and_grants_conditions() {
        let p = principal("system/Patient.rs", None);
        assert!(
            p.require(Interaction::Read, "Patient")
                .unwrap()
                .is_unconditional()
        );
        assert!(matches!(
            p.require(Interaction::Read, "Observation"),
            Err(ApiError::Forbidden(_))
        ));
        assert!(p.require(Interaction::Create, "Patient").is_err());
        let p = principal("patient/Observation.rs", Some("p1"));
        assert_eq!(
            p.require(Interaction::Search, "Observation")
                .unwrap()
                .patient,
            Some("p1".into())
        );
        let p = principal("patient/Observation.rs", None);
        assert!(p.require(Interaction::Search, "Observation").is_err());
    }

    #[test]
    fn audit_events_need_an_unrestricted_user_or_system_scope() {
        let patient = principal("patient/*.rs", Some("p1"));
        assert!(patient.require(Interaction::Search, "Observation").is_ok());
        assert!(matches!(
            patient.require(Interaction::Search, "AuditEvent"),
            Err(ApiError::Forbidden(_))
        ));
        let restricted = principal("system/AuditEvent.rs?outcome=0", None);
        assert!(restricted.require(Interaction::Read, "AuditEvent").is_err());
        let admin = principal("user/*.cruds", None);
        assert!(admin.require(Interaction::Read, "AuditEvent").is_ok());
    }

    #[test]
    fn search_reach_includes_chains_and_revincludes() {
        let p = principal("system/Observation.rs", None);
        let pairs = |s: &str| -> Vec<(String, String)> {
            url::form_urlencoded::parse(s.as_bytes())
                .into_owned()
                .collect()
        };
        let mut q = crate::search::parse_query("Observation", &pairs("code=1"), false).unwrap();
        authorize_search(&p, &mut q).unwrap();
        let mut q =
            crate::search::parse_query("Observation", &pairs("subject:Patient.name=x"), false)
                .unwrap();
        assert!(authorize_search(&p, &mut q).is_err());
        let mut q = crate::search::parse_query(
            "Observation",
            &pairs("_revinclude=Provenance:target"),
            false,
        )
        .unwrap();
        assert!(authorize_search(&p, &mut q).is_err());
    }

    #[test]
    fn patient_grant_adds_the_compartment() {
        let p = principal("patient/Observation.rs", Some("p1"));
        let mut q = SearchQuery::new("Observation");
        authorize_search(&p, &mut q).unwrap();
        assert_eq!(q.params.len(), 1);
        let mut q = SearchQuery::new("Patient");
        let p = principal("patient/*.rs", Some("p1"));
        authorize_search(&p, &mut q).unwrap();
        assert_eq!(q.params, vec![SearchParam::Id(vec!["p1".into()])]);
    }

    #[test]
    fn bundle_entries_are_checked_one_by_one() {
        let p = principal("system/Patient.cruds", None);
        let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Observation?code=1"}},
        ]});
        match authorize_bundle(&p, "http://h/fhir", &b) {
            Err(ApiError::InEntry { index: 1, .. }) => {}
            other => panic!("{other:?}"),
        }
        let all = principal("system/*.cruds", None);
        let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "DELETE", "url": "AuditEvent/1"}},
        ]});
        assert!(authorize_bundle(&all, "http://h/fhir", &b).is_err());
    }
}
