//! Search compiled to SQL (R4 search.html), shared by both backends.
//!
//! A [`SearchQuery`] becomes one statement over `resources r` (joined to
//! `resource_versions v` for the content): each parameter is an `r.rid IN (SELECT x.rid
//! FROM search_<kind> x WHERE x.param IN (…) AND …)` sub-select driven by the typed index,
//! chains and `_has` nest such sub-selects (never per-row lookups), `_sort` keys are
//! correlated `MIN`/`MAX` sub-selects over the owner index, and paging is keyset paging on
//! (sort keys…, rid), so pages stay correct while resources are being written.

use serde_json::Value;

use super::sql::{Bind, Dialect, Sql};
use crate::search::{
    Criterion, Cursor, DateBound, Include, IndexTable, NumberBound, ParamKey, Prefix, SearchParam,
    SearchQuery, SortBy, SortKey, TokenMatch, TokenSystem,
};

/// What a search statement returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// Full rows (version columns) plus the sort values `s0, s1, …`.
    Rows,
    /// Only `r.id` (conditional interactions).
    Ids,
}

/// The kind of value a sort key yields, to read it back from a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortValueKind {
    Text,
    Int,
    Float,
}

/// The value kind of a sort key's column.
pub fn sort_value_kind(by: &SortBy) -> SortValueKind {
    match by {
        SortBy::Id => SortValueKind::Text,
        SortBy::LastUpdated => SortValueKind::Int,
        SortBy::Indexed { table, .. } => match table {
            IndexTable::Date => SortValueKind::Int,
            IndexTable::Number | IndexTable::Quantity => SortValueKind::Float,
            _ => SortValueKind::Text,
        },
    }
}

/// Builds SQL with fresh aliases for nested sub-selects.
struct Compiler {
    sql: Sql,
    next_alias: usize,
    /// Whether the next correlated probe is closed with `OFFSET 0` (PostgreSQL; see
    /// [`candidates`]). Probes nested inside a fenced one are not fenced.
    fence_probes: bool,
}

impl Compiler {
    fn new(dialect: Dialect, head: &str) -> Self {
        Compiler {
            sql: Sql::new(dialect, head),
            next_alias: 0,
            fence_probes: false,
        }
    }

    /// Opens a probe's fence: whether this probe is fenced ([`Compiler::fence_probes`]),
    /// switched off for the probes nested in it until [`Compiler::close_probe`].
    fn open_fence(&mut self) -> bool {
        std::mem::take(&mut self.fence_probes)
    }

    /// `[ OFFSET 0])` closing a probe opened with `fence` from [`Compiler::open_fence`].
    fn close_probe(&mut self, fence: bool) {
        if fence {
            self.push(" OFFSET 0");
        }
        self.push(")");
        self.fence_probes = fence;
    }

    fn alias(&mut self, prefix: &str) -> String {
        self.next_alias += 1;
        format!("{prefix}{}", self.next_alias)
    }

    fn push(&mut self, text: &str) -> &mut Self {
        self.sql.push(text);
        self
    }

    fn bind(&mut self, b: Bind) -> &mut Self {
        self.sql.bind(b);
        self
    }

    fn text(&mut self, s: &str) -> &mut Self {
        self.bind(Bind::Text(s.to_string()))
    }

    /// `?, ?, …` bound to the texts.
    fn text_list(&mut self, items: &[&str]) {
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.text(item);
        }
    }

    /// `(?, ?, …)` of the keys.
    fn key_list(&mut self, keys: &[ParamKey]) {
        if let [one] = keys {
            self.push(" = ").bind(Bind::Int(*one));
            return;
        }
        self.push(" IN (");
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(Bind::Int(*k));
        }
        self.push(")");
    }

    /// The type restriction of a resources alias.
    fn type_filter(&mut self, a: &str, q: &SearchQuery) {
        if !q.res_type.is_empty() {
            self.push(a).push(".res_type = ").text(&q.res_type);
        } else if !q.types.is_empty() {
            self.push(a).push(".res_type IN (");
            for (i, t) in q.types.iter().enumerate() {
                if i > 0 {
                    self.push(", ");
                }
                self.text(t);
            }
            self.push(")");
        } else {
            self.push("1 = 1");
        }
    }

    /// The conditions of several ANDed parameters on the resources alias `a`: the most
    /// selective one ([`selectivity`]) drives the query as an index-driven `IN` sub-select;
    /// the others are correlated `EXISTS` probes through the owner index `(rid)`, so a broad
    /// condition (a date range, `value-quantity=gt100`) is never materialised whole.
    fn params(&mut self, a: &str, res_type: Option<&str>, params: &[SearchParam]) {
        let driver = driver(params);
        for (i, p) in params.iter().enumerate() {
            if i > 0 {
                self.push(" AND ");
            }
            self.param(a, res_type, p, Some(i) != driver);
        }
        if params.is_empty() {
            self.push("1 = 1");
        }
    }

    /// The head of a correlated probe on `table` aliased `x` for the resources alias `a`:
    /// `[NOT] EXISTS (SELECT 1 FROM t x WHERE x.rid = a.rid AND ` (closed by the caller).
    fn probe(&mut self, a: &str, table: &str, x: &str, negate: bool, equality: bool) {
        self.push(if negate { "NOT EXISTS (" } else { "EXISTS (" });
        self.push(&format!(
            "SELECT 1 FROM {table} {x} WHERE {x}.rid = {a}.rid AND "
        ));
        // SQLite without statistics prefers the covering lookup index on `param` alone
        // over the owner index on `(rid, param)`, scanning every row of the parameter
        // per probe; `+param` leaves it only the owner index. Not when the criteria fix
        // every lookup column before `rid` (a code with its system, a reference): then
        // the lookup index is the better probe.
        if self.sql.dialect() == Dialect::Sqlite && !equality {
            self.push("+");
        }
    }

    /// `SELECT x.rid AS rid FROM … WHERE …`: the index rows matching a parameter that
    /// [`selects_rows`], one row per matching index row (so a resource may come more than
    /// once). Nothing is written for any other parameter.
    fn rid_select(&mut self, p: &SearchParam) {
        match p {
            SearchParam::Match {
                table,
                keys,
                values,
                negate: false,
            } => {
                let x = self.alias("x");
                self.push(&format!(
                    "SELECT {x}.rid AS rid FROM {} {x} WHERE ",
                    table.table()
                ));
                self.match_body(&x, keys, values);
            }
            SearchParam::Composite { components, values } => {
                let (from, aliases) = self.composite_from(components);
                self.push(&format!(
                    "SELECT {}.rid AS rid FROM {from} WHERE ",
                    aliases[0]
                ));
                self.composite_body(components, &aliases, values);
            }
            SearchParam::Chain {
                keys,
                target_type,
                inner,
            } => {
                let x = self.alias("x");
                self.push(&format!(
                    "SELECT {x}.rid AS rid FROM search_reference {x} WHERE "
                ));
                self.chain_body(&x, keys, target_type, inner);
            }
            _ => {}
        }
    }

    /// `x.param IN (…) AND (criterion OR …)` of a match on the index row alias `x`.
    fn match_body(&mut self, x: &str, keys: &[ParamKey], values: &[Criterion]) {
        self.push(x).push(".param");
        self.key_list(keys);
        self.push(" AND (");
        for (i, c) in values.iter().enumerate() {
            if i > 0 {
                self.push(" OR ");
            }
            self.criterion(x, c);
        }
        self.push(")");
    }

    /// The `FROM` of a composite: one index table per component, joined on the resource
    /// and the composite group (`grp`); with the component aliases.
    fn composite_from(&mut self, components: &[(IndexTable, ParamKey)]) -> (String, Vec<String>) {
        let aliases: Vec<String> = components.iter().map(|_| self.alias("c")).collect();
        let first = &aliases[0];
        let mut from = String::new();
        for (i, ((table, _), c)) in components.iter().zip(&aliases).enumerate() {
            if i == 0 {
                from.push_str(&format!("{} {c}", table.table()));
            } else {
                from.push_str(&format!(
                    " JOIN {} {c} ON {c}.rid = {first}.rid AND {c}.grp = {first}.grp",
                    table.table()
                ));
            }
        }
        (from, aliases)
    }

    /// The component keys and the ORed value tuples of a composite.
    fn composite_body(
        &mut self,
        components: &[(IndexTable, ParamKey)],
        aliases: &[String],
        values: &[Vec<Criterion>],
    ) {
        for (i, ((_, key), c)) in components.iter().zip(aliases).enumerate() {
            if i > 0 {
                self.push(" AND ");
            }
            self.push(c).push(".param = ").bind(Bind::Int(*key));
        }
        self.push(" AND (");
        for (i, tuple) in values.iter().enumerate() {
            if i > 0 {
                self.push(" OR ");
            }
            self.push("(");
            for (j, (crit, c)) in tuple.iter().zip(aliases).enumerate() {
                if j > 0 {
                    self.push(" AND ");
                }
                self.criterion(c, crit);
            }
            self.push(")");
        }
        self.push(")");
    }

    /// A chain's reference rows on alias `x`: under `keys`, to a current `target_type`
    /// resource matching `inner`.
    fn chain_body(&mut self, x: &str, keys: &[ParamKey], target_type: &str, inner: &SearchParam) {
        let t = self.alias("r");
        self.push(x).push(".param");
        self.key_list(keys);
        self.push(&format!(" AND {x}.target_type = "))
            .text(target_type)
            .push(&format!(" AND {x}.target_id IN ("));
        self.chain_targets(&t, target_type, inner);
        self.push(")");
    }

    /// `SELECT t.id AS id FROM resources t WHERE …`: the ids of the current `target_type`
    /// resources matching a chain's `inner` parameter, on the resources alias `t`.
    fn chain_targets(&mut self, t: &str, target_type: &str, inner: &SearchParam) {
        self.push(&format!(
            "SELECT {t}.id AS id FROM resources {t} WHERE {t}.res_type = "
        ))
        .text(target_type)
        .push(&format!(" AND {t}.deleted = "))
        .bind(Bind::Bool(false))
        .push(" AND ");
        self.param(t, Some(target_type), inner, false);
    }

    /// The first `limit` distinct referring rids (in page order, past the cursor) of each
    /// `target_type` resource matching `inner`, as a parenthesised row source to be aliased
    /// by the caller (see [`candidates`]). Both forms read each target's rows from
    /// `search_reference_target` in rid order. The per-target sub-selects are `DISTINCT`:
    /// a resource may refer to one target twice (two keys, or two elements), and a
    /// duplicate must not take the place of another resource in the target's first
    /// `limit`.
    ///
    /// PostgreSQL: `(SELECT t.id … <inner>) g CROSS JOIN LATERAL (SELECT DISTINCT x.rid …
    /// WHERE x.target_id = g.id … ORDER BY x.rid LIMIT limit)`. SQLite, which has no
    /// LATERAL: `(SELECT x.rid … FROM (<targets>) g JOIN search_reference x ON x.target_id =
    /// g.id … AND x.rid <= COALESCE((SELECT DISTINCT y.rid … ORDER BY y.rid LIMIT 1 OFFSET
    /// limit - 1), <no bound>))`: the target's `limit`-th rid bounds an index range. (The
    /// bound form took PostgreSQL 42 ms: it filtered each row with the sub-plan instead of
    /// bounding the index scan.)
    fn chain_per_target(
        &mut self,
        keys: &[ParamKey],
        target_type: &str,
        inner: &SearchParam,
        cursor: Option<&Cursor>,
        limit: usize,
    ) {
        let backward = cursor.is_some_and(|cur| cur.backward);
        let t = self.alias("r");
        let targets = |c: &mut Self| {
            c.push("(");
            c.chain_targets(&t, target_type, inner);
            c.push(") g");
        };
        // `x.param … AND x.target_type = ? [AND x.rid past the cursor]` of a target's rows.
        let rows_of = |c: &mut Self, x: &str| {
            c.push(&format!("{x}.target_id = g.id AND {x}.param"));
            c.key_list(keys);
            c.push(&format!(" AND {x}.target_type = "))
                .text(target_type);
            if let Some(cursor) = cursor {
                c.push(&format!(" AND {x}.rid "))
                    .push(if backward { "< " } else { "> " })
                    .bind(Bind::Int(cursor.rid));
            }
        };
        let order = if backward { " DESC" } else { " ASC" };
        let x = self.alias("x");
        if self.sql.dialect() == Dialect::Postgres {
            self.push("(SELECT k0.rid AS rid FROM ");
            targets(self);
            self.push(&format!(
                " CROSS JOIN LATERAL (SELECT DISTINCT {x}.rid AS rid FROM search_reference {x} WHERE "
            ));
            rows_of(self, &x);
            self.push(&format!(" ORDER BY {x}.rid{order} LIMIT "))
                .bind(Bind::Int(limit as i64))
                .push(") k0)");
        } else {
            let y = self.alias("y");
            self.push(&format!("(SELECT {x}.rid AS rid FROM "));
            targets(self);
            self.push(&format!(" JOIN search_reference {x} ON "));
            rows_of(self, &x);
            self.push(&format!(
                " AND {x}.rid {} COALESCE((SELECT DISTINCT {y}.rid FROM search_reference {y} WHERE ",
                if backward { ">=" } else { "<=" }
            ));
            rows_of(self, &y);
            self.push(&format!(" ORDER BY {y}.rid{order} LIMIT 1 OFFSET "))
                .bind(Bind::Int(limit.saturating_sub(1) as i64))
                .push("), ")
                .bind(Bind::Int(if backward { i64::MIN } else { i64::MAX }))
                .push("))");
        }
    }

    /// The condition of one parameter on the resources alias `a` (whose type is `res_type`
    /// when known); `filter` selects the correlated `EXISTS` form (see [`Compiler::params`]).
    fn param(&mut self, a: &str, res_type: Option<&str>, p: &SearchParam, filter: bool) {
        if !filter && selects_rows(p) {
            self.push(a).push(".rid IN (");
            self.rid_select(p);
            self.push(")");
            return;
        }
        match p {
            SearchParam::Id(ids) => {
                self.push(a).push(".id IN (");
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        self.push(", ");
                    }
                    self.text(id);
                }
                self.push(")");
            }
            SearchParam::LastUpdated(bounds) => {
                self.push("(");
                for (i, b) in bounds.iter().enumerate() {
                    if i > 0 {
                        self.push(" OR ");
                    }
                    self.date_point(&format!("{a}.last_updated"), b);
                }
                self.push(")");
            }
            SearchParam::Match {
                table,
                keys,
                values,
                negate,
            } => {
                let x = self.alias("x");
                let equality = values.iter().all(full_equality);
                let fence = self.open_fence();
                self.probe(a, table.table(), &x, *negate, equality);
                self.match_body(&x, keys, values);
                self.close_probe(fence);
            }
            SearchParam::Missing {
                table,
                keys,
                missing,
            } => {
                let x = self.alias("x");
                let fence = self.open_fence();
                self.probe(a, table.table(), &x, *missing, false);
                self.push(&x).push(".param");
                self.key_list(keys);
                self.close_probe(fence);
            }
            SearchParam::Composite { components, values } => {
                let (from, aliases) = self.composite_from(components);
                let fence = self.open_fence();
                self.push(&format!(
                    "EXISTS (SELECT 1 FROM {from} WHERE {}.rid = {a}.rid AND ",
                    aliases[0]
                ));
                if self.sql.dialect() == Dialect::Sqlite {
                    self.push("+");
                }
                self.composite_body(components, &aliases, values);
                self.close_probe(fence);
            }
            SearchParam::Chain {
                keys,
                target_type,
                inner,
            } => {
                let x = self.alias("x");
                let fence = self.open_fence();
                self.probe(a, "search_reference", &x, false, false);
                self.chain_body(&x, keys, target_type, inner);
                self.close_probe(fence);
            }
            SearchParam::Has {
                source_type,
                keys,
                inner,
            } => {
                let x = self.alias("x");
                let s = self.alias("r");
                let fence = self.open_fence();
                if filter {
                    self.push(&format!(
                        "EXISTS (SELECT 1 FROM search_reference {x} JOIN resources {s} ON {s}.rid = {x}.rid WHERE {x}.target_id = {a}.id AND {x}.param"
                    ));
                } else {
                    self.push(a).push(&format!(
                        ".id IN (SELECT {x}.target_id FROM search_reference {x} JOIN resources {s} ON {s}.rid = {x}.rid WHERE {x}.param"
                    ));
                }
                self.key_list(keys);
                self.push(&format!(" AND {x}.target_type = "));
                match res_type {
                    Some(t) => {
                        self.text(t);
                    }
                    None => {
                        self.push(a).push(".res_type");
                    }
                }
                self.push(&format!(" AND {s}.res_type = "))
                    .text(source_type)
                    .push(&format!(" AND {s}.deleted = "))
                    .bind(Bind::Bool(false))
                    .push(" AND ");
                // Probed per referring resource: a driving sub-select here is collected
                // whole for every candidate (SQLite: 45,000 body-weight rids, 20 ms, where
                // the probes take 0.1 ms).
                self.param(&s, Some(source_type), inner, true);
                // PostgreSQL turns an `EXISTS` into a semi-join, which first collects every
                // referring resource (all patients with a body weight: 0.6 s at 1M); `OFFSET
                // 0` keeps it a correlated probe that stops at the first referrer, so a page
                // of candidates walked in rid order is answered in ~1.5 ms (PostgreSQL
                // planner: `simplify_EXISTS_query` gives up on a query with an OFFSET).
                if filter && self.sql.dialect() == Dialect::Postgres && !fence {
                    self.push(" OFFSET 0");
                }
                self.close_probe(fence);
            }
            SearchParam::Or(list) => {
                self.push("(");
                for (i, p) in list.iter().enumerate() {
                    if i > 0 {
                        self.push(" OR ");
                    }
                    self.param(a, res_type, p, filter);
                }
                self.push(")");
            }
            SearchParam::Resource { res_type, id } => {
                self.push("(")
                    .push(a)
                    .push(".res_type = ")
                    .text(res_type)
                    .push(" AND ")
                    .push(a)
                    .push(".id = ")
                    .text(id)
                    .push(")");
            }
        }
    }

    /// One value condition on the index row alias `x`.
    fn criterion(&mut self, x: &str, c: &Criterion) {
        match c {
            Criterion::StringStarts(s) => self.starts_with(&format!("{x}.value"), s),
            Criterion::StringExact(s) => {
                self.push(x).push(".exact = ").text(s);
            }
            Criterion::StringContains(s) => {
                let pattern = format!("%{}%", escape_like(s));
                self.push(x)
                    .push(".value LIKE ")
                    .text(&pattern)
                    .push(" ESCAPE '\\'");
            }
            Criterion::Token(m) => self.token(x, m),
            Criterion::Date(b) => self.date_range(x, b),
            Criterion::Number(b) => self.number(&format!("{x}.value"), b),
            Criterion::Quantity {
                bound,
                system,
                code,
                canonical,
            } => {
                self.push("((");
                match code {
                    Some(code) => {
                        self.push(x).push(".code = ").text(code);
                        if let Some(s) = system {
                            self.push(" AND ").push(x).push(".system = ").text(s);
                        }
                    }
                    None => {
                        self.push("1 = 1");
                    }
                }
                self.push(" AND ");
                self.number(&format!("{x}.value"), bound);
                self.push(")");
                if let Some((canon, unit)) = canonical {
                    self.push(" OR (").push(x).push(".canon_code = ").text(unit);
                    self.push(" AND ");
                    self.number(&format!("{x}.canon_value"), canon);
                    self.push(")");
                }
                self.push(")");
            }
            Criterion::UriExact(s) => {
                self.push(x).push(".value = ").text(s);
            }
            Criterion::UriBelow(s) => self.starts_with(&format!("{x}.value"), s),
            Criterion::UriAbove(prefixes) => {
                self.push(x).push(".value IN (");
                for (i, p) in prefixes.iter().enumerate() {
                    if i > 0 {
                        self.push(", ");
                    }
                    self.text(p);
                }
                self.push(")");
            }
            Criterion::Reference { target_type, id } => {
                self.push("(").push(x).push(".target_id = ").text(id);
                if let Some(t) = target_type {
                    self.push(" AND ").push(x).push(".target_type = ").text(t);
                }
                self.push(")");
            }
            Criterion::ReferenceUrl(url) => {
                self.push(x).push(".url = ").text(url);
            }
        }
    }

    /// `column` starts with `prefix`, as a range so the index serves it (byte order:
    /// `COLLATE "C"` on PostgreSQL, BINARY on SQLite).
    fn starts_with(&mut self, column: &str, prefix: &str) {
        let upper = format!("{prefix}\u{10FFFF}");
        self.push("(")
            .push(column)
            .push(" >= ")
            .text(prefix)
            .push(" AND ")
            .push(column)
            .push(" < ")
            .text(&upper)
            .push(")");
    }

    fn token(&mut self, x: &str, m: &TokenMatch) {
        self.push("(1 = 1");
        match &m.system {
            TokenSystem::Any => {}
            TokenSystem::None => {
                self.push(" AND ").push(x).push(".system IS NULL");
            }
            TokenSystem::Is(s) => {
                self.push(" AND ").push(x).push(".system = ").text(s);
            }
        }
        if let Some(v) = &m.value {
            self.push(" AND ").push(x).push(".code = ").text(v);
        }
        self.push(")");
    }

    /// A date parameter against a stored range `[low, high)` (search.html#prefix: the
    /// search value is the range its precision implies).
    fn date_range(&mut self, x: &str, b: &DateBound) {
        let (sl, sh) = (b.low, b.high);
        let lo = format!("{x}.low");
        let hi = format!("{x}.high");
        let cmp = |c: &mut Compiler, col: &str, op: &str, v: i64| {
            c.push(col).push(op).bind(Bind::Int(v));
        };
        self.push("(");
        match b.prefix {
            // eq: the search range fully contains the resource range.
            Prefix::Eq => {
                cmp(self, &lo, " >= ", sl);
                self.push(" AND ");
                cmp(self, &hi, " <= ", sh);
            }
            // ne: the search range does not fully contain it.
            Prefix::Ne => {
                cmp(self, &lo, " < ", sl);
                self.push(" OR ");
                cmp(self, &hi, " > ", sh);
            }
            // gt: the resource range extends above the search range.
            Prefix::Gt => cmp(self, &hi, " > ", sh),
            // lt: the resource range extends below the search range.
            Prefix::Lt => cmp(self, &lo, " < ", sl),
            // ge: gt, or contained (eq).
            Prefix::Ge => {
                cmp(self, &hi, " > ", sh);
                self.push(" OR (");
                cmp(self, &lo, " >= ", sl);
                self.push(" AND ");
                cmp(self, &hi, " <= ", sh);
                self.push(")");
            }
            // le: lt, or contained (eq).
            Prefix::Le => {
                cmp(self, &lo, " < ", sl);
                self.push(" OR (");
                cmp(self, &lo, " >= ", sl);
                self.push(" AND ");
                cmp(self, &hi, " <= ", sh);
                self.push(")");
            }
            // sa: starts after the search range ends.
            Prefix::Sa => cmp(self, &lo, " >= ", sh),
            // eb: ends before the search range starts.
            Prefix::Eb => cmp(self, &hi, " <= ", sl),
            // ap: overlaps the search range widened by the margin.
            Prefix::Ap => {
                cmp(self, &lo, " < ", sh.saturating_add(b.approx_margin));
                self.push(" AND ");
                cmp(self, &hi, " > ", sl.saturating_sub(b.approx_margin));
            }
        }
        self.push(")");
    }

    /// A date parameter against a point-in-time column (`_lastUpdated`).
    fn date_point(&mut self, column: &str, b: &DateBound) {
        let (low, high) = (b.low, b.high);
        let cmp = |c: &mut Compiler, op: &str, v: i64| {
            c.push(column).push(op).bind(Bind::Int(v));
        };
        self.push("(");
        match b.prefix {
            Prefix::Eq => {
                cmp(self, " >= ", low);
                self.push(" AND ");
                cmp(self, " < ", high);
            }
            Prefix::Ne => {
                cmp(self, " < ", low);
                self.push(" OR ");
                cmp(self, " >= ", high);
            }
            Prefix::Gt | Prefix::Sa => cmp(self, " >= ", high),
            Prefix::Lt | Prefix::Eb => cmp(self, " < ", low),
            Prefix::Ge => cmp(self, " >= ", low),
            Prefix::Le => cmp(self, " < ", high),
            Prefix::Ap => {
                cmp(self, " >= ", low.saturating_sub(b.approx_margin));
                self.push(" AND ");
                cmp(self, " < ", high.saturating_add(b.approx_margin));
            }
        }
        self.push(")");
    }

    /// A number parameter against a point value (search.html#number): `eq`/`ne` use the
    /// search value's precision range, the others compare with the value itself; `ap` is
    /// ±10 %.
    fn number(&mut self, column: &str, b: &NumberBound) {
        let cmp = |c: &mut Compiler, op: &str, v: f64| {
            c.push(column).push(op).bind(Bind::Float(v));
        };
        self.push("(");
        match b.prefix {
            Prefix::Eq => {
                cmp(self, " >= ", b.low);
                self.push(" AND ");
                cmp(self, " < ", b.high);
            }
            Prefix::Ne => {
                cmp(self, " < ", b.low);
                self.push(" OR ");
                cmp(self, " >= ", b.high);
            }
            Prefix::Gt | Prefix::Sa => cmp(self, " > ", b.value),
            Prefix::Lt | Prefix::Eb => cmp(self, " < ", b.value),
            Prefix::Ge => cmp(self, " >= ", b.value),
            Prefix::Le => cmp(self, " <= ", b.value),
            Prefix::Ap => {
                let margin = b.value.abs() * 0.1;
                cmp(self, " >= ", b.value - margin);
                self.push(" AND ");
                cmp(self, " <= ", b.value + margin);
            }
        }
        self.push(")");
    }

    /// The SQL expression of a sort key on `r`.
    fn sort_expr(&mut self, key: &SortKey) {
        match &key.by {
            SortBy::Id => {
                self.push("r.id");
            }
            SortBy::LastUpdated => {
                self.push("r.last_updated");
            }
            SortBy::Indexed { table, keys } => {
                let column = match table {
                    IndexTable::String | IndexTable::Uri => "value",
                    IndexTable::Token => "code",
                    IndexTable::Date => {
                        if key.descending {
                            "high"
                        } else {
                            "low"
                        }
                    }
                    IndexTable::Number | IndexTable::Quantity => "value",
                    IndexTable::Reference => "target_id",
                };
                let agg = if key.descending { "MAX" } else { "MIN" };
                let x = self.alias("o");
                let plus = if self.sql.dialect() == Dialect::Sqlite {
                    "+"
                } else {
                    ""
                };
                self.push(&format!(
                    "(SELECT {agg}({x}.{column}) FROM {} {x} WHERE {x}.rid = r.rid AND {plus}{x}.param",
                    table.table()
                ));
                self.key_list(keys);
                self.push(")");
            }
        }
    }

    /// Binds a cursor value of a sort key.
    fn sort_value(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.text(s),
            Value::Number(n) => match n.as_i64() {
                Some(i) => self.bind(Bind::Int(i)),
                None => self.bind(Bind::Float(n.as_f64().unwrap_or(0.0))),
            },
            _ => self.bind(Bind::OptText(None)),
        };
    }

    /// The keyset condition: rows after (or, backward, before) the cursor position in
    /// (sort keys…, rid) order, nulls last.
    fn keyset(&mut self, sort: &[SortKey], cursor: &Cursor) {
        self.keyset_from(sort, cursor, 0);
    }

    fn keyset_from(&mut self, sort: &[SortKey], cursor: &Cursor, i: usize) {
        if i == sort.len() || i >= cursor.values.len() {
            self.push(if cursor.backward {
                "r.rid < "
            } else {
                "r.rid > "
            })
            .bind(Bind::Int(cursor.rid));
            return;
        }
        let key = &sort[i];
        let v = &cursor.values[i];
        self.push("(");
        // Strictly past the position on this key.
        match (v.is_null(), cursor.backward) {
            (true, false) => {
                self.push("1 = 0");
            }
            (true, true) => {
                self.sort_expr(key);
                self.push(" IS NOT NULL");
            }
            (false, backward) => {
                let op = match (key.descending, backward) {
                    (false, false) | (true, true) => " > ",
                    (true, false) | (false, true) => " < ",
                };
                self.push("(");
                self.sort_expr(key);
                self.push(op);
                self.sort_value(v);
                if !backward {
                    self.push(" OR ");
                    self.sort_expr(key);
                    self.push(" IS NULL");
                }
                self.push(")");
            }
        }
        // Or equal on this key and past it on the next ones.
        self.push(" OR (");
        self.sort_expr(key);
        if v.is_null() {
            self.push(" IS NULL");
        } else {
            self.push(" = ");
            self.sort_value(v);
        }
        self.push(" AND ");
        self.keyset_from(sort, cursor, i + 1);
        self.push("))");
    }
}

/// `(res_type, id)` pairs grouped by type, in first-seen order.
fn by_type(keys: &[(String, String)]) -> Vec<(&str, Vec<&str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (t, id) in keys {
        match out.iter_mut().find(|(x, _)| x == t) {
            Some((_, ids)) => ids.push(id),
            None => out.push((t, vec![id])),
        }
    }
    out
}

/// The index of the parameter that drives a query (see [`Compiler::params`]).
fn driver(params: &[SearchParam]) -> Option<usize> {
    params
        .iter()
        .enumerate()
        .filter(|(_, p)| can_drive(p))
        .min_by_key(|(_, p)| selectivity(p))
        .map(|(i, _)| i)
}

/// Whether a driving parameter selects by `rid` (an index sub-select) rather than by id.
fn drives_by_rid(p: &SearchParam) -> bool {
    match p {
        SearchParam::Id(_) | SearchParam::Resource { .. } | SearchParam::Has { .. } => false,
        SearchParam::Or(list) => list.iter().all(drives_by_rid),
        _ => true,
    }
}

/// The driving parameter of `q` when a page or count can be computed from that parameter's
/// index rows alone, before any `resources` row is read: no `_sort` (so the order is rid,
/// the order of every index after its equality columns), one resource type, a driver whose
/// keys are scoped to that type (index rows exist only for the current, non-deleted
/// version of a resource of the key's type, so they need no check against `resources`),
/// and other parameters that are probes by rid (not `_id`, `_lastUpdated` or `_has`, which
/// read `resources` columns). `paged`: for a page (not a count).
fn pushdown(dialect: Dialect, q: &SearchQuery, paged: bool) -> Option<usize> {
    if q.res_type.is_empty() || !q.sort.is_empty() {
        return None;
    }
    let i = driver(&q.params)?;
    let keys: Vec<ParamKey> = match &q.params[i] {
        SearchParam::Match {
            keys,
            negate: false,
            ..
        } => keys.clone(),
        // A chain's rows come from one index range per target, not in rid order: they are
        // deduplicated and sorted before the page is cut. PostgreSQL does that faster than
        // it joins every candidate to `resources` (chain at 1M, 16 clients: p95 121 → 30
        // ms). SQLite answered the `rid IN (…)` form faster (38 ms, against 54 ms pushed
        // down) until a page of a lone chain read only a page of rows per target
        // ([`Compiler::chain_per_target`]); a count, or a chain with other parameters,
        // keeps that form there.
        SearchParam::Chain { keys, .. }
            if dialect == Dialect::Postgres || (paged && q.params.len() == 1) =>
        {
            keys.clone()
        }
        SearchParam::Composite { components, .. } => components.iter().map(|(_, k)| *k).collect(),
        _ => return None,
    };
    let scoped = keys.iter().all(|k| !crate::search::is_resource_scoped(*k));
    let probes = q
        .params
        .iter()
        .enumerate()
        .all(|(j, p)| j == i || by_rid_only(p));
    (scoped && probes).then_some(i)
}

/// Whether a parameter is a set of index rows ([`Compiler::rid_select`]): a match without
/// `:not`, a composite, a chain.
fn selects_rows(p: &SearchParam) -> bool {
    matches!(
        p,
        SearchParam::Match { negate: false, .. }
            | SearchParam::Composite { .. }
            | SearchParam::Chain { .. }
    )
}

/// Whether a parameter's condition reads only `rid` of the resource it tests.
fn by_rid_only(p: &SearchParam) -> bool {
    match p {
        SearchParam::Match { .. }
        | SearchParam::Missing { .. }
        | SearchParam::Composite { .. }
        | SearchParam::Chain { .. } => true,
        SearchParam::Or(list) => list.iter().all(by_rid_only),
        _ => false,
    }
}

/// `SELECT DISTINCT k.rid AS rid FROM (<driver's index rows>) k WHERE <the other
/// parameters, probed by k.rid>` (see [`pushdown`]); with a cursor, only rids past it.
///
/// On PostgreSQL, when the driver is a reference to one resource (selectivity ≤ 1: a
/// patient's observations, tens to hundreds of rows), the driver sub-select and each probe
/// end with `OFFSET 0`, which keeps the planner from pulling them up into joins (PostgreSQL
/// planner: `is_simple_subquery` and `simplify_EXISTS_query` give up on a query with an
/// OFFSET). Without the fence the plan depended on the statistics sample: reference and
/// token values are correlated with their parameter, so `(param, target_id)` was estimated
/// at ~20,000 rows for 80 and `(param, system, code)` at ~800 for 44,863, and some samples
/// turned `Observation?patient&code&date` into a hash semi-join over every body weight
/// (0.1–2.6 s at 1M resources instead of ~1 ms; docs/performance/2026-12-06-run-ahead.md).
/// Fenced, the driver's rows are collected first and each is probed through the owner
/// indexes, whatever the estimates.
///
/// A page (`limit` given) of a query whose only parameter is a chain takes at most `limit`
/// distinct rids per target resource ([`Compiler::chain_per_target`]): each of the page's
/// rids is among the first `limit` of its target's, so the rest of each target's rows are
/// never read. `Observation?subject:Patient.name=…` at 1M resources: 91 patients, 8,736
/// reference rows collected and sorted before, 1,911 with this (PostgreSQL 4.4 → 2.5 ms,
/// SQLite 5 → 2 ms on the server).
fn candidates(
    c: &mut Compiler,
    q: &SearchQuery,
    driver: usize,
    cursor: Option<&Cursor>,
    limit: Option<usize>,
) {
    let fence = c.sql.dialect() == Dialect::Postgres && selectivity(&q.params[driver]) <= 1;
    c.push("SELECT DISTINCT k.rid AS rid FROM ");
    match (&q.params[driver], limit) {
        (
            SearchParam::Chain {
                keys,
                target_type,
                inner,
            },
            Some(limit),
        ) if q.params.len() == 1 => {
            c.chain_per_target(keys, target_type, inner, cursor, limit);
        }
        _ => {
            c.push("(");
            c.rid_select(&q.params[driver]);
            if fence {
                c.push(" OFFSET 0");
            }
            c.push(")");
        }
    }
    c.push(" k WHERE ");
    let res_type = Some(q.res_type.as_str());
    for (j, p) in q.params.iter().enumerate() {
        if j != driver {
            c.fence_probes = fence;
            c.param("k", res_type, p, true);
            c.fence_probes = false;
            c.push(" AND ");
        }
    }
    match cursor {
        Some(cursor) => {
            c.push(if cursor.backward {
                "k.rid < "
            } else {
                "k.rid > "
            })
            .bind(Bind::Int(cursor.rid));
        }
        None => {
            c.push("1 = 1");
        }
    }
}

/// Whether a criterion fixes every column of its lookup index before `rid` (so a probe for
/// one resource is a single index seek).
fn full_equality(c: &Criterion) -> bool {
    match c {
        Criterion::Token(m) => m.value.is_some() && !matches!(m.system, TokenSystem::Any),
        Criterion::Reference { target_type, .. } => target_type.is_some(),
        Criterion::UriExact(_) => true,
        _ => false,
    }
}

/// Whether a parameter can drive a query as an index sub-select (`:missing` and `:not`
/// only exclude, and `_lastUpdated` is a column of `resources`). `_has` does not drive:
/// "patients with an observation of code X" usually matches densely, and probing each
/// candidate in id order stops after one page, where collecting every referring
/// resource first does not (1.5 s for a common code at 1M resources).
fn can_drive(p: &SearchParam) -> bool {
    match p {
        SearchParam::Match { negate, .. } => !negate,
        SearchParam::Missing { .. } | SearchParam::LastUpdated(_) | SearchParam::Has { .. } => {
            false
        }
        SearchParam::Or(list) => list.iter().all(can_drive),
        _ => true,
    }
}

/// A rough rank of how few resources a parameter matches (lower = fewer), to pick the
/// driving sub-select without table statistics: ids and references to one resource first,
/// then codes and exact strings, prefixes, composites, chains, and ranges last.
fn selectivity(p: &SearchParam) -> u8 {
    // The rank is the largest over the parameter's tree: an OR matches as many as its
    // broadest member, a chain or `_has` at least 4. Walked with a stack, not by recursion:
    // rustc 1.95's release build miscompiled the recursive form (a reference ranked 1
    // compared greater than 1 in its callers; see
    // `selectivity_ranks_a_reference_below_a_code`).
    let mut rank = 0;
    let mut pending = vec![p];
    while let Some(p) = pending.pop() {
        let here = match p {
            SearchParam::Id(_) | SearchParam::Resource { .. } => 0,
            SearchParam::Match { values, .. } => {
                values.iter().map(criterion_selectivity).max().unwrap_or(9)
            }
            SearchParam::Composite { .. } => 3,
            SearchParam::Chain { inner, .. } | SearchParam::Has { inner, .. } => {
                pending.push(inner);
                4
            }
            SearchParam::Or(list) if list.is_empty() => 9,
            SearchParam::Or(list) => {
                pending.extend(list.iter());
                0
            }
            SearchParam::LastUpdated(_) | SearchParam::Missing { .. } => 9,
        };
        rank = rank.max(here);
    }
    rank
}

/// The rank of one value of a parameter (see [`selectivity`]).
fn criterion_selectivity(c: &Criterion) -> u8 {
    match c {
        Criterion::Reference { .. } | Criterion::ReferenceUrl(_) => 1,
        Criterion::Token(m) if m.value.is_some() => 2,
        Criterion::StringExact(_) | Criterion::UriExact(_) => 2,
        Criterion::StringStarts(s) if s.chars().count() >= 3 => 3,
        Criterion::StringStarts(_) | Criterion::StringContains(_) => 5,
        Criterion::UriBelow(_) | Criterion::UriAbove(_) => 4,
        Criterion::Token(_) => 6,
        Criterion::Date(_) | Criterion::Number(_) | Criterion::Quantity { .. } => 7,
    }
}

/// Escapes `%`, `_` and `\` for `LIKE … ESCAPE '\'`.
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The WHERE clause shared by pages and counts.
///
/// On SQLite, when a parameter drives the query by `rid`, the type test is written
/// `+r.res_type = ?`: the unary `+` keeps SQLite from scanning every resource of the type
/// through `(res_type, id)` (which it prefers, to avoid sorting) and checking each against
/// the sub-select; instead it starts from the sub-select's rows (SQLite query optimizer
/// overview, "Disqualifying WHERE clause terms using unary-+").
fn push_where(c: &mut Compiler, q: &SearchQuery) {
    c.push(" WHERE ");
    let by_rid = driver(&q.params)
        .is_some_and(|i| drives_by_rid(&q.params[i]) && selectivity(&q.params[i]) <= 2);
    if c.sql.dialect() == Dialect::Sqlite && by_rid && !q.res_type.is_empty() {
        c.push("+");
    }
    c.type_filter("r", q);
    c.push(" AND r.deleted = ").bind(Bind::Bool(false));
    let res_type = (!q.res_type.is_empty()).then_some(q.res_type.as_str());
    if !q.params.is_empty() {
        c.push(" AND ");
        c.params("r", res_type, &q.params);
    }
}

/// A page of a search: `limit` rows after the cursor, in (sort keys…, rid) order (reversed
/// for a backward cursor: the caller reverses the rows back).
///
/// Without `_sort` the order is `rid`, i.e. creation order (R4 search.html#sort leaves the
/// order of an unsorted search to the server). Every index is ordered by `rid` after its
/// equality columns, so a page of a broad search is read in index order and stops after
/// `limit` matches, instead of collecting and sorting every match by id (`code=…&
/// value-quantity=gt100` over 45,000 body weights at 1M resources: 185 ms → 10 ms on
/// PostgreSQL; docs/performance/).
///
/// [`Select::Rows`] pages `resources` alone in a sub-select and joins `resource_versions`
/// to the page's rows only (not to every candidate before the sort).
pub fn search(dialect: Dialect, q: &SearchQuery, select: Select, limit: usize) -> Sql {
    let mut c = Compiler::new(dialect, "SELECT ");
    let backward = q.cursor.as_ref().is_some_and(|cur| cur.backward);
    if let Some(driver) = pushdown(dialect, q, true) {
        // The page's rids straight from the index rows, in index (rid) order, stopping
        // after `limit`; `resources` and `resource_versions` are read for those only.
        let direction = if backward { " DESC" } else { " ASC" };
        c.push(match select {
            Select::Ids => "r.id",
            Select::Rows => super::sql::version_columns(dialect),
        });
        c.push(", r.rid AS rid FROM (");
        candidates(&mut c, q, driver, q.cursor.as_ref(), Some(limit));
        c.push(" ORDER BY k.rid").push(direction);
        c.push(" LIMIT ").bind(Bind::Int(limit as i64));
        c.push(") p JOIN resources r ON r.rid = p.rid");
        if select == Select::Rows {
            c.push(
                " JOIN resource_versions v \
                 ON v.res_type = r.res_type AND v.id = r.id AND v.version_id = r.version_id",
            );
        }
        c.push(" WHERE r.deleted = ").bind(Bind::Bool(false));
        c.push(" ORDER BY r.rid").push(direction);
        return c.sql;
    }
    let directions: Vec<&str> = q
        .sort
        .iter()
        .map(|key| match (key.descending == backward, backward) {
            (true, false) => " ASC NULLS LAST",
            (true, true) => " ASC NULLS FIRST",
            (false, false) => " DESC NULLS LAST",
            (false, true) => " DESC NULLS FIRST",
        })
        .collect();
    let rid_direction = if backward { " DESC" } else { " ASC" };
    match select {
        Select::Ids => {
            c.push("r.id");
        }
        Select::Rows => {
            c.push(super::sql::version_columns(dialect));
            c.push(", p.rid AS rid");
            for i in 0..q.sort.len() {
                c.push(&format!(", p.s{i} AS s{i}"));
            }
            c.push(" FROM (SELECT r.rid, r.res_type, r.id, r.version_id");
            for (i, key) in q.sort.iter().enumerate() {
                c.push(", ");
                c.sort_expr(key);
                c.push(&format!(" AS s{i}"));
            }
        }
    }
    c.push(" FROM resources r");
    push_where(&mut c, q);
    if let Some(cursor) = &q.cursor {
        c.push(" AND ");
        c.keyset(&q.sort, cursor);
    }
    c.push(" ORDER BY ");
    for (key, direction) in q.sort.iter().zip(&directions) {
        c.sort_expr(key);
        c.push(direction).push(", ");
    }
    // SQLite: with a selective driving sub-select, order on `+r.rid` so that the planner
    // does not walk the type's (res_type, rid) index in order to skip a sort of what is
    // usually a short list (unary `+`: SQLite query optimizer overview).
    let rid_key = if dialect == Dialect::Sqlite
        && driver(&q.params).is_some_and(|i| selectivity(&q.params[i]) <= 2)
    {
        "+r.rid"
    } else {
        "r.rid"
    };
    c.push(rid_key).push(rid_direction);
    c.push(" LIMIT ").bind(Bind::Int(limit as i64));
    if select == Select::Rows {
        c.push(
            ") p JOIN resource_versions v \
             ON v.res_type = p.res_type AND v.id = p.id AND v.version_id = p.version_id \
             ORDER BY ",
        );
        for (i, direction) in directions.iter().enumerate() {
            c.push(&format!("p.s{i}")).push(direction).push(", ");
        }
        c.push("p.rid").push(rid_direction);
    }
    c.sql
}

/// `SELECT COUNT(*) AS n` of a search (for `_total=accurate|estimate` and
/// `_summary=count`).
pub fn count(dialect: Dialect, q: &SearchQuery) -> Sql {
    if let Some(driver) = pushdown(dialect, q, false) {
        // Counted from the index rows alone (see [`pushdown`]).
        let mut c = Compiler::new(dialect, "SELECT COUNT(*) AS n FROM (");
        // Every match, whatever page the query is on.
        candidates(&mut c, q, driver, None, None);
        c.push(") p");
        return c.sql;
    }
    let mut c = Compiler::new(dialect, "SELECT COUNT(*) AS n FROM resources r");
    push_where(&mut c, q);
    c.sql
}

/// The resources an `_include`/`_revinclude` adds for the resources `from`
/// (`(res_type, id)` pairs), current and not deleted, at most `limit` rows.
pub fn include(dialect: Dialect, inc: &Include, from: &[(String, String)], limit: usize) -> Sql {
    let mut c = Compiler::new(dialect, "SELECT DISTINCT ");
    c.push(super::sql::version_columns(dialect));
    if inc.reverse {
        // Resources of source_type whose reference parameter points at one of `from`.
        c.push(
            " FROM search_reference x JOIN resources r ON r.rid = x.rid \
             JOIN resource_versions v ON v.res_type = r.res_type AND v.id = r.id \
             AND v.version_id = r.version_id WHERE r.deleted = ",
        )
        .bind(Bind::Bool(false))
        .push(" AND r.res_type = ")
        .text(&inc.source_type);
        if !inc.keys.is_empty() {
            c.push(" AND x.param");
            c.key_list(&inc.keys);
        }
        c.push(" AND (");
        for (i, (t, ids)) in by_type(from).iter().enumerate() {
            if i > 0 {
                c.push(" OR ");
            }
            c.push("(x.target_type = ")
                .text(t)
                .push(" AND x.target_id IN (");
            c.text_list(ids);
            c.push("))");
        }
        c.push(")");
    } else {
        // Targets of the reference parameter of the `from` resources of source_type.
        c.push(
            " FROM search_reference x \
             JOIN resources r ON r.res_type = x.target_type AND r.id = x.target_id \
             JOIN resource_versions v ON v.res_type = r.res_type AND v.id = r.id \
             AND v.version_id = r.version_id WHERE r.deleted = ",
        )
        .bind(Bind::Bool(false));
        if !inc.keys.is_empty() {
            // On SQLite `+x.param` keeps the probe on the owner index (rid, param) of the
            // page's resources rather than every row of the parameter.
            c.push(if dialect == Dialect::Sqlite {
                " AND +x.param"
            } else {
                " AND x.param"
            });
            c.key_list(&inc.keys);
        }
        if let Some(t) = &inc.target_type {
            c.push(" AND x.target_type = ").text(t);
        }
        // The sources' rids through the unique (res_type, id) index, one IN list per type.
        c.push(" AND x.rid IN (SELECT s.rid FROM resources s WHERE ");
        for (i, (t, ids)) in by_type(from).iter().enumerate() {
            if i > 0 {
                c.push(" OR ");
            }
            c.push("(s.res_type = ").text(t).push(" AND s.id IN (");
            c.text_list(ids);
            c.push("))");
        }
        c.push(")");
    }
    c.push(" LIMIT ").bind(Bind::Int(limit as i64));
    c.sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::SearchQuery;

    #[test]
    fn keyset_after_a_null_sort_value_only_continues_among_nulls() {
        let mut q = SearchQuery::new("Patient");
        q.sort = vec![SortKey {
            by: SortBy::LastUpdated,
            descending: false,
        }];
        q.cursor = Some(Cursor {
            backward: false,
            values: vec![Value::Null],
            rid: 7,
        });
        let (text, _) = search(Dialect::Sqlite, &q, Select::Rows, 10).finish();
        assert!(text.contains("(1 = 0 OR (r.last_updated IS NULL AND r.rid > ?))"));
    }

    fn query(res_type: &str, pairs: &[(&str, &str)]) -> SearchQuery {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::search::parse_query(res_type, &pairs, true).expect("a valid query")
    }

    #[test]
    fn unsorted_search_on_a_type_scoped_driver_pages_from_its_index_rows() {
        let q = query(
            "Observation",
            &[
                ("code", "http://loinc.org|29463-7"),
                ("value-quantity", "gt100"),
            ],
        );
        let (text, _) = search(Dialect::Postgres, &q, Select::Rows, 21).finish();
        assert!(
            text.contains(
                "FROM (SELECT DISTINCT k.rid AS rid FROM (SELECT x1.rid AS rid FROM search_token x1"
            ),
            "{text}"
        );
        assert!(
            text.contains("EXISTS (SELECT 1 FROM search_quantity"),
            "{text}"
        );
    }

    #[test]
    fn selectivity_ranks_a_reference_below_a_code() {
        // rustc 1.95 in release builds miscompiled the recursive form of `selectivity`:
        // this held in debug builds and failed under `cargo test --release`.
        let q = query(
            "Observation",
            &[
                ("patient", "Patient/p1"),
                ("code", "http://loinc.org|29463-7"),
                ("subject:Patient.name", "smi"),
                ("date", "ge2019,le2010"),
            ],
        );
        let ranks: Vec<u8> = q.params.iter().map(selectivity).collect();
        assert_eq!(ranks, [1, 2, 4, 7], "{q:?}");
        assert!(selectivity(&q.params[0]) <= 1);
        assert_eq!(driver(&q.params), Some(0));
    }

    #[test]
    fn postgres_fences_a_reference_driver_and_its_probes() {
        let q = query(
            "Observation",
            &[
                ("patient", "Patient/p1"),
                ("code", "http://loinc.org|29463-7"),
                ("date", "ge2019"),
            ],
        );
        let (text, _) = search(Dialect::Postgres, &q, Select::Rows, 21).finish();
        // The driver sub-select and both probes, and nothing else.
        assert_eq!(text.matches(" OFFSET 0)").count(), 3, "{text}");
        assert!(
            text.contains("FROM search_reference x1 WHERE x1.param"),
            "the reference drives: {text}"
        );
        let (text, _) = search(Dialect::Sqlite, &q, Select::Rows, 21).finish();
        assert!(!text.contains("OFFSET"), "{text}");
        // A code driver keeps PostgreSQL's own choice of plan.
        let q = query(
            "Observation",
            &[
                ("code", "http://loinc.org|29463-7"),
                ("value-quantity", "gt100"),
            ],
        );
        let (text, _) = search(Dialect::Postgres, &q, Select::Rows, 21).finish();
        assert!(!text.contains("OFFSET"), "{text}");
    }

    #[test]
    fn a_page_of_a_lone_chain_reads_a_page_per_target() {
        let q = query("Observation", &[("subject:Patient.name", "smi")]);
        let (text, _) = search(Dialect::Postgres, &q, Select::Ids, 21).finish();
        assert!(
            text.contains(") g CROSS JOIN LATERAL (SELECT DISTINCT x2.rid"),
            "{text}"
        );
        assert!(text.contains("ORDER BY x2.rid ASC LIMIT $"), "{text}");
        // SQLite has no LATERAL: the target's 21st rid bounds its range.
        let (text, _) = search(Dialect::Sqlite, &q, Select::Ids, 21).finish();
        assert!(
            text.contains("x2.rid <= COALESCE((SELECT DISTINCT y3.rid"),
            "{text}"
        );
        assert!(
            text.contains("ORDER BY y3.rid ASC LIMIT 1 OFFSET ?"),
            "{text}"
        );
        // Counts read every row.
        for dialect in [Dialect::Postgres, Dialect::Sqlite] {
            let (text, _) = count(dialect, &q).finish();
            assert!(!text.contains("LATERAL"), "{text}");
            assert!(!text.contains("COALESCE"), "{text}");
        }
    }

    #[test]
    fn resource_level_driver_sorted_search_and_has_read_resources() {
        for q in [
            query("Observation", &[("_tag", "http://x|y")]),
            query(
                "Observation",
                &[("code", "http://loinc.org|1"), ("_sort", "date")],
            ),
            query(
                "Patient",
                &[("name", "smi"), ("_has:Observation:patient:code", "1")],
            ),
        ] {
            assert_eq!(pushdown(Dialect::Postgres, &q, true), None, "{q:?}");
        }
    }

    #[test]
    fn count_from_index_rows_ignores_the_page_cursor() {
        let mut q = query("Observation", &[("code", "http://loinc.org|29463-7")]);
        q.cursor = Some(Cursor {
            backward: false,
            values: Vec::new(),
            rid: 99,
        });
        let (text, binds) = count(Dialect::Sqlite, &q).finish();
        assert!(
            text.starts_with("SELECT COUNT(*) AS n FROM (SELECT DISTINCT k.rid"),
            "{text}"
        );
        assert!(!text.contains("k.rid >"), "{text}");
        assert_eq!(binds.len(), 3, "param, system, code");
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(escape_like("50%_a\\"), "50\\%\\_a\\\\");
    }
}
