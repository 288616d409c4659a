//! JSON scenarios: requests with expected decisions, for `tollgate-harness run`.
//!
//! A scenario names the clusters the plugin may call and a list of steps; each step moves
//! the clock or sends a request and checks what happened:
//!
//! ```json
//! {
//!   "vm_id": "tollgate",
//!   "upstreams": {
//!     "tollgate": { "/v1/snapshot": { "status": 200, "body": { "version": 1 } } }
//!   },
//!   "steps": [
//!     { "advance_ms": 1000 },
//!     {
//!       "name": "over budget is refused",
//!       "request": {
//!         "method": "POST", "path": "/v1/chat/completions",
//!         "headers": { "authorization": "Bearer tg-over" },
//!         "body": { "model": "gpt-4o-mini", "messages": [] },
//!         "response": { "status": 200, "body": { "usage": { "prompt_tokens": 1 } } }
//!       },
//!       "expect": {
//!         "status": 429, "allowed": false,
//!         "headers": { "x-tollgate-budget-remaining": "0.00", "x-absent": null },
//!         "body_contains": "budget"
//!       }
//!     }
//!   ]
//! }
//! ```
//!
//! A JSON string body is sent as is; any other JSON value is serialized. Every expectation
//! is optional. [`run`] returns one line per mismatch, naming the step.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::{FailurePolicy, HttpResponse, Outcome, Plugin, PluginBuilder, Request, Upstream};

/// A whole scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// `vm_config.vm_id` (default empty).
    #[serde(default)]
    pub vm_id: Option<String>,
    /// `plugin_config.root_id`.
    #[serde(default)]
    pub root_id: Option<String>,
    /// `vm_config.configuration`, as a string or JSON value.
    #[serde(default)]
    pub vm_configuration: Option<Value>,
    /// `fail_closed` (default), `fail_open` or `fail_reload`.
    #[serde(default)]
    pub failure_policy: Option<String>,
    /// Clusters: name -> path -> response.
    #[serde(default)]
    pub upstreams: BTreeMap<String, BTreeMap<String, ResponseSpec>>,
    /// Worker VMs to start (default 1); requests pick one with `vm`.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Extra VMs, each with its own plugin configuration (a string or JSON value), started
    /// after the workers with the workers' `vm_id`: e.g. a singleton `envoy.bootstrap.wasm`
    /// service, as Tollgate's sync service is. They run the services' module given to [`run`]
    /// (Tollgate's is `tollgate_sync.wasm`), else the workers' module.
    #[serde(default)]
    pub services: Vec<Value>,
    /// What happens, in order.
    pub steps: Vec<Step>,
}

/// One step: exactly one of `advance_ms`, `tick` or `request`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// A label for reports.
    #[serde(default)]
    pub name: Option<String>,
    /// Move the clock forward, firing due ticks.
    #[serde(default)]
    pub advance_ms: Option<u64>,
    /// Fire `proxy_on_tick` on every VM now.
    #[serde(default)]
    pub tick: Option<bool>,
    /// Send a request.
    #[serde(default)]
    pub request: Option<RequestSpec>,
    /// Which worker serves the request (default 0).
    #[serde(default)]
    pub vm: Option<usize>,
    /// What the request must produce.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// A request and the upstream's answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Method (default POST).
    #[serde(default)]
    pub method: Option<String>,
    /// Path.
    pub path: String,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body (string as is, other JSON serialized).
    #[serde(default)]
    pub body: Option<Value>,
    /// The upstream response (default 200, empty).
    #[serde(default)]
    pub response: Option<ResponseSpec>,
}

/// A response.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    /// Status (default 200).
    #[serde(default)]
    pub status: Option<u16>,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body (string as is, other JSON serialized).
    #[serde(default)]
    pub body: Option<Value>,
    /// Send the body as these chunks instead (streaming).
    #[serde(default)]
    pub chunks: Option<Vec<String>>,
}

/// Expectations on a request's [`Outcome`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Status the client gets.
    #[serde(default)]
    pub status: Option<u16>,
    /// Whether the request went through (true) or was answered locally / stopped (false).
    #[serde(default)]
    pub allowed: Option<bool>,
    /// Response headers: a value must match exactly; `null` must be absent.
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
    /// Substring of the response body.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// Headers the upstream got: exact value or `null` for absent.
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, Option<String>>,
    /// Substring of the body the upstream got.
    #[serde(default)]
    pub upstream_body_contains: Option<String>,
    /// Number of items enqueued while serving the request.
    #[serde(default)]
    pub queue_items: Option<usize>,
    /// Number of HTTP calls made while serving the request.
    #[serde(default)]
    pub http_calls: Option<usize>,
    /// Whether the plugin trapped.
    #[serde(default)]
    pub trapped: Option<bool>,
    /// Substrings that must appear in the log lines.
    #[serde(default)]
    pub logs_contain: Vec<String>,
}

/// A string or JSON value as bytes: strings as is, anything else serialized.
fn bytes_of(value: &Value) -> Vec<u8> {
    match value {
        Value::String(text) => text.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

impl ResponseSpec {
    /// As an upstream [`HttpResponse`].
    fn to_http_response(&self) -> HttpResponse {
        let mut response = HttpResponse::new(self.status.unwrap_or(200));
        for (name, value) in &self.headers {
            response = response.header(name, value.clone());
        }
        if let Some(body) = &self.body {
            response = response.body(bytes_of(body));
        }
        response
    }
}

impl RequestSpec {
    /// As a [`Request`].
    fn to_request(&self) -> Request {
        let mut request = Request::new(self.method.as_deref().unwrap_or("POST"), &self.path);
        for (name, value) in &self.headers {
            request = if name == ":authority" {
                request.authority(value)
            } else {
                request.header(name, value.clone())
            };
        }
        if let Some(body) = &self.body {
            request = request.body(bytes_of(body));
        }
        if let Some(response) = &self.response {
            request = request.response_status(response.status.unwrap_or(200));
            for (name, value) in &response.headers {
                request = request.response_header(name, value.clone());
            }
            if let Some(chunks) = &response.chunks {
                for chunk in chunks {
                    request = request.response_chunk(chunk.clone());
                }
            } else if let Some(body) = &response.body {
                request = request.response_body(bytes_of(body));
            }
        }
        request
    }
}

/// Checks an outcome against expectations; one message per mismatch.
pub fn check(outcome: &Outcome, expect: &Expect) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(status) = expect.status {
        if outcome.status() != Some(status) {
            problems.push(format!(
                "status: expected {status}, got {:?}",
                outcome.status()
            ));
        }
    }
    if let Some(allowed) = expect.allowed {
        if outcome.allowed() != allowed {
            problems.push(format!(
                "allowed: expected {allowed}, got {}",
                outcome.allowed()
            ));
        }
    }
    for (name, expected) in &expect.headers {
        let got = outcome.response_header(name);
        if got != expected.as_deref() {
            problems.push(format!(
                "response header {name}: expected {expected:?}, got {got:?}"
            ));
        }
    }
    if let Some(needle) = &expect.body_contains {
        if !outcome.body_text().contains(needle.as_str()) {
            problems.push(format!(
                "response body: expected to contain {needle:?}, got {:?}",
                outcome.body_text()
            ));
        }
    }
    for (name, expected) in &expect.upstream_headers {
        let got = outcome.upstream_header(name);
        if got != expected.as_deref() {
            problems.push(format!(
                "upstream header {name}: expected {expected:?}, got {got:?}"
            ));
        }
    }
    if let Some(needle) = &expect.upstream_body_contains {
        let body = outcome
            .upstream
            .as_ref()
            .map(|u| u.body_text())
            .unwrap_or_default();
        if !body.contains(needle.as_str()) {
            problems.push(format!(
                "upstream body: expected to contain {needle:?}, got {body:?}"
            ));
        }
    }
    if let Some(count) = expect.queue_items {
        if outcome.queue_items.len() != count {
            problems.push(format!(
                "queue items: expected {count}, got {}",
                outcome.queue_items.len()
            ));
        }
    }
    if let Some(count) = expect.http_calls {
        if outcome.http_calls.len() != count {
            problems.push(format!(
                "http calls: expected {count}, got {}",
                outcome.http_calls.len()
            ));
        }
    }
    if let Some(trapped) = expect.trapped {
        if outcome.trap.is_some() != trapped {
            problems.push(format!(
                "trapped: expected {trapped}, got {:?}",
                outcome.trap
            ));
        }
    }
    for needle in &expect.logs_contain {
        if outcome.logs_containing(needle).next().is_none() {
            problems.push(format!("logs: nothing contains {needle:?}"));
        }
    }
    problems
}

/// Parses a scenario file's text.
pub fn parse(text: &str) -> Result<Scenario> {
    serde_json::from_str(text).context("parsing the scenario")
}

/// Runs a scenario with `builder` (module + plugin configuration) and the module of its
/// services (`None`: the same module), and returns the mismatches, each prefixed with its
/// step. An error means the scenario could not run.
pub fn run(
    builder: PluginBuilder,
    services_wasm: Option<Vec<u8>>,
    scenario: &Scenario,
) -> Result<Vec<String>> {
    let mut builder = builder;
    if let Some(vm_id) = &scenario.vm_id {
        builder = builder.vm_id(vm_id);
    }
    if let Some(root_id) = &scenario.root_id {
        builder = builder.root_id(root_id);
    }
    if let Some(vm_configuration) = &scenario.vm_configuration {
        builder = builder.vm_configuration(bytes_of(vm_configuration));
    }
    if let Some(policy) = &scenario.failure_policy {
        builder = builder.failure_policy(match policy.to_ascii_lowercase().as_str() {
            "fail_closed" => FailurePolicy::FailClosed,
            "fail_open" => FailurePolicy::FailOpen,
            "fail_reload" => FailurePolicy::FailReload,
            other => anyhow::bail!("unknown failure_policy {other:?}"),
        });
    }
    let plugin = builder.build()?;
    // The clusters go on the host (`build` keeps only the plugin), before the first VM.
    let mut host = crate::Host::new();
    for (cluster, routes) in &scenario.upstreams {
        let table: Vec<(String, HttpResponse)> = routes
            .iter()
            .map(|(path, spec)| (path.clone(), spec.to_http_response()))
            .collect();
        host.upstream(cluster, Upstream::by_path(table));
    }
    host.add_vm(&plugin)?;
    for _ in 1..scenario.workers.unwrap_or(1) {
        host.new_vm()?;
    }
    let services_plugin = match services_wasm {
        Some(wasm) => Some(Plugin::builder(wasm).vm_id(plugin.vm_id()).build()?),
        None => None,
    };
    for service in &scenario.services {
        let module = services_plugin.as_ref().unwrap_or(&plugin);
        host.add_vm(&module.with_configuration(bytes_of(service)))?;
    }

    let mut problems = Vec::new();
    for (number, step) in scenario.steps.iter().enumerate() {
        let label = match &step.name {
            Some(name) => format!("step {} ({name})", number + 1),
            None => format!("step {}", number + 1),
        };
        if let Some(ms) = step.advance_ms {
            host.advance(std::time::Duration::from_millis(ms))
                .with_context(|| format!("{label}: advancing the clock"))?;
        }
        if step.tick == Some(true) {
            for vm in host.vms().collect::<Vec<_>>() {
                host.tick(vm)
                    .with_context(|| format!("{label}: ticking {vm}"))?;
            }
        }
        if let Some(request) = &step.request {
            let vm = crate::VmId(step.vm.unwrap_or(0));
            let outcome = host
                .send_to(vm, &request.to_request())
                .with_context(|| format!("{label}: sending the request"))?;
            if let Some(expect) = &step.expect {
                problems.extend(
                    check(&outcome, expect)
                        .into_iter()
                        .map(|p| format!("{label}: {p}")),
                );
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let text = r#"{
          "vm_id": "tollgate",
          "upstreams": { "tollgate": { "/v1/snapshot": { "status": 200, "body": { "version": 1 } } } },
          "steps": [
            { "advance_ms": 1000 },
            { "name": "over budget", "request": { "path": "/v1/chat/completions",
                "headers": { "authorization": "Bearer tg-over" }, "body": { "model": "m" } },
              "expect": { "status": 429, "headers": { "x-absent": null } } }
          ]
        }"#;
        let scenario = parse(text).unwrap();
        assert_eq!(scenario.steps.len(), 2);
        let expect = scenario.steps[1].expect.as_ref().unwrap();
        assert_eq!(expect.headers.get("x-absent"), Some(&None));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(parse(r#"{"steps": [], "stepz": []}"#).is_err());
    }
}
