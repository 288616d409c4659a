//! The workspace's proxy-wasm modules for tests: `cargo build -p <package> --target
//! wasm32-wasip1 --release` once per package and process (a second or so when nothing
//! changed, and a stale module is never tested), into the target directory the running test
//! was built in, so the modules share its cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The target directory of the running test or bench: `$CARGO_TARGET_DIR`, else the one its
/// executable sits in (`TARGET/<profile>/deps/…`), else the workspace's `target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        if deps.file_name()? != "deps" {
            return None;
        }
        Some(deps.parent()?.parent()?.to_path_buf())
    });
    from_exe.unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds `package` (release, wasm32-wasip1) on first use in this process and returns its
/// module, `TARGET/wasm32-wasip1/release/<package with _ for ->.wasm`. Calls for one package
/// wait for one build; a failed build fails every call, with cargo's errors.
pub fn module(package: &str) -> Result<PathBuf, String> {
    static BUILT: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    built
        .entry(package.to_owned())
        .or_insert_with(|| build(package))
        .clone()
}

fn build(package: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = target_dir();
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip1"])
        .args(["-p", package])
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p {package} --target wasm32-wasip1 --release failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(target
        .join("wasm32-wasip1/release")
        .join(format!("{}.wasm", package.replace('-', "_"))))
}
