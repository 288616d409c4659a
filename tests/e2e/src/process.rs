//! Child processes that never outlive their owner: each [`Proc`] kills (SIGKILL) and reaps
//! its process when dropped, so a failing test or an interrupted demo leaves nothing running.
//! Output (stdout and stderr) is collected in the background for failure messages, with every
//! registered [`Secrets`] value replaced by `***` before anyone can read or print it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// Most output kept per process; older output is dropped first (a long demo must not grow
/// without bound).
const MAX_OUTPUT_BYTES: usize = 4 << 20;

/// Values that must never appear in output we keep or print (tokens, provider keys, virtual
/// keys). Cheap to clone; every clone sees values added later.
#[derive(Debug, Clone, Default)]
pub struct Secrets(Arc<RwLock<Vec<String>>>);

impl Secrets {
    /// Adds a value to hide. Values shorter than 8 characters are ignored: hiding them would
    /// garble ordinary text, and no secret of ours is that short.
    pub fn add(&self, secret: &str) {
        if secret.len() >= 8 {
            self.0
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .push(secret.to_string());
        }
    }

    /// Whether `text` holds any secret.
    pub fn found_in(&self, text: &str) -> bool {
        let secrets = self.0.read().unwrap_or_else(PoisonError::into_inner);
        secrets.iter().any(|s| text.contains(s.as_str()))
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let secrets = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = text.to_string();
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

/// Where a child's output lines go besides the in-memory buffer.
#[derive(Debug, Clone, Default)]
pub enum Echo {
    /// Nowhere (tests: the buffer is printed when something fails).
    #[default]
    Quiet,
    /// To our stderr, each line prefixed (the demo shows what its processes say).
    Stderr(String),
}

/// A running child process, killed and reaped on drop.
pub struct Proc {
    name: String,
    child: Child,
    output: Arc<Mutex<String>>,
    secrets: Secrets,
    /// Lines that held a secret when they arrived (they were kept redacted).
    leaks: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

fn append(buf: &Mutex<String>, text: &str) {
    let mut b = buf.lock().unwrap_or_else(PoisonError::into_inner);
    b.push_str(text);
    if b.len() > MAX_OUTPUT_BYTES {
        let mut cut = b.len() - MAX_OUTPUT_BYTES / 2;
        while !b.is_char_boundary(cut) {
            cut += 1;
        }
        b.replace_range(..cut, "[…]\n");
    }
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout/stderr collected line by line. Returns the
    /// process and a receiver of its stdout lines (redacted), for programs that announce
    /// their address on stdout.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        secrets: &Secrets,
        echo: Echo,
    ) -> Result<(Proc, Receiver<String>)> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let output = Arc::new(Mutex::new(String::new()));
        let leaks = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = channel();
        // Each pipe read on a thread of its own, line by line: redacted, counted when a
        // secret was in it, echoed, kept; stdout's lines also go to the receiver.
        let collect = |pipe: Box<dyn std::io::Read + Send>, tx: Option<Sender<String>>| {
            let (out, secrets, echo) = (output.clone(), secrets.clone(), echo.clone());
            let leaks = leaks.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let line = redact_counting(&secrets, &leaks, &line);
                    emit(&echo, &line);
                    append(&out, &line);
                    append(&out, "\n");
                    if let Some(tx) = &tx {
                        let _ = tx.send(line);
                    }
                }
            });
        };
        if let Some(stdout) = child.stdout.take() {
            collect(Box::new(stdout), Some(tx));
        }
        if let Some(stderr) = child.stderr.take() {
            collect(Box::new(stderr), None);
        }
        Ok((
            Proc {
                name: name.to_string(),
                child,
                output,
                secrets: secrets.clone(),
                leaks,
            },
            rx,
        ))
    }

    /// What the process printed so far (stdout and stderr by arrival), secrets hidden.
    pub fn output(&self) -> String {
        let text = self
            .output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // Secrets registered after a line arrived are hidden here too.
        self.secrets.redact(&text)
    }

    /// How many output lines held a secret: counted as they arrived, plus one if what was
    /// kept holds a secret registered only later. Tests that no process logs a token assert 0.
    pub fn secret_leaks(&self) -> usize {
        let text = self
            .output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.leaks.load(Ordering::Relaxed) + usize::from(self.secrets.found_in(&text))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exit status if the process has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = crate::eventually(timeout, || self.exited())?;
        // Let the reader threads drain what is left in the pipes.
        thread::sleep(Duration::from_millis(100));
        Some(status)
    }

    /// Sends a signal by name (`TERM`, `INT`) with kill(1): std has no portable way without
    /// `unsafe`, which this workspace forbids.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{signal} {} failed", self.pid());
        }
        Ok(())
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `line` redacted, counting it in `leaks` when it held a secret.
fn redact_counting(secrets: &Secrets, leaks: &AtomicUsize, line: &str) -> String {
    let redacted = secrets.redact(line);
    if redacted != line {
        leaks.fetch_add(1, Ordering::Relaxed);
    }
    redacted
}

fn emit(echo: &Echo, line: &str) {
    if let Echo::Stderr(prefix) = echo {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{prefix}{line}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the first stdout line starting with `prefix` (as `tollgate serve` and the mock
/// upstream announce `listening on ADDR`), waiting at most `timeout`.
pub fn line_starting_with(
    proc: &mut Proc,
    lines: &Receiver<String>,
    prefix: &str,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Ok(rest.trim().to_string());
                }
            }
            Err(_) => {
                if let Some(status) = proc.exited() {
                    bail!(
                        "{} exited ({status}) before printing {prefix:?}:\n{}",
                        proc.name(),
                        proc.output()
                    );
                }
                if left.is_zero() {
                    bail!(
                        "{} printed no {prefix:?} line within {timeout:?}:\n{}",
                        proc.name(),
                        proc.output()
                    );
                }
            }
        }
    }
}
