//! Soak: mixed traffic through Envoy (2 workers) for a while — OpenAI and Anthropic, JSON and
//! SSE, allowed and denied, upstream errors and streams cut short — with the resident memory
//! (VmRSS from `/proc`) of Envoy and the control plane sampled every second.
//!
//! After a warm-up (the first third of the run, at least 20 s: V8 tiers up, pools and caches
//! fill) memory must stop growing: the mean of the last five samples may exceed the mean of
//! the first five after warm-up by at most [`GROWTH_BOUND_BYTES`] (a leak of a few KB per
//! request would show within the CI run, one of a few hundred bytes per request within the
//! 10-minute run). The control plane may grow by the database's growth on top: SQLite's page
//! cache (64 MiB per connection, five connections: `control-plane/src/store/mod.rs`) holds
//! ledger pages as the ledger grows, by design. At the end the ledger holds exactly one
//! event per admitted request, and Envoy's counters agree with what the clients saw.
//!
//! Run with `cargo test -p tollgate-tests --test soak -- --nocapture` (75 s in CI);
//! `TOLLGATE_SOAK_SECS=600` for the 10-minute run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_tests::StackOptions;

use common::SYNC_INTERVAL_MS;

/// Most a process's RSS may grow from just after warm-up to the end.
const GROWTH_BOUND_BYTES: u64 = 16 << 20;
/// The CI run's length (`TOLLGATE_SOAK_SECS` overrides it).
const DEFAULT_SECS: u64 = 75;

/// VmRSS of a process, bytes.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What one kind of traffic does.
#[derive(Clone, Copy, Debug)]
enum Kind {
    OpenAiJson,
    OpenAiSse,
    AnthropicJson,
    AnthropicSse,
    /// A key whose budget is spent: refused with 429.
    Denied,
    /// The upstream answers 500 (metered, charged by policy).
    UpstreamError,
    /// The stream is cut after two events (metered, charged by policy).
    Truncated,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::OpenAiJson,
        Kind::OpenAiSse,
        Kind::AnthropicJson,
        Kind::AnthropicSse,
        Kind::Denied,
        Kind::UpstreamError,
        Kind::Truncated,
    ];

    /// The status the client must see (0: the body is cut short).
    fn status(self) -> u16 {
        match self {
            Kind::Denied => 429,
            Kind::UpstreamError => 500,
            Kind::Truncated => 0,
            _ => 200,
        }
    }
}

/// Sends one request of `kind`; returns the status (0 when no whole answer came).
fn send(http: &reqwest::blocking::Client, url: &str, key: &str, kind: Kind, n: u64) -> u16 {
    let text = format!("soak {kind:?} {n}");
    let anthropic = matches!(kind, Kind::AnthropicJson | Kind::AnthropicSse);
    let stream = matches!(kind, Kind::OpenAiSse | Kind::AnthropicSse | Kind::Truncated);
    let mut req = if anthropic {
        http.post(format!("{url}/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(
                &json!({"model": "claude-haiku-4-5", "max_tokens": 32, "stream": stream,
                          "messages": [{"role": "user", "content": text}]}),
            )
    } else {
        http.post(format!("{url}/v1/chat/completions"))
            .bearer_auth(key)
            .json(
                &json!({"model": "gpt-4o-mini", "max_tokens": 32, "stream": stream,
                          "messages": [{"role": "user", "content": text}]}),
            )
    };
    match kind {
        Kind::UpstreamError => req = req.header("x-mock-status", "500"),
        Kind::Truncated => req = req.header("x-mock-truncate-after", "2"),
        _ => {}
    }
    let Ok(resp) = req.send() else { return 0 };
    let status = resp.status().as_u16();
    if resp.text().is_err() {
        return 0;
    }
    status
}

/// Samples of one process: (seconds since start, RSS bytes).
type Samples = Vec<(f64, u64)>;

/// Bytes of the SQLite database and its WAL in `dir`.
fn database_bytes(dir: &std::path::Path) -> u64 {
    ["tollgate.db", "tollgate.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Mean RSS of up to five samples.
fn mean(samples: &[(f64, u64)]) -> u64 {
    let n = samples.len().max(1) as u64;
    samples.iter().map(|(_, r)| r).sum::<u64>() / n
}

/// (RSS just after warm-up, RSS at the end), means of five samples each.
fn growth(samples: &Samples, warm_up: f64) -> (u64, u64) {
    let after: Vec<_> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warm_up)
        .collect();
    let first = &after[..after.len().min(5)];
    let last = &after[after.len().saturating_sub(5)..];
    (mean(first), mean(last))
}

#[test]
fn mixed_traffic_keeps_memory_flat_and_the_ledger_exact() {
    let secs: u64 = std::env::var("TOLLGATE_SOAK_SECS")
        .ok()
        .map(|s| s.parse().expect("TOLLGATE_SOAK_SECS: a number of seconds"))
        .unwrap_or(DEFAULT_SECS);
    let Some(stack) = common::stack_with(StackOptions {
        sync_interval_ms: SYNC_INTERVAL_MS,
        envoy_concurrency: 2,
        envoy_args: vec!["--log-level".into(), "warning".into()],
        ..StackOptions::default()
    }) else {
        return;
    };
    let api = stack.api().unwrap();
    let open = api.create_capped_chain("soak", "1000").unwrap();
    let spent = api.create_capped_chain("spent", "0.000001").unwrap();
    stack.wait_for_sync().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let unexpected = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = Kind::ALL
        .into_iter()
        .map(|kind| {
            let (stop, unexpected, url) = (stop.clone(), unexpected.clone(), stack.url());
            let key = match kind {
                Kind::Denied => spent.secret.clone(),
                _ => open.secret.clone(),
            };
            thread::spawn(move || {
                let http = common::client();
                let mut sent = 0u64;
                // Bounded by time (the stop flag) and by count.
                while !stop.load(Ordering::Relaxed) && sent < 1_000_000 {
                    if send(&http, &url, &key, kind, sent) != kind.status() {
                        unexpected.fetch_add(1, Ordering::Relaxed);
                    }
                    sent += 1;
                    thread::sleep(Duration::from_millis(10));
                }
                (kind, sent)
            })
        })
        .collect();

    let pids = [
        ("envoy", stack.envoy.proc.pid()),
        ("control plane", stack.cp.pid().unwrap()),
    ];
    // RSS of each process, and the database's size (what the control plane may cache).
    let mut samples: [Samples; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        thread::sleep(Duration::from_secs(1));
        let t = started.elapsed().as_secs_f64();
        for (i, (name, pid)) in pids.iter().enumerate() {
            let r = rss(*pid).unwrap_or_else(|| panic!("{name} is gone:\n{}", stack.logs()));
            samples[i].push((t, r));
        }
        samples[2].push((t, database_bytes(&stack.dir)));
    }
    stop.store(true, Ordering::Relaxed);
    let sent: Vec<(Kind, u64)> = workers.into_iter().map(|h| h.join().unwrap()).collect();
    let total: u64 = sent.iter().map(|(_, n)| n).sum();
    let denied: u64 = sent
        .iter()
        .filter(|(k, _)| matches!(k, Kind::Denied))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        unexpected.load(Ordering::Relaxed),
        0,
        "requests answered other than their kind promises:\n{}",
        stack.logs()
    );

    // Every admitted request in the ledger exactly once; Envoy's counters agree.
    let admitted = total - denied;
    let mut last = None;
    let settled = tollgate_tests::eventually(Duration::from_secs(30), || {
        let s = api.spend("key", &open.key_id).unwrap();
        last = Some(s);
        (s.requests == admitted).then_some(s)
    });
    assert!(settled.is_some(), "ledger: {last:?}, admitted {admitted}");
    assert_eq!(api.spend("key", &spent.key_id).unwrap().requests, 0);
    assert_eq!(
        stack.envoy.stat("tollgate_requests_allowed").unwrap(),
        admitted
    );
    assert_eq!(
        stack.envoy.stat("tollgate_requests_denied").unwrap(),
        denied
    );

    let warm_up = (secs as f64 / 3.0).max(20.0);
    let (db_warm, db_end) = growth(&samples[2], warm_up);
    let db_growth = db_end.saturating_sub(db_warm);
    eprintln!(
        "soak: database {:.1} MiB after warm-up → {:.1} MiB at the end",
        db_warm as f64 / 1048576.0,
        db_end as f64 / 1048576.0
    );
    let mut failures = Vec::new();
    for (i, (name, _)) in pids.iter().enumerate() {
        let allowed = GROWTH_BOUND_BYTES + if i == 1 { db_growth } else { 0 };
        let (after_warm_up, end) = growth(&samples[i], warm_up);
        let peak = samples[i].iter().map(|(_, r)| *r).max().unwrap_or(0);
        let grew = end.saturating_sub(after_warm_up);
        let per_request = grew as f64 / (total as f64 * (1.0 - warm_up / secs as f64)).max(1.0);
        eprintln!(
            "soak {secs} s, {total} requests ({:.0}/s, {denied} denied): {name} RSS {:.1} MiB \
             after {warm_up:.0} s warm-up → {:.1} MiB at the end (peak {:.1} MiB), growth \
             {:.2} MiB ≈ {per_request:.0} B per request after warm-up; bound {:.1} MiB",
            total as f64 / secs as f64,
            after_warm_up as f64 / 1048576.0,
            end as f64 / 1048576.0,
            peak as f64 / 1048576.0,
            grew as f64 / 1048576.0,
            allowed as f64 / 1048576.0,
        );
        // The curve, a sample per tenth of the run: flat after warm-up, or still climbing?
        let step = (samples[i].len() / 10).max(1);
        let curve: Vec<String> = samples[i]
            .iter()
            .step_by(step)
            .map(|(t, r)| format!("{t:.0}s:{:.1}", *r as f64 / 1048576.0))
            .collect();
        eprintln!("  {name} RSS MiB: {}", curve.join(" "));
        if grew > allowed {
            failures.push(format!("{name} grew {grew} bytes after warm-up"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}
