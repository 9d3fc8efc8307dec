//! SQL text shared by both backends.
//!
//! Statements are written once with `?` placeholders and a [`Dialect`] for the few places
//! where SQLite and PostgreSQL differ (JSONB casts). [`Sql::finish`] renumbers the
//! placeholders to `$1, $2 …` for PostgreSQL. No user input is ever spliced into the text:
//! every value goes through [`Bind`]. Parameter names, resource types and column names come
//! from our own typed [`SearchParam`] enum, never from the request.

use crate::search::IndexTable;
use crate::storage::{HistoryQuery, IndexRow, NewVersion, RowValue};

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
    OptInt(Option<i64>),
    Float(f64),
    OptFloat(Option<f64>),
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

    /// The SQL flavour this statement is written for.
    pub fn dialect(&self) -> Dialect {
        self.dialect
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

/// The head of the multi-row INSERTs of a write flush. On SQLite `INSERT OR FAIL`: a
/// constraint error still stops the statement, but does not undo the rows it already
/// inserted (sqlite.org/lang_conflict.html), so SQLite needs no statement journal for it; with
/// the default `ABORT`, every multi-row INSERT in a transaction first copied each page it
/// touched into that journal (sqlite.org/tempfiles.html#stmtjrnl). Nothing is lost: a
/// failed flush fails its whole transaction (or savepoint), which is rolled back.
fn insert_into(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "INSERT OR FAIL INTO ",
        Dialect::Postgres => "INSERT INTO ",
    }
}

/// Columns of a [`crate::storage::StoredVersion`] read from `resource_versions v`.
pub(super) fn version_columns(dialect: Dialect) -> &'static str {
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

/// `(res_type = ? AND id = ?) OR …` for each `(res_type, id)` key.
fn push_keys(sql: &mut Sql, keys: &[(String, String)]) {
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
}

/// Current versions of several resources, locked (`FOR UPDATE`, PostgreSQL) when `lock`.
pub fn current_versions(dialect: Dialect, keys: &[(String, String)], lock: bool) -> Sql {
    let mut sql = Sql::new(
        dialect,
        "SELECT res_type, id, version_id, deleted FROM resources WHERE ",
    );
    push_keys(&mut sql, keys);
    if lock && dialect == Dialect::Postgres {
        sql.push(" FOR UPDATE");
    }
    sql
}

/// Current resources holding a reference to `target_type/target_id` in any indexed
/// reference parameter, as `(res_type, id)` (for moving references, e.g. an HL7 A40
/// merge). Uses `search_reference_target`.
pub fn referencing(dialect: Dialect, target_type: &str, target_id: &str) -> Sql {
    let mut sql = Sql::new(
        dialect,
        "SELECT DISTINCT r.res_type, r.id FROM search_reference x \
         JOIN resources r ON r.rid = x.rid WHERE x.target_id = ",
    );
    sql.bind(Bind::Text(target_id.to_string()))
        .push(" AND x.target_type = ")
        .bind(Bind::Text(target_type.to_string()))
        .push(" AND r.deleted = ")
        .bind(Bind::Bool(false))
        .push(" ORDER BY r.res_type, r.id");
    sql
}

/// The token lookups of several simple conditional criteria in one statement (see
/// [`crate::storage::TokenBatch`]): rows `(res_type, param, system, code, id)` of current,
/// non-deleted resources holding any of the `(res_type, param key, code)` tokens. A `UNION
/// ALL` of one index lookup per token, so the planner cannot pick a scan of the whole table
/// (as PostgreSQL did for the equivalent `OR`). At most [`TOKEN_LOOKUP_CHUNK`] tokens.
pub fn token_lookup(dialect: Dialect, wanted: &[(&str, i64, &str)]) -> Sql {
    let mut sql = Sql::new(dialect, "");
    for (i, (res_type, param, code)) in wanted.iter().enumerate() {
        if i > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push(
            "SELECT r.res_type, t.param, t.system, t.code, r.id FROM search_token t \
             JOIN resources r ON r.rid = t.rid WHERE t.param = ",
        )
        .bind(Bind::Int(*param))
        .push(" AND t.code = ")
        .bind(Bind::Text(code.to_string()))
        .push(" AND r.res_type = ")
        .bind(Bind::Text(res_type.to_string()))
        .push(" AND r.deleted = ")
        .bind(Bind::Bool(false));
    }
    sql
}

/// Current, non-deleted versions written after `after_seq`, oldest first (reindex).
pub fn current_after(dialect: Dialect, after_seq: i64, limit: usize) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT ");
    sql.push(version_columns(dialect)).push(
        " FROM resource_versions v JOIN resources r ON r.res_type = v.res_type \
         AND r.id = v.id AND r.version_id = v.version_id WHERE v.seq > ",
    );
    sql.bind(Bind::Int(after_seq))
        .push(" AND r.deleted = ")
        .bind(Bind::Bool(false))
        .push(" ORDER BY v.seq LIMIT ")
        .bind(Bind::Int(limit as i64));
    sql
}

/// `(res_type, id, rid)` of the given resources.
pub fn rids(dialect: Dialect, keys: &[(String, String)]) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT res_type, id, rid FROM resources WHERE ");
    push_keys(&mut sql, keys);
    sql
}

/// One value of `search_index_state`.
pub fn index_state(dialect: Dialect, key: &str) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT value FROM search_index_state WHERE key = ");
    sql.bind(Bind::Text(key.to_string()));
    sql
}

/// Sets or removes one value of `search_index_state`.
pub fn set_index_state(dialect: Dialect, key: &str, value: Option<&str>) -> Sql {
    match value {
        Some(v) => {
            let mut sql = Sql::new(
                dialect,
                "INSERT INTO search_index_state (key, value) VALUES (",
            );
            sql.bind(Bind::Text(key.to_string()))
                .push(", ")
                .bind(Bind::Text(v.to_string()))
                .push(") ON CONFLICT (key) DO UPDATE SET value = excluded.value");
            sql
        }
        None => {
            let mut sql = Sql::new(dialect, "DELETE FROM search_index_state WHERE key = ");
            sql.bind(Bind::Text(key.to_string()));
            sql
        }
    }
}

/// Tokens per [`token_lookup`] statement (SQLite allows 500 terms in a compound SELECT).
pub const TOKEN_LOOKUP_CHUNK: usize = 200;

/// Rows per multi-row INSERT (at most 9 binds a row keeps well under both backends' limits).
pub const CHUNK: usize = 500;

/// Multi-row insert of versions into `resource_versions`.
pub fn insert_versions(dialect: Dialect, versions: &[&NewVersion]) -> Sql {
    let mut sql = Sql::new(dialect, insert_into(dialect));
    sql.push(
        "resource_versions \
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

/// Multi-row upsert of the current-version pointers, returning `(res_type, id, rid)` of
/// each. Keys must be distinct.
pub fn upsert_current(dialect: Dialect, versions: &[&NewVersion]) -> Sql {
    let mut sql = Sql::new(dialect, insert_into(dialect));
    sql.push("resources (res_type, id, version_id, last_updated, deleted) VALUES ");
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
         last_updated = excluded.last_updated, deleted = excluded.deleted \
         RETURNING res_type, id, rid",
    );
    sql
}

/// Deletes the index rows of the resources `rids` from one table.
pub fn delete_index_rows(dialect: Dialect, table: IndexTable, rids: &[i64]) -> Sql {
    let mut sql = Sql::new(dialect, "DELETE FROM ");
    sql.push(table.table()).push(" WHERE rid IN (");
    for (i, rid) in rids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(Bind::Int(*rid));
    }
    sql.push(")");
    sql
}

/// The table an index row goes to.
pub fn table_of_row(row: &RowValue) -> IndexTable {
    match row {
        RowValue::String { .. } => IndexTable::String,
        RowValue::Token { .. } => IndexTable::Token,
        RowValue::Date { .. } => IndexTable::Date,
        RowValue::Number(_) => IndexTable::Number,
        RowValue::Quantity { .. } => IndexTable::Quantity,
        RowValue::Uri(_) => IndexTable::Uri,
        RowValue::Reference { .. } => IndexTable::Reference,
    }
}

/// The columns an index row of `table` is written to, in the order the writers give them.
pub fn index_columns(table: IndexTable) -> &'static str {
    match table {
        IndexTable::String => "rid, param, grp, value, exact",
        IndexTable::Token => "rid, param, grp, system, code",
        IndexTable::Date => "rid, param, grp, low, high",
        IndexTable::Number => "rid, param, grp, value",
        IndexTable::Quantity => "rid, param, grp, value, system, code, canon_value, canon_code",
        IndexTable::Uri => "rid, param, grp, value",
        IndexTable::Reference => "rid, param, grp, target_type, target_id, url",
    }
}

/// The binds of an index row's value columns, in [`index_columns`] order after `rid, param,
/// grp`. Each table's rows give the same bind kinds column by column (text, integer or
/// float, the `Opt` forms where the column is nullable).
pub fn value_binds(value: &RowValue) -> Vec<Bind> {
    match value {
        RowValue::String { value, exact } => {
            vec![Bind::Text(value.clone()), Bind::Text(exact.clone())]
        }
        RowValue::Token { system, code } => {
            vec![Bind::OptText(system.clone()), Bind::OptText(code.clone())]
        }
        RowValue::Date { low, high } => vec![Bind::Int(*low), Bind::Int(*high)],
        RowValue::Number(v) => vec![Bind::Float(*v)],
        RowValue::Quantity {
            value,
            system,
            code,
            canonical,
        } => vec![
            Bind::Float(*value),
            Bind::OptText(system.clone()),
            Bind::OptText(code.clone()),
            Bind::OptFloat(canonical.as_ref().map(|c| c.0)),
            Bind::OptText(canonical.as_ref().map(|c| c.1.clone())),
        ],
        RowValue::Uri(v) => vec![Bind::Text(v.clone())],
        RowValue::Reference {
            target_type,
            target_id,
            url,
        } => vec![
            Bind::OptText(target_type.clone()),
            Bind::OptText(target_id.clone()),
            Bind::OptText(url.clone()),
        ],
    }
}

/// Multi-row insert of index rows `(rid, row)` that all belong to `table`.
pub fn insert_index_rows(dialect: Dialect, table: IndexTable, rows: &[(i64, &IndexRow)]) -> Sql {
    let columns = index_columns(table);
    let mut sql = Sql::new(dialect, insert_into(dialect));
    sql.push(table.table())
        .push(" (")
        .push(columns)
        .push(") VALUES ");
    sql.rows(rows, |(rid, row)| {
        let mut binds = vec![Bind::Int(*rid), Bind::Int(row.param), Bind::OptInt(row.grp)];
        binds.extend(value_binds(&row.value));
        binds
    });
    sql
}

/// The last queued version of each resource (it wins the current pointer), in queue order.
pub fn last_versions(queue: &[NewVersion]) -> Vec<&NewVersion> {
    let mut last: Vec<&NewVersion> = Vec::with_capacity(queue.len());
    let mut seen = std::collections::HashSet::new();
    for v in queue.iter().rev() {
        if seen.insert((v.res_type.as_str(), v.id.as_str())) {
            last.push(v);
        }
    }
    last.reverse();
    last
}

/// The statements that write queued versions: the version rows, then the current pointers
/// (which return each resource's `rid`, needed by [`index_statements`]).
pub fn version_statements(dialect: Dialect, queue: &[NewVersion]) -> (Vec<Sql>, Vec<Sql>) {
    let all: Vec<&NewVersion> = queue.iter().collect();
    let versions = all
        .chunks(CHUNK)
        .map(|c| insert_versions(dialect, c))
        .collect();
    let last = last_versions(queue);
    let upserts = last
        .chunks(CHUNK)
        .map(|c| upsert_current(dialect, c))
        .collect();
    (versions, upserts)
}

/// Index rows of one table, each with the `rid` of the resource it belongs to.
pub type TableRows<'a> = (IndexTable, Vec<(i64, &'a IndexRow)>);

/// What replaces the index rows of the written resources: the deletes of the old rows (for
/// resources that existed before), to run first, then the new rows sorted into their
/// tables (empty tables left out), for the backend to write in bulk. `rid` maps
/// `(res_type, id)` to `resources.rid`.
pub fn index_writes<'a>(
    dialect: Dialect,
    last: &[&'a NewVersion],
    rid: &std::collections::HashMap<(String, String), i64>,
) -> (Vec<Sql>, Vec<TableRows<'a>>) {
    let mut deletes = Vec::new();
    // Each version's rid, looked up once (not once per index table).
    let owned: Vec<(i64, &NewVersion)> = last
        .iter()
        .filter_map(|v| {
            rid.get(&(v.res_type.clone(), v.id.clone()))
                .map(|r| (*r, *v))
        })
        .collect();
    let stale: Vec<i64> = owned
        .iter()
        .filter(|(_, v)| !v.fresh)
        .map(|(r, _)| *r)
        .collect();
    for chunk in stale.chunks(CHUNK) {
        for table in IndexTable::ALL {
            deletes.push(delete_index_rows(dialect, table, chunk));
        }
    }
    // One pass sorts the rows into their tables.
    let mut by_table: Vec<Vec<(i64, &IndexRow)>> = vec![Vec::new(); IndexTable::ALL.len()];
    for (r, v) in &owned {
        for row in &v.index {
            let t = table_of_row(&row.value);
            if let Some(i) = IndexTable::ALL.iter().position(|x| *x == t) {
                by_table[i].push((*r, row));
            }
        }
    }
    let tables = IndexTable::ALL
        .into_iter()
        .zip(by_table)
        .filter(|(_, rows)| !rows.is_empty())
        .collect();
    (deletes, tables)
}

/// The multi-row `INSERT` statements (of at most [`CHUNK`] rows) that write `rows` into
/// `table`: how SQLite writes index rows.
pub fn insert_statements(
    dialect: Dialect,
    table: IndexTable,
    rows: &[(i64, &IndexRow)],
) -> Vec<Sql> {
    rows.chunks(CHUNK)
        .map(|chunk| insert_index_rows(dialect, table, chunk))
        .collect()
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
