//! Running the SDK driver scripts (`tests/e2e/python/*.py`) with the workspace's
//! `.venv/bin/python`, where the pinned official `openai` and `anthropic` packages live.
//! A script prints one JSON object per line; any exception makes it exit non-zero.
//! The virtual key goes in the environment (`TOLLGATE_KEY`), never on a command line.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use tollgate_upstream::envoy::{venv_python, workspace_root};

use crate::process::{Echo, Proc, Secrets};

/// How long one script may run (SDK retries on 429 included).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The venv's Python; `None` when `TOLLGATE_SKIP_PYTHON=1` and there is none; an error
/// saying how to create it otherwise.
pub fn python() -> Result<Option<PathBuf>> {
    match venv_python() {
        Some(p) => Ok(Some(p)),
        None if std::env::var("TOLLGATE_SKIP_PYTHON").as_deref() == Ok("1") => Ok(None),
        None => bail!(
            "no .venv/bin/python: run `bash scripts/setup.sh` (or set TOLLGATE_SKIP_PYTHON=1 to \
             skip the SDK checks)"
        ),
    }
}

/// `tests/e2e/python/NAME`.
pub fn script(name: &str) -> PathBuf {
    workspace_root().join("tests/e2e/python").join(name)
}

/// Runs `python script args…` with `env`, bounded in time; returns its JSON lines.
pub fn run(
    python: &PathBuf,
    script_name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    secrets: &Secrets,
) -> Result<Vec<Value>> {
    finish(spawn(python, script_name, args, env, secrets)?)
}

/// Starts `python script args…` with `env` (see [`finish`]), so a test can watch something
/// else while the script runs.
pub fn spawn(
    python: &PathBuf,
    script_name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    secrets: &Secrets,
) -> Result<Proc> {
    let mut cmd = Command::new(python);
    cmd.arg(script(script_name)).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(Proc::spawn(script_name, cmd, secrets, Echo::Quiet)?.0)
}

/// Waits (bounded) for a script started by [`spawn`]; returns its JSON lines, or an error
/// with its output when it failed.
pub fn finish(mut proc: Proc) -> Result<Vec<Value>> {
    let name = proc.name().to_string();
    let Some(status) = proc.wait_exit(SCRIPT_TIMEOUT) else {
        bail!(
            "{name} still running after {SCRIPT_TIMEOUT:?}:\n{}",
            proc.output()
        );
    };
    let output = proc.output();
    if !status.success() {
        bail!("{name} failed ({status}):\n{output}");
    }
    output
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).with_context(|| format!("{name}: bad line {l}")))
        .collect()
}
