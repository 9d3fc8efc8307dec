//! The `hl7_messages` table: every HL7 v2 message received over MLLP, stored before it is
//! processed (issue 4, "durability and idempotency"), with its status and the ACK sent.
//!
//! Keyed for idempotency on (MSH-3 sending application, MSH-4 sending facility, MSH-10
//! message control ID): HL7 v2.5.1 chapter 2, section 2.9 treats a repeated MSH-10 from the
//! same sender as the same message, so [`Store::hl7_insert`] answers
//! [`Hl7Insert::Duplicate`] with the stored row instead of a second insert. A message with no
//! MSH-10 is stored with `control_id` NULL, which the unique index never matches.
//!
//! The SQL text for both backends is built here with [`super::sql::Sql`]; the two backends
//! only run it (`sqlite::SqliteStore`, `postgres::PgStore` delegate to the functions below).
//! Table layout: `migrations/<backend>/0002_hl7_messages.sql`.
//!
//! [`Store::hl7_insert`]: super::Store::hl7_insert

use std::fmt;
use std::str::FromStr;

use sqlx::{AssertSqlSafe, Row};

use super::StoreError;
use super::sql::{Bind, Dialect, Sql};

/// Processing status of a stored message (`hl7_messages.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hl7Status {
    /// Stored, not processed yet (or processing was interrupted).
    Received,
    /// Applied to the FHIR store; answered AA (or CA + AA in enhanced mode).
    Processed,
    /// Not applied: rejected (AR) or failed (AE); `reason` says why.
    Error,
}

impl Hl7Status {
    /// The text stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Hl7Status::Received => "received",
            Hl7Status::Processed => "processed",
            Hl7Status::Error => "error",
        }
    }
}

impl fmt::Display for Hl7Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status text that is not `received`, `processed` or `error`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown HL7 message status '{0}': expected received, processed or error")]
pub struct UnknownStatus(pub String);

impl FromStr for Hl7Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "received" => Ok(Hl7Status::Received),
            "processed" => Ok(Hl7Status::Processed),
            "error" => Ok(Hl7Status::Error),
            other => Err(UnknownStatus(other.to_string())),
        }
    }
}

/// A message to store on arrival, with the MSH fields read from it (ER7 text as sent).
#[derive(Debug, Clone, Default)]
pub struct NewHl7Message {
    /// Arrival time, microseconds since the Unix epoch (UTC).
    pub received_at: i64,
    /// MSH-3 "Sending Application" (`""` when absent).
    pub sending_application: String,
    /// MSH-4 "Sending Facility" (`""` when absent).
    pub sending_facility: String,
    /// MSH-10 "Message Control ID"; `None` when absent (the message is then never a
    /// duplicate).
    pub control_id: Option<String>,
    /// MSH-9 "Message Type", e.g. `ORU^R01^ORU_R01`.
    pub message_type: String,
    /// MSH-12 "Version ID", e.g. `2.5.1`.
    pub version: String,
    /// The message text as received (decoded from its MSH-18 character set).
    pub raw: String,
}

/// One stored message without its raw text and ACK: what an admin listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hl7MessageSummary {
    /// Row id (the `ID` of `mediflow hl7 reprocess ID`).
    pub id: i64,
    /// Arrival time, microseconds since the Unix epoch (UTC).
    pub received_at: i64,
    /// MSH-3.
    pub sending_application: String,
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-10.
    pub control_id: Option<String>,
    /// MSH-9.
    pub message_type: String,
    /// MSH-12.
    pub version: String,
    /// Processing status.
    pub status: Hl7Status,
    /// Why the status is `error`.
    pub reason: Option<String>,
    /// When processing finished, microseconds since the Unix epoch.
    pub processed_at: Option<i64>,
}

/// One stored message in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hl7MessageRecord {
    /// Everything but the texts.
    pub summary: Hl7MessageSummary,
    /// The message as received.
    pub raw: String,
    /// The application ACK (MSA-1 AA/AE/AR) as ER7 text, once processed.
    pub ack: Option<String>,
}

/// What [`super::Store::hl7_insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hl7Insert {
    /// A new row with this id, status `received`.
    Inserted(i64),
    /// A row with the same MSH-3, MSH-4 and MSH-10 exists already: this one.
    Duplicate(Box<Hl7MessageRecord>),
}

/// Filter of [`super::Store::hl7_list`]: newest first.
#[derive(Debug, Clone, Default)]
pub struct Hl7ListQuery {
    /// Only messages with this status.
    pub status: Option<Hl7Status>,
    /// At most this many rows.
    pub count: usize,
    /// Only messages with `id < before` (keyset paging, newest first).
    pub before: Option<i64>,
}

const SUMMARY_COLUMNS: &str = "id, received_at, sending_application, sending_facility, \
     control_id, message_type, version, status, reason, processed_at";

/// `INSERT … ON CONFLICT DO NOTHING RETURNING id`: no row back means a duplicate.
fn insert(dialect: Dialect, m: &NewHl7Message) -> Sql {
    let mut sql = Sql::new(
        dialect,
        "INSERT INTO hl7_messages (received_at, sending_application, sending_facility, \
         control_id, message_type, version, raw, status) VALUES (",
    );
    sql.bind(Bind::Int(m.received_at))
        .push(", ")
        .bind(Bind::Text(m.sending_application.clone()))
        .push(", ")
        .bind(Bind::Text(m.sending_facility.clone()))
        .push(", ")
        .bind(Bind::OptText(m.control_id.clone()))
        .push(", ")
        .bind(Bind::Text(m.message_type.clone()))
        .push(", ")
        .bind(Bind::Text(m.version.clone()))
        .push(", ")
        .bind(Bind::Text(m.raw.clone()))
        .push(", ")
        .bind(Bind::Text(Hl7Status::Received.as_str().to_string()))
        .push(
            ") ON CONFLICT (sending_application, sending_facility, control_id) DO NOTHING \
             RETURNING id",
        );
    sql
}

/// The row of a sender's MSH-10.
fn by_key(dialect: Dialect, application: &str, facility: &str, control_id: &str) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT ");
    sql.push(SUMMARY_COLUMNS)
        .push(", raw, ack FROM hl7_messages WHERE sending_application = ")
        .bind(Bind::Text(application.to_string()))
        .push(" AND sending_facility = ")
        .bind(Bind::Text(facility.to_string()))
        .push(" AND control_id = ")
        .bind(Bind::Text(control_id.to_string()));
    sql
}

fn by_id(dialect: Dialect, id: i64) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT ");
    sql.push(SUMMARY_COLUMNS)
        .push(", raw, ack FROM hl7_messages WHERE id = ")
        .bind(Bind::Int(id));
    sql
}

fn finish(
    dialect: Dialect,
    id: i64,
    status: Hl7Status,
    reason: Option<&str>,
    ack: &str,
    at: i64,
) -> Sql {
    let mut sql = Sql::new(dialect, "UPDATE hl7_messages SET status = ");
    sql.bind(Bind::Text(status.as_str().to_string()))
        .push(", reason = ")
        .bind(Bind::OptText(reason.map(str::to_string)))
        .push(", ack = ")
        .bind(Bind::Text(ack.to_string()))
        .push(", processed_at = ")
        .bind(Bind::Int(at))
        .push(" WHERE id = ")
        .bind(Bind::Int(id));
    sql
}

fn list(dialect: Dialect, q: &Hl7ListQuery) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT ");
    sql.push(SUMMARY_COLUMNS)
        .push(" FROM hl7_messages WHERE 1 = 1");
    if let Some(status) = q.status {
        sql.push(" AND status = ")
            .bind(Bind::Text(status.as_str().to_string()));
    }
    if let Some(before) = q.before {
        sql.push(" AND id < ").bind(Bind::Int(before));
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .bind(Bind::Int(q.count as i64));
    sql
}

/// Generates the functions one backend runs for the [`super::Store`] hl7 methods: the same
/// code for SQLite and PostgreSQL, only the pool and row types differ.
macro_rules! backend_fns {
    ($module:ident, $db:ty, $pool:ty, $dialect:expr) => {
        /// The hl7-message statements run on one backend's pool.
        pub(super) mod $module {
            use super::*;

            const D: Dialect = $dialect;

            fn query(sql: Sql) -> sqlx::query::Query<'static, $db, <$db as sqlx::Database>::Arguments> {
                let (text, binds) = sql.finish();
                bind_values!(sqlx::query(AssertSqlSafe(text)), binds)
            }

            fn summary_from(row: &<$db as sqlx::Database>::Row) -> Result<Hl7MessageSummary, StoreError> {
                let status: String = row.try_get("status")?;
                Ok(Hl7MessageSummary {
                    id: row.try_get("id")?,
                    received_at: row.try_get("received_at")?,
                    sending_application: row.try_get("sending_application")?,
                    sending_facility: row.try_get("sending_facility")?,
                    control_id: row.try_get("control_id")?,
                    message_type: row.try_get("message_type")?,
                    version: row.try_get("version")?,
                    status: status
                        .parse()
                        .map_err(|e: UnknownStatus| StoreError::Corrupt(e.to_string()))?,
                    reason: row.try_get("reason")?,
                    processed_at: row.try_get("processed_at")?,
                })
            }

            fn record(row: &<$db as sqlx::Database>::Row) -> Result<Hl7MessageRecord, StoreError> {
                Ok(Hl7MessageRecord {
                    summary: summary_from(row)?,
                    raw: row.try_get("raw")?,
                    ack: row.try_get("ack")?,
                })
            }

            /// Stores a new message, or returns the row holding the same sender and MSH-10.
            pub async fn insert(pool: &$pool, m: &NewHl7Message) -> Result<Hl7Insert, StoreError> {
                let mut conn = pool.acquire().await?;
                insert_on(&mut conn, m).await
            }

            /// [`insert`] on one connection (e.g. inside an open transaction).
            pub async fn insert_on(
                conn: &mut <$db as sqlx::Database>::Connection,
                m: &NewHl7Message,
            ) -> Result<Hl7Insert, StoreError> {
                let row = query(super::insert(D, m)).fetch_optional(&mut *conn).await?;
                if let Some(row) = row {
                    return Ok(Hl7Insert::Inserted(row.try_get("id")?));
                }
                let control_id = m.control_id.as_deref().unwrap_or_default();
                let row = query(by_key(D, &m.sending_application, &m.sending_facility, control_id))
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "hl7_messages: insert of MSH-10 '{control_id}' conflicted but no row matches"
                        ))
                    })?;
                Ok(Hl7Insert::Duplicate(Box::new(record(&row)?)))
            }

            /// Sets the final status, reason and ACK of a message.
            pub async fn finish(
                pool: &$pool,
                id: i64,
                status: Hl7Status,
                reason: Option<&str>,
                ack: &str,
            ) -> Result<(), StoreError> {
                let mut conn = pool.acquire().await?;
                finish_on(&mut conn, id, status, reason, ack).await
            }

            /// [`finish`] on one connection (e.g. inside an open transaction).
            pub async fn finish_on(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: i64,
                status: Hl7Status,
                reason: Option<&str>,
                ack: &str,
            ) -> Result<(), StoreError> {
                let now = crate::clock::now_micros();
                query(super::finish(D, id, status, reason, ack, now))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }

            /// One message by row id.
            pub async fn get(pool: &$pool, id: i64) -> Result<Option<Hl7MessageRecord>, StoreError> {
                let row = query(by_id(D, id)).fetch_optional(pool).await?;
                row.as_ref().map(record).transpose()
            }

            /// Summaries, newest first.
            pub async fn list(
                pool: &$pool,
                q: &Hl7ListQuery,
            ) -> Result<Vec<Hl7MessageSummary>, StoreError> {
                let rows = query(super::list(D, q)).fetch_all(pool).await?;
                rows.iter().map(summary_from).collect()
            }
        }
    };
}

backend_fns!(sqlite, sqlx::Sqlite, sqlx::SqlitePool, Dialect::Sqlite);
backend_fns!(postgres, sqlx::Postgres, sqlx::PgPool, Dialect::Postgres);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_text() {
        for s in [Hl7Status::Received, Hl7Status::Processed, Hl7Status::Error] {
            assert_eq!(s.as_str().parse::<Hl7Status>().ok(), Some(s));
        }
        assert!("done".parse::<Hl7Status>().is_err());
    }

    #[test]
    fn insert_is_idempotent_on_sender_and_control_id() {
        let sql = insert(Dialect::Postgres, &NewHl7Message::default());
        let (text, binds) = sql.finish();
        assert!(text.contains(
            "ON CONFLICT (sending_application, sending_facility, control_id) DO NOTHING"
        ));
        assert!(text.contains("$8"));
        assert_eq!(binds.len(), 8);
    }
}
