//! The [`StoreTx`](super::StoreTx) implementation shared by both backends.
//!
//! The transaction logic (queueing, flushing in multi-row statements, conflict mapping,
//! reads inside the transaction) is the same on SQLite and PostgreSQL; only the sqlx types
//! differ. `impl_store_tx!(TxType, hl7_module)` expands it inside a backend module, where
//! `query`, `to_version`, `D` and the `tx`/`queue` fields of `TxType` are defined.

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
