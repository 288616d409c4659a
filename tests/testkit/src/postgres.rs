//! A throwaway PostgreSQL server for tests, and fresh databases on it.
//!
//! Unless `TOLLGATE_TEST_PG_URL` names a server to use (an admin URL such as
//! `postgres://postgres@127.0.0.1:5433/postgres`, e.g. from `scripts/pg.sh start`), the first
//! test that needs it runs `initdb` and `pg_ctl` from `/usr/lib/postgresql/15/bin` (or
//! `TOLLGATE_PG_BIN`) as the `postgres` user (when running as root) in a temporary directory,
//! on a free port of 127.0.0.1, once per test binary. A watchdog process stops the server
//! and removes the directory when the test binary exits, however it exits. If the server
//! cannot be started the tests FAIL, unless `TOLLGATE_SKIP_POSTGRES=1` is set explicitly.
//!
//! The test server runs with `fsync=off` (the data is thrown away); `TOLLGATE_PG_DURABLE=1`
//! keeps the defaults, which is what the benches use for honest numbers.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Set to `1` to skip PostgreSQL tests instead of failing when no server can be started.
pub const SKIP_ENV: &str = "TOLLGATE_SKIP_POSTGRES";
/// An existing server's admin URL to use instead of starting one.
pub const URL_ENV: &str = "TOLLGATE_TEST_PG_URL";

/// Whether PostgreSQL tests are to be skipped (`TOLLGATE_SKIP_POSTGRES=1`) when no server can
/// be had.
pub fn skip() -> bool {
    std::env::var(SKIP_ENV).is_ok_and(|v| v == "1")
}

/// A name no other database of this server has: `prefix`, this process, a counter.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
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
    // Kept (not removed on drop): the server outlives every handle, and the watchdog removes
    // the directory when the process exits.
    let dir = tempfile::Builder::new()
        .prefix("tollgate-pg-")
        .tempdir()
        .map_err(|e| format!("a temporary directory: {e}"))?
        .keep();
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
