//! The API under schemathesis: the venv's `schemathesis` CLI (pinned in
//! `scripts/requirements.txt`) generates requests from `/openapi.json` against a real
//! `tollgate serve` on SQLite with the admin token, in all its phases (examples, coverage,
//! fuzzing, stateful), and checks every answer: no 5xx, status codes, content types and
//! bodies as documented, schema-violating requests refused, auth not ignored. The server's
//! own metrics must then show no 5xx either.
//!
//! Not checked: `positive_data_acceptance`. The API refuses some schema-valid input for
//! reasons a JSON Schema cannot say (a referenced org that does not exist, an IANA zone, a
//! price off by 10^6, a calendar date), each with a 422 naming the field.
//!
//! Run: `cargo test -p tollgate-control-plane --test schemathesis -- --nocapture` (about
//! 30 s). `TOLLGATE_SCHEMATHESIS_EXAMPLES` (default 40 per operation) and
//! `TOLLGATE_SCHEMATHESIS_SEED` (default 1) make a longer or different run;
//! `TOLLGATE_SKIP_PYTHON=1` skips it where no `.venv` exists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_control_plane::http::openapi::documented;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
const ADMIN: &str = "schemathesis-admin-token-0123456789";
const DATAPLANE: &str = "schemathesis-dataplane-token-0123456789";
/// The checks run on every answer (see the module doc for the one left out).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,\
missing_required_header,unsupported_method,ignored_auth,use_after_free,\
ensure_resource_availability";
/// Bound on the whole schemathesis run; the default run takes about 30 s.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Kills and reaps a child on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn schemathesis() -> Option<PathBuf> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/schemathesis");
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

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `tollgate serve` on a fresh SQLite file in `dir`; returns it and its base URL.
fn serve(dir: &Path) -> (Killed, String) {
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url"])
        .arg(dir.join("t.db"))
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .env("TOLLGATE_DATAPLANE_TOKEN", DATAPLANE)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let server = Killed(child);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("tollgate serve printed {line:?}"))
        .to_string();
    (server, url)
}

/// The number before `label` in schemathesis's summary (`4181 generated`, the last one: the summary line comes last).
fn count_before(text: &str, label: &str) -> Option<u64> {
    let i = text.rfind(label)?;
    text.get(..i)?.split_whitespace().last()?.parse().ok()
}

#[test]
fn schemathesis_finds_no_5xx_and_no_mismatch() {
    let Some(st) = schemathesis() else { return };
    let dir = std::env::temp_dir().join(format!("tollgate-schemathesis-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dir = Scratch(dir);
    let (_server, url) = serve(&dir.0);
    let examples = env_or("TOLLGATE_SCHEMATHESIS_EXAMPLES", 40);
    let seed = env_or("TOLLGATE_SCHEMATHESIS_SEED", 1);
    let report = dir.0.join("report.txt");
    let mut run = Command::new(st);
    run.current_dir(&dir.0)
        .arg("run")
        .arg(format!("{url}/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
        .args(["--checks", CHECKS])
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
    let serve_log = std::fs::read_to_string(dir.0.join("serve.log")).unwrap_or_default();
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
