//! Test and bench fixtures: fresh databases on both backends, and a throwaway PostgreSQL
//! server that the test binary starts by itself.
//!
//! PostgreSQL: unless `TOLLGATE_TEST_PG_URL` names a server to use (an admin URL such as
//! `postgres://postgres@127.0.0.1:5433/postgres`, e.g. from `scripts/pg.sh start`), the first
//! test that needs it runs `initdb` and `pg_ctl` from `/usr/lib/postgresql/15/bin` (or
//! `TOLLGATE_PG_BIN`) as the `postgres` user (when running as root) in a temporary directory,
//! on a free port of 127.0.0.1, once per test binary. A watchdog process stops the server
//! and removes the directory when the test binary exits, however it exits. If the server
//! cannot be started the tests FAIL, unless `TOLLGATE_SKIP_POSTGRES=1` is set explicitly.
//!
//! Each test gets its own database, cloned from a migrated template (`CREATE DATABASE …
//! TEMPLATE`), which costs milliseconds instead of a migration run. The test server runs with
//! `fsync=off` (the data is thrown away); `TOLLGATE_PG_DURABLE=1` keeps the defaults, which
//! is what the benches use for honest numbers.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use sqlx::Connection;

use crate::store::Store;

/// Set to `1` to skip PostgreSQL tests instead of failing when no server can be started.
pub const SKIP_ENV: &str = "TOLLGATE_SKIP_POSTGRES";
/// An existing server's admin URL to use instead of starting one.
pub const URL_ENV: &str = "TOLLGATE_TEST_PG_URL";

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Deletes a SQLite database file and its WAL companions when dropped.
#[derive(Debug)]
pub struct TempDb(pub PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A migrated SQLite database in a fresh temporary file.
pub async fn sqlite_store() -> (Store, TempDb) {
    let path = std::env::temp_dir().join(format!("{}.db", unique("tollgate-test")));
    let guard = TempDb(path.clone());
    let url = path.to_string_lossy().to_string();
    let store = match Store::connect(&url).await {
        Ok(s) => s,
        Err(e) => panic!("cannot open SQLite at {url}: {e}"),
    };
    if let Err(e) = store.migrate().await {
        panic!("cannot migrate SQLite: {e}");
    }
    (store, guard)
}

/// A migrated PostgreSQL database of its own on the test server, or `None` when
/// `TOLLGATE_SKIP_POSTGRES=1` and no server could be had. Panics loudly otherwise.
pub async fn postgres_store() -> Option<Store> {
    let url = match postgres_url().await {
        Ok(url) => url,
        Err(e) if skip_postgres() => {
            eprintln!("SKIPPING PostgreSQL ({SKIP_ENV}=1): {e}");
            return None;
        }
        Err(e) => panic!(
            "PostgreSQL test server unavailable: {e}\n\
             (set {SKIP_ENV}=1 to skip the PostgreSQL half of the store tests)"
        ),
    };
    match Store::connect(&url).await {
        Ok(s) => Some(s),
        Err(e) => panic!("cannot connect to the test database {url}: {e}"),
    }
}

fn skip_postgres() -> bool {
    std::env::var(SKIP_ENV).is_ok_and(|v| v == "1")
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
        sqlx::query(&format!("CREATE DATABASE {name}"))
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
    sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template_name}"))
        .execute(&mut admin)
        .await
        .map_err(|e| format!("create database: {e}"))?;
    let _ = admin.close().await;
    Ok(server.url(&name))
}

/// A PostgreSQL server for tests.
#[derive(Debug)]
pub struct PgServer {
    /// URL of the `postgres` database as the `postgres` superuser.
    pub admin_url: String,
    base: String,
    /// How to stop and start it (only a server this process started).
    control: Option<PgControl>,
}

/// What `pg_ctl` needs to stop the server and start it again the same way.
#[derive(Debug)]
struct PgControl {
    root: bool,
    pg_ctl: PathBuf,
    data: PathBuf,
    log: PathBuf,
    opts: String,
}

impl PgServer {
    /// URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    fn control(&self) -> Result<&PgControl, String> {
        self.control
            .as_ref()
            .ok_or_else(|| format!("the server named by {URL_ENV} is not ours to stop"))
    }

    /// Stops the server the way a crash would (`pg_ctl stop -m immediate`: no checkpoint,
    /// every connection cut), for fault tests. Every user of the server sees it go.
    pub fn crash(&self) -> Result<(), String> {
        let c = self.control()?;
        let mut cmd = pg_command(c.root, &c.pg_ctl);
        cmd.arg("-D")
            .arg(&c.data)
            .args(["-w", "-t", "60", "stop", "-m", "immediate"]);
        run(cmd, "pg_ctl stop")
    }

    /// Starts the server again after [`PgServer::crash`], on the same port and data (it
    /// recovers from its WAL first).
    pub fn start_again(&self) -> Result<(), String> {
        let c = self.control()?;
        let mut cmd = pg_command(c.root, &c.pg_ctl);
        cmd.arg("-D")
            .arg(&c.data)
            .arg("-l")
            .arg(&c.log)
            .args(["-w", "-t", "60", "-o", &c.opts, "start"]);
        run(cmd, "pg_ctl start")
    }
}

/// The test server: the one named by `TOLLGATE_TEST_PG_URL`, else one started for this
/// process on first use.
pub fn pg_server() -> Result<&'static PgServer, String> {
    static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var(URL_ENV) {
            Ok(url) => {
                let base = url
                    .rsplit_once('/')
                    .map(|(b, _)| b.to_string())
                    .ok_or_else(|| format!("{URL_ENV}={url:?} has no database part"))?;
                Ok(PgServer {
                    admin_url: url,
                    base,
                    control: None,
                })
            }
            Err(_) => start_server(),
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn pg_bin() -> PathBuf {
    std::env::var_os("TOLLGATE_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (initdb refuses root).
fn pg_command(root: bool, tool: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(tool);
        c
    } else {
        Command::new(tool)
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Starts a server in a temporary directory; a watchdog stops it when this process exits.
/// Durable only with `TOLLGATE_PG_DURABLE=1` (see [`start_server_with`]).
pub fn start_server() -> Result<PgServer, String> {
    start_server_with(std::env::var("TOLLGATE_PG_DURABLE").is_ok_and(|v| v == "1"))
}

/// [`start_server`], durable or not: a durable server keeps PostgreSQL's defaults (`fsync`,
/// `synchronous_commit`), so a commit it acknowledged survives a crash — what a crash test
/// needs; the fast one may lose the last commits before a [`PgServer::crash`].
pub fn start_server_with(durable: bool) -> Result<PgServer, String> {
    let bin = pg_bin();
    let initdb = bin.join("initdb");
    let pg_ctl = bin.join("pg_ctl");
    if !initdb.exists() {
        return Err(format!(
            "{} not found (install postgresql-15, or set TOLLGATE_PG_BIN)",
            initdb.display()
        ));
    }
    let root = is_root();
    let dir = std::env::temp_dir().join(unique("tollgate-pg"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    if root {
        let mut c = Command::new("chown");
        c.args(["-R", "postgres:"]).arg(&dir);
        run(c, "chown")?;
    }
    let data = dir.join("data");
    let mut c = pg_command(root, &initdb);
    c.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "--auth=trust",
        "--no-sync",
        "-E",
        "UTF8",
        "--locale=C",
    ]);
    run(c, "initdb")?;
    let mut last_err = String::new();
    for _ in 0..3 {
        let port = free_port()?;
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
            dir.display()
        );
        if !durable {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let control = PgControl {
            root,
            pg_ctl: pg_ctl.clone(),
            data: data.clone(),
            log: dir.join("log"),
            opts,
        };
        let mut c = pg_command(root, &pg_ctl);
        c.arg("-D").arg(&data).arg("-l").arg(&control.log).args([
            "-w",
            "-t",
            "60",
            "-o",
            &control.opts,
            "start",
        ]);
        match run(c, "pg_ctl start") {
            Ok(()) => {
                spawn_watchdog(root, &pg_ctl, &data, &dir)?;
                let base = format!("postgres://postgres@127.0.0.1:{port}");
                return Ok(PgServer {
                    admin_url: format!("{base}/postgres"),
                    base,
                    control: Some(control),
                });
            }
            // Another process may have taken the port between our probe and the start.
            Err(e) => last_err = e,
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Err(last_err)
}

/// A detached shell that waits for this process to exit, then stops the server and removes
/// its directory. `setsid` keeps it out of the test's process group, so a Ctrl-C that kills
/// the tests does not kill the cleanup.
fn spawn_watchdog(root: bool, pg_ctl: &Path, data: &Path, dir: &Path) -> Result<(), String> {
    let stop = if root {
        format!(
            "runuser -u postgres -- '{}' -D '{}' stop -m immediate",
            pg_ctl.display(),
            data.display()
        )
    } else {
        format!(
            "'{}' -D '{}' stop -m immediate",
            pg_ctl.display(),
            data.display()
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("cannot start the cleanup watchdog: {e}"))
}

/// Runs one test body against SQLite and against PostgreSQL, as two tests named
/// `<name>::sqlite` and `<name>::postgres`. The body sees the store as `$store`.
#[macro_export]
macro_rules! store_test {
    ($name:ident, |$store:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let (store, _guard) = $crate::testkit::sqlite_store().await;
                let $store = store;
                $body
            }

            #[tokio::test]
            async fn postgres() {
                let Some(store) = $crate::testkit::postgres_store().await else {
                    return;
                };
                let $store = store;
                $body
            }
        }
    };
}

/// Empties `key_buckets` and fills it again from every active key with migration 0003's
/// back-fill statement, in the transaction `$tx`.
macro_rules! refill_key_buckets_in {
    ($tx:expr, $pg:expr) => {
        sqlx::query("DELETE FROM key_buckets")
            .execute(&mut *$tx)
            .await?;
        sqlx::query(&crate::store::key_buckets::refresh_all_sql($pg))
            .execute(&mut *$tx)
            .await?;
    };
}

/// Rebuilds the snapshot's key buckets from scratch as migration 0003's back-fill does (a
/// bulk load writes keys without them; tests compare the result with the buckets kept up to
/// date key by key). Bumps nothing: the content must not change.
pub async fn refill_key_buckets(store: &Store) -> Result<(), crate::store::StoreError> {
    use crate::store::with_pool;
    with_pool!(store, write, |pool, pg| {
        let mut tx = pool.begin_with(crate::store::begin_write(pg)).await?;
        refill_key_buckets_in!(tx, pg);
        tx.commit().await?;
    });
    Ok(())
}

/// Bulk-loads a fleet for benches: `orgs` organisations, a project per 10 keys, a user per 10
/// keys, `keys` virtual keys (secret of key `i` is `tg-bench-{i}`) and `budgets` budgets that
/// cycle through the four scopes, four periods and five timezones. Rows go in with multi-row
/// inserts in one transaction (the API would take minutes for 100,000 keys), the snapshot's
/// key buckets filled once at the end.
pub async fn seed_fleet(
    store: &Store,
    orgs: usize,
    budgets: usize,
    keys: usize,
    now: i64,
) -> Result<(), crate::store::StoreError> {
    use crate::store::{with_pool, Money};
    use rust_decimal::Decimal;
    let orgs = orgs.max(1);
    let groups = keys.div_ceil(10).max(1);
    let zones = [
        "UTC",
        "Europe/Paris",
        "America/New_York",
        "Asia/Kolkata",
        "Australia/Sydney",
    ];
    let scopes = ["org", "project", "user", "key"];
    let periods = ["daily", "weekly", "monthly", "total"];
    with_pool!(store, write, |pool, pg| {
        let mut tx = pool.begin_with(crate::store::begin_write(pg)).await?;
        let org_rows: Vec<usize> = (0..orgs).collect();
        for chunk in org_rows.chunks(5000) {
            let mut qb = sqlx::QueryBuilder::new("INSERT INTO orgs (id, name, created_at) ");
            qb.push_values(chunk, |mut b, i| {
                b.push_bind(format!("org-{i}"))
                    .push_bind(format!("Org {i}"))
                    .push_bind(now);
            });
            qb.build().execute(&mut *tx).await?;
        }
        let group_rows: Vec<usize> = (0..groups).collect();
        for chunk in group_rows.chunks(5000) {
            let mut qb =
                sqlx::QueryBuilder::new("INSERT INTO projects (id, org_id, name, created_at) ");
            qb.push_values(chunk, |mut b, i| {
                b.push_bind(format!("prj-{i}"))
                    .push_bind(format!("org-{}", i % orgs))
                    .push_bind("p")
                    .push_bind(now);
            });
            qb.build().execute(&mut *tx).await?;
            let mut qb =
                sqlx::QueryBuilder::new("INSERT INTO users (id, org_id, name, created_at) ");
            qb.push_values(chunk, |mut b, i| {
                b.push_bind(format!("usr-{i}"))
                    .push_bind(format!("org-{}", i % orgs))
                    .push_bind("u")
                    .push_bind(now);
            });
            qb.build().execute(&mut *tx).await?;
        }
        let key_rows: Vec<usize> = (0..keys).collect();
        for chunk in key_rows.chunks(3000) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO virtual_keys (id, sha256, prefix, name, org_id, project_id, user_id, created_at) ",
            );
            qb.push_values(chunk, |mut b, i| {
                let g = i / 10;
                b.push_bind(format!("key-{i}"))
                    .push_bind(tollgate_core::identity::key_hash(&format!("tg-bench-{i}")))
                    .push_bind("tg-bench")
                    .push_bind("bench")
                    .push_bind(format!("org-{}", g % orgs))
                    .push_bind(format!("prj-{g}"))
                    .push_bind(format!("usr-{g}"))
                    .push_bind(now);
            });
            qb.build().execute(&mut *tx).await?;
        }
        let budget_rows: Vec<usize> = (0..budgets).collect();
        for chunk in budget_rows.chunks(3000) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO budgets (id, scope, scope_id, period, timezone, limit_usd, soft_limit_usd, mode, created_at, updated_at) ",
            );
            qb.push_values(chunk, |mut b, i| {
                let scope = scopes.get(i % 4).copied().unwrap_or("org");
                let scope_id = match scope {
                    // Unique per budget (an org budget may name an org that is not
                    // registered, as with a trusted principal header): exactly `budgets` rows.
                    "org" => format!("org-{}", i / 4),
                    "project" => format!("prj-{}", i / 4),
                    "user" => format!("usr-{}", i / 4),
                    _ => format!("key-{}", i / 4),
                };
                b.push_bind(format!("bud-{i}"))
                    .push_bind(scope)
                    .push_bind(scope_id)
                    .push_bind(periods.get((i / 4) % 4).copied().unwrap_or("daily"))
                    .push_bind(zones.get(i % 5).copied().unwrap_or("UTC"))
                    .push_bind(Money(Decimal::from(100)))
                    .push_bind(Some(Money(Decimal::from(80))))
                    .push_bind("enforce")
                    .push_bind(now)
                    .push_bind(now);
            });
            qb.build().execute(&mut *tx).await?;
        }
        sqlx::query(
            "UPDATE meta SET version = version + 1, keys_version = keys_version + 1, \
             budgets_version = budgets_version + 1 WHERE id = 1",
        )
        .execute(&mut *tx)
        .await?;
        refill_key_buckets_in!(tx, pg);
        tx.commit().await?;
        store.committed_change();
        if pg {
            // Planner statistics, as autovacuum gathers within a minute of a bulk load on a
            // live server: without them PostgreSQL plans for tables a few pages long.
            sqlx::query("ANALYZE").execute(pool).await?;
        }
    });
    Ok(())
}
