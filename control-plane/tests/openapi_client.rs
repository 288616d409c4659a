//! A client generated from the served OpenAPI document round-trips a budget: a real `tollgate
//! serve` on SQLite serves `/openapi.json`; the venv's `openapi-python-client` (pinned in
//! `scripts/requirements.txt`) generates a Python package from it, at test time, with no
//! warning (every schema it meets is one it can generate); and
//! `tests/python/generated_client_budget.py` creates an org and a budget through the
//! package's typed models, reads the budget back by id and from the list, and checks that
//! every read equals what the create answered and what was sent.
//!
//! Run: `cargo test -p tollgate-control-plane --test openapi_client` (a few seconds);
//! `TOLLGATE_SKIP_PYTHON=1` skips it where no `.venv` exists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{venv_bin, venv_tool, Served, ADMIN, DATAPLANE};

/// Stdout and stderr of a finished command, for failure messages.
fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_client_generated_from_the_served_document_round_trips_a_budget() {
    let Some(generator) = venv_tool("openapi-python-client") else {
        return;
    };
    let served = Served::start("tollgate-openapi-client-", ADMIN, DATAPLANE);
    let (url, dir) = (&served.url, served.dir.path());
    let document = reqwest::blocking::get(format!("{url}/openapi.json"))
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .unwrap();
    std::fs::write(dir.join("openapi.json"), document).unwrap();

    // The generator formats its output with the venv's `ruff`, found on PATH.
    let path = match std::env::var_os("PATH") {
        Some(p) => {
            std::env::join_paths(std::iter::once(venv_bin()).chain(std::env::split_paths(&p)))
                .unwrap()
        }
        None => venv_bin().into_os_string(),
    };
    let generated = Command::new(generator)
        .current_dir(dir)
        .args(["generate", "--path", "openapi.json", "--meta", "none"])
        .args(["--output-path", "pkg/tollgate_client"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "openapi-python-client failed ({}):\n{}",
        generated.status,
        printed(&generated)
    );
    assert!(
        !printed(&generated).contains("Warning"),
        "openapi-python-client warned:\n{}",
        printed(&generated)
    );

    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/generated_client_budget.py");
    let ran = Command::new(venv_bin().join("python"))
        .arg(script)
        .args([url.as_str(), ADMIN])
        .env("PYTHONPATH", dir.join("pkg"))
        .output()
        .unwrap();
    let serve_log = served.log();
    assert!(
        ran.status.success(),
        "the generated client's round trip failed ({}):\n{}\n--- tollgate serve\n{serve_log}",
        ran.status,
        printed(&ran)
    );
    let said = String::from_utf8_lossy(&ran.stdout);
    assert!(
        said.contains("created, read back and listed equal"),
        "the script said: {said}"
    );
    eprintln!("{}", said.trim());
}
