//! SQL text shared by both backends.
//!
//! Statements are written once with `?` placeholders and a [`Dialect`] for the few places
//! where SQLite and PostgreSQL differ (JSONB casts). [`Sql::finish`] renumbers the
//! placeholders to `$1, $2 …` for PostgreSQL. No user input is ever spliced into the text:
//! every value goes through [`Bind`]. Parameter names, resource types and column names come
//! from our own typed [`SearchParam`] enum, never from the request.

use crate::search::{DateBound, DatePrefix, SearchParam, SearchQuery, TokenMatch, TokenSystem};
use crate::storage::{HistoryQuery, NewVersion, ReferenceIndex};

/// The SQL flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A value bound to a `?` placeholder.
#[derive(Debug, Clone)]
pub enum Bind {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    Bool(bool),
    /// JSON text for a JSONB column (cast with `::jsonb` on PostgreSQL).
    Json(Option<String>),
}

/// A statement under construction: text plus binds, in placeholder order.
#[derive(Debug)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
    dialect: Dialect,
}

impl Sql {
    pub fn new(dialect: Dialect, text: &str) -> Self {
        Sql {
            text: text.to_string(),
            binds: Vec::new(),
            dialect,
        }
    }

    /// Appends SQL text (never user input).
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn bind(&mut self, value: Bind) -> &mut Self {
        self.text.push('?');
        self.binds.push(value);
        self
    }

    /// Appends a placeholder for JSON content (`?::jsonb` on PostgreSQL).
    pub fn bind_json(&mut self, value: Option<String>) -> &mut Self {
        self.bind(Bind::Json(value));
        if self.dialect == Dialect::Postgres {
            self.text.push_str("::jsonb");
        }
        self
    }

    /// Appends `(?, ?, …), (?, ?, …)`: one parenthesised tuple per row of a multi-row
    /// `VALUES` list, with the binds `row` gives for each.
    pub fn rows<T>(&mut self, rows: &[T], row: impl Fn(&T) -> Vec<Bind>) -> &mut Self {
        for (i, r) in rows.iter().enumerate() {
            self.push(if i == 0 { "(" } else { ", (" });
            for (j, value) in row(r).into_iter().enumerate() {
                if j > 0 {
                    self.push(", ");
                }
                match value {
                    Bind::Json(text) => self.bind_json(text),
                    other => self.bind(other),
                };
            }
            self.push(")");
        }
        self
    }

    /// The final text: `?` placeholders renumbered to `$n` for PostgreSQL.
    pub fn finish(self) -> (String, Vec<Bind>) {
        match self.dialect {
            Dialect::Sqlite => (self.text, self.binds),
            Dialect::Postgres => {
                let mut out = String::with_capacity(self.text.len() + 16);
                let mut n = 0;
                for c in self.text.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                (out, self.binds)
            }
        }
    }
}

/// Columns of a [`crate::storage::StoredVersion`] read from `resource_versions v`.
fn version_columns(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "v.res_type, v.id, v.version_id, v.last_updated, v.method, v.deleted, v.content, v.seq"
        }
        Dialect::Postgres => {
            "v.res_type, v.id, v.version_id, v.last_updated, v.method, v.deleted, v.content::text AS content, v.seq"
        }
    }
}

/// The current version (possibly a delete) of one resource.
pub fn read_current(dialect: Dialect, res_type: &str, id: &str) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT ");
    sql.push(version_columns(dialect))
        .push(" FROM resource_versions v WHERE v.res_type = ")
        .bind(Bind::Text(res_type.to_string()))
        .push(" AND v.id = ")
        .bind(Bind::Text(id.to_string()))
        .push(" ORDER BY v.version_id DESC LIMIT 1");
    sql
}

/// One version of one resource.
pub fn read_version(dialect: Dialect, res_type: &str, id: &str, version_id: i64) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT ");
    sql.push(version_columns(dialect))
        .push(" FROM resource_versions v WHERE v.res_type = ")
        .bind(Bind::Text(res_type.to_string()))
        .push(" AND v.id = ")
        .bind(Bind::Text(id.to_string()))
        .push(" AND v.version_id = ")
        .bind(Bind::Int(version_id));
    sql
}

/// History, newest first, `count + 1` rows.
pub fn history(dialect: Dialect, q: &HistoryQuery) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT ");
    sql.push(version_columns(dialect))
        .push(" FROM resource_versions v WHERE 1 = 1");
    if let Some(t) = &q.res_type {
        sql.push(" AND v.res_type = ").bind(Bind::Text(t.clone()));
    }
    if let Some(id) = &q.id {
        sql.push(" AND v.id = ").bind(Bind::Text(id.clone()));
    }
    if let Some(since) = q.since {
        sql.push(" AND v.last_updated >= ").bind(Bind::Int(since));
    }
    if let Some(before) = q.before_seq {
        sql.push(" AND v.seq < ").bind(Bind::Int(before));
    }
    sql.push(" ORDER BY v.seq DESC LIMIT ")
        .bind(Bind::Int(q.count as i64 + 1));
    sql
}

/// Current versions of several resources, optionally locked (`FOR UPDATE`, PostgreSQL).
pub fn current_versions(dialect: Dialect, keys: &[(String, String)]) -> Sql {
    let mut sql = Sql::new(
        dialect,
        "SELECT res_type, id, version_id, deleted FROM resources WHERE ",
    );
    for (i, (t, id)) in keys.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(res_type = ")
            .bind(Bind::Text(t.clone()))
            .push(" AND id = ")
            .bind(Bind::Text(id.clone()))
            .push(")");
    }
    if dialect == Dialect::Postgres {
        sql.push(" FOR UPDATE");
    }
    sql
}

/// Current resources whose `patient`/`subject`/`encounter` index rows point at
/// `target_type/target_id`, as `(res_type, id)` (for moving references, e.g. an HL7 A40
/// merge). Uses `search_reference_lookup` through its leading `param` column.
pub fn referencing(dialect: Dialect, target_type: &str, target_id: &str) -> Sql {
    let mut sql = Sql::new(
        dialect,
        "SELECT DISTINCT x.res_type, x.id FROM search_reference x WHERE x.param IN \
         ('patient', 'subject', 'encounter') AND x.target_id = ",
    );
    sql.bind(Bind::Text(target_id.to_string()))
        .push(" AND x.target_type = ")
        .bind(Bind::Text(target_type.to_string()))
        .push(" ORDER BY x.res_type, x.id");
    sql
}

/// Search over current, non-deleted resources: full rows (`ids_only = false`) or ids.
/// Ordered by id, keyset-paged by `query.after_id`; `limit` rows at most.
pub fn search(dialect: Dialect, q: &SearchQuery, ids_only: bool, limit: usize) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT ");
    if ids_only {
        sql.push("r.id FROM resources r");
    } else {
        sql.push(version_columns(dialect)).push(
            " FROM resources r JOIN resource_versions v \
             ON v.res_type = r.res_type AND v.id = r.id AND v.version_id = r.version_id",
        );
    }
    sql.push(" WHERE r.res_type = ")
        .bind(Bind::Text(q.res_type.clone()))
        .push(" AND r.deleted = ")
        .bind(Bind::Bool(false));
    for param in &q.params {
        sql.push(" AND (");
        push_param(&mut sql, &q.res_type, param);
        sql.push(")");
    }
    if let Some(after) = &q.after_id {
        sql.push(" AND r.id > ").bind(Bind::Text(after.clone()));
    }
    sql.push(" ORDER BY r.id LIMIT ")
        .bind(Bind::Int(limit as i64));
    sql
}

/// The token lookups of several simple conditional criteria in one statement (see
/// [`crate::storage::TokenBatch`]): rows `(res_type, param, system, value, id)` of current,
/// non-deleted resources holding any of the `(res_type, param, value)` tokens. A `UNION ALL`
/// of one index lookup per token, so the planner cannot pick a scan of the whole table (as
/// PostgreSQL did for the equivalent `OR`). At most [`TOKEN_LOOKUP_CHUNK`] tokens.
pub fn token_lookup(dialect: Dialect, wanted: &[(&str, &str, &str)]) -> Sql {
    let mut sql = Sql::new(dialect, "");
    for (i, (res_type, param, value)) in wanted.iter().enumerate() {
        if i > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push(
            "SELECT t.res_type, t.param, t.system, t.value, t.id FROM search_token t \
             JOIN resources r ON r.res_type = t.res_type AND r.id = t.id WHERE r.deleted = ",
        )
        .bind(Bind::Bool(false))
        .push(" AND t.res_type = ")
        .bind(Bind::Text(res_type.to_string()))
        .push(" AND t.param = ")
        .bind(Bind::Text(param.to_string()))
        .push(" AND t.value = ")
        .bind(Bind::Text(value.to_string()));
    }
    sql
}

/// Tokens per [`token_lookup`] statement (SQLite allows 500 terms in a compound SELECT).
pub const TOKEN_LOOKUP_CHUNK: usize = 200;

/// One search parameter occurrence: its values are ORed (R4 search.html#combining).
fn push_param(sql: &mut Sql, res_type: &str, param: &SearchParam) {
    match param {
        SearchParam::Id(ids) => {
            sql.push("r.id IN (");
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(Bind::Text(id.clone()));
            }
            sql.push(")");
        }
        SearchParam::LastUpdated(bounds) => {
            for (i, b) in bounds.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                push_date_point(sql, "r.last_updated", b);
            }
        }
        SearchParam::Reference { code, values } => {
            // Driven by the index: `r.id IN (…)` lets the planner start from
            // search_reference_lookup instead of scanning every resource of the type.
            sql.push("r.id IN (SELECT x.id FROM search_reference x WHERE x.res_type = ")
                .bind(Bind::Text(res_type.to_string()))
                .push(" AND x.param = ")
                .bind(Bind::Text(code.as_str().to_string()))
                .push(" AND (");
            for (i, m) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                sql.push("(x.target_id = ").bind(Bind::Text(m.id.clone()));
                if let Some(t) = &m.target_type {
                    sql.push(" AND x.target_type = ")
                        .bind(Bind::Text(t.clone()));
                }
                sql.push(")");
            }
            sql.push("))");
        }
        SearchParam::Token { code, values } => {
            sql.push("r.id IN (SELECT t.id FROM search_token t WHERE t.res_type = ")
                .bind(Bind::Text(res_type.to_string()))
                .push(" AND t.param = ")
                .bind(Bind::Text(code.as_str().to_string()))
                .push(" AND (");
            for (i, m) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                push_token(sql, m);
            }
            sql.push("))");
        }
    }
}

fn push_token(sql: &mut Sql, m: &TokenMatch) {
    sql.push("(1 = 1");
    match &m.system {
        TokenSystem::Any => {}
        TokenSystem::None => {
            sql.push(" AND t.system IS NULL");
        }
        TokenSystem::Is(s) => {
            sql.push(" AND t.system = ").bind(Bind::Text(s.clone()));
        }
    }
    if let Some(v) = &m.value {
        sql.push(" AND t.value = ").bind(Bind::Text(v.clone()));
    }
    sql.push(")");
}

/// A date comparison against a point-in-time column (R4 search.html#prefix): the column
/// holds one instant, the parameter a range `[low, high)` given by its precision.
fn push_date_point(sql: &mut Sql, column: &str, b: &DateBound) {
    let (low, high) = (b.low, b.high);
    let cmp = |sql: &mut Sql, op: &str, v: i64| {
        sql.push(column).push(op).bind(Bind::Int(v));
    };
    sql.push("(");
    match b.prefix {
        DatePrefix::Eq => {
            cmp(sql, " >= ", low);
            sql.push(" AND ");
            cmp(sql, " < ", high);
        }
        DatePrefix::Ne => {
            cmp(sql, " < ", low);
            sql.push(" OR ");
            cmp(sql, " >= ", high);
        }
        DatePrefix::Gt | DatePrefix::Sa => cmp(sql, " >= ", high),
        DatePrefix::Lt | DatePrefix::Eb => cmp(sql, " < ", low),
        DatePrefix::Ge => cmp(sql, " >= ", low),
        DatePrefix::Le => cmp(sql, " < ", high),
        DatePrefix::Ap => {
            let margin = b.approx_margin;
            cmp(sql, " >= ", low - margin);
            sql.push(" AND ");
            cmp(sql, " < ", high + margin);
        }
    }
    sql.push(")");
}

/// Rows per multi-row INSERT (7 binds a row keeps well under both backends' limits).
pub const CHUNK: usize = 500;

/// Multi-row insert of versions into `resource_versions`.
pub fn insert_versions(dialect: Dialect, versions: &[&NewVersion]) -> Sql {
    let mut sql = Sql::new(
        dialect,
        "INSERT INTO resource_versions \
         (res_type, id, version_id, last_updated, method, deleted, content) VALUES ",
    );
    sql.rows(versions, |v| {
        vec![
            Bind::Text(v.res_type.clone()),
            Bind::Text(v.id.clone()),
            Bind::Int(v.version_id),
            Bind::Int(v.last_updated),
            Bind::Text(v.method.to_string()),
            Bind::Bool(v.content.is_none()),
            Bind::Json(v.content.clone()),
        ]
    });
    sql
}

/// Multi-row upsert of the current-version pointers. Keys must be distinct.
pub fn upsert_current(dialect: Dialect, versions: &[&NewVersion]) -> Sql {
    let mut sql = Sql::new(
        dialect,
        "INSERT INTO resources (res_type, id, version_id, last_updated, deleted) VALUES ",
    );
    sql.rows(versions, |v| {
        vec![
            Bind::Text(v.res_type.clone()),
            Bind::Text(v.id.clone()),
            Bind::Int(v.version_id),
            Bind::Int(v.last_updated),
            Bind::Bool(v.content.is_none()),
        ]
    });
    sql.push(
        " ON CONFLICT (res_type, id) DO UPDATE SET version_id = excluded.version_id, \
         last_updated = excluded.last_updated, deleted = excluded.deleted",
    );
    sql
}

/// Deletes the index rows of the given resources (before their new rows are written).
pub fn delete_index_rows(dialect: Dialect, table: &str, keys: &[(&str, &str)]) -> Sql {
    let mut sql = Sql::new(dialect, "DELETE FROM ");
    sql.push(table).push(" WHERE ");
    for (i, (t, id)) in keys.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(res_type = ")
            .bind(Bind::Text(t.to_string()))
            .push(" AND id = ")
            .bind(Bind::Text(id.to_string()))
            .push(")");
    }
    sql
}

/// Multi-row insert of token index rows: `(res_type, id, param, system, value)`.
pub fn insert_tokens(dialect: Dialect, rows: &[(&str, &str, &crate::storage::TokenIndex)]) -> Sql {
    let mut sql = Sql::new(
        dialect,
        "INSERT INTO search_token (res_type, id, param, system, value) VALUES ",
    );
    sql.rows(rows, |(t, id, tok)| {
        vec![
            Bind::Text(t.to_string()),
            Bind::Text(id.to_string()),
            Bind::Text(tok.param.clone()),
            Bind::OptText(tok.system.clone()),
            Bind::OptText(tok.value.clone()),
        ]
    });
    sql
}

/// The statements that flush queued versions, in order: versions, current pointers, old
/// index rows, new index rows. Several statements per kind when over [`CHUNK`] rows.
pub fn flush_statements(dialect: Dialect, queue: &[NewVersion]) -> Vec<Sql> {
    let mut out = Vec::new();
    let all: Vec<&NewVersion> = queue.iter().collect();
    for chunk in all.chunks(CHUNK) {
        out.push(insert_versions(dialect, chunk));
    }
    // The last queued version of each resource wins the current pointer.
    let mut last: Vec<&NewVersion> = Vec::with_capacity(queue.len());
    let mut seen = std::collections::HashSet::new();
    for v in queue.iter().rev() {
        if seen.insert((v.res_type.as_str(), v.id.as_str())) {
            last.push(v);
        }
    }
    last.reverse();
    for chunk in last.chunks(CHUNK) {
        out.push(upsert_current(dialect, chunk));
    }
    let stale: Vec<(&str, &str)> = last
        .iter()
        .filter(|v| !v.fresh)
        .map(|v| (v.res_type.as_str(), v.id.as_str()))
        .collect();
    for chunk in stale.chunks(CHUNK) {
        out.push(delete_index_rows(dialect, "search_token", chunk));
        out.push(delete_index_rows(dialect, "search_reference", chunk));
    }
    let tokens: Vec<(&str, &str, &crate::storage::TokenIndex)> = last
        .iter()
        .flat_map(|v| {
            v.index
                .tokens
                .iter()
                .map(move |t| (v.res_type.as_str(), v.id.as_str(), t))
        })
        .collect();
    for chunk in tokens.chunks(CHUNK) {
        out.push(insert_tokens(dialect, chunk));
    }
    let refs: Vec<(&str, &str, &ReferenceIndex)> = last
        .iter()
        .flat_map(|v| {
            v.index
                .references
                .iter()
                .map(move |x| (v.res_type.as_str(), v.id.as_str(), x))
        })
        .collect();
    for chunk in refs.chunks(CHUNK) {
        out.push(insert_references(dialect, chunk));
    }
    out
}

/// Multi-row insert of reference index rows: `(res_type, id, param, target_type, target_id)`.
pub fn insert_references(dialect: Dialect, rows: &[(&str, &str, &ReferenceIndex)]) -> Sql {
    let mut sql = Sql::new(
        dialect,
        "INSERT INTO search_reference (res_type, id, param, target_type, target_id) VALUES ",
    );
    sql.rows(rows, |(t, id, x)| {
        vec![
            Bind::Text(t.to_string()),
            Bind::Text(id.to_string()),
            Bind::Text(x.param.clone()),
            Bind::Text(x.target_type.clone()),
            Bind::Text(x.target_id.clone()),
        ]
    });
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_are_renumbered() {
        let mut sql = Sql::new(Dialect::Postgres, "SELECT 1 WHERE a = ");
        sql.bind(Bind::Int(1))
            .push(" AND b = ")
            .bind_json(Some("{}".into()));
        let (text, binds) = sql.finish();
        assert_eq!(text, "SELECT 1 WHERE a = $1 AND b = $2::jsonb");
        assert_eq!(binds.len(), 2);
    }
}
