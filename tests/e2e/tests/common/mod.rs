//! Shared by the end-to-end tests: the binaries, a started and seeded stack, and checks on the
//! ledger with the timing the design promises (within two sync intervals).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate_tests::control_plane::Spend;
use tollgate_tests::pricing::{expected, litellm_book};
use tollgate_tests::{eventually, pricing, Binaries, Chain, Stack, StackOptions};
use tollgate_upstream::{Api, Controls};

/// The sync interval the tests run Envoy with.
pub const SYNC_INTERVAL_MS: u64 = 250;

/// Slack on top of "within 2 sync intervals" for process scheduling on a loaded 2-core CI
/// machine (Envoy, the control plane, the test and Python share two cores, and the tests of
/// one file run in parallel). Observed propagation is 25–260 ms; the slack only keeps a busy
/// machine from failing a correct run.
pub const SCHEDULING_SLACK: Duration = Duration::from_millis(750);

/// The test binaries (this package's control plane and upstream, the venv's Envoy, freshly
/// built wasm modules). `None` when `TOLLGATE_SKIP_ENVOY=1`.
pub fn bins() -> Option<Binaries> {
    if tollgate_tests::skip_envoy() {
        return None;
    }
    Some(
        Binaries::for_tests(
            env!("CARGO_BIN_EXE_tollgate-e2e-control-plane"),
            env!("CARGO_BIN_EXE_tollgate-e2e-upstream"),
        )
        .unwrap_or_else(|e| panic!("{e:#}")),
    )
}

/// A stack with the LiteLLM price map imported. `None` when Envoy tests are skipped.
pub fn stack() -> Option<Stack> {
    stack_with(StackOptions {
        sync_interval_ms: SYNC_INTERVAL_MS,
        ..StackOptions::default()
    })
}

/// [`stack`] with options.
pub fn stack_with(opts: StackOptions) -> Option<Stack> {
    let bins = bins()?;
    let stack = Stack::start(&bins, opts).unwrap_or_else(|e| panic!("{e:#}"));
    let map = std::fs::read(pricing::litellm_map_path().unwrap()).unwrap();
    stack.api().unwrap().import_litellm(map).unwrap();
    Some(stack)
}

/// The venv's Python, `None` when `TOLLGATE_SKIP_PYTHON=1` and there is none.
pub fn python() -> Option<PathBuf> {
    tollgate_tests::python::python().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Two sync intervals plus scheduling slack: the bound on propagation the tests assert.
pub fn two_intervals(stack: &Stack) -> Duration {
    stack.sync_interval() * 2 + SCHEDULING_SLACK
}

/// Waits until the ledger holds exactly `want` for a scope and returns how long it took;
/// fails (with what it last saw and every process's log) after 30 s.
pub fn ledger_reaches(stack: &Stack, scope: &str, id: &str, want: Spend) -> Duration {
    let api = stack.api().unwrap();
    let started = Instant::now();
    let mut last = None;
    let got = eventually(Duration::from_secs(30), || {
        let s = api.spend(scope, id).unwrap();
        last = Some(s);
        (s == want).then_some(())
    });
    assert!(
        got.is_some(),
        "ledger for {scope} {id}: expected {want:?}, last saw {last:?}\n{}",
        stack.logs()
    );
    started.elapsed()
}

/// A decimal from a header or JSON string.
pub fn dec(s: &str) -> Decimal {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is not a decimal: {e}"))
}

/// A blocking HTTP client for LLM calls (10 s timeout).
pub fn client() -> reqwest::blocking::Client {
    client_with(Duration::from_secs(10))
}

/// A blocking HTTP client whose every request gives up after `timeout`.
pub fn client_with(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap()
}

/// One chat completion (gpt-4o-mini, `max_tokens` 24): the request body, the status (0 when
/// no answer came: Envoy down, connection reset) and the response body.
pub fn chat(
    http: &reqwest::blocking::Client,
    url: &str,
    key: &str,
    text: &str,
) -> (Value, u16, Value) {
    let req = json!({"model": "gpt-4o-mini", "max_tokens": 24,
                     "messages": [{"role": "user", "content": text}]});
    let Ok(resp) = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&req)
        .send()
    else {
        return (req, 0, Value::Null);
    };
    let status = resp.status().as_u16();
    match resp.json() {
        Ok(body) => (req, status, body),
        // A body cut short is no answer the client could use.
        Err(_) => (req, 0, Value::Null),
    }
}

/// The exact cost of served chat completions (as [`chat`] sends them).
pub fn cost_of(requests: &[Value]) -> Decimal {
    let book = litellm_book().unwrap();
    requests
        .iter()
        .map(|r| {
            expected(book, Api::OpenAiChat, r, &Controls::default())
                .unwrap()
                .1
        })
        .sum()
}

/// What steady traffic saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Requests answered 200 with a whole body, with when the answer came.
    pub served: Vec<(Value, Instant)>,
    /// Everything else: request number, status (0: no answer), body.
    pub failed: Vec<(usize, u16, Value)>,
}

impl Seen {
    /// The served requests' bodies.
    pub fn served_requests(&self) -> Vec<Value> {
        self.served.iter().map(|(r, _)| r.clone()).collect()
    }
}

/// One client sending [`chat`] requests one after another (`pause` between them) until
/// stopped, at most 5,000.
pub struct Steady {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Seen>,
}

impl Steady {
    /// One request every 40 ms with `key`, started 1.5 s before it returns (so that the
    /// traffic is steady when the caller breaks something).
    pub fn warmed(stack: &Stack, key: &str) -> Steady {
        let traffic = Steady::start(
            &stack.url(),
            key,
            "steady request",
            Duration::from_millis(40),
        );
        std::thread::sleep(Duration::from_millis(1500));
        traffic
    }

    /// Starts the client against `url` with `key`; requests are numbered in `label`.
    pub fn start(url: &str, key: &str, label: &str, pause: Duration) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, url, key, label) = (
            stop.clone(),
            url.to_string(),
            key.to_string(),
            label.to_string(),
        );
        let handle = std::thread::spawn(move || {
            let http = client();
            let mut seen = Seen::default();
            for n in 0..5_000 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let (req, status, body) = chat(&http, &url, &key, &format!("{label} {n}"));
                if status == 200 {
                    seen.served.push((req, Instant::now()));
                } else {
                    seen.failed.push((n, status, body));
                }
                std::thread::sleep(pause);
            }
            seen
        });
        Steady { stop, handle }
    }

    /// Stops the client and returns what it saw.
    pub fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Waits until the ledger holds exactly the served chat completions `served` (as [`chat`]
/// sends them) for key `key_id`, one event each at its exact cost; returns how long it took.
pub fn ledger_has_chats(stack: &Stack, key_id: &str, served: &[Value]) -> Duration {
    ledger_reaches(
        stack,
        "key",
        key_id,
        Spend {
            requests: served.len() as u64,
            total_usd: cost_of(served),
        },
    )
}

/// Whether PostgreSQL tests were explicitly skipped (`TOLLGATE_SKIP_POSTGRES=1`, as for the
/// control plane's store tests); says so when they are.
pub fn skip_postgres() -> bool {
    let skip = tollgate_testkit::postgres::skip();
    if skip {
        eprintln!(
            "SKIPPING a PostgreSQL test ({}=1)",
            tollgate_testkit::postgres::SKIP_ENV
        );
    }
    skip
}

/// Waits (at most 10 s) until the Envoy at `url` knows virtual key `key`: a worker learns a
/// new key on its next tick, later under load. The probe is a chat request without a model,
/// which a known key gets refused with 400 before anything is reserved or metered (401 while
/// the key is unknown, 503 before the first snapshot).
pub fn wait_key_known(url: &str, key: &str) {
    let http = client();
    let known = eventually(Duration::from_secs(10), || {
        let resp = http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({}))
            .send()
            .ok()?;
        (resp.status() == 400).then_some(())
    });
    assert!(known.is_some(), "Envoy at {url} never accepted the key");
}

/// Rows of the stack's SQLite ledger for `sql` with one bound key id.
fn ledger_query<T>(stack: &Stack, sql: &str, key_id: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(stack.cp.database())
            .await
            .unwrap();
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(key_id)
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    })
}

/// Ledger rows of one key by charge and uncharged reason: `(charge, reason, count)`.
pub fn ledger_charges(stack: &Stack, key_id: &str) -> Vec<(String, Option<String>, i64)> {
    ledger_query(
        stack,
        "SELECT charge, uncharged, COUNT(*) FROM usage_events WHERE key_id = ?1 \
         AND denied_by IS NULL GROUP BY charge, uncharged ORDER BY charge",
        key_id,
    )
}

/// One ledger row: `(model, charge, uncharged, status, cost_usd, requested_model)`.
pub type LedgerRow = (String, String, Option<String>, i64, String, Option<String>);

/// Every ledger row of one key, oldest first.
pub fn ledger_rows(stack: &Stack, key_id: &str) -> Vec<LedgerRow> {
    ledger_query(
        stack,
        "SELECT model, charge, uncharged, status, cost_usd, requested_model FROM usage_events \
         WHERE key_id = ?1 AND denied_by IS NULL ORDER BY seq",
        key_id,
    )
}

/// Every ledger row's `detail` (its token counts, service tier, search context and cost
/// buckets as JSON) of one key, oldest first.
pub fn ledger_details(stack: &Stack, key_id: &str) -> Vec<serde_json::Value> {
    let rows: Vec<(String,)> = ledger_query(
        stack,
        "SELECT detail FROM usage_events WHERE key_id = ?1 AND denied_by IS NULL ORDER BY seq",
        key_id,
    );
    rows.iter()
        .map(|(d,)| serde_json::from_str(d).unwrap())
        .collect()
}

/// One ledger row's charge and tokens: `(charge, uncharged, input_tokens, output_tokens,
/// cost_usd)`; input counts every prompt token, cached ones included.
pub type TokenRow = (String, Option<String>, i64, i64, String);

/// Every ledger row of one key with its token counts, oldest first.
pub fn ledger_tokens(stack: &Stack, key_id: &str) -> Vec<TokenRow> {
    ledger_query(
        stack,
        "SELECT charge, uncharged, input_tokens, output_tokens, cost_usd FROM usage_events \
         WHERE key_id = ?1 AND denied_by IS NULL ORDER BY seq",
        key_id,
    )
}

/// A POST of `body` to `url` + `path` with `chain`'s key in `key_header` (as a bearer token
/// in `authorization`) and extra `headers`.
pub fn keyed_post(
    url: &str,
    chain: &Chain,
    (path, key_header): (&str, &str),
    headers: &[(&str, &str)],
    body: &Value,
) -> reqwest::blocking::Response {
    let key = if key_header == "authorization" {
        format!("Bearer {}", chain.secret)
    } else {
        chain.secret.clone()
    };
    let mut req = client()
        .post(format!("{url}{path}"))
        .header(key_header, key)
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().unwrap()
}

/// Waits until the ledger holds `requests` requests of `key_id` costing `total` USD.
pub fn key_spend_reaches(stack: &Stack, key_id: &str, requests: usize, total: Decimal) {
    ledger_reaches(
        stack,
        "key",
        key_id,
        Spend {
            requests: requests as u64,
            total_usd: total,
        },
    );
}

/// The stack's API and a new chain ([`tollgate_tests::Api::create_chain`]) the control plane
/// has synced to Envoy.
pub fn synced_chain(stack: &Stack, prefix: &str) -> (tollgate_tests::Api, Chain) {
    let api = stack.api().unwrap();
    let chain = api.create_chain(prefix).unwrap();
    stack.wait_for_sync().unwrap();
    (api, chain)
}

/// A chain with a budget of `limit` USD on its key, known to Envoy (every worker: a loaded
/// machine may take a tick longer than the snapshot version says).
pub fn funded(stack: &Stack, prefix: &str, limit: &str) -> Chain {
    let admin = stack.api().unwrap();
    let chain = admin.create_chain(prefix).unwrap();
    admin
        .create_budget("key", &chain.key_id, "total", limit)
        .unwrap();
    stack.wait_for_sync().unwrap();
    wait_key_known(&stack.url(), &chain.secret);
    chain
}

/// A counter of the control plane at `url` (`tollgate_snapshot_sent_total{shape="delta"}`).
pub fn cp_counter(url: &str, series: &str) -> u64 {
    let text = client()
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let name = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(name.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Snapshot polls the control plane at `url` answered: (deltas, whole snapshots, 304s).
pub fn snapshot_polls(url: &str) -> (u64, u64, u64) {
    let sent = |shape: &str| {
        cp_counter(
            url,
            &format!("tollgate_snapshot_sent_total{{shape=\"{shape}\"}}"),
        )
    };
    (
        sent("delta"),
        sent("whole"),
        cp_counter(url, "tollgate_snapshot_not_modified_total"),
    )
}

/// The requests `seen` served, after asserting that none was refused, that there were more
/// than `at_least`, and that the ledger holds each exactly once at its price (`ledger_has_chats`).
pub fn served_once(stack: &Stack, key_id: &str, seen: Seen, at_least: usize) -> Vec<Value> {
    let (served, refused) = (seen.served_requests(), seen.failed);
    assert!(refused.is_empty(), "requests refused: {refused:?}");
    assert!(served.len() > at_least, "only {} requests", served.len());
    let took = ledger_has_chats(stack, key_id, &served);
    eprintln!(
        "{} requests served; the ledger caught up {took:?} after the traffic stopped",
        served.len()
    );
    served
}
