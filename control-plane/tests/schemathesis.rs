//! The API under schemathesis: the venv's `schemathesis` CLI (pinned in
//! `scripts/requirements.txt`) generates requests from `/openapi.json` against a real
//! `tollgate serve` on SQLite with the admin token, in all its phases (examples, coverage,
//! fuzzing, stateful), and checks every answer: no 5xx, status codes, content types and
//! bodies as documented, schema-violating requests refused, auth not ignored (the checks are
//! named in `tests/schemathesis.toml`). The server's own metrics must then show no 5xx either.
//!
//! Not checked: `positive_data_acceptance`. The API refuses some schema-valid input for
//! reasons a JSON Schema cannot say (a referenced org that does not exist, an IANA zone, a
//! price off by 10^6, a calendar date), each with a 422 naming the field. Nor
//! `ensure_resource_availability` for API tokens and alert webhooks, which go with their
//! deleted organisation (see the `.toml`).
//!
//! Run: `cargo test -p tollgate-control-plane --test schemathesis -- --nocapture` (about
//! 30 s). `TOLLGATE_SCHEMATHESIS_EXAMPLES` (default 40 per operation) and
//! `TOLLGATE_SCHEMATHESIS_SEED` (default 1) make a longer or different run;
//! `TOLLGATE_SKIP_PYTHON=1` skips it where no `.venv` exists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{venv_tool, Killed, Served};
use tollgate_control_plane::http::openapi::documented;

const ADMIN: &str = "schemathesis-admin-token-0123456789";
const DATAPLANE: &str = "schemathesis-dataplane-token-0123456789";
/// The checks run on every answer, and the operations where one is off (see the file).
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
/// Bound on the whole schemathesis run; the default run takes about 30 s.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The number before `label` in schemathesis's summary (`4181 generated`, the last one: the summary line comes last).
fn count_before(text: &str, label: &str) -> Option<u64> {
    let i = text.rfind(label)?;
    text.get(..i)?.split_whitespace().last()?.parse().ok()
}

#[test]
fn schemathesis_finds_no_5xx_and_no_mismatch() {
    let Some(st) = venv_tool("schemathesis") else {
        return;
    };
    let served = Served::start("tollgate-schemathesis-", ADMIN, DATAPLANE);
    let (url, dir) = (&served.url, served.dir.path());
    let examples = env_or("TOLLGATE_SCHEMATHESIS_EXAMPLES", 40);
    let seed = env_or("TOLLGATE_SCHEMATHESIS_SEED", 1);
    let report = dir.join("report.txt");
    let mut run = Command::new(st);
    run.current_dir(dir)
        .args(["--config-file", CONFIG, "run"])
        .arg(format!("{url}/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--workers", "2", "--request-timeout", "30", "--no-color"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&report).unwrap())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = Killed(run.spawn().unwrap());
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < RUN_TIMEOUT,
            "schemathesis still running after {RUN_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&report).unwrap();
    let serve_log = served.log();
    assert!(
        status.success(),
        "schemathesis failed ({status}):\n{text}\n--- tollgate serve\n{serve_log}"
    );
    assert!(
        !text.contains(ADMIN),
        "schemathesis printed the admin token"
    );

    // Every documented operation was exercised, with a real number of cases. Schemathesis
    // leaves out the one that serves the document it loaded (`GET /openapi.json`).
    let ops = documented().len() - 1;
    assert!(
        text.contains(&format!("Tested: {ops}")),
        "not all {ops} operations were tested:\n{text}"
    );
    let generated = count_before(&text, " generated").expect("no case count");
    let passed = count_before(&text, " passed,").or_else(|| count_before(&text, " passed\n"));
    assert!(
        generated >= ops as u64 * examples / 2,
        "only {generated} cases:\n{text}"
    );
    eprintln!(
        "schemathesis: {ops} operations, {generated} cases (passed: {passed:?}), \
         {examples} examples per operation, seed {seed}, {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The server agrees: not one 5xx answered, by its own count.
    let metrics = reqwest::blocking::get(format!("{url}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let served: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("tollgate_http_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(served >= generated, "the server counted {served} requests");
    let fivexx: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("tollgate_http_requests_total{") && l.contains("status=\"5"))
        .collect();
    assert!(fivexx.is_empty(), "5xx answered: {fivexx:?}\n{serve_log}");
    assert!(
        !serve_log.contains(" ERROR "),
        "errors logged:\n{serve_log}"
    );
}
