//! Migrated control-plane stores for tests and benches, on both backends.
//!
//! SQLite: a database file in a temporary directory of its own (removed with its WAL when the
//! guard drops). PostgreSQL: a database of its own on the test server ([`crate::postgres`]),
//! cloned from a migrated template (`CREATE DATABASE … TEMPLATE`), which costs milliseconds
//! instead of a migration run.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sqlx::Connection;
pub use tollgate_control_plane::store::Backend;
use tollgate_control_plane::store::Store;

use crate::postgres::{pg_server, skip, unique, SKIP_ENV};

/// A SQLite database file in a temporary directory; dropping it removes both (and the WAL).
#[derive(Debug)]
pub struct TempSqlite {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TempSqlite {
    /// A fresh, not yet created, database file.
    pub fn new() -> TempSqlite {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("a temporary directory: {e}"));
        TempSqlite {
            path: dir.path().join("tollgate.db"),
            _dir: dir,
        }
    }

    /// The database file (also its URL for [`Store::connect`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file as a database URL.
    pub fn url(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

impl Default for TempSqlite {
    fn default() -> Self {
        TempSqlite::new()
    }
}

/// A migrated SQLite database in a fresh temporary file.
pub async fn sqlite_store() -> (Store, TempSqlite) {
    let file = TempSqlite::new();
    let url = file.url();
    let store = match Store::connect(&url).await {
        Ok(s) => s,
        Err(e) => panic!("cannot open SQLite at {url}: {e}"),
    };
    if let Err(e) = store.migrate().await {
        panic!("cannot migrate SQLite: {e}");
    }
    (store, file)
}

/// A migrated PostgreSQL database of its own on the test server, or `None` when
/// `TOLLGATE_SKIP_POSTGRES=1` and no server could be had. Panics loudly otherwise.
pub async fn postgres_store() -> Option<Store> {
    test_db(Backend::Postgres).await.map(|db| db.store)
}

/// The URL of a fresh migrated database on the test server.
pub async fn postgres_url() -> Result<String, String> {
    let server = pg_server()?;
    static TEMPLATE: OnceLock<tokio::sync::Mutex<Option<String>>> = OnceLock::new();
    let lock = TEMPLATE.get_or_init(|| tokio::sync::Mutex::new(None));
    let mut template = lock.lock().await;
    let mut admin = sqlx::PgConnection::connect(&server.admin_url)
        .await
        .map_err(|e| format!("connect {}: {e}", server.admin_url))?;
    if template.is_none() {
        let name = unique("tollgate_template");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .map_err(|e| format!("create template: {e}"))?;
        let store = Store::connect(&server.url(&name))
            .await
            .map_err(|e| format!("connect template: {e}"))?;
        store
            .migrate()
            .await
            .map_err(|e| format!("migrate template: {e}"))?;
        store.close().await;
        *template = Some(name);
    }
    let name = unique("tollgate_test");
    let Some(template_name) = template.as_deref() else {
        return Err("no template".into());
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE {template_name}"
    )))
    .execute(&mut admin)
    .await
    .map_err(|e| format!("create database: {e}"))?;
    let _ = admin.close().await;
    Ok(server.url(&name))
}

/// A migrated database of one test's own: the store, and its URL for reaching it behind the
/// store's back ([`with_connection!`]).
#[derive(Debug)]
pub struct TestDb {
    /// The store over it.
    pub store: Store,
    /// Its URL (a file path for SQLite).
    pub url: String,
    /// The SQLite file, removed on drop.
    pub file: Option<TempSqlite>,
}

/// A fresh migrated database on `backend`; `None` only for PostgreSQL when
/// `TOLLGATE_SKIP_POSTGRES=1` and no server could be had (it says so). Panics otherwise.
pub async fn test_db(backend: Backend) -> Option<TestDb> {
    match backend {
        Backend::Sqlite => {
            let (store, file) = sqlite_store().await;
            Some(TestDb {
                store,
                url: file.url(),
                file: Some(file),
            })
        }
        Backend::Postgres => {
            let url = match postgres_url().await {
                Ok(url) => url,
                Err(e) if skip() => {
                    eprintln!("SKIPPING PostgreSQL ({SKIP_ENV}=1): {e}");
                    return None;
                }
                Err(e) => panic!(
                    "PostgreSQL test server unavailable: {e}\n\
                     (set {SKIP_ENV}=1 to skip the PostgreSQL half of the store tests)"
                ),
            };
            match Store::connect(&url).await {
                Ok(store) => Some(TestDb {
                    store,
                    url,
                    file: None,
                }),
                Err(e) => panic!("cannot connect to the test database {url}: {e}"),
            }
        }
    }
}

/// Runs one test body against SQLite and against PostgreSQL, as two tests named
/// `<name>::sqlite` and `<name>::postgres`. The body sees the store as `$store` and, in the
/// second form, the database's URL as `$url`.
#[macro_export]
macro_rules! store_test {
    (@run $backend:ident, |$store:ident, $url:ident| $body:block) => {
        let Some($crate::TestDb {
            store: $store,
            url: $url,
            file: _file,
        }) = $crate::test_db($crate::store::Backend::$backend).await
        else {
            return;
        };
        $body
    };
    ($name:ident, |$store:ident| $body:block) => {
        $crate::store_test!($name, |$store, _url| $body);
    };
    ($name:ident, |$store:ident, $url:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                $crate::store_test!(@run Sqlite, |$store, $url| $body);
            }

            #[tokio::test]
            async fn postgres() {
                $crate::store_test!(@run Postgres, |$store, $url| $body);
            }
        }
    };
}

/// Runs `$body` with `$conn` bound to a connection of its own to the database at `$url`
/// (`postgres://…`, else a SQLite file) and `$pg` to whether it is PostgreSQL: for what a test
/// or bench does behind the store's back (bulk loads, rebuilding derived tables). The body is
/// compiled once per backend and evaluates to a `Result<_, sqlx::Error>`; so does the macro.
#[macro_export]
macro_rules! with_connection {
    ($url:expr, |$conn:ident, $pg:ident| $body:expr) => {{
        use $crate::sqlx::Connection as _;
        let url: &str = $url;
        if url.starts_with("postgres") {
            #[allow(unused_variables)]
            let $pg = true;
            match $crate::sqlx::PgConnection::connect(url).await {
                Ok(mut $conn) => $body,
                Err(e) => Err(e),
            }
        } else {
            #[allow(unused_variables)]
            let $pg = false;
            let options = $crate::sqlx::sqlite::SqliteConnectOptions::new()
                .filename(url)
                .busy_timeout(::std::time::Duration::from_secs(30));
            match $crate::sqlx::SqliteConnection::connect_with(&options).await {
                Ok(mut $conn) => $body,
                Err(e) => Err(e),
            }
        }
    }};
}
