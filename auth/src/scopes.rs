//! SMART on FHIR scopes, v1 and v2 syntax, as defined by SMART App Launch 2.0
//! "Scopes and Launch Context" (hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).
//!
//! * § "Scopes for requesting FHIR resources" / "Clinical Scope Syntax":
//!   `( 'patient' | 'user' | 'system' ) '/' ( fhir-resource | '*' ) '.' ( [c][r][u][d][s] | v1 )`,
//!   where the v2 permission letters appear at most once each and in that order.
//! * § "Scope Equivalence": v1 `read` = v2 `rs`, v1 `write` = v2 `cud`, v1 `*` = v2 `cruds`.
//! * § "Finer-grained resource constraints using search parameters":
//!   `patient/Observation.rs?category=laboratory` (v2 only); the query is a set of FHIR
//!   search parameters that every resource reached through the scope must match.
//! * § "Scopes for requesting context data": `launch`, `launch/patient`, `launch/encounter`.
//! * § "Scopes for requesting identity data": `openid`, `fhirUser`, and the older `profile`.
//! * § "Scopes for requesting a refresh token": `offline_access`, `online_access`.
//!
//! The table in § "Clinical Scope Syntax" also fixes which REST interactions each letter
//! allows; see [`Interaction`].

use std::collections::BTreeSet;
use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Errors in a scope string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A token starting with `patient/`, `user/` or `system/` that is not a well-formed
    /// resource scope (unknown permission letters, letters out of the `cruds` order, a
    /// repeated letter, an empty permission part, a malformed resource type).
    #[error("malformed resource scope `{0}`")]
    Malformed(String),
    /// A query restriction on a v1 scope (`patient/Observation.read?category=...`):
    /// restrictions exist only in the v2 syntax.
    #[error("query restrictions need the v2 permission syntax: `{0}`")]
    QueryOnV1(String),
    /// A malformed query restriction (empty name, no `=`, bad percent-encoding).
    #[error("malformed query restriction in scope `{0}`")]
    MalformedQuery(String),
}

/// The level at which a resource scope applies (§ "Clinical Scope Syntax").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScopeContext {
    /// `patient/`: resources in the compartment of the patient in context.
    Patient,
    /// `user/`: resources the current user may reach.
    User,
    /// `system/`: resources a backend client may reach, no user involved.
    System,
}

impl ScopeContext {
    /// The prefix as written in a scope, without the slash.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patient => "patient",
            Self::User => "user",
            Self::System => "system",
        }
    }

    /// Whether a cap granted at `self` level covers a request at `requested` level.
    ///
    /// Equal levels cover each other; a `user/` cap also covers `patient/` requests (the
    /// patient compartment is a subset of what the user may see: a clinician running a
    /// patient-facing app). `system/` covers only `system/`.
    pub fn covers(self, requested: ScopeContext) -> bool {
        self == requested || (self == Self::User && requested == Self::Patient)
    }
}

/// The five SMART v2 permissions (`c r u d s`), a plain bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions {
    /// `c`: type-level create.
    pub create: bool,
    /// `r`: instance read, vread and instance history.
    pub read: bool,
    /// `u`: instance update (and patch).
    pub update: bool,
    /// `d`: instance delete.
    pub delete: bool,
    /// `s`: type and system search, type and system history.
    pub search: bool,
}

impl Permissions {
    /// No permission at all.
    pub const NONE: Permissions = Permissions {
        create: false,
        read: false,
        update: false,
        delete: false,
        search: false,
    };
    /// `cruds` (v1 `*`).
    pub const ALL: Permissions = Permissions {
        create: true,
        read: true,
        update: true,
        delete: true,
        search: true,
    };
    /// `rs` (v1 `read`).
    pub const READ_SEARCH: Permissions = Permissions {
        create: false,
        read: true,
        update: false,
        delete: false,
        search: true,
    };
    /// `cud` (v1 `write`).
    pub const WRITE: Permissions = Permissions {
        create: true,
        read: false,
        update: true,
        delete: true,
        search: false,
    };

    /// Parses the v2 letters `[c][r][u][d][s]` (at least one, each at most once, in that
    /// order). Returns `None` for anything else.
    pub fn parse_v2(s: &str) -> Option<Permissions> {
        if s.is_empty() {
            return None;
        }
        let mut p = Permissions::NONE;
        let mut last = 0usize;
        for ch in s.chars() {
            let idx = match ch {
                'c' => 1,
                'r' => 2,
                'u' => 3,
                'd' => 4,
                's' => 5,
                _ => return None,
            };
            if idx <= last {
                return None;
            }
            last = idx;
            match ch {
                'c' => p.create = true,
                'r' => p.read = true,
                'u' => p.update = true,
                'd' => p.delete = true,
                _ => p.search = true,
            }
        }
        Some(p)
    }

    /// Parses a v1 permission (`read`, `write`, `*`), per § "Scope Equivalence".
    pub fn parse_v1(s: &str) -> Option<Permissions> {
        match s {
            "read" => Some(Self::READ_SEARCH),
            "write" => Some(Self::WRITE),
            "*" => Some(Self::ALL),
            _ => None,
        }
    }

    /// The permissions present in both.
    pub fn and(self, other: Permissions) -> Permissions {
        Permissions {
            create: self.create && other.create,
            read: self.read && other.read,
            update: self.update && other.update,
            delete: self.delete && other.delete,
            search: self.search && other.search,
        }
    }

    /// Whether every permission of `other` is in `self`.
    pub fn contains(self, other: Permissions) -> bool {
        self.and(other) == other
    }

    /// Whether no permission is set.
    pub fn is_empty(self) -> bool {
        self == Self::NONE
    }

    /// Whether the permission needed for `interaction` is set.
    pub fn allows(self, interaction: Interaction) -> bool {
        match interaction {
            Interaction::Create => self.create,
            Interaction::Read => self.read,
            Interaction::Update => self.update,
            Interaction::Delete => self.delete,
            Interaction::Search => self.search,
        }
    }

    /// The v1 word for these permissions, if there is one (`rs`, `cud`, `cruds`).
    pub fn as_v1(self) -> Option<&'static str> {
        if self == Self::READ_SEARCH {
            Some("read")
        } else if self == Self::WRITE {
            Some("write")
        } else if self == Self::ALL {
            Some("*")
        } else {
            None
        }
    }
}

impl fmt::Display for Permissions {
    /// The v2 letters in `cruds` order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (on, ch) in [
            (self.create, 'c'),
            (self.read, 'r'),
            (self.update, 'u'),
            (self.delete, 'd'),
            (self.search, 's'),
        ] {
            if on {
                write!(f, "{ch}")?;
            }
        }
        Ok(())
    }
}

/// A REST interaction as SMART v2 permissions see it (§ "Clinical Scope Syntax", table of
/// permission letters):
///
/// | letter | interactions |
/// |---|---|
/// | `c` | create (type level; also conditional create) |
/// | `r` | read, vread, history of one instance |
/// | `u` | update, patch (also conditional update) |
/// | `d` | delete (also conditional delete) |
/// | `s` | search (type and system level), history of a type or of the system |
///
/// Operations are mapped by [`Interaction::for_operation`]. `_include`d and
/// `_revinclude`d resources of a search need [`Interaction::Search`] on their own type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interaction {
    /// `c`.
    Create,
    /// `r`.
    Read,
    /// `u`.
    Update,
    /// `d`.
    Delete,
    /// `s`.
    Search,
}

impl Interaction {
    /// Maps a FHIR R4 `TypeRestfulInteraction` / `SystemRestfulInteraction` code
    /// (`read`, `vread`, `update`, `patch`, `delete`, `history-instance`, `history-type`,
    /// `history-system`, `create`, `search-type`, `search-system`) to its permission.
    /// `capabilities`, `transaction` and `batch` are not resource access themselves (each
    /// Bundle entry is checked on its own) and give `None`, as does an unknown code.
    pub fn from_fhir_code(code: &str) -> Option<Interaction> {
        Some(match code {
            "read" | "vread" | "history-instance" => Self::Read,
            "update" | "patch" => Self::Update,
            "delete" => Self::Delete,
            "create" => Self::Create,
            "search-type" | "search-system" | "history-type" | "history-system" => Self::Search,
            _ => return None,
        })
    }

    /// The permission an operation (`$name`) needs on the type it is invoked on. SMART
    /// leaves operations to the server; MediFlow's rule:
    ///
    /// * an operation that changes state (`affects_state`, as in its
    ///   OperationDefinition) needs `u` on an instance and `c` at type or system level;
    /// * a read-only operation needs `r` on an instance and `s` at type or system level
    ///   (so `Patient/123/$everything` needs `r` on Patient, and every resource it
    ///   returns is then checked like a search result, needing `s` on its own type).
    pub fn for_operation(instance_level: bool, affects_state: bool) -> Interaction {
        match (instance_level, affects_state) {
            (true, true) => Self::Update,
            (false, true) => Self::Create,
            (true, false) => Self::Read,
            (false, false) => Self::Search,
        }
    }
}

/// The outcome of [`ScopeSet::allows`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No granted scope covers the interaction on the type.
    Denied,
    /// Allowed, under conditions the server must apply.
    Allowed {
        /// Only resources in the compartment of the launch patient may be reached.
        patient_compartment_only: bool,
        /// The resource must match at least one of these lists of search parameters
        /// (each list is ANDed, the lists are ORed). Empty: no restriction.
        restrictions: Vec<Vec<(String, String)>>,
    },
}

impl Access {
    /// Whether the interaction is allowed at all.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Access::Allowed { .. })
    }
}

/// One resource scope such as `patient/Observation.rs?category=laboratory`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceScope {
    /// `patient`, `user` or `system`.
    pub context: ScopeContext,
    /// The resource type; `None` for the wildcard `*`.
    pub resource_type: Option<String>,
    /// The permissions granted.
    pub permissions: Permissions,
    /// Search-parameter restrictions (`?category=laboratory`), decoded, ANDed. Empty:
    /// none.
    pub query: Vec<(String, String)>,
    /// Written in the v1 syntax (`read`, `write`, `*`); kept so that a scope is echoed
    /// back in the syntax the client used whenever v1 can express it.
    pub v1: bool,
}

/// Characters percent-encoded when a query restriction is written back.
const QUERY_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'&')
    .add(b'#')
    .add(b'+')
    .add(b'"');
const QUERY_NAME: &AsciiSet = &QUERY_VALUE.add(b'=');

impl ResourceScope {
    /// A v2 resource scope without restriction.
    pub fn new(
        context: ScopeContext,
        resource_type: Option<&str>,
        permissions: Permissions,
    ) -> ResourceScope {
        ResourceScope {
            context,
            resource_type: resource_type.map(str::to_owned),
            permissions,
            query: Vec::new(),
            v1: false,
        }
    }

    /// The same scope with a query restriction.
    pub fn with_query(mut self, name: &str, value: &str) -> ResourceScope {
        self.query.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Parses one token; `Ok(None)` when it is not a resource scope at all (no
    /// `patient/`, `user/` or `system/` prefix).
    pub fn parse(token: &str) -> Result<Option<ResourceScope>, ScopeError> {
        let Some((ctx, rest)) = token.split_once('/') else {
            return Ok(None);
        };
        let context = match ctx {
            "patient" => ScopeContext::Patient,
            "user" => ScopeContext::User,
            "system" => ScopeContext::System,
            _ => return Ok(None),
        };
        let malformed = || ScopeError::Malformed(token.to_owned());
        let (body, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (ty, perms) = body.rsplit_once('.').ok_or_else(malformed)?;
        let resource_type = if ty == "*" {
            None
        } else if is_resource_type_name(ty) {
            Some(ty.to_owned())
        } else {
            return Err(malformed());
        };
        let (permissions, v1) = match Permissions::parse_v1(perms) {
            Some(p) => (p, true),
            None => (Permissions::parse_v2(perms).ok_or_else(malformed)?, false),
        };
        let mut parsed_query = Vec::new();
        if let Some(q) = query {
            if v1 {
                return Err(ScopeError::QueryOnV1(token.to_owned()));
            }
            let bad = || ScopeError::MalformedQuery(token.to_owned());
            for pair in q.split('&') {
                let (name, value) = pair.split_once('=').ok_or_else(bad)?;
                let name = percent_decode_str(name)
                    .decode_utf8()
                    .map_err(|_| bad())?
                    .into_owned();
                let value = percent_decode_str(value)
                    .decode_utf8()
                    .map_err(|_| bad())?
                    .into_owned();
                if name.is_empty() {
                    return Err(bad());
                }
                parsed_query.push((name, value));
            }
        }
        Ok(Some(ResourceScope {
            context,
            resource_type,
            permissions,
            query: parsed_query,
            v1,
        }))
    }

    /// Whether this scope names `res_type` (directly or through `*`).
    pub fn applies_to(&self, res_type: &str) -> bool {
        self.resource_type.as_deref().is_none_or(|t| t == res_type)
    }

    /// Whether everything `other` grants is also granted by `self`: same or covering
    /// level, same type or `*`, a superset of the permissions, and a query restriction
    /// that is a subset of `other`'s conditions (fewer conditions = wider).
    pub fn subsumes(&self, other: &ResourceScope) -> bool {
        self.context.covers(other.context)
            && (self.resource_type.is_none() || self.resource_type == other.resource_type)
            && self.permissions.contains(other.permissions)
            && self.query.iter().all(|c| other.query.contains(c))
    }

    /// What of `self` (requested) the cap `cap` allows, if anything: permissions ANDed,
    /// the narrower level and type, and both query restrictions (ANDed, so the result is
    /// at least as narrow as either).
    pub fn intersect(&self, cap: &ResourceScope) -> Option<ResourceScope> {
        if !cap.context.covers(self.context) {
            return None;
        }
        let resource_type = match (&self.resource_type, &cap.resource_type) {
            (Some(a), Some(b)) if a != b => return None,
            (Some(a), _) => Some(a.clone()),
            (None, b) => b.clone(),
        };
        let permissions = self.permissions.and(cap.permissions);
        if permissions.is_empty() {
            return None;
        }
        let mut query = self.query.clone();
        for c in &cap.query {
            if !query.contains(c) {
                query.push(c.clone());
            }
        }
        Some(ResourceScope {
            context: self.context,
            resource_type,
            permissions,
            query,
            v1: self.v1,
        })
    }
}

impl fmt::Display for ResourceScope {
    /// `context/Type.perms[?query]`; v1 form when the scope was written in v1 and has no
    /// query and its permissions have a v1 word, v2 otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}.",
            self.context.as_str(),
            self.resource_type.as_deref().unwrap_or("*")
        )?;
        match self.permissions.as_v1() {
            Some(word) if self.v1 && self.query.is_empty() => f.write_str(word)?,
            _ => write!(f, "{}", self.permissions)?,
        }
        for (i, (name, value)) in self.query.iter().enumerate() {
            f.write_str(if i == 0 { "?" } else { "&" })?;
            write!(
                f,
                "{}={}",
                utf8_percent_encode(name, QUERY_NAME),
                utf8_percent_encode(value, QUERY_VALUE)
            )?;
        }
        Ok(())
    }
}

fn is_resource_type_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

/// A parsed `scope` parameter: resource scopes, the identity/context/refresh scopes
/// SMART defines, and any other scope (kept so that it can be echoed or dropped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSet {
    /// Resource scopes in request order, without exact duplicates.
    pub resources: Vec<ResourceScope>,
    /// `openid` (OpenID Connect id_token).
    pub openid: bool,
    /// `fhirUser` (the `fhirUser` claim in the id_token).
    pub fhir_user: bool,
    /// `profile` (SMART v1 predecessor of `fhirUser`).
    pub profile: bool,
    /// `launch` (EHR launch, with the `launch` parameter).
    pub launch: bool,
    /// `launch/patient` (standalone launch: pick a patient).
    pub launch_patient: bool,
    /// `launch/encounter` (standalone launch: pick an encounter).
    pub launch_encounter: bool,
    /// `offline_access` (refresh token usable after the user logs out).
    pub offline_access: bool,
    /// `online_access` (refresh token valid while the user is logged in).
    pub online_access: bool,
    /// Any other scope, verbatim, without duplicates, in request order.
    pub other: Vec<String>,
}

impl ScopeSet {
    /// Parses a space-separated `scope` string. Resource scopes (`patient/`, `user/`,
    /// `system/` prefixes) must be well-formed; other unknown scopes are kept in
    /// [`ScopeSet::other`].
    pub fn parse(s: &str) -> Result<ScopeSet, ScopeError> {
        let mut set = ScopeSet::default();
        for token in s.split_ascii_whitespace() {
            match ResourceScope::parse(token)? {
                Some(rs) => set.push_resource(rs),
                None => set.push_word(token),
            }
        }
        Ok(set)
    }

    /// Like [`ScopeSet::parse`] but never fails: malformed resource scopes land in
    /// [`ScopeSet::other`], where they grant nothing. For tokens of an external identity
    /// provider, whose scope claim may carry scopes of other systems.
    pub fn parse_lenient(s: &str) -> ScopeSet {
        let mut set = ScopeSet::default();
        for token in s.split_ascii_whitespace() {
            match ResourceScope::parse(token) {
                Ok(Some(rs)) => set.push_resource(rs),
                _ => set.push_word(token),
            }
        }
        set
    }

    fn push_resource(&mut self, rs: ResourceScope) {
        if !self.resources.contains(&rs) {
            self.resources.push(rs);
        }
    }

    fn push_word(&mut self, token: &str) {
        match token {
            "openid" => self.openid = true,
            "fhirUser" => self.fhir_user = true,
            "profile" => self.profile = true,
            "launch" => self.launch = true,
            "launch/patient" => self.launch_patient = true,
            "launch/encounter" => self.launch_encounter = true,
            "offline_access" => self.offline_access = true,
            "online_access" => self.online_access = true,
            other => {
                if !self.other.iter().any(|o| o == other) {
                    self.other.push(other.to_owned());
                }
            }
        }
    }

    /// A set with every identity, context and refresh scope SMART defines set, and no
    /// resource scope; the base of caps that restrict only resource access.
    pub fn all_context_scopes() -> ScopeSet {
        ScopeSet {
            openid: true,
            fhir_user: true,
            profile: true,
            launch: true,
            launch_patient: true,
            launch_encounter: true,
            offline_access: true,
            online_access: true,
            ..ScopeSet::default()
        }
    }

    /// Whether any resource scope is at `patient/` level (the server must then have a
    /// patient in context: § "Scopes for requesting context data").
    pub fn has_patient_scopes(&self) -> bool {
        self.resources
            .iter()
            .any(|r| r.context == ScopeContext::Patient)
    }

    /// Whether the set grants no resource access.
    pub fn has_no_resource_access(&self) -> bool {
        self.resources.is_empty()
    }

    /// Whether `interaction` on `res_type` is allowed, and under what conditions.
    ///
    /// Grants at `user/` or `system/` level win over `patient/` grants: if any of them
    /// covers the interaction, the answer is not confined to the patient compartment and
    /// carries their restrictions only; otherwise the `patient/` grants answer with
    /// `patient_compartment_only`. (A mix such as `patient/Observation.rs
    /// user/Observation.rs?category=laboratory` is thus answered with the `user/` grant
    /// alone, which never allows more than the union of the two.) If any chosen grant has
    /// no query restriction, the answer is unrestricted.
    pub fn allows(&self, interaction: Interaction, res_type: &str) -> Access {
        let matching = |patient: bool| {
            self.resources.iter().filter(move |r| {
                (r.context == ScopeContext::Patient) == patient
                    && r.applies_to(res_type)
                    && r.permissions.allows(interaction)
            })
        };
        for patient in [false, true] {
            let mut any = false;
            let mut unrestricted = false;
            let mut restrictions: Vec<Vec<(String, String)>> = Vec::new();
            for r in matching(patient) {
                any = true;
                if r.query.is_empty() {
                    unrestricted = true;
                } else if !restrictions.contains(&r.query) {
                    restrictions.push(r.query.clone());
                }
            }
            if any {
                if unrestricted {
                    restrictions.clear();
                }
                return Access::Allowed {
                    patient_compartment_only: patient,
                    restrictions,
                };
            }
        }
        Access::Denied
    }

    /// What of `self` (the requested set) the cap allows: each requested resource scope
    /// is intersected with every cap scope covering it (permissions ANDed per type; a
    /// requested `*` against a cap naming types gives one scope per named type; a cap
    /// `*` keeps the requested type; query restrictions of both are kept, i.e. the
    /// narrower), scopes subsumed by another result are dropped; the identity, context
    /// and refresh flags are ANDed, and other scopes are kept only if the cap lists them.
    pub fn intersect(&self, cap: &ScopeSet) -> ScopeSet {
        let mut candidates: Vec<ResourceScope> = Vec::new();
        for req in &self.resources {
            for c in &cap.resources {
                if let Some(r) = req.intersect(c)
                    && !candidates.contains(&r)
                {
                    candidates.push(r);
                }
            }
        }
        let mut resources: Vec<ResourceScope> = Vec::new();
        for (i, r) in candidates.iter().enumerate() {
            let redundant = candidates
                .iter()
                .enumerate()
                .any(|(j, other)| j != i && other.subsumes(r) && (!r.subsumes(other) || j < i));
            if !redundant {
                resources.push(r.clone());
            }
        }
        ScopeSet {
            resources,
            openid: self.openid && cap.openid,
            fhir_user: self.fhir_user && cap.fhir_user,
            profile: self.profile && cap.profile,
            launch: self.launch && cap.launch,
            launch_patient: self.launch_patient && cap.launch_patient,
            launch_encounter: self.launch_encounter && cap.launch_encounter,
            offline_access: self.offline_access && cap.offline_access,
            online_access: self.online_access && cap.online_access,
            other: self
                .other
                .iter()
                .filter(|o| cap.other.contains(o))
                .cloned()
                .collect(),
        }
    }

    /// `self ∩ cap₁ ∩ cap₂ …`, taken one requested resource scope at a time, so that a
    /// scope another result subsumes (`user/*.rs` subsumes `patient/*.rs`) is not lost
    /// before a later cap (a PATIENT role's `patient/*.rs`) would have kept it, as
    /// capping the whole set step by step with [`ScopeSet::intersect`] could.
    pub fn capped_by(&self, caps: &[ScopeSet]) -> ScopeSet {
        let flags_only = ScopeSet {
            resources: Vec::new(),
            ..self.clone()
        };
        let mut out = caps.iter().fold(flags_only, |acc, cap| acc.intersect(cap));
        for r in &self.resources {
            let one = ScopeSet {
                resources: vec![r.clone()],
                ..ScopeSet::default()
            };
            let kept = caps.iter().fold(one, |acc, cap| acc.intersect(cap));
            out = out.union(&kept);
        }
        out
    }

    /// The union of two sets (for example a client's registered scopes plus a grant).
    pub fn union(&self, more: &ScopeSet) -> ScopeSet {
        let mut out = self.clone();
        for r in &more.resources {
            out.push_resource(r.clone());
        }
        out.openid |= more.openid;
        out.fhir_user |= more.fhir_user;
        out.profile |= more.profile;
        out.launch |= more.launch;
        out.launch_patient |= more.launch_patient;
        out.launch_encounter |= more.launch_encounter;
        out.offline_access |= more.offline_access;
        out.online_access |= more.online_access;
        for o in &more.other {
            out.push_word(o);
        }
        out
    }

    /// The resource types named explicitly (not through `*`), for a consent page.
    pub fn named_types(&self) -> BTreeSet<&str> {
        self.resources
            .iter()
            .filter_map(|r| r.resource_type.as_deref())
            .collect()
    }
}

impl fmt::Display for ScopeSet {
    /// Canonical form: `openid fhirUser profile launch launch/patient launch/encounter
    /// offline_access online_access` (those set), then the resource scopes in order, then
    /// the other scopes, space-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut put = |f: &mut fmt::Formatter<'_>, s: &dyn fmt::Display| -> fmt::Result {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{s}")
        };
        for (on, word) in [
            (self.openid, "openid"),
            (self.fhir_user, "fhirUser"),
            (self.profile, "profile"),
            (self.launch, "launch"),
            (self.launch_patient, "launch/patient"),
            (self.launch_encounter, "launch/encounter"),
            (self.offline_access, "offline_access"),
            (self.online_access, "online_access"),
        ] {
            if on {
                put(f, &word)?;
            }
        }
        for r in &self.resources {
            put(f, r)?;
        }
        for o in &self.other {
            put(f, o)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ScopeSet {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ScopeSet::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> ScopeSet {
        ScopeSet::parse(s).unwrap()
    }

    #[test]
    fn v2_scope_with_query_parses_into_its_parts() {
        let s = set("patient/Observation.rs?category=laboratory");
        assert_eq!(s.resources.len(), 1);
        let r = &s.resources[0];
        assert_eq!(r.context, ScopeContext::Patient);
        assert_eq!(r.resource_type.as_deref(), Some("Observation"));
        assert_eq!(r.permissions, Permissions::READ_SEARCH);
        assert_eq!(r.query, vec![("category".into(), "laboratory".into())]);
        assert!(!r.v1);
    }

    #[test]
    fn v1_words_map_to_v2_permissions() {
        let s = set("patient/*.read user/Observation.write system/*.*");
        assert_eq!(s.resources[0].permissions, Permissions::READ_SEARCH);
        assert_eq!(s.resources[0].resource_type, None);
        assert_eq!(s.resources[1].permissions, Permissions::WRITE);
        assert_eq!(s.resources[2].permissions, Permissions::ALL);
        assert!(s.resources.iter().all(|r| r.v1));
    }

    #[test]
    fn permissions_out_of_order_or_repeated_are_rejected() {
        for bad in [
            "patient/Observation.sr",
            "patient/Observation.rr",
            "patient/Observation.",
            "patient/Observation.x",
            "user/observation.rs",
            "user/Obs-ervation.rs",
            "system/Patient",
        ] {
            assert!(
                matches!(ScopeSet::parse(bad), Err(ScopeError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn query_on_v1_scope_is_rejected() {
        assert!(matches!(
            ScopeSet::parse("patient/Observation.read?category=laboratory"),
            Err(ScopeError::QueryOnV1(_))
        ));
        assert!(matches!(
            ScopeSet::parse("patient/Observation.rs?category"),
            Err(ScopeError::MalformedQuery(_))
        ));
    }

    #[test]
    fn context_identity_and_unknown_scopes_are_recognised() {
        let s = set(
            "openid fhirUser profile launch launch/patient launch/encounter offline_access online_access custom:thing",
        );
        assert!(s.openid && s.fhir_user && s.profile && s.launch);
        assert!(s.launch_patient && s.launch_encounter && s.offline_access && s.online_access);
        assert_eq!(s.other, vec!["custom:thing".to_string()]);
        assert!(s.has_no_resource_access());
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let text = "launch/patient openid patient/Observation.rs?category=laboratory  fhirUser patient/*.read x";
        let s = set(text);
        let shown = s.to_string();
        assert_eq!(
            shown,
            "openid fhirUser launch/patient patient/Observation.rs?category=laboratory patient/*.read x"
        );
        assert_eq!(set(&shown), s);
    }

    #[test]
    fn query_values_are_percent_decoded_and_reencoded() {
        let s = set("patient/Observation.rs?code=http://loinc.org%7C2345-7&category=a%26b");
        let r = &s.resources[0];
        assert_eq!(
            r.query[0],
            ("code".into(), "http://loinc.org|2345-7".into())
        );
        assert_eq!(r.query[1], ("category".into(), "a&b".into()));
        assert_eq!(set(&s.to_string()), s);
    }

    #[test]
    fn duplicates_are_dropped() {
        let s = set("openid openid patient/*.rs patient/*.rs foo foo");
        assert_eq!(s.to_string(), "openid patient/*.rs foo");
    }

    #[test]
    fn lenient_parse_keeps_malformed_scopes_as_other() {
        let s = ScopeSet::parse_lenient("user/Observation.rs user/foo.bar");
        assert_eq!(s.resources.len(), 1);
        assert_eq!(s.other, vec!["user/foo.bar".to_string()]);
    }

    #[test]
    fn interactions_follow_the_permission_letter_table() {
        assert_eq!(
            Interaction::from_fhir_code("vread"),
            Some(Interaction::Read)
        );
        assert_eq!(
            Interaction::from_fhir_code("history-instance"),
            Some(Interaction::Read)
        );
        assert_eq!(
            Interaction::from_fhir_code("history-type"),
            Some(Interaction::Search)
        );
        assert_eq!(
            Interaction::from_fhir_code("search-system"),
            Some(Interaction::Search)
        );
        assert_eq!(
            Interaction::from_fhir_code("patch"),
            Some(Interaction::Update)
        );
        assert_eq!(Interaction::from_fhir_code("transaction"), None);
        assert_eq!(Interaction::for_operation(true, false), Interaction::Read);
        assert_eq!(
            Interaction::for_operation(false, false),
            Interaction::Search
        );
        assert_eq!(Interaction::for_operation(true, true), Interaction::Update);
        assert_eq!(Interaction::for_operation(false, true), Interaction::Create);
    }

    #[test]
    fn read_scope_allows_read_and_search_but_not_write() {
        let s = set("user/Observation.rs");
        assert!(s.allows(Interaction::Read, "Observation").is_allowed());
        assert!(s.allows(Interaction::Search, "Observation").is_allowed());
        assert_eq!(s.allows(Interaction::Create, "Observation"), Access::Denied);
        assert_eq!(s.allows(Interaction::Read, "Patient"), Access::Denied);
    }

    #[test]
    fn patient_scope_confines_to_the_compartment() {
        let s = set("patient/*.rs");
        assert_eq!(
            s.allows(Interaction::Read, "Condition"),
            Access::Allowed {
                patient_compartment_only: true,
                restrictions: vec![]
            }
        );
    }

    #[test]
    fn user_grant_wins_over_patient_grant() {
        let s = set("patient/Observation.rs user/Observation.r");
        assert_eq!(
            s.allows(Interaction::Read, "Observation"),
            Access::Allowed {
                patient_compartment_only: false,
                restrictions: vec![]
            }
        );
        // search only through the patient grant
        assert_eq!(
            s.allows(Interaction::Search, "Observation"),
            Access::Allowed {
                patient_compartment_only: true,
                restrictions: vec![]
            }
        );
    }

    #[test]
    fn restrictions_are_ored_and_an_unrestricted_grant_clears_them() {
        let s = set(
            "patient/Observation.rs?category=laboratory patient/Observation.rs?category=vital-signs",
        );
        assert_eq!(
            s.allows(Interaction::Search, "Observation"),
            Access::Allowed {
                patient_compartment_only: true,
                restrictions: vec![
                    vec![("category".into(), "laboratory".into())],
                    vec![("category".into(), "vital-signs".into())]
                ]
            }
        );
        let s = set("patient/Observation.rs?category=laboratory patient/*.s");
        assert_eq!(
            s.allows(Interaction::Search, "Observation"),
            Access::Allowed {
                patient_compartment_only: true,
                restrictions: vec![]
            }
        );
    }

    #[test]
    fn intersect_ands_permissions_per_type() {
        let req = set("user/MedicationRequest.cruds");
        let cap = set("user/MedicationRequest.rs user/Observation.cruds");
        assert_eq!(req.intersect(&cap).to_string(), "user/MedicationRequest.rs");
    }

    #[test]
    fn intersect_of_requested_wildcard_yields_the_caps_types() {
        let req = set("user/*.cruds");
        let cap = set("user/Patient.rs user/Appointment.cruds");
        assert_eq!(
            req.intersect(&cap).to_string(),
            "user/Patient.rs user/Appointment.cruds"
        );
    }

    #[test]
    fn intersect_with_wildcard_cap_keeps_requested_type() {
        let req = set("user/Observation.read");
        let cap = set("user/*.cruds");
        assert_eq!(req.intersect(&cap).to_string(), "user/Observation.read");
    }

    #[test]
    fn intersect_keeps_the_narrower_query() {
        let req = set("user/Observation.rs");
        let cap = set("user/Observation.rs?category=laboratory");
        assert_eq!(
            req.intersect(&cap).to_string(),
            "user/Observation.rs?category=laboratory"
        );
        let req = set("user/Observation.rs?code=1234-5");
        assert_eq!(
            req.intersect(&cap).to_string(),
            "user/Observation.rs?code=1234-5&category=laboratory"
        );
    }

    #[test]
    fn intersect_respects_levels() {
        // a user cap covers patient requests; a patient cap never covers user requests;
        // system covers only system
        let cap = set("user/*.rs");
        assert_eq!(
            set("patient/Observation.rs").intersect(&cap).to_string(),
            "patient/Observation.rs"
        );
        let cap = set("patient/*.rs");
        assert_eq!(set("user/Observation.rs").intersect(&cap).to_string(), "");
        let cap = set("system/*.rs");
        assert_eq!(set("user/Observation.rs").intersect(&cap).to_string(), "");
    }

    #[test]
    fn intersect_drops_subsumed_results_and_ands_flags() {
        let req = set("openid launch user/*.rs user/Observation.r custom");
        let cap = set("openid user/*.cruds");
        assert_eq!(req.intersect(&cap).to_string(), "openid user/*.rs");
    }

    #[test]
    fn v1_scope_narrowed_below_a_v1_word_is_shown_in_v2() {
        let req = set("user/Observation.*");
        let cap = set("user/Observation.rs");
        assert_eq!(req.intersect(&cap).to_string(), "user/Observation.read");
        let cap = set("user/Observation.crs");
        assert_eq!(req.intersect(&cap).to_string(), "user/Observation.crs");
    }
}
