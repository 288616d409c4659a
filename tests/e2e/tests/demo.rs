//! The demo behind `scripts/run.sh` (`tollgate-demo`): it starts, seeds, and prints a `curl`, a
//! Python `openai` and a spend example; each is run here exactly as printed (with `bash -c`,
//! from another directory) and must work; then Ctrl-C (SIGINT) stops everything: the demo exits
//! cleanly, Envoy's and the control plane's ports are closed, the state directory is gone.
//!
//! The test runs this package's debug binaries; `scripts/run.sh` runs the release ones with
//! the same code. Run with `cargo test -p tollgate-tests --test demo`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use tollgate_tests::eventually;
use tollgate_tests::process::{Echo, Proc, Secrets};

/// Reads the demo's stdout until the line that ends its instructions.
fn read_instructions(demo: &mut Proc, lines: &Receiver<String>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let end = line.starts_with("tollgate: Ctrl-C stops everything");
                out.push(line);
                if end {
                    return out;
                }
            }
            Err(_) => {
                if let Some(status) = demo.exited() {
                    panic!("the demo exited ({status}):\n{}", demo.output());
                }
            }
        }
    }
    panic!(
        "the demo printed no instructions in 180 s:\n{}",
        demo.output()
    );
}

/// The lines after the `# TITLE…` line up to the next blank line.
fn block(lines: &[String], title: &str) -> String {
    let start = lines
        .iter()
        .position(|l| l.starts_with(&format!("# {title}")))
        .unwrap_or_else(|| panic!("no '# {title}' block in:\n{}", lines.join("\n")));
    lines[start + 1..]
        .iter()
        .take_while(|l| !l.trim().is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a printed command with bash from `cwd`; returns stdout, failing loudly otherwise.
fn run_printed(command: &str, cwd: &PathBuf) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(command)
        .current_dir(cwd)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "printed command failed ({}):\n{command}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn port_open(addr: &str) -> bool {
    TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_ok()
}

#[test]
fn the_demo_prints_examples_that_work_as_printed_and_ctrl_c_stops_everything() {
    let Some(bins) = common::bins() else { return };
    let python = common::python();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate-demo"));
    cmd.arg("--control-plane-bin")
        .arg(&bins.control_plane)
        .arg("--upstream-bin")
        .arg(&bins.upstream)
        .arg("--wasm")
        .arg(&bins.filter_wasm)
        .arg("--sync-wasm")
        .arg(&bins.sync_wasm)
        .args(["--sync-interval-ms", "250", "--quiet"]);
    let (mut demo, lines) = Proc::spawn("demo", cmd, &Secrets::default(), Echo::Quiet).unwrap();
    let printed = read_instructions(&mut demo, &lines);
    let text = printed.join("\n");
    let state_dir = printed
        .iter()
        .find_map(|l| l.strip_prefix("tollgate: starting in "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no state directory named:\n{text}"));
    let url = printed
        .iter()
        .find_map(|l| l.strip_prefix("tollgate: ready on "))
        .and_then(|l| l.split_once(". "))
        .map(|(u, _)| u.to_string())
        .unwrap_or_else(|| panic!("no listener named:\n{text}"));
    let cp_url = printed
        .iter()
        .find_map(|l| l.strip_prefix("tollgate: control plane "))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no control plane named:\n{text}"));
    // The console's address and how to sign in are printed, and it answers there.
    let console = block(&printed, "web console");
    assert!(
        console.contains(&format!("cat {}", state_dir.join("admin-token").display())),
        "{console}"
    );
    assert!(
        text.contains(&format!("open {cp_url}/ui in a browser")),
        "{text}"
    );
    let login = reqwest::blocking::get(format!("{cp_url}/ui/login")).unwrap();
    assert_eq!(login.status(), 200);
    // No secret is printed: the examples read them from files.
    assert!(text.contains("$(cat "), "{text}");
    assert!(
        !text.contains("tg-"),
        "a virtual key or token was printed:\n{text}"
    );

    let elsewhere = std::env::temp_dir();
    let curl = block(&printed, "curl");
    let reply = run_printed(&curl, &elsewhere);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("x-tollgate-budget-remaining: 1"), "{reply}");
    assert!(reply.contains("x-tollgate-budget: user:"), "{reply}");
    assert!(reply.contains("\"usage\""), "{reply}");

    let mut requests = 1;
    if python.is_some() {
        let py = block(&printed, "python");
        let out = run_printed(&py, &elsewhere);
        assert!(out.contains("tollgate meters every token"), "{out}");
        assert!(out.contains("CompletionUsage("), "{out}");
        requests += 1;
    }

    // The spend example shows both requests once they are synced.
    let spend = block(&printed, "spend");
    let shown = eventually(Duration::from_secs(10), || {
        let out = run_printed(&spend, &elsewhere);
        out.contains(&format!("\"requests\":{requests}"))
            .then_some(out)
    });
    assert!(
        shown.is_some(),
        "spend never showed {requests} requests:\n{}",
        run_printed(&spend, &elsewhere)
    );

    // Ctrl-C: the demo stops its processes and cleans up.
    demo.signal("INT").unwrap();
    let status = demo
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the demo ignored SIGINT:\n{}", demo.output()));
    assert!(status.success(), "{status}:\n{}", demo.output());
    let listener = url.trim_start_matches("http://");
    let cp = cp_url.trim_start_matches("http://");
    assert!(!port_open(listener), "Envoy still listens on {listener}");
    assert!(!port_open(cp), "the control plane still listens on {cp}");
    assert!(
        !state_dir.exists(),
        "{} was left behind",
        state_dir.display()
    );
    assert!(demo.output().contains("tollgate: stopped"));
}
