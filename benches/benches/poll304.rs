//! The 304 path under 200 concurrent pollers: Envoy sync services asking `GET /v1/snapshot`
//! with `If-None-Match` over real keep-alive connections to 127.0.0.1. The server runs on its
//! own 2-worker runtime, the pollers on one client thread (all on this 2-core machine, so the
//! client's CPU is part of the figure). Goal: p99 ≤ 1 ms.
//!
//! Two phases, both bounded in time:
//! 1. paced: each poller polls on a timer, the way sync services do — once per interval in
//!    `TOLLGATE_POLL_INTERVALS_MS` (default `1000,50`: a 1 s sync interval, 200 polls/s in
//!    all, then 20 times that, 4,000 polls/s) — latency is what one poll sees;
//! 2. saturated: every poller polls back to back — throughput, and latency under queueing.
//!
//! Run: `cargo bench -p tollgate-benches --bench poll304`
//! (`TOLLGATE_POLLERS`, `TOLLGATE_POLL_INTERVALS_MS`, `TOLLGATE_POLL_SECONDS` to vary it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use tollgate_benches::{runtime, seeded_store, state, Backend, DATAPLANE};
use tollgate_control_plane::http::app;
use tollgate_testkit::TestDb;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut micros: Vec<u32>, elapsed: Duration) {
    micros.sort_unstable();
    println!(
        "{name:<10} polls {:>8}  rate {:>8.0}/s  p50 {:>6} µs  p90 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs  max {:>6} µs",
        micros.len(),
        micros.len() as f64 / elapsed.as_secs_f64(),
        percentile(&micros, 0.50),
        percentile(&micros, 0.90),
        percentile(&micros, 0.99),
        percentile(&micros, 0.999),
        micros.last().copied().unwrap_or(0),
    );
}

async fn phase(
    url: &str,
    etag: &str,
    pollers: u64,
    interval: Option<Duration>,
    run_for: Duration,
) -> (Vec<u32>, Duration) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(pollers as usize * 2)
        .build()
        .unwrap();
    let started = Instant::now();
    let deadline = started + run_for;
    let mut tasks = Vec::new();
    for p in 0..pollers {
        let (client, url, etag) = (client.clone(), url.to_string(), etag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            if let Some(every) = interval {
                // Spread the pollers over the interval, as independent Envoys would be.
                tokio::time::sleep(
                    every * u32::try_from(p).unwrap() / u32::try_from(pollers).unwrap(),
                )
                .await;
            }
            let mut tick = interval.map(|every| {
                let mut t = tokio::time::interval(every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            while Instant::now() < deadline {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let t0 = Instant::now();
                let resp = client
                    .get(&url)
                    .bearer_auth(DATAPLANE)
                    .header("if-none-match", &etag)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 304);
                let _ = resp.bytes().await.unwrap();
                lat.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, started.elapsed())
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that excludes us means skip.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"poll304".contains(a.as_str()))
    {
        return;
    }
    let pollers = env("TOLLGATE_POLLERS", 200);
    let intervals: Vec<Duration> = std::env::var("TOLLGATE_POLL_INTERVALS_MS")
        .unwrap_or_else(|_| "1000,50".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .map(Duration::from_millis)
        .collect();
    let seconds = Duration::from_secs(env("TOLLGATE_POLL_SECONDS", 10));
    let server_rt = runtime();
    let (addr, _guard) = server_rt.block_on(async {
        let TestDb {
            store: s,
            file: guard,
            ..
        } = seeded_store(Backend::Sqlite, 100, 10_000, 100_000).await;
        let st = state(s).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app(st)).await });
        (addr, guard)
    });
    let url = format!("http://{addr}/v1/snapshot");
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(async {
        let first = reqwest::Client::new().get(&url).bearer_auth(DATAPLANE).send().await.unwrap();
        let etag = first.headers()["etag"].to_str().unwrap().to_string();
        let size = first.bytes().await.unwrap().len();
        println!("poll304: {pollers} pollers, snapshot {size} bytes (10,000 budgets, 100,000 keys), ETag {etag}");
        for interval in &intervals {
            let (lat, el) = phase(&url, &etag, pollers, Some(*interval), seconds).await;
            report(&format!("paced/{}ms", interval.as_millis()), lat, el);
        }
        let (lat, el) = phase(&url, &etag, pollers, None, seconds.min(Duration::from_secs(5))).await;
        report("saturated", lat, el);
    });
    drop(server_rt);
}
