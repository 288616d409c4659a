//! Shared by the integration tests: child processes that are always killed (a guard with
//! `Drop`), the mock upstream started as a binary, and a JSON POST with extra headers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) and reaped when the guard drops, so a failing test
/// leaves nothing running. Its stdout and stderr are collected in the background.
pub struct Proc {
    pub name: String,
    child: Child,
    pub output: Arc<Mutex<String>>,
}

impl Proc {
    /// Spawns `cmd` with piped output; `first_line` receives stdout's first line.
    pub fn spawn(name: &str, mut cmd: Command) -> (Proc, std::sync::mpsc::Receiver<String>) {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let out = output.clone();
        thread::spawn(move || {
            let mut first = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = first.take() {
                    let _ = tx.send(line.clone());
                }
                let mut o = out.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let err = output.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                err.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        (
            Proc {
                name: name.to_string(),
                child,
                output,
            },
            rx,
        )
    }

    /// Everything the process printed so far (stdout and stderr interleaved by arrival).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for the process to exit, at most `timeout`; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Give the reader threads a moment to drain the pipes.
                thread::sleep(Duration::from_millis(100));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the `tollgate-upstream` binary on a free port and returns it with its address,
/// read from the `listening on ADDR` line.
pub fn start_upstream(args: &[&str]) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate-upstream"));
    cmd.args(["--listen", "127.0.0.1:0"]).args(args);
    let (proc, first) = Proc::spawn("tollgate-upstream", cmd);
    let line = first
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("upstream printed no address: {}", proc.output()));
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (proc, addr)
}

/// POSTs `body` as JSON to `http://{addr}{path}` with `headers` added.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}
