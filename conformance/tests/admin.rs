//! Administration (issue 5, item 1) on both backends: the administrator created on first
//! start (one-time password on stdout, or `MEDIFLOW_ADMIN_PASSWORD`) and `mediflow user
//! list|passwd`.

use conformance::*;

backend_tests!(
    first_start_prints_a_one_time_password_and_creates_one_admin,
    admin_password_from_the_environment_is_never_printed,
    no_admin_is_created_without_auth_or_when_users_exist,
);

const NOTICE: &str = "one-time password:";

/// `mediflow ARGS --database-url DB` with extra environment variables; asserts success
/// and returns stdout and stderr.
fn mediflow(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let out = std::process::Command::new(mediflow_bin())
        .args(args)
        .args(["--database-url", db.url()])
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run mediflow");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "mediflow {args:?}: {stdout}{stderr}");
    (stdout, stderr)
}

/// `mediflow user list`: one `[username, role, fhirUser, flags]` per user.
fn user_list(db: &TestDb) -> Vec<Vec<String>> {
    mediflow(db, &["user", "list"], &[])
        .0
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// The password hash stored for `username`, read with SQL.
async fn stored_hash(db: &TestDb, username: &str) -> String {
    let sql = format!("SELECT password_hash FROM auth_users WHERE username = '{username}'");
    let sql = sqlx::AssertSqlSafe(sql);
    match db.backend() {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(db.url()).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
        }
    }
}

/// The password on the notice's `one-time password:` line.
fn printed_password(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.split_once(NOTICE))
        .map(|(_, p)| p.trim().to_string())
        .unwrap_or_else(|| panic!("no one-time password on stdout: {stdout:?}"))
}

/// Issue 5, item 1: on an empty database `serve` creates one ADMIN user `admin` with a
/// generated password printed once on stdout (not in the log), one-time (flagged until
/// `mediflow user passwd`); a second start creates nothing and prints nothing.
async fn first_start_prints_a_one_time_password_and_creates_one_admin(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut server = Server::start_secure_on(db, &[]).await;
    let stdout = server.stdout();
    let password = printed_password(&stdout);
    assert!(password.len() >= 20, "{password}");
    assert!(
        password.chars().all(|c| c.is_ascii_alphanumeric()),
        "{password}"
    );
    assert!(
        stdout.contains("mediflow user passwd --username admin"),
        "{stdout}"
    );
    assert!(!server.log().contains(&password), "the log never shows it");
    assert_eq!(
        stdout.matches(&password).count(),
        1,
        "printed once: {stdout}"
    );

    let users = user_list(server.db());
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0][..2], ["admin", "ADMIN"]);
    assert_eq!(users[0][3], "must-change-password", "{users:?}");
    let hash = stored_hash(server.db(), "admin").await;
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(mediflow_auth::password::verify(&password, &hash));

    server.restart().await;
    let again = server.stdout();
    assert!(
        !again.contains(NOTICE),
        "second start prints no password: {again}"
    );
    assert!(!again.contains(&password));
    assert_eq!(user_list(server.db()).len(), 1);

    // The way out of the one-time password.
    let new = "a new password of my own";
    let (out, err) = mediflow(
        server.db(),
        &["user", "passwd", "--username", "admin"],
        &[("MEDIFLOW_USER_PASSWORD", new)],
    );
    assert!(!format!("{out}{err}").contains(new));
    assert_eq!(user_list(server.db())[0][3], "-");
    let hash = stored_hash(server.db(), "admin").await;
    assert!(mediflow_auth::password::verify(new, &hash));
    assert!(!mediflow_auth::password::verify(&password, &hash));
}

/// Issue 5, item 1: with `MEDIFLOW_ADMIN_PASSWORD` the administrator gets that password,
/// which is neither printed (stdout) nor logged (stderr), and is not one-time.
async fn admin_password_from_the_environment_is_never_printed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let secret = "operator-chosen secret 42";
    let server =
        Server::start_secure_with_env(db, &[], &[("MEDIFLOW_ADMIN_PASSWORD", secret)]).await;
    let (stdout, log) = (server.stdout(), server.log());
    assert!(!stdout.contains(secret), "{stdout}");
    assert!(!log.contains(secret), "{log}");
    assert!(!stdout.contains(NOTICE), "{stdout}");
    assert!(!stdout.contains("secret"), "{stdout}");
    let users = user_list(server.db());
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0], ["admin", "ADMIN", "-", "-"]);
    assert!(mediflow_auth::password::verify(
        secret,
        &stored_hash(server.db(), "admin").await
    ));
}

/// No administrator appears with `--no-auth`, nor when the database has a user already.
async fn no_admin_is_created_without_auth_or_when_users_exist(backend: Backend) {
    let open = Server::start(backend).await;
    assert!(user_list(open.db()).is_empty());
    assert!(!open.stdout().contains(NOTICE));
    drop(open);

    let db = TestDb::new(backend).await;
    mediflow(
        &db,
        &["user", "add", "--username", "boss", "--role", "ADMIN"],
        &[("MEDIFLOW_USER_PASSWORD", "boss password")],
    );
    let server = Server::start_secure_on(db, &[]).await;
    assert!(!server.stdout().contains(NOTICE), "{}", server.stdout());
    let users = user_list(server.db());
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0][0], "boss");
}
