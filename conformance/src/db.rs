//! Fresh per-test databases (SQLite file or PostgreSQL database).

use std::path::{Path, PathBuf};

use crate::{Backend, fresh_temp_dir};

/// A fresh, empty database for one test: a SQLite file in a temp dir, or a freshly
/// created PostgreSQL database that is dropped (`WITH (FORCE)`) when this is dropped.
pub struct TestDb {
    backend: Backend,
    url: String,
    dir: PathBuf,
    pg: Option<(String, String)>, // (admin url, database name)
}

fn pg_admin_url() -> String {
    std::env::var("MEDIFLOW_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

async fn pg_exec(admin_url: &str, sql: String) -> Result<(), sqlx::Error> {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::postgres::PgConnection::connect(admin_url).await?;
    conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql)))
        .await?;
    conn.close().await?;
    Ok(())
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = fresh_temp_dir();
        match backend {
            Backend::Sqlite => TestDb {
                backend,
                url: format!("sqlite://{}", dir.join("mediflow.db").display()),
                dir,
                pg: None,
            },
            Backend::Postgres => {
                let admin = pg_admin_url();
                let name = format!("mediflow_test_{}", uuid::Uuid::new_v4().simple());
                pg_exec(&admin, format!("CREATE DATABASE \"{name}\""))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("cannot create PostgreSQL database {name} via {admin}: {e}")
                    });
                let mut url = url::Url::parse(&admin).expect("MEDIFLOW_TEST_PG is a URL");
                url.set_path(&format!("/{name}"));
                TestDb {
                    backend,
                    url: url.to_string(),
                    dir,
                    pg: Some((admin, name)),
                }
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The `--database-url` to give mediflow.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This test's private temp directory (logs, SQLite file, import inputs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            let res = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime for database cleanup");
                rt.block_on(pg_exec(
                    &admin,
                    format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                ))
                .map_err(|e| format!("dropping {name}: {e}"))
            })
            .join();
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("warning: {e}"),
                Err(_) => eprintln!("warning: database cleanup thread panicked"),
            }
        }
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    async fn pg_database_exists(name: &str) -> bool {
        use sqlx::Connection;
        let mut conn = sqlx::postgres::PgConnection::connect(&pg_admin_url())
            .await
            .expect("connect to PostgreSQL");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .expect("query pg_database");
        n == 1
    }

    #[tokio::test]
    async fn postgres_test_db_is_created_and_dropped() {
        let db = TestDb::new(Backend::Postgres).await;
        let name = db.pg.as_ref().unwrap().1.clone();
        assert!(db.url().ends_with(&format!("/{name}")), "{}", db.url());
        assert!(pg_database_exists(&name).await);
        let dir = db.dir().to_path_buf();
        drop(db);
        assert!(!pg_database_exists(&name).await, "{name} dropped");
        assert!(!dir.exists(), "temp dir removed");
    }

    #[tokio::test]
    async fn sqlite_test_db_lives_in_its_own_temp_dir() {
        let db = TestDb::new(Backend::Sqlite).await;
        assert!(db.url().starts_with("sqlite://"));
        assert!(db.url().ends_with("/mediflow.db"));
        let dir = db.dir().to_path_buf();
        assert!(dir.is_dir());
        drop(db);
        assert!(!dir.exists());
    }
}
