//! The [`Store`](super::Store) and [`StoreTx`](super::StoreTx) implementations shared by
//! both backends.
//!
//! Reads, searches, the transaction logic (queueing, flushing in multi-row statements,
//! conflict mapping) and the statement helpers are the same on SQLite and PostgreSQL; only
//! the sqlx types and the pools differ. Each backend module invokes `impl_sql_helpers!`,
//! `impl_store!` and `impl_store_tx!`, where `D` and its pools are defined.

/// Implements `StoreTx` (and its `flush`) for a backend's transaction type `$tx`, whose HL7
/// message SQL lives in `hl7_messages::$hl7`.
macro_rules! impl_store_tx {
    ($tx:ident, $hl7:ident) => {
        /// Current versions of `keys` on `conn`, locked (`FOR UPDATE`, PostgreSQL) when
        /// `lock` ([`StoreTx::current_versions`], [`Store::current_versions`]).
        async fn current_versions_on(
            conn: &mut Conn,
            keys: &[ResourceKey],
            lock: bool,
        ) -> Result<HashMap<ResourceKey, CurrentVersion>, StoreError> {
            let mut out = HashMap::new();
            for chunk in keys.chunks(sql::CHUNK) {
                let rows = query(sql::current_versions(D, chunk, lock))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            StoreError::VersionConflict("locked rows".to_string())
                        } else {
                            StoreError::Database(e)
                        }
                    })?;
                for row in rows {
                    out.insert(
                        (row.try_get("res_type")?, row.try_get("id")?),
                        CurrentVersion {
                            version_id: row.try_get("version_id")?,
                            deleted: row.try_get("deleted")?,
                        },
                    );
                }
            }
            Ok(out)
        }

        /// Ids of current resources matching `q` on `conn`, at most `limit`.
        async fn search_ids_on(
            conn: &mut Conn,
            q: &SearchQuery,
            limit: usize,
        ) -> Result<Vec<String>, StoreError> {
            let rows = search_query(search_sql::search(D, q, search_sql::Select::Ids, limit))
                .fetch_all(&mut *conn)
                .await?;
            Ok(rows
                .iter()
                .map(|r| r.try_get::<String, _>("id"))
                .collect::<Result<_, _>>()?)
        }

        /// [`StoreTx::search_ids_many`] on `conn`.
        async fn search_ids_many_on(
            conn: &mut Conn,
            queries: &[SearchQuery],
            limit: usize,
        ) -> Result<Vec<Vec<String>>, StoreError> {
            let batch = super::TokenBatch::new(queries);
            let mut out = vec![Vec::new(); queries.len()];
            let wanted = batch.wanted(queries);
            let mut rows: Vec<super::TokenRow> = Vec::new();
            for chunk in wanted.chunks(sql::TOKEN_LOOKUP_CHUNK) {
                let found = query(sql::token_lookup(D, chunk))
                    .fetch_all(&mut *conn)
                    .await?;
                for row in found {
                    rows.push((
                        row.try_get("res_type")?,
                        row.try_get("param")?,
                        row.try_get("system")?,
                        row.try_get("code")?,
                        row.try_get("id")?,
                    ));
                }
            }
            batch.assign(queries, &rows, limit, &mut out);
            for &i in &batch.others {
                out[i] = search_ids_on(conn, &queries[i], limit).await?;
            }
            Ok(out)
        }

        impl $tx {
            async fn flush(&mut self) -> Result<(), StoreError> {
                if self.queue.is_empty() {
                    return Ok(());
                }
                let queue = std::mem::take(&mut self.queue);
                let conflict = |e: sqlx::Error| {
                    if is_unique_violation(&e) {
                        StoreError::VersionConflict(describe(&queue))
                    } else {
                        StoreError::Database(e)
                    }
                };
                let (versions, upserts) = sql::version_statements(D, &queue);
                for stmt in versions {
                    query(stmt)
                        .execute(&mut *self.tx)
                        .await
                        .map_err(&conflict)?;
                }
                let mut rids = HashMap::with_capacity(queue.len());
                for stmt in upserts {
                    for row in query(stmt)
                        .fetch_all(&mut *self.tx)
                        .await
                        .map_err(&conflict)?
                    {
                        rids.insert(
                            (row.try_get("res_type")?, row.try_get("id")?),
                            row.try_get::<i64, _>("rid")?,
                        );
                    }
                }
                let last = sql::last_versions(&queue);
                write_index(&mut self.tx, &last, &rids)
                    .await
                    .map_err(&conflict)?;
                Ok(())
            }
        }

        #[async_trait]
        impl StoreTx for $tx {
            async fn referencing(
                &mut self,
                target_type: &str,
                target_id: &str,
            ) -> Result<Vec<ResourceKey>, StoreError> {
                self.flush().await?;
                let rows = query(sql::referencing(D, target_type, target_id))
                    .fetch_all(&mut *self.tx)
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get("res_type")?, r.try_get("id")?)))
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(StoreError::from)
            }

            async fn current_versions(
                &mut self,
                keys: &[ResourceKey],
            ) -> Result<HashMap<ResourceKey, CurrentVersion>, StoreError> {
                self.flush().await?;
                current_versions_on(&mut self.tx, keys, true).await
            }

            async fn read(
                &mut self,
                res_type: &str,
                id: &str,
            ) -> Result<Option<StoredVersion>, StoreError> {
                self.flush().await?;
                let row = query(sql::read_current(D, res_type, id))
                    .fetch_optional(&mut *self.tx)
                    .await?;
                Ok(row.as_ref().map(to_version).transpose()?)
            }

            async fn search_ids(
                &mut self,
                q: &SearchQuery,
                limit: usize,
            ) -> Result<Vec<String>, StoreError> {
                self.flush().await?;
                search_ids_on(&mut self.tx, q, limit).await
            }

            async fn search_ids_many(
                &mut self,
                queries: &[SearchQuery],
                limit: usize,
            ) -> Result<Vec<Vec<String>>, StoreError> {
                self.flush().await?;
                search_ids_many_on(&mut self.tx, queries, limit).await
            }

            fn put(&mut self, version: NewVersion) {
                self.queue.push(version);
            }

            async fn hl7_insert(
                &mut self,
                message: &hl7_messages::NewHl7Message,
            ) -> Result<hl7_messages::Hl7Insert, StoreError> {
                hl7_messages::$hl7::insert_on(&mut self.tx, message).await
            }

            async fn hl7_finish(
                &mut self,
                id: i64,
                status: hl7_messages::Hl7Status,
                reason: Option<&str>,
                ack: &str,
            ) -> Result<(), StoreError> {
                hl7_messages::$hl7::finish_on(&mut self.tx, id, status, reason, ack).await
            }

            async fn savepoint(&mut self) -> Result<(), StoreError> {
                self.flush().await?;
                sqlx::raw_sql("SAVEPOINT message")
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }

            async fn release_savepoint(&mut self) -> Result<(), StoreError> {
                self.flush().await?;
                sqlx::raw_sql("RELEASE SAVEPOINT message")
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }

            async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
                self.queue.clear();
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT message; RELEASE SAVEPOINT message")
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }

            async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
                self.flush().await?;
                self.tx.commit().await?;
                Ok(())
            }
        }
    };
}

/// Implements `Store` for a backend's store type `$store` (transaction type `$tx`, HL7
/// message SQL in `hl7_messages::$hl7`; `$single_writer` answers `Store::single_writer`).
/// The store provides `read_pool()`, `write_pool()`
/// and `begin_tx()`; everything else is the same SQL on both backends.
macro_rules! impl_store {
    ($store:ident, $tx:ident, $hl7:ident, $backend:literal, $single_writer:literal) => {
        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            fn single_writer(&self) -> bool {
                $single_writer
            }

            async fn begin(&self) -> Result<Box<dyn StoreTx>, StoreError> {
                let tx = self.begin_tx().await?;
                Ok(Box::new($tx {
                    tx,
                    queue: Vec::new(),
                }))
            }

            async fn current_versions(
                &self,
                keys: &[ResourceKey],
            ) -> Result<HashMap<ResourceKey, CurrentVersion>, StoreError> {
                let mut conn = self.read_pool().acquire().await?;
                current_versions_on(&mut conn, keys, false).await
            }

            async fn search_ids_many(
                &self,
                queries: &[SearchQuery],
                limit: usize,
            ) -> Result<Vec<Vec<String>>, StoreError> {
                let mut conn = self.read_pool().acquire().await?;
                search_ids_many_on(&mut conn, queries, limit).await
            }

            async fn read(
                &self,
                res_type: &str,
                id: &str,
            ) -> Result<Option<StoredVersion>, StoreError> {
                let row = query(sql::read_current(D, res_type, id))
                    .fetch_optional(self.read_pool())
                    .await?;
                Ok(row.as_ref().map(to_version).transpose()?)
            }

            async fn vread(
                &self,
                res_type: &str,
                id: &str,
                version_id: i64,
            ) -> Result<Option<StoredVersion>, StoreError> {
                let row = query(sql::read_version(D, res_type, id, version_id))
                    .fetch_optional(self.read_pool())
                    .await?;
                Ok(row.as_ref().map(to_version).transpose()?)
            }

            async fn history(&self, q: &HistoryQuery) -> Result<Vec<StoredVersion>, StoreError> {
                let rows = query(sql::history(D, q))
                    .fetch_all(self.read_pool())
                    .await?;
                Ok(rows.iter().map(to_version).collect::<Result<_, _>>()?)
            }

            async fn search(&self, q: &SearchQuery) -> Result<SearchPage, StoreError> {
                let rows = query(search_sql::search(
                    D,
                    q,
                    search_sql::Select::Rows,
                    q.count + 1,
                ))
                .fetch_all(self.read_pool())
                .await?;
                let mut matches = Vec::with_capacity(rows.len());
                let mut sort_values = Vec::with_capacity(rows.len());
                let mut rids = Vec::with_capacity(rows.len());
                for row in &rows {
                    matches.push(to_version(row)?);
                    rids.push(row.try_get::<i64, _>("rid")?);
                    let mut values = Vec::with_capacity(q.sort.len());
                    for (i, key) in q.sort.iter().enumerate() {
                        let col = format!("s{i}");
                        let v = match search_sql::sort_value_kind(&key.by) {
                            search_sql::SortValueKind::Text => row
                                .try_get::<Option<String>, _>(col.as_str())?
                                .map(serde_json::Value::from),
                            search_sql::SortValueKind::Int => row
                                .try_get::<Option<i64>, _>(col.as_str())?
                                .map(serde_json::Value::from),
                            search_sql::SortValueKind::Float => row
                                .try_get::<Option<f64>, _>(col.as_str())?
                                .map(serde_json::Value::from),
                        };
                        values.push(v.unwrap_or(serde_json::Value::Null));
                    }
                    sort_values.push(values);
                }
                let has_more = matches.len() > q.count;
                matches.truncate(q.count);
                sort_values.truncate(q.count);
                rids.truncate(q.count);
                if q.cursor.as_ref().is_some_and(|c| c.backward) {
                    matches.reverse();
                    sort_values.reverse();
                    rids.reverse();
                }
                Ok(SearchPage {
                    matches,
                    sort_values,
                    rids,
                    has_more,
                })
            }

            async fn count(&self, q: &SearchQuery) -> Result<i64, StoreError> {
                let row = query(search_sql::count(D, q))
                    .fetch_one(self.read_pool())
                    .await?;
                Ok(row.try_get("n")?)
            }

            async fn include(
                &self,
                include: &crate::search::Include,
                from: &[ResourceKey],
                limit: usize,
            ) -> Result<Vec<StoredVersion>, StoreError> {
                let mut out = Vec::new();
                for chunk in from.chunks(sql::CHUNK) {
                    let rows = query(search_sql::include(D, include, chunk, limit))
                        .fetch_all(self.read_pool())
                        .await?;
                    for row in &rows {
                        out.push(to_version(row)?);
                    }
                    if out.len() >= limit {
                        break;
                    }
                }
                Ok(out)
            }

            async fn current_after(
                &self,
                after_seq: i64,
                limit: usize,
            ) -> Result<Vec<StoredVersion>, StoreError> {
                let rows = query(sql::current_after(D, after_seq, limit))
                    .fetch_all(self.read_pool())
                    .await?;
                Ok(rows.iter().map(to_version).collect::<Result<_, _>>()?)
            }

            async fn replace_index(
                &self,
                rows: &[(ResourceKey, Vec<super::IndexRow>)],
            ) -> Result<(), StoreError> {
                let mut tx = self.begin_tx().await?;
                let mut rids = HashMap::with_capacity(rows.len());
                for chunk in rows.chunks(sql::CHUNK) {
                    let keys: Vec<ResourceKey> = chunk.iter().map(|(k, _)| k.clone()).collect();
                    for row in query(sql::rids(D, &keys)).fetch_all(&mut *tx).await? {
                        rids.insert(
                            (row.try_get("res_type")?, row.try_get("id")?),
                            row.try_get::<i64, _>("rid")?,
                        );
                    }
                }
                let versions: Vec<NewVersion> = rows
                    .iter()
                    .map(|((t, id), index)| NewVersion {
                        res_type: t.clone(),
                        id: id.clone(),
                        version_id: 0,
                        last_updated: 0,
                        method: "PUT",
                        content: None,
                        index: index.clone(),
                        fresh: false,
                    })
                    .collect();
                let refs: Vec<&NewVersion> = versions.iter().collect();
                write_index(&mut tx, &refs, &rids).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn index_state(&self, key: &str) -> Result<Option<String>, StoreError> {
                let row = query(sql::index_state(D, key))
                    .fetch_optional(self.read_pool())
                    .await?;
                Ok(row.map(|r| r.try_get("value")).transpose()?)
            }

            async fn finish_bulk_load(&self) -> Result<(), StoreError> {
                if D == Dialect::Postgres {
                    // Not in a transaction block: VACUUM refuses to run in one.
                    sqlx::raw_sql("VACUUM (ANALYZE)")
                        .execute(self.write_pool())
                        .await?;
                }
                Ok(())
            }

            async fn set_index_state(
                &self,
                key: &str,
                value: Option<&str>,
            ) -> Result<(), StoreError> {
                query(sql::set_index_state(D, key, value))
                    .execute(self.write_pool())
                    .await?;
                Ok(())
            }

            async fn hl7_insert(
                &self,
                message: &hl7_messages::NewHl7Message,
            ) -> Result<hl7_messages::Hl7Insert, StoreError> {
                hl7_messages::$hl7::insert(self.write_pool(), message).await
            }

            async fn hl7_finish(
                &self,
                id: i64,
                status: hl7_messages::Hl7Status,
                reason: Option<&str>,
                ack: &str,
            ) -> Result<(), StoreError> {
                hl7_messages::$hl7::finish(self.write_pool(), id, status, reason, ack).await
            }

            async fn hl7_get(
                &self,
                id: i64,
            ) -> Result<Option<hl7_messages::Hl7MessageRecord>, StoreError> {
                hl7_messages::$hl7::get(self.read_pool(), id).await
            }

            async fn hl7_list(
                &self,
                query: &hl7_messages::Hl7ListQuery,
            ) -> Result<Vec<hl7_messages::Hl7MessageSummary>, StoreError> {
                hl7_messages::$hl7::list(self.read_pool(), query).await
            }

            async fn auth_keys(&self) -> Result<Vec<super::auth::StoredKey>, StoreError> {
                super::auth::$hl7::keys(self.write_pool()).await
            }

            async fn auth_add_key(
                &self,
                key: &super::auth::StoredKey,
                retire_at: Option<i64>,
            ) -> Result<(), StoreError> {
                super::auth::$hl7::add_key(self.write_pool(), key, retire_at).await
            }

            async fn auth_client(
                &self,
                client_id: &str,
            ) -> Result<Option<super::auth::ClientRecord>, StoreError> {
                Ok(
                    super::auth::$hl7::clients(self.write_pool(), Some(client_id))
                        .await?
                        .into_iter()
                        .next(),
                )
            }

            async fn auth_clients(&self) -> Result<Vec<super::auth::ClientRecord>, StoreError> {
                super::auth::$hl7::clients(self.write_pool(), None).await
            }

            async fn auth_put_client(
                &self,
                client: &super::auth::ClientRecord,
            ) -> Result<(), StoreError> {
                super::auth::$hl7::put_client(self.write_pool(), client).await
            }

            async fn auth_add_client(
                &self,
                client: &super::auth::ClientRecord,
            ) -> Result<bool, StoreError> {
                super::auth::$hl7::add_client(self.write_pool(), client).await
            }

            async fn auth_delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
                super::auth::$hl7::delete_client(self.write_pool(), client_id).await
            }

            async fn auth_user(
                &self,
                username: &str,
            ) -> Result<Option<super::auth::UserRecord>, StoreError> {
                Ok(super::auth::$hl7::users(self.write_pool(), Some(username))
                    .await?
                    .into_iter()
                    .next())
            }

            async fn auth_users(&self) -> Result<Vec<super::auth::UserRecord>, StoreError> {
                super::auth::$hl7::users(self.write_pool(), None).await
            }

            async fn auth_has_users(&self) -> Result<bool, StoreError> {
                super::auth::$hl7::has_users(self.write_pool()).await
            }

            async fn auth_put_user(
                &self,
                user: &super::auth::UserRecord,
            ) -> Result<(), StoreError> {
                super::auth::$hl7::put_user(self.write_pool(), user).await
            }

            async fn auth_add_user(
                &self,
                user: &super::auth::UserRecord,
            ) -> Result<bool, StoreError> {
                super::auth::$hl7::add_user(self.write_pool(), user).await
            }

            async fn auth_add_first_user(
                &self,
                user: &super::auth::UserRecord,
            ) -> Result<bool, StoreError> {
                super::auth::$hl7::add_first_user(self.write_pool(), user).await
            }

            async fn auth_delete_user(&self, username: &str) -> Result<bool, StoreError> {
                super::auth::$hl7::delete_user(self.write_pool(), username).await
            }

            async fn auth_use_jti(
                &self,
                client_id: &str,
                jti: &str,
                exp: i64,
                now: i64,
            ) -> Result<bool, StoreError> {
                super::auth::$hl7::use_jti(self.write_pool(), client_id, jti, exp, now).await
            }

            async fn grant_put(
                &self,
                grant: &super::grants::GrantRecord,
                now: i64,
            ) -> Result<(), StoreError> {
                super::grants::$hl7::put(self.write_pool(), grant, now).await
            }

            async fn grant_redeem(
                &self,
                token_hash: &str,
                kind: super::grants::GrantKind,
                now: i64,
            ) -> Result<super::grants::Redeemed, StoreError> {
                super::grants::$hl7::redeem(self.write_pool(), token_hash, kind, now).await
            }

            async fn grant_get(
                &self,
                token_hash: &str,
                kind: super::grants::GrantKind,
                now: i64,
            ) -> Result<Option<super::grants::GrantRecord>, StoreError> {
                super::grants::$hl7::get(self.write_pool(), token_hash, kind, now).await
            }

            async fn grant_revoke_family(
                &self,
                family: &str,
            ) -> Result<Vec<(String, i64)>, StoreError> {
                super::grants::$hl7::revoke_family(self.write_pool(), family).await
            }

            async fn auth_revoke(&self, jti: &str, exp: i64) -> Result<(), StoreError> {
                super::auth::$hl7::revoke(self.write_pool(), jti, exp).await
            }

            async fn auth_revoked(&self, now: i64) -> Result<Vec<String>, StoreError> {
                super::auth::$hl7::revoked(self.write_pool(), now).await
            }
        }
    };
}

/// Binds every [`Bind`](super::sql::Bind) of `$binds` to the sqlx query `$q`, in order, and
/// evaluates to the query: the one place a `Bind` becomes a typed sqlx value.
macro_rules! bind_values {
    ($q:expr, $binds:expr) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::OptText(s) | Bind::Json(s) => q.bind(s),
                Bind::Int(i) => q.bind(i),
                Bind::OptInt(i) => q.bind(i),
                Bind::Float(f) => q.bind(f),
                Bind::OptFloat(f) => q.bind(f),
                Bind::Bool(b) => q.bind(b),
            };
        }
        q
    }};
}

/// The per-backend statement helpers: `query(Sql)` binds every [`Bind`](super::sql::Bind)
/// in order, `to_version(row)` reads a `StoredVersion`.
macro_rules! impl_sql_helpers {
    ($db:ty, $args:ty, $row:ty) => {
        fn bind_all<'q>(
            q: sqlx::query::Query<'q, $db, $args>,
            binds: Vec<Bind>,
        ) -> sqlx::query::Query<'q, $db, $args> {
            bind_values!(q, binds)
        }

        fn query(sql: Sql) -> sqlx::query::Query<'static, $db, $args> {
            let (text, binds) = sql.finish();
            bind_all(sqlx::query(AssertSqlSafe(text)), binds)
        }

        /// A search statement run inside a write transaction (conditional interactions).
        /// PostgreSQL write transactions use generic plans (`PgStore::begin_tx`); this one
        /// is not kept as a prepared statement, so it is still planned with its values (a
        /// generic plan cannot know that one identifier is selective). SQLite keeps every
        /// statement prepared.
        fn search_query(sql: Sql) -> sqlx::query::Query<'static, $db, $args> {
            query(sql).persistent(D != Dialect::Postgres)
        }

        /// Replaces the index rows of `versions` (whose rids are in `rids`): the deletes
        /// of their stale rows, then each table's new rows through this backend's
        /// `write_index_tables` (`sql::index_writes`).
        async fn write_index(
            conn: &mut <$db as sqlx::Database>::Connection,
            versions: &[&NewVersion],
            rids: &HashMap<(String, String), i64>,
        ) -> Result<(), sqlx::Error> {
            let (deletes, tables) = sql::index_writes(D, versions, rids);
            for stmt in deletes {
                query(stmt).execute(&mut *conn).await?;
            }
            write_index_tables(&mut *conn, &tables).await
        }

        fn to_version(row: &$row) -> Result<StoredVersion, sqlx::Error> {
            Ok(StoredVersion {
                res_type: row.try_get("res_type")?,
                id: row.try_get("id")?,
                version_id: row.try_get("version_id")?,
                last_updated: row.try_get("last_updated")?,
                method: row.try_get("method")?,
                deleted: row.try_get("deleted")?,
                content: row.try_get("content")?,
                seq: row.try_get("seq")?,
            })
        }
    };
}
