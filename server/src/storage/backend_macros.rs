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
        impl $tx {
            async fn flush(&mut self) -> Result<(), StoreError> {
                if self.queue.is_empty() {
                    return Ok(());
                }
                let queue = std::mem::take(&mut self.queue);
                for stmt in sql::flush_statements(D, &queue) {
                    query(stmt).execute(&mut *self.tx).await.map_err(|e| {
                        if is_unique_violation(&e) {
                            StoreError::VersionConflict(describe(&queue))
                        } else {
                            StoreError::Database(e)
                        }
                    })?;
                }
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
                let mut out = HashMap::new();
                for chunk in keys.chunks(sql::CHUNK) {
                    let rows = query(sql::current_versions(D, chunk))
                        .fetch_all(&mut *self.tx)
                        .await?;
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
                let rows = query(sql::search(D, q, true, limit))
                    .fetch_all(&mut *self.tx)
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| r.try_get::<String, _>("id"))
                    .collect::<Result<_, _>>()?)
            }

            async fn search_ids_many(
                &mut self,
                queries: &[SearchQuery],
                limit: usize,
            ) -> Result<Vec<Vec<String>>, StoreError> {
                self.flush().await?;
                let batch = super::TokenBatch::new(queries);
                let mut out = vec![Vec::new(); queries.len()];
                let wanted = batch.wanted(queries);
                let mut rows: Vec<super::TokenRow> = Vec::new();
                for chunk in wanted.chunks(sql::TOKEN_LOOKUP_CHUNK) {
                    let found = query(sql::token_lookup(D, chunk))
                        .fetch_all(&mut *self.tx)
                        .await?;
                    for row in found {
                        rows.push((
                            row.try_get("res_type")?,
                            row.try_get("param")?,
                            row.try_get("system")?,
                            row.try_get("value")?,
                            row.try_get("id")?,
                        ));
                    }
                }
                batch.assign(queries, &rows, limit, &mut out);
                for &i in &batch.others {
                    out[i] = self.search_ids(&queries[i], limit).await?;
                }
                Ok(out)
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

            async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
                self.flush().await?;
                self.tx.commit().await?;
                Ok(())
            }
        }
    };
}

/// Implements `Store` for a backend's store type `$store` (transaction type `$tx`, HL7
/// message SQL in `hl7_messages::$hl7`). The store provides `read_pool()`, `write_pool()`
/// and `begin_tx()`; everything else is the same SQL on both backends.
macro_rules! impl_store {
    ($store:ident, $tx:ident, $hl7:ident, $backend:literal) => {
        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn begin(&self) -> Result<Box<dyn StoreTx>, StoreError> {
                let tx = self.begin_tx().await?;
                Ok(Box::new($tx {
                    tx,
                    queue: Vec::new(),
                }))
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
                let rows = query(sql::search(D, q, false, q.count + 1))
                    .fetch_all(self.read_pool())
                    .await?;
                let mut matches: Vec<StoredVersion> =
                    rows.iter().map(to_version).collect::<Result<_, _>>()?;
                let has_more = matches.len() > q.count;
                matches.truncate(q.count);
                Ok(SearchPage { matches, has_more })
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
        }
    };
}

/// The per-backend statement helpers: `query(Sql)` binds every [`Bind`](super::sql::Bind)
/// in order, `to_version(row)` reads a `StoredVersion`.
macro_rules! impl_sql_helpers {
    ($db:ty, $args:ty, $row:ty) => {
        fn bind_all<'q>(
            mut q: sqlx::query::Query<'q, $db, $args>,
            binds: Vec<Bind>,
        ) -> sqlx::query::Query<'q, $db, $args> {
            for b in binds {
                q = match b {
                    Bind::Text(s) => q.bind(s),
                    Bind::OptText(s) | Bind::Json(s) => q.bind(s),
                    Bind::Int(i) => q.bind(i),
                    Bind::Bool(b) => q.bind(b),
                };
            }
            q
        }

        fn query(sql: Sql) -> sqlx::query::Query<'static, $db, $args> {
            let (text, binds) = sql.finish();
            bind_all(sqlx::query(AssertSqlSafe(text)), binds)
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
