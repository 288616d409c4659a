//! Fleet-scale sync (issue 18, "Scale"): a fleet of 100,000 virtual keys and 10,000 budgets
//! under steady traffic, measured from the outside only (the REST API, Envoy's admin port and
//! `/proc`), so that it measures whatever the snapshot protocol of the day does.
//!
//! One stack (control plane on SQLite with its production `--snapshot-min-interval-ms` of
//! 200, the mock upstream, Envoy with `envoy/tollgate.yaml`), the LiteLLM prices imported,
//! then the fleet through `POST /v1/bulk`: 10 organisations and 100 projects (one by one),
//! `keys / 10` users, the keys (key `i` charges user `i % users`, that user's project and
//! organisation) and the budgets (every organisation and project, then users and keys
//! alternately from the first: the keys traffic uses each touch four budgets), every limit
//! $1,000,000 so that traffic is never refused. Then, for each Envoy worker count, a fresh
//! Envoy (started after the fleet was loaded, so that nothing it decoded before counts):
//!
//! - warm-up: client threads send small OpenAI chat requests round-robin over the working set
//!   of keys, and fresh connections until every worker served some (per-worker listener
//!   stats); every worker has loaded the fleet's snapshot (workers look on each tick anyway);
//! - steady window: bytes Envoy received from (and sent to) the control-plane cluster
//!   (`cluster.tollgate_control_plane.upstream_cx_{rx,tx}_bytes_total`) per second, its
//!   requests (snapshot polls and usage posts) and the snapshot versions loaded, the traffic's
//!   rate, and Envoy's `VmRSS` sampled every second; MB per added worker is the slope of the
//!   mean RSS over the worker counts;
//! - propagation, traffic still running: one key is revoked (time until Envoy answers 401
//!   for it) and one key's budget is lowered below a request's cost (time until 429), each
//!   from just before the API call, in ms and in sync intervals.
//!
//! Knobs (environment): `TOLLGATE_FLEET_KEYS` (100000), `TOLLGATE_FLEET_BUDGETS` (10000),
//! `TOLLGATE_FLEET_WORKING_SET` (1000), `TOLLGATE_FLEET_THREADS` (8),
//! `TOLLGATE_FLEET_SECONDS` (20), `TOLLGATE_FLEET_WARMUP_SECONDS` (5),
//! `TOLLGATE_FLEET_SYNC_MS` (1000), `TOLLGATE_FLEET_SNAPSHOT_MIN_MS` (200),
//! `TOLLGATE_FLEET_CONCURRENCY` (`1,2,4`).
//!
//! Run: `cargo bench -p tollgate-tests --bench fleet` (see `benches/README.md`).
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use tollgate_tests::envoy::Envoy;
use tollgate_tests::{eventually, pricing, Api, Binaries, Stack, StackOptions};

/// The cluster the sync service calls the control plane through (`envoy/tollgate.yaml`).
const CP_CLUSTER: &str = "tollgate_control_plane";
/// Items per `POST /v1/bulk` (the control plane's limit).
const MAX_ITEMS_PER_CALL: usize = 100_000;
const ORGS: usize = 10;
const PROJECTS: usize = 100;
/// Every budget's limit: traffic is never refused.
const GENEROUS_USD: &str = "1000000";
/// Below the cost of one request: the lowered budget refuses the next one.
const TINY_USD: &str = "0.000001";
/// Requests per connection of a traffic thread before it opens a new one (spreads the
/// traffic over Envoy's workers, which the kernel picks per connection).
const REQUESTS_PER_CONNECTION: u64 = 200;
/// Bound on the requests of one traffic thread.
const MAX_REQUESTS_PER_THREAD: u64 = 10_000_000;
/// Bound on the wait for a propagation.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What a run measures, from the environment.
#[derive(Debug, Clone)]
struct Knobs {
    keys: usize,
    budgets: usize,
    working_set: usize,
    threads: usize,
    seconds: u64,
    warmup_seconds: u64,
    sync_ms: u64,
    snapshot_min_ms: u64,
    concurrency: Vec<u32>,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

impl Knobs {
    fn from_env() -> Result<Knobs> {
        let concurrency = std::env::var("TOLLGATE_FLEET_CONCURRENCY")
            .unwrap_or_else(|_| "1,2,4".into())
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("TOLLGATE_FLEET_CONCURRENCY: {s:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let k = Knobs {
            keys: env_num("TOLLGATE_FLEET_KEYS", 100_000)?,
            budgets: env_num("TOLLGATE_FLEET_BUDGETS", 10_000)?,
            working_set: env_num("TOLLGATE_FLEET_WORKING_SET", 1_000)?,
            threads: env_num("TOLLGATE_FLEET_THREADS", 8)?,
            seconds: env_num("TOLLGATE_FLEET_SECONDS", 20)?,
            warmup_seconds: env_num("TOLLGATE_FLEET_WARMUP_SECONDS", 5)?,
            sync_ms: env_num("TOLLGATE_FLEET_SYNC_MS", 1_000)?,
            snapshot_min_ms: env_num("TOLLGATE_FLEET_SNAPSHOT_MIN_MS", 200)?,
            concurrency,
        };
        if k.working_set == 0 || k.threads == 0 || k.seconds == 0 || k.sync_ms == 0 {
            bail!("the working set, threads, seconds and sync interval must be positive");
        }
        // Two probe keys per worker count come after the working set.
        if k.keys < k.working_set + 2 * k.concurrency.len() {
            bail!(
                "TOLLGATE_FLEET_KEYS={} leaves no probe keys beside a working set of {}",
                k.keys,
                k.working_set
            );
        }
        Ok(k)
    }
}

fn org(i: usize) -> String {
    format!("org-{i}")
}

fn project(i: usize) -> String {
    format!("prj-{i}")
}

fn user(i: usize) -> String {
    format!("usr-{i}")
}

/// The two keys one worker count's propagation measurement uses.
#[derive(Debug, Clone)]
struct Probe {
    revoke_id: String,
    revoke_secret: String,
    budget_secret: String,
    budget_id: String,
}

/// The seeded fleet: the secrets traffic uses and the probes.
struct Fleet {
    traffic: Vec<String>,
    probes: Vec<Probe>,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `POST /v1/bulk` with one section; the answer's array of that section.
fn bulk(api: &Api, section: &str, items: Vec<Value>, answer: &str) -> Result<Vec<Value>> {
    let n = items.len();
    let started = Instant::now();
    let v = api.post("/v1/bulk", &json!({ section: items }))?;
    let done = match v.get(answer) {
        Some(Value::Array(a)) => a.clone(),
        _ => bail!("POST /v1/bulk: no {answer:?} in the answer"),
    };
    if done.len() != n {
        bail!(
            "POST /v1/bulk: {n} {section} sent, {} in the answer",
            done.len()
        );
    }
    eprintln!(
        "fleet: bulk {n:>6} {section:<7} in {}",
        secs(started.elapsed())
    );
    Ok(done)
}

fn str_of<'a>(v: &'a Value, field: &str) -> Result<&'a str> {
    v.get(field)
        .and_then(Value::as_str)
        .with_context(|| format!("no {field:?} in {v}"))
}

/// Creates the fleet through the API (module docs).
fn seed(stack: &Stack, api: &Api, k: &Knobs) -> Result<Fleet> {
    let users = (k.keys / 10).clamp(1, MAX_ITEMS_PER_CALL);
    let started = Instant::now();
    for o in 0..ORGS {
        api.post("/v1/orgs", &json!({"id": org(o), "name": "fleet"}))?;
    }
    for p in 0..PROJECTS {
        api.post(
            "/v1/projects",
            &json!({"id": project(p), "org_id": org(p % ORGS), "name": "fleet"}),
        )?;
    }
    eprintln!(
        "fleet: {ORGS} orgs and {PROJECTS} projects one by one in {}",
        secs(started.elapsed())
    );
    // User u is in project u % PROJECTS, whose organisation is (u % PROJECTS) % ORGS.
    let all_users: Vec<usize> = (0..users).collect();
    for chunk in all_users.chunks(MAX_ITEMS_PER_CALL) {
        let items = chunk
            .iter()
            .map(|&u| json!({"id": user(u), "org_id": org(u % PROJECTS % ORGS), "name": "fleet"}))
            .collect();
        bulk(api, "users", items, "users")?;
    }
    // Every key's id (their budgets name them); only the secrets traffic and the probes use.
    let kept = k.working_set + 2 * k.concurrency.len();
    let mut key_ids = Vec::with_capacity(k.keys);
    let mut secrets = Vec::with_capacity(kept);
    let all_keys: Vec<usize> = (0..k.keys).collect();
    for chunk in all_keys.chunks(MAX_ITEMS_PER_CALL) {
        let items = chunk
            .iter()
            .map(|&i| {
                let u = i % users;
                json!({"name": "fleet", "org_id": org(u % PROJECTS % ORGS),
                       "project_id": project(u % PROJECTS), "user_id": user(u)})
            })
            .collect();
        for created in bulk(api, "keys", items, "keys")? {
            key_ids.push(str_of(&created, "id")?.to_string());
            if secrets.len() < kept {
                let secret = str_of(&created, "secret")?.to_string();
                stack.secrets.add(&secret);
                secrets.push(secret);
            }
        }
    }
    // Budgets: every organisation and project, then users and keys alternately from the first.
    let mut budgets: Vec<Value> = Vec::with_capacity(k.budgets);
    let budget = |scope: &str, id: String, period: &str| json!({"scope": scope, "scope_id": id, "period": period, "limit_usd": GENEROUS_USD});
    budgets.extend((0..ORGS).map(|o| budget("org", org(o), "monthly")));
    budgets.extend((0..PROJECTS).map(|p| budget("project", project(p), "weekly")));
    let mut key_budgets = HashMap::new();
    for j in 0..users.max(k.keys) {
        if budgets.len() >= k.budgets {
            break;
        }
        if j < users {
            budgets.push(budget("user", user(j), "daily"));
        }
        if let (Some(id), true) = (key_ids.get(j), budgets.len() < k.budgets) {
            key_budgets.insert(id.clone(), budgets.len());
            budgets.push(budget("key", id.clone(), "total"));
        }
    }
    budgets.truncate(k.budgets);
    let mut budget_ids = Vec::new();
    for chunk in budgets.chunks(MAX_ITEMS_PER_CALL) {
        for b in bulk(api, "budgets", chunk.to_vec(), "budgets")? {
            budget_ids.push(str_of(&b, "id")?.to_string());
        }
    }
    let mut probes = Vec::new();
    for r in 0..k.concurrency.len() {
        let at = k.working_set + 2 * r;
        let (Some(revoke_id), Some(revoke_secret), Some(budget_key), Some(budget_secret)) = (
            key_ids.get(at),
            secrets.get(at),
            key_ids.get(at + 1),
            secrets.get(at + 1),
        ) else {
            bail!("probe keys missing");
        };
        // A key whose budget the fleet did not reach gets one of its own.
        let budget_id = match key_budgets.get(budget_key).and_then(|i| budget_ids.get(*i)) {
            Some(id) => id.clone(),
            None => api.create_budget("key", budget_key, "total", GENEROUS_USD)?,
        };
        probes.push(Probe {
            revoke_id: revoke_id.clone(),
            revoke_secret: revoke_secret.clone(),
            budget_secret: budget_secret.clone(),
            budget_id,
        });
    }
    secrets.truncate(k.working_set);
    eprintln!(
        "fleet: {} keys, {} users, {} budgets seeded in {}",
        k.keys,
        users,
        budget_ids.len(),
        secs(started.elapsed())
    );
    Ok(Fleet {
        traffic: secrets,
        probes,
    })
}

/// One small chat completion through Envoy; the status (0: no answer).
fn chat(http: &Client, url: &str, key: &str, text: &str) -> u16 {
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 24,
                      "messages": [{"role": "user", "content": text}]});
    match http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
    {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // The whole body, so the connection can be reused.
            match resp.bytes() {
                Ok(_) => status,
                Err(_) => 0,
            }
        }
        Err(_) => 0,
    }
}

fn client() -> Result<Client> {
    Ok(Client::builder().timeout(Duration::from_secs(10)).build()?)
}

/// Client threads sending [`chat`] requests round-robin over keys until stopped or their
/// deadline.
struct Traffic {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    first_failure: Arc<Mutex<Option<u16>>>,
    handles: Vec<JoinHandle<()>>,
}

impl Traffic {
    fn start(url: &str, keys: &Arc<Vec<String>>, threads: usize, limit: Duration) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let first_failure = Arc::new(Mutex::new(None));
        let deadline = Instant::now() + limit;
        let handles = (0..threads)
            .map(|t| {
                let (stop, served, failed, first_failure) = (
                    stop.clone(),
                    served.clone(),
                    failed.clone(),
                    first_failure.clone(),
                );
                let (url, keys) = (url.to_string(), keys.clone());
                std::thread::spawn(move || {
                    let mut http = None;
                    for n in 0..MAX_REQUESTS_PER_THREAD {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            break;
                        }
                        if n % REQUESTS_PER_CONNECTION == 0 {
                            http = client().ok();
                        }
                        let Some(h) = &http else { break };
                        let at = usize::try_from(n)
                            .unwrap_or(0)
                            .wrapping_mul(threads)
                            .wrapping_add(t)
                            % keys.len().max(1);
                        let key = keys.get(at).map_or("", String::as_str);
                        let status = chat(h, &url, key, &format!("fleet {t} {n}"));
                        if status == 200 {
                            served.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut f) = first_failure.lock() {
                                f.get_or_insert(status);
                            }
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            served,
            failed,
            first_failure,
            handles,
        }
    }

    /// Requests served (200) and not, so far.
    fn counts(&self) -> (u64, u64) {
        (
            self.served.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            let _ = h.join();
        }
        (
            self.served.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The control-plane cluster's counters and the snapshot version Envoy holds.
#[derive(Debug, Clone, Copy, Default)]
struct SyncStats {
    rx_bytes: u64,
    tx_bytes: u64,
    requests: u64,
    answered_200: u64,
    answered_304: u64,
    version: u64,
}

fn sync_stats(envoy: &Envoy) -> Result<SyncStats> {
    let prefix = format!("cluster.{CP_CLUSTER}.");
    let s = envoy.stats(&prefix)?;
    let get = |name: &str| s.get(&format!("{prefix}{name}")).copied().unwrap_or(0);
    Ok(SyncStats {
        rx_bytes: get("upstream_cx_rx_bytes_total"),
        tx_bytes: get("upstream_cx_tx_bytes_total"),
        requests: get("upstream_rq_total"),
        answered_200: get("upstream_rq_200"),
        answered_304: get("upstream_rq_304"),
        version: envoy.stat("tollgate_snapshot_version")?,
    })
}

/// The control plane's own counts (`/metrics`): the answers of its snapshot and usage routes
/// and the snapshots it built. Only one Envoy runs at a time, so they are that Envoy's.
#[derive(Debug, Clone, Copy, Default)]
struct CpCounts {
    snapshot_200: u64,
    snapshot_304: u64,
    usage_posts: u64,
    builds: u64,
}

fn cp_counts(stack: &Stack) -> Result<CpCounts> {
    let text = client()?
        .get(format!("{}/metrics", stack.cp.url()))
        .send()?
        .error_for_status()?
        .text()?;
    let mut c = CpCounts::default();
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        // Counters are integers; the text format may print them as floats.
        let v = v as u64;
        if name == "tollgate_snapshot_builds_total" {
            c.builds = v;
        } else if name.starts_with("tollgate_http_requests_total{") {
            let status_200 = name.contains("status=\"200\"");
            if name.contains("route=\"/v1/snapshot\"") {
                if status_200 {
                    c.snapshot_200 += v;
                } else if name.contains("status=\"304\"") {
                    c.snapshot_304 += v;
                }
            } else if name.contains("route=\"/v1/usage\"") && status_200 {
                c.usage_posts += v;
            }
        }
    }
    Ok(c)
}

/// Connections each worker of Envoy's LLM listener accepted so far, by worker. Its stats are
/// named by the configured address (`listener.127.0.0.1_0.worker_N.downstream_cx_total`),
/// the only listener but the admin one.
fn worker_connections(envoy: &Envoy) -> Result<Vec<u64>> {
    let mut by_worker = Vec::new();
    for (name, v) in envoy.stats(".downstream_cx_total")? {
        if !name.starts_with("listener.") || name.starts_with("listener.admin.") {
            continue;
        }
        let Some((_, rest)) = name.split_once(".worker_") else {
            continue;
        };
        let Some(worker) = rest
            .strip_suffix(".downstream_cx_total")
            .and_then(|w| w.parse::<usize>().ok())
        else {
            continue;
        };
        if by_worker.len() <= worker {
            by_worker.resize(worker + 1, 0);
        }
        if let Some(slot) = by_worker.get_mut(worker) {
            *slot = v;
        }
    }
    Ok(by_worker)
}

/// Opens fresh connections until every worker accepted at least `min` (bounded); the
/// per-worker counts.
fn spread_over_workers(
    envoy: &Envoy,
    url: &str,
    key: &str,
    workers: u32,
    min: u64,
) -> Result<Vec<u64>> {
    let workers = usize::try_from(workers)?;
    let mut counts = Vec::new();
    for attempt in 0..400 {
        counts = worker_connections(envoy)?;
        if counts.len() >= workers && counts.iter().all(|c| *c >= min) {
            return Ok(counts);
        }
        chat(&client()?, url, key, &format!("spread {attempt}"));
    }
    let names: Vec<String> = envoy.stats("worker_")?.into_keys().collect();
    bail!("400 fresh connections did not reach every worker: {counts:?} (stats: {names:?})")
}

/// `(VmRSS, VmHWM)` of a process, MB.
fn rss_mb(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        Ok(kb / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Sends a request with `secret` every 10 ms until Envoy answers `want`; the time from
/// `since`.
fn flips_to(url: &str, secret: &str, want: u16, since: Instant) -> Result<Duration> {
    let http = client()?;
    let mut last = 0;
    for n in 0..1_000_000u32 {
        if since.elapsed() > PROPAGATION_TIMEOUT {
            break;
        }
        last = chat(&http, url, secret, &format!("probe {n}"));
        if last == want {
            return Ok(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("no {want} within {PROPAGATION_TIMEOUT:?} (last answer {last})")
}

/// Waits (bounded) until the probe key is served, as before any change.
fn served_now(url: &str, secret: &str) -> Result<()> {
    let http = client()?;
    eventually(Duration::from_secs(10), || {
        (chat(&http, url, secret, "probe before") == 200).then_some(())
    })
    .context("a probe key was not served before its change")
}

/// The figures of one worker count.
#[derive(Debug, Clone)]
struct Figures {
    workers: u32,
    window_s: f64,
    req_per_s: f64,
    failed: u64,
    first_failure: Option<u16>,
    rx_per_s: f64,
    tx_per_s: f64,
    requests: u64,
    answered_200: u64,
    answered_304: u64,
    versions: u64,
    snapshot_200: u64,
    snapshot_304: u64,
    usage_posts: u64,
    builds: u64,
    rss_loaded_mb: f64,
    rss_mean_mb: f64,
    rss_max_mb: f64,
    hwm_mb: f64,
    per_worker_cx: Vec<u64>,
    rss_samples: Vec<f64>,
    revoke_ms: f64,
    budget_ms: f64,
}

fn measure(
    stack: &mut Stack,
    k: &Knobs,
    fleet: &Fleet,
    probe: &Probe,
    workers: u32,
) -> Result<Figures> {
    let started = Instant::now();
    stack.set_envoy_concurrency(workers);
    let mut envoy = stack.start_envoy(0, None)?;
    stack.wait_for_sync_of(&envoy)?;
    let pid = envoy.proc.pid();
    let (rss_loaded, _) = rss_mb(pid)?;
    eprintln!(
        "fleet: {workers} worker(s): Envoy started and synced in {} ({rss_loaded:.0} MB)",
        secs(started.elapsed())
    );
    let url = format!("http://{}", envoy.listener);
    let keys = Arc::new(fleet.traffic.clone());
    let limit = Duration::from_secs(k.warmup_seconds + k.seconds) + PROPAGATION_TIMEOUT * 3;
    let traffic = Traffic::start(&url, &keys, k.threads, limit);
    let warm_until = Instant::now() + Duration::from_secs(k.warmup_seconds);
    let first = keys.first().map_or("", String::as_str);
    let spread = spread_over_workers(&envoy, &url, first, workers, 2);
    std::thread::sleep(warm_until.saturating_duration_since(Instant::now()));

    let s0 = sync_stats(&envoy)?;
    let m0 = cp_counts(stack)?;
    let c0 = traffic.counts();
    let t0 = Instant::now();
    let mut samples = Vec::new();
    let end = t0 + Duration::from_secs(k.seconds);
    for _ in 0..k.seconds.saturating_mul(2) {
        let next = (Instant::now() + Duration::from_secs(1)).min(end);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        samples.push(rss_mb(pid)?.0);
        if Instant::now() >= end {
            break;
        }
    }
    let s1 = sync_stats(&envoy)?;
    let m1 = cp_counts(stack)?;
    let c1 = traffic.counts();
    let window = t0.elapsed().as_secs_f64();
    let (_, hwm) = rss_mb(pid)?;
    let per_worker_cx = match spread {
        Ok(_) => worker_connections(&envoy)?,
        Err(e) => {
            eprintln!("fleet: warning: {e:#}");
            worker_connections(&envoy)?
        }
    };

    // Propagation under traffic.
    let api = stack.api()?;
    served_now(&url, &probe.revoke_secret)?;
    let since = Instant::now();
    api.revoke_key(&probe.revoke_id)?;
    let revoke = flips_to(&url, &probe.revoke_secret, 401, since)?;
    served_now(&url, &probe.budget_secret)?;
    let since = Instant::now();
    api.send(
        reqwest::Method::PATCH,
        &format!("/v1/budgets/{}", probe.budget_id),
        Some(json!({ "limit_usd": TINY_USD }).to_string().into_bytes()),
    )?;
    let budget = flips_to(&url, &probe.budget_secret, 429, since)?;
    let first_failure = traffic.first_failure.lock().ok().and_then(|f| *f);
    traffic.stop();
    if let Some(status) = envoy.proc.exited() {
        bail!("envoy exited ({status}):\n{}", envoy.proc.output());
    }
    envoy.proc.kill();

    let n = samples.len().max(1) as f64;
    Ok(Figures {
        workers,
        window_s: window,
        req_per_s: c1.0.saturating_sub(c0.0) as f64 / window,
        failed: c1.1.saturating_sub(c0.1),
        first_failure,
        rx_per_s: s1.rx_bytes.saturating_sub(s0.rx_bytes) as f64 / window,
        tx_per_s: s1.tx_bytes.saturating_sub(s0.tx_bytes) as f64 / window,
        requests: s1.requests.saturating_sub(s0.requests),
        answered_200: s1.answered_200.saturating_sub(s0.answered_200),
        answered_304: s1.answered_304.saturating_sub(s0.answered_304),
        versions: s1.version.saturating_sub(s0.version),
        snapshot_200: m1.snapshot_200.saturating_sub(m0.snapshot_200),
        snapshot_304: m1.snapshot_304.saturating_sub(m0.snapshot_304),
        usage_posts: m1.usage_posts.saturating_sub(m0.usage_posts),
        builds: m1.builds.saturating_sub(m0.builds),
        rss_loaded_mb: rss_loaded,
        rss_mean_mb: samples.iter().sum::<f64>() / n,
        rss_max_mb: samples.iter().copied().fold(0.0, f64::max),
        hwm_mb: hwm,
        per_worker_cx,
        rss_samples: samples.iter().map(|m| m.round()).collect(),
        revoke_ms: revoke.as_secs_f64() * 1000.0,
        budget_ms: budget.as_secs_f64() * 1000.0,
    })
}

/// The snapshot document a poller without a reporter name gets: its size and, when it is a
/// JSON object, the size of each top-level member.
fn snapshot_shape(stack: &Stack, k: &Knobs) -> Result<(usize, Vec<(String, usize)>)> {
    // The last writes are in the snapshot once the version stays put for a rebuild's time.
    let settle = Duration::from_millis(k.snapshot_min_ms * 2 + 500);
    let mut version = stack.snapshot_version()?;
    for _ in 0..20 {
        std::thread::sleep(settle);
        let now = stack.snapshot_version()?;
        if now == version {
            break;
        }
        version = now;
    }
    let started = Instant::now();
    let body = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?
        .get(format!("{}/v1/snapshot", stack.cp.url()))
        .bearer_auth(stack.cp.dataplane_token())
        .send()?
        .error_for_status()?
        .bytes()?;
    let mut members = Vec::new();
    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&body) {
        for (name, v) in m {
            members.push((name, v.to_string().len()));
        }
        members.sort_by_key(|m| std::cmp::Reverse(m.1));
    }
    eprintln!(
        "fleet: GET /v1/snapshot: {} bytes in {}",
        body.len(),
        secs(started.elapsed())
    );
    Ok((body.len(), members))
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

fn run() -> Result<()> {
    let k = Knobs::from_env()?;
    eprintln!("fleet: {k:?}");
    let bins = Binaries::for_tests(
        env!("CARGO_BIN_EXE_tollgate-e2e-control-plane"),
        env!("CARGO_BIN_EXE_tollgate-e2e-upstream"),
    )?;
    let started = Instant::now();
    let mut stack = Stack::start(
        &bins,
        StackOptions {
            sync_interval_ms: k.sync_ms,
            snapshot_min_interval_ms: k.snapshot_min_ms,
            envoy_args: vec!["--log-level".into(), "warning".into()],
            ..StackOptions::default()
        },
    )?;
    // Every measured Envoy starts after the fleet is loaded: the stack's own would spend the
    // seeding decoding intermediate snapshots.
    stack.envoy.proc.kill();
    let api = stack.api()?;
    api.import_litellm(std::fs::read(pricing::litellm_map_path()?)?)?;
    eprintln!(
        "fleet: stack started, prices imported in {}",
        secs(started.elapsed())
    );
    let fleet = seed(&stack, &api, &k)?;
    let (snapshot_bytes, members) = snapshot_shape(&stack, &k)?;

    let mut all = Vec::new();
    for (workers, probe) in k.concurrency.iter().zip(&fleet.probes) {
        all.push(measure(&mut stack, &k, &fleet, probe, *workers)?);
    }

    let interval = k.sync_ms as f64;
    println!();
    println!(
        "fleet: {} keys, {} budgets, working set {}, {} client threads, sync interval {} ms, \
         snapshot min interval {} ms, {} s window after {} s warm-up",
        k.keys,
        k.budgets,
        k.working_set,
        k.threads,
        k.sync_ms,
        k.snapshot_min_ms,
        k.seconds,
        k.warmup_seconds
    );
    let shown: Vec<String> = members
        .iter()
        .map(|(name, len)| format!("{name} {len}"))
        .collect();
    println!(
        "snapshot document: {snapshot_bytes} bytes (top-level members, bytes: {})",
        shown.join(", ")
    );
    println!(
        "{:>7} {:>7} {:>11} {:>10} {:>12} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>15} {:>15}",
        "workers",
        "req/s",
        "sync rx/s",
        "tx/s",
        "snap 200/304",
        "usage",
        "builds",
        "RSS load",
        "RSS mean",
        "RSS max",
        "HWM",
        "revoke→401",
        "budget→429"
    );
    for f in &all {
        println!(
            "{:>7} {:>7.0} {:>8.0} KB {:>7.1} KB {:>8}/{:<3} {:>6} {:>6} {:>5.0} MB {:>5.0} MB {:>5.0} MB {:>5.0} MB {:>6.0} ms {:>4.2}× {:>6.0} ms {:>4.2}×",
            f.workers,
            f.req_per_s,
            f.rx_per_s / 1000.0,
            f.tx_per_s / 1000.0,
            f.snapshot_200,
            f.snapshot_304,
            f.usage_posts,
            f.builds,
            f.rss_loaded_mb,
            f.rss_mean_mb,
            f.rss_max_mb,
            f.hwm_mb,
            f.revoke_ms,
            f.revoke_ms / interval,
            f.budget_ms,
            f.budget_ms / interval,
        );
    }
    println!(
        "(sync rx/s, tx/s: bytes Envoy received from / sent to the control-plane cluster per \
         second of the window, KB = 1,000 bytes; snap 200/304: snapshot polls answered with a \
         document / not modified; usage: usage batches posted; builds: snapshots the control \
         plane built; RSS: Envoy's VmRSS after its first sync, mean and max of the window's \
         samples, VmHWM at the window's end; revoke and budget: from the API call to Envoy's \
         answer, and in sync intervals)"
    );
    let points: Vec<(f64, f64)> = all
        .iter()
        .map(|f| (f64::from(f.workers), f.rss_mean_mb))
        .collect();
    let per_worker = slope(&points);
    let steps: Vec<String> = all
        .windows(2)
        .filter_map(|w| match w {
            [a, b] if b.workers != a.workers => Some(format!(
                "{}→{}: {:.1}",
                a.workers,
                b.workers,
                (b.rss_mean_mb - a.rss_mean_mb) / (f64::from(b.workers) - f64::from(a.workers))
            )),
            _ => None,
        })
        .collect();
    println!(
        "MB per added worker (slope of mean RSS): {} ({}); goals: sync ≤ 100 KB/s per Envoy, \
         ≤ 10 MB per added worker, propagation ≤ 2 sync intervals",
        per_worker.map_or("n/a".into(), |s| format!("{s:.1}")),
        steps.join(", ")
    );
    for f in &all {
        if f.failed > 0 {
            println!(
                "note: {} worker(s): {} requests not served in the window (first status {:?}; 0 = no answer)",
                f.workers, f.failed, f.first_failure
            );
        }
        println!(
            "{}",
            json!({
                "bench": "fleet",
                "workers": f.workers,
                "keys": k.keys,
                "budgets": k.budgets,
                "working_set": k.working_set,
                "threads": k.threads,
                "sync_interval_ms": k.sync_ms,
                "snapshot_min_interval_ms": k.snapshot_min_ms,
                "snapshot_bytes": snapshot_bytes,
                "window_s": f.window_s,
                "req_per_s": f.req_per_s,
                "requests_failed": f.failed,
                "sync_rx_bytes_per_s": f.rx_per_s,
                "sync_tx_bytes_per_s": f.tx_per_s,
                "cp_cluster_requests": f.requests,
                "cp_cluster_answered_200": f.answered_200,
                "cp_cluster_answered_304": f.answered_304,
                "snapshot_polls_200": f.snapshot_200,
                "snapshot_polls_304": f.snapshot_304,
                "usage_posts": f.usage_posts,
                "snapshot_builds": f.builds,
                "snapshot_version_advance": f.versions,
                "rss_loaded_mb": f.rss_loaded_mb,
                "rss_mean_mb": f.rss_mean_mb,
                "rss_max_mb": f.rss_max_mb,
                "rss_hwm_mb": f.hwm_mb,
                "connections_per_worker": f.per_worker_cx,
                "rss_samples_mb": f.rss_samples,
                "mb_per_added_worker": per_worker,
                "revoke_ms": f.revoke_ms,
                "revoke_sync_intervals": f.revoke_ms / interval,
                "budget_change_ms": f.budget_ms,
                "budget_change_sync_intervals": f.budget_ms / interval,
            })
        );
    }
    eprintln!("fleet: whole run {}", secs(started.elapsed()));
    Ok(())
}

fn main() {
    if tollgate_tests::skip_envoy() {
        eprintln!("fleet: skipped (TOLLGATE_SKIP_ENVOY=1)");
        return;
    }
    // `cargo bench` passes `--bench`; a filter naming another bench skips this one.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|a| !a.starts_with('-') && !"fleet".contains(a.as_str()))
    {
        return;
    }
    if let Err(e) = run() {
        eprintln!("fleet: {e:#}");
        std::process::exit(1);
    }
}
