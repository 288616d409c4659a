//! Helpers shared by the integration tests: usage events, a fixed instant, app state; a real
//! `tollgate serve` and the venv's Python tools for the tests that drive it from outside.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod wait;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rust_decimal::Decimal;
use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::http::auth::Tokens;
use tollgate_control_plane::http::AppState;
use tollgate_control_plane::store::Store;
use tollgate_core::cost::CostBreakdown;
use tollgate_core::event::{Charge, Denied, UnchargedReason, UsageEvent};
use tollgate_core::identity::Principal;
use tollgate_core::provider::ApiFormat;
use tollgate_core::usage::Usage;

/// 2024-03-15 12:00:00 UTC, a Friday.
pub const NOW: i64 = 1_710_504_000;
/// 2024-03-15 00:00:00 UTC.
pub const TODAY: i64 = 1_710_460_800;
pub const DAY: i64 = 86_400;

pub const ADMIN: &str = "admin-token-for-tests-0123";
pub const DATAPLANE: &str = "dataplane-token-for-tests-0123";

/// The string `field` of every object in the JSON array `list` (e.g. each created key's
/// `secret`), in order; panics on anything else, which fails the test.
pub fn each_str(list: &serde_json::Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_str().unwrap().to_string())
        .collect()
}

pub fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

pub fn principal(
    org: &str,
    project: Option<&str>,
    user: Option<&str>,
    key: Option<&str>,
) -> Principal {
    Principal {
        key: key.map(str::to_string),
        user: user.map(str::to_string),
        project: project.map(str::to_string),
        org: org.into(),
    }
}

/// An event costing `usd` (as an actual charge: 1 input token × usd, so buckets add up).
pub fn event(id: &str, reporter: &str, seq: u64, ts: i64, p: &Principal, usd: &str) -> UsageEvent {
    let total = d(usd);
    UsageEvent {
        id: id.into(),
        reporter: reporter.into(),
        seq,
        ts,
        principal: p.clone().into(),
        model: "gpt-4o".into(),
        api: ApiFormat::OpenAiChat,
        usage: Usage {
            input_uncached: 1000,
            output: 10,
            ..Usage::default()
        },
        cost: CostBreakdown {
            input: total,
            total,
            ..CostBreakdown::default()
        },
        price_version: 1,
        charge: Charge::Actual,
        uncharged: None,
        status: 200,
        stream: false,
        requested_model: None,
        soft_warned: Vec::new(),
        denied: None,
    }
}

pub fn tokens() -> Tokens {
    Tokens::new(ADMIN, DATAPLANE).unwrap()
}

/// App state over `store` with a clock fixed at `NOW`, first snapshot built.
pub async fn state(store: Store) -> (AppState, Clock) {
    let clock = Clock::fixed(NOW);
    let state = AppState::new(store, tokens(), clock.clone());
    state.snapshots.rebuild().await.unwrap();
    (state, clock)
}

/// Kills and reaps a child on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real `tollgate serve` on a fresh SQLite file in a scratch directory of its own, its log
/// in `serve.log` there; killed, then the directory removed, on drop.
pub struct Served {
    _server: Killed,
    /// Its base URL.
    pub url: String,
    /// The scratch directory (the database, the log, whatever the test puts there).
    pub dir: tempfile::TempDir,
}

impl Served {
    /// Starts one with these API tokens, in a directory named from `prefix`.
    pub fn start(prefix: &str, admin: &str, dataplane: &str) -> Served {
        let dir = scratch(prefix);
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url"])
            .arg(dir.path().join("t.db"))
            .env("TOLLGATE_ADMIN_TOKEN", admin)
            .env("TOLLGATE_DATAPLANE_TOKEN", dataplane)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let url = announced_url(&mut child);
        Served {
            _server: Killed(child),
            url,
            dir,
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }
}

/// The base URL a `tollgate serve` child announces on its first stdout line
/// (`listening on ADDR`).
pub fn announced_url(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("tollgate serve printed {line:?}"))
        .to_string()
}

/// A scratch directory whose name starts with `prefix`, removed on drop.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// The project venv's bin directory (`bash scripts/setup.sh` makes it).
pub fn venv_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin")
}

/// The venv's `name` (pinned in `scripts/requirements.txt`); `None` when there is none and
/// `TOLLGATE_SKIP_PYTHON=1`, a panic saying how to get one otherwise.
pub fn venv_tool(name: &str) -> Option<PathBuf> {
    let bin = venv_bin().join(name);
    if bin.exists() {
        return Some(bin);
    }
    if std::env::var("TOLLGATE_SKIP_PYTHON").as_deref() == Ok("1") {
        eprintln!("SKIPPING: no {} (TOLLGATE_SKIP_PYTHON=1)", bin.display());
        return None;
    }
    panic!(
        "no {}: run `bash scripts/setup.sh` (or set TOLLGATE_SKIP_PYTHON=1)",
        bin.display()
    );
}

/// What a test's tracing subscriber wrote, kept in memory.
#[derive(Clone, Default)]
pub struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A subscriber logging everything at debug, without colours, into the returned buffer; the
/// test installs it (globally, or for its thread).
pub fn debug_log() -> (impl tracing::Subscriber + Send + Sync, LogBuf) {
    let buf = LogBuf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (subscriber, buf)
}

/// A denial record of `budget`: `requests` refusals from `first` to `ts`.
pub fn denial(
    id: &str,
    seq: u64,
    ts: i64,
    p: &Principal,
    budget: &str,
    requests: u64,
    first: i64,
) -> UsageEvent {
    let mut e = event(id, "r1", seq, ts, p, "0");
    e.usage = Default::default();
    e.charge = Charge::Zero;
    e.uncharged = Some(UnchargedReason::Denied);
    e.status = 429;
    e.denied = Some(Denied {
        budget: budget.into(),
        requests,
        first_ts: first,
    });
    e
}
