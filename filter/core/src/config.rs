//! The filter's plugin configuration: parsed and validated once in `on_configure`.
//!
//! Every problem is reported with its field path (`control_plane.sync_interval_ms: ...`), all
//! of them at once, so an operator fixes a bad config in one go; Envoy then refuses to start
//! the plugin. Unknown fields are errors (a typo must not silently become a default).
//! The data-plane token is a [`Secret`]: it never prints.
//!
//! No secret belongs in this configuration: Envoy prints plugin configurations in its admin
//! `/config_dump` and at `config` debug level. Provider keys never reach the filter at all:
//! each provider's cluster injects its own key upstream (`credential_injector`, from an SDS
//! file), and the filter only checks that a metered request is routed to its provider's
//! cluster (`identity.providers.NAME.cluster`); keys in the old `{"header", "value"}` form are
//! refused. The data-plane token (which only the sync role uses; the filter role needs none)
//! is given one of three ways:
//! - `"token_injected": true` (shipped): the control-plane cluster injects it the same way,
//!   so the filter never holds it and no Envoy log prints it;
//! - `"token_env": "NAME"`: read from Envoy's environment (the plugin's
//!   `vm_config.environment_variables.host_env_keys` lists the name; unset or empty refuses
//!   the config). Not in `/config_dump`, but Envoy's `router` debug log prints the
//!   `authorization` header the sync service sets on its calls;
//! - `"token": "…"` inline, for the wasmtime harness and tests only.
//!
//! Example (every field but `control_plane.cluster`/`authority` and the token has a default):
//! ```json
//! {"role": "filter", "vm_id": "tollgate",
//!  "control_plane": {"cluster": "tollgate_cp", "authority": "127.0.0.1:8080",
//!                    "token_injected": true,
//!                    "sync_interval_ms": 1000, "timeout_ms": 2000},
//!  "identity": {"providers": {"openai": {"cluster": "openai"}},
//!               "trusted_principal_header": null},
//!  "max_staleness_s": 300, "stale_policy": "allow", "unknown_model": "deny",
//!  "missing_usage": "charge_estimate", "provider_errors": "charge_zero", "shadow": false,
//!  "inject_include_usage": true, "filter_state": true}
//! ```
//!
//! The parsing functions are `#[inline]`: their code, serde's with it, is then generated in
//! the crate that calls them, `tollgate-load`, built for size, not here (core is built for the
//! request path's speed). The filter module's size budget depends on it (issue 17).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::pricing::{per_million, ModelPrice};

/// Which of its two roles this plugin instance plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The HTTP filter on every worker.
    #[default]
    Filter,
    /// The singleton sync service (`envoy.bootstrap.wasm`).
    Sync,
}

/// What to do when the snapshot is older than `max_staleness_s` (or none arrived yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StalePolicy {
    /// Keep enforcing from the last snapshot; with none, allow (fail open).
    #[default]
    Allow,
    /// Deny metered requests (fail closed).
    Deny,
}

/// What to do with a request for a model the price book does not know.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UnknownModel {
    /// Refuse it (400, naming the model).
    #[default]
    Deny,
    /// Serve it, charge nothing, count it as unpriced.
    AllowUnpriced,
    /// Price it at this default.
    DefaultPrice(Arc<ModelPrice>),
}

/// What to charge when a response carries no usage: `missing_usage` for a success cut short
/// (disconnect, reset, truncation, unreadable usage), `provider_errors` for a complete error
/// answer (RELIABILITY.md has the table of every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingUsage {
    /// The request's worst-case estimate: budgets never under-count.
    #[default]
    ChargeEstimate,
    /// Nothing.
    ChargeZero,
}

/// A secret string that never appears in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where and how the control plane is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlane {
    /// Envoy static cluster name for `dispatch_http_call`.
    pub cluster: String,
    /// `:authority` of the calls.
    pub authority: String,
    /// Data-plane token (`Authorization: Bearer`), read from the environment variable
    /// `token_env` names (or, for tests, given inline as `token`); empty when
    /// `token_injected`: the control-plane cluster's `credential_injector` adds it after
    /// routing, where no Envoy log prints it.
    pub token: Secret,
    /// Snapshot path.
    pub snapshot_path: String,
    /// Usage path.
    pub usage_path: String,
    /// How often the sync service polls and flushes.
    pub sync_interval_ms: u64,
    /// Timeout of one call.
    pub timeout_ms: u64,
    /// Most events per `POST /v1/usage`.
    pub batch_max_events: usize,
}

/// Where a provider's traffic must be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRoute {
    /// The Envoy cluster whose upstream filters inject this provider's key: a metered request
    /// of this provider routed to any other cluster is refused (Envoy's `xds.cluster_name`).
    pub cluster: String,
    /// For a provider whose requests name a deployment instead of a model (Azure OpenAI):
    /// each deployment's model, as the price book names it (`azure/gpt-4o`,
    /// `azure/eu/gpt-4o-2024-08-06`). A request to a deployment not listed is refused.
    pub deployments: BTreeMap<String, String>,
}

/// How requests are attributed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The cluster of each provider (`openai`, `anthropic`, `gemini`). Empty: no cluster
    /// check (the wasmtime harness); otherwise a metered request of a provider not listed is
    /// refused.
    pub providers: BTreeMap<String, ProviderRoute>,
    /// A principal header set by an earlier, trusted filter (e.g. after `jwt_authn`). Without
    /// it, a client-sent principal header is ignored and removed.
    pub trusted_principal_header: Option<String>,
}

/// Size and count limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body read for the estimate; larger bodies are refused with 413.
    pub max_request_body_bytes: usize,
    /// Largest single response body or SSE event kept to find usage.
    pub max_response_event_bytes: usize,
    /// Most usage events queued before the oldest overflow (counted).
    pub max_queue_events: usize,
    /// Output tokens assumed when neither the request nor the price book bounds them.
    pub default_max_output_tokens: u64,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Filter or sync service.
    pub role: Role,
    /// Must equal the Envoy `vm_config.vm_id` both roles share (empty under Istio): the usage
    /// queue is found by it.
    pub vm_id: String,
    /// Control plane connection.
    pub control_plane: ControlPlane,
    /// Attribution.
    pub identity: Identity,
    /// Age past which the snapshot is stale.
    pub max_staleness_s: u64,
    /// What stale means for requests.
    pub stale_policy: StalePolicy,
    /// Unknown model policy.
    pub unknown_model: UnknownModel,
    /// What a success without readable usage is charged (the provider may have billed work it
    /// did not report): default the estimate.
    pub missing_usage: MissingUsage,
    /// What a complete error answer from the provider (`4xx`, `429`, `5xx`) is charged:
    /// default zero, since providers do not bill requests they refuse.
    pub provider_errors: MissingUsage,
    /// Decide and count, never deny.
    pub shadow: bool,
    /// Set `stream_options.include_usage` on streaming OpenAI requests.
    pub inject_include_usage: bool,
    /// Write `tollgate.decision`, `tollgate.principal` and `tollgate.cost` as Envoy filter state
    /// for the access log (`%FILTER_STATE(wasm.tollgate.cost:PLAIN)%`). `false` saves three host
    /// calls per request (≈ 5 µs of Envoy CPU, BENCHMARKS.md) where no access log prints them.
    pub filter_state: bool,
    /// Limits.
    pub limits: Limits,
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path of the field.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

/// Every problem found, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tollgate config: {}", .0.iter().map(|p| format!("{}: {}", p.field, p.problem)).collect::<Vec<_>>().join("; "))]
pub struct ConfigError(pub Vec<ConfigProblem>);

/// Reads the fields of one JSON object, recording a problem per bad or unknown field.
struct Fields<'a> {
    path: &'a str,
    map: &'a Map<String, Value>,
    used: Vec<&'static str>,
    problems: &'a mut Vec<ConfigProblem>,
}

impl<'a> Fields<'a> {
    #[inline]
    fn field_path(&self, key: &str) -> String {
        // An empty key (`{"": 1}`) would otherwise name no field at all (found by
        // `fuzz/fuzz_targets/config.rs`).
        let key = if key.is_empty() { "\"\"" } else { key };
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    #[inline]
    fn problem(&mut self, key: &str, problem: impl Into<String>) {
        let field = self.field_path(key);
        self.problems.push(ConfigProblem {
            field,
            problem: problem.into(),
        });
    }

    /// The field's value, `None` when absent (or null) or invalid (recorded).
    fn opt<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<T> {
        self.used.push(key);
        let v = self.map.get(key).filter(|v| !v.is_null())?;
        match T::deserialize(v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(key, e.to_string());
                None
            }
        }
    }

    fn or<T: DeserializeOwned>(&mut self, key: &'static str, default: T) -> T {
        self.opt(key).unwrap_or(default)
    }

    fn required<T: DeserializeOwned + Default>(&mut self, key: &'static str) -> T {
        if self.map.get(key).is_none_or(Value::is_null) {
            self.problem(key, "required");
        }
        self.opt(key).unwrap_or_default()
    }

    /// A required secret string. Unlike [`Fields::opt`], a problem never quotes the value:
    /// serde's messages do (`invalid type: string "sk-…"`), and Envoy logs them.
    #[inline]
    fn secret(&mut self, key: &'static str) -> Secret {
        self.used.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => {
                self.problem(key, "required");
                Secret::default()
            }
            Some(Value::String(s)) => Secret(s.clone()),
            Some(_) => {
                self.problem(key, "must be a string");
                Secret::default()
            }
        }
    }

    /// A number in `[min, max]`, else a problem naming the bounds.
    #[inline]
    fn ranged(&mut self, key: &'static str, default: u64, min: u64, max: u64) -> u64 {
        let v = self.or(key, default);
        if !(min..=max).contains(&v) {
            self.problem(key, format!("must be between {min} and {max}, got {v}"));
        }
        v
    }

    #[inline]
    fn object(&mut self, key: &'static str) -> Map<String, Value> {
        self.used.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                self.problem(key, format!("expected an object, got {other}"));
                Map::new()
            }
        }
    }

    #[inline]
    fn finish(self) {
        let unknown: Vec<String> = self
            .map
            .keys()
            .filter(|k| !self.used.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in unknown {
            let field = self.field_path(&k);
            self.problems.push(ConfigProblem {
                field,
                problem: "unknown field".into(),
            });
        }
    }
}

#[inline]
fn non_empty(f: &mut Fields<'_>, key: &'static str, v: &str) {
    if v.trim().is_empty() {
        f.problem(key, "must not be empty");
    }
}

#[inline]
fn path(f: &mut Fields<'_>, key: &'static str, default: &str) -> String {
    let p: String = f.or(key, default.to_string());
    if !p.starts_with('/') {
        f.problem(key, format!("must start with '/', got {p:?}"));
    }
    p
}

/// Looks an environment variable up (`std::env::var` in the filter, a map in tests).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The data-plane token: inline `token`, the environment variable `token_env` names, or
/// none when `token_injected` says the control-plane cluster adds it (exactly one of the
/// three). Problems never quote a value.
#[inline]
fn token(f: &mut Fields<'_>, env: Env<'_>, role: Role) -> Secret {
    let inline = f.map.contains_key("token");
    let named = f.map.contains_key("token_env");
    let injected: bool = f.or("token_injected", false);
    match (inline, named, injected) {
        (false, false, true) => Secret::default(),
        (false, true, false) => {
            let name: String = f.required("token_env");
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                f.problem(
                    "token_env",
                    "must name an environment variable ([A-Za-z0-9_]+)",
                );
                return Secret::default();
            }
            match env(&name) {
                Some(v) if !v.trim().is_empty() => Secret(v.trim().to_string()),
                _ => {
                    f.problem(
                        "token_env",
                        format!(
                            "environment variable {name} is unset or empty in the Wasm VM \
                             (list it in vm_config.environment_variables.host_env_keys and set \
                             it in Envoy's environment)"
                        ),
                    );
                    Secret::default()
                }
            }
        }
        (true, false, false) => {
            let token = f.secret("token");
            non_empty(f, "token", token.expose());
            token
        }
        // Only the sync service calls the control plane; the HTTP filter needs no token.
        (false, false, false) if role == Role::Filter => Secret::default(),
        (false, false, false) => {
            f.problem(
                "token_injected",
                "the data-plane token is required: token_injected: true (the control-plane \
                 cluster's credential_injector adds it), token_env, or an inline token",
            );
            Secret::default()
        }
        _ => {
            f.used.extend(["token", "token_env"]);
            f.problem(
                "token_injected",
                "give exactly one of token_injected: true, token_env, token",
            );
            Secret::default()
        }
    }
}

#[inline]
fn control_plane(
    map: &Map<String, Value>,
    env: Env<'_>,
    role: Role,
    problems: &mut Vec<ConfigProblem>,
) -> ControlPlane {
    let mut f = Fields {
        path: "control_plane",
        map,
        used: vec![],
        problems,
    };
    let cluster: String = f.required("cluster");
    non_empty(&mut f, "cluster", &cluster);
    let authority: String = f.required("authority");
    non_empty(&mut f, "authority", &authority);
    let token = token(&mut f, env, role);
    let cp = ControlPlane {
        cluster,
        authority,
        token,
        snapshot_path: path(&mut f, "snapshot_path", "/v1/snapshot"),
        usage_path: path(&mut f, "usage_path", "/v1/usage"),
        sync_interval_ms: f.ranged("sync_interval_ms", 1000, 100, 3_600_000),
        timeout_ms: f.ranged("timeout_ms", 2000, 10, 60_000),
        batch_max_events: f.ranged(
            "batch_max_events",
            1000,
            1,
            crate::event::MAX_BATCH_EVENTS as u64,
        ) as usize,
    };
    f.finish();
    cp
}

#[inline]
fn identity(map: &Map<String, Value>, problems: &mut Vec<ConfigProblem>) -> Identity {
    let mut f = Fields {
        path: "identity",
        map,
        used: vec![],
        problems,
    };
    // Read by hand, not with `Fields::opt`: serde's messages quote the value, and an old
    // config's provider key (`"openai": "Bearer sk-…"`, or `{"value": "sk-…"}`) would land in
    // Envoy's log (found by `fuzz/fuzz_targets/config.rs`).
    f.used.push("providers");
    let raw = match f.map.get("providers") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            f.problem("providers", "expected an object of provider clusters");
            Map::new()
        }
    };
    let mut providers = BTreeMap::new();
    for (name, entry) in raw {
        let Value::Object(entry) = entry else {
            f.problem(
                "providers",
                format!("{name}: expected {{\"cluster\": string}}"),
            );
            continue;
        };
        if entry.contains_key("value") || entry.contains_key("header") {
            f.problem(
                "providers",
                format!(
                    "{name}: provider keys are no longer read from the plugin config (Envoy \
                     prints it in /config_dump); inject the key on the provider's cluster \
                     with credential_injector and an SDS file (envoy/README.md), and give \
                     {{\"cluster\": NAME}} here"
                ),
            );
            continue;
        }
        let cluster = match entry.get("cluster") {
            Some(Value::String(c)) if !c.trim().is_empty() => c.trim().to_string(),
            _ => {
                f.problem(
                    "providers",
                    format!("{name}.cluster: required, a non-empty string"),
                );
                continue;
            }
        };
        // The unknown field is not named: a key pasted as a field name would land in the log.
        if entry
            .keys()
            .any(|k| k.as_str() != "cluster" && k.as_str() != "deployments")
        {
            f.problem(
                "providers",
                format!(
                    "{name}: unknown field (a provider takes only \"cluster\" and \
                     \"deployments\")"
                ),
            );
        }
        let mut deployments = BTreeMap::new();
        match entry.get("deployments") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (deployment, model) in m {
                    match model {
                        Value::String(model) if !model.trim().is_empty() => {
                            deployments.insert(deployment.clone(), model.trim().to_string());
                        }
                        _ => f.problem(
                            "providers",
                            format!(
                                "{name}.deployments.{deployment}: expected the model's \
                                 price-book name (a non-empty string)"
                            ),
                        ),
                    }
                }
            }
            Some(_) => f.problem(
                "providers",
                format!("{name}.deployments: expected an object of deployment → model"),
            ),
        }
        providers.insert(
            name,
            ProviderRoute {
                cluster,
                deployments,
            },
        );
    }
    let trusted: Option<String> = f.opt("trusted_principal_header");
    if trusted.as_deref().is_some_and(|h| h.trim().is_empty()) {
        f.problem("trusted_principal_header", "must not be empty when set");
    }
    f.finish();
    Identity {
        providers,
        trusted_principal_header: trusted.map(|h| h.trim().to_ascii_lowercase()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaultPrice {
    /// USD per 1M input tokens.
    input_per_million: Decimal,
    /// USD per 1M output tokens.
    output_per_million: Decimal,
}

#[inline]
fn unknown_model(f: &mut Fields<'_>) -> UnknownModel {
    f.used.push("unknown_model");
    match f.map.get("unknown_model") {
        None | Some(Value::Null) => UnknownModel::Deny,
        Some(Value::String(s)) if s == "deny" => UnknownModel::Deny,
        Some(Value::String(s)) if s == "allow_unpriced" => UnknownModel::AllowUnpriced,
        Some(Value::Object(m)) if m.len() == 1 && m.contains_key("default_price") => {
            let raw = m.get("default_price").cloned().unwrap_or(Value::Null);
            match RawDefaultPrice::deserialize(raw) {
                Ok(p) => match (
                    per_million("input_per_million", p.input_per_million),
                    per_million("output_per_million", p.output_per_million),
                ) {
                    (Ok(i), Ok(o)) => UnknownModel::DefaultPrice(Arc::new(ModelPrice::flat(i, o))),
                    (Err(e), _) | (_, Err(e)) => {
                        f.problem("unknown_model", format!("default_price.{e}"));
                        UnknownModel::Deny
                    }
                },
                Err(e) => {
                    f.problem("unknown_model", format!("default_price: {e}"));
                    UnknownModel::Deny
                }
            }
        }
        Some(other) => {
            f.problem(
                "unknown_model",
                format!("expected \"deny\", \"allow_unpriced\" or {{\"default_price\": {{...}}}}, got {other}"),
            );
            UnknownModel::Deny
        }
    }
}

#[inline]
fn limits(map: &Map<String, Value>, problems: &mut Vec<ConfigProblem>) -> Limits {
    let mut f = Fields {
        path: "limits",
        map,
        used: vec![],
        problems,
    };
    let l = Limits {
        max_request_body_bytes: f.ranged("max_request_body_bytes", 4 << 20, 1024, 64 << 20)
            as usize,
        max_response_event_bytes: f.ranged("max_response_event_bytes", 1 << 20, 1024, 64 << 20)
            as usize,
        max_queue_events: f.ranged("max_queue_events", 100_000, 1, 10_000_000) as usize,
        default_max_output_tokens: f.ranged("default_max_output_tokens", 8192, 1, 10_000_000),
    };
    f.finish();
    l
}

impl Config {
    /// Parses and validates the plugin configuration bytes, with no environment (a
    /// `token_env` is then refused as unset).
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        Config::parse_with_env(bytes, &|_| None)
    }

    /// Parses and validates the plugin configuration bytes; `env` looks up the variable
    /// `control_plane.token_env` names.
    #[inline]
    pub fn parse_with_env(bytes: &[u8], env: Env<'_>) -> Result<Config, ConfigError> {
        let problem = |field: &str, problem: String| {
            ConfigError(vec![ConfigProblem {
                field: field.into(),
                problem,
            }])
        };
        let root: Value = serde_json::from_slice(bytes)
            .map_err(|e| problem("(root)", format!("not valid JSON: {e}")))?;
        let Value::Object(map) = root else {
            return Err(problem("(root)", "expected a JSON object".into()));
        };
        let mut problems = Vec::new();
        let mut f = Fields {
            path: "",
            map: &map,
            used: vec![],
            problems: &mut problems,
        };
        let role = f.or("role", Role::Filter);
        // May be empty: Istio gives a `WasmPlugin`'s VM an empty vm_id.
        let vm_id: String = f.or("vm_id", "tollgate".to_string());
        let cp_map = f.object("control_plane");
        if !map.contains_key("control_plane") {
            f.problem("control_plane", "required");
        }
        let id_map = f.object("identity");
        let limits_map = f.object("limits");
        let max_staleness_s = f.ranged("max_staleness_s", 300, 1, 30 * 86_400);
        let stale_policy = f.or("stale_policy", StalePolicy::Allow);
        let unknown_model = unknown_model(&mut f);
        let missing_usage = f.or("missing_usage", MissingUsage::ChargeEstimate);
        let provider_errors = f.or("provider_errors", MissingUsage::ChargeZero);
        let shadow = f.or("shadow", false);
        let inject_include_usage = f.or("inject_include_usage", true);
        let filter_state = f.or("filter_state", true);
        f.finish();
        let config = Config {
            role,
            vm_id,
            control_plane: control_plane(&cp_map, env, role, &mut problems),
            identity: identity(&id_map, &mut problems),
            max_staleness_s,
            stale_policy,
            unknown_model,
            missing_usage,
            provider_errors,
            shadow,
            inject_include_usage,
            filter_state,
            limits: limits(&limits_map, &mut problems),
        };
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"control_plane": {"cluster": "cp", "authority": "127.0.0.1:8080", "token": "dp-secret"}})
    }

    fn parse(v: Value) -> Result<Config, ConfigError> {
        Config::parse(v.to_string().as_bytes())
    }

    fn fields(err: ConfigError) -> Vec<String> {
        err.0.into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(base()).unwrap();
        assert_eq!(c.role, Role::Filter);
        assert_eq!(c.control_plane.sync_interval_ms, 1000);
        assert_eq!(c.control_plane.snapshot_path, "/v1/snapshot");
        assert_eq!(c.unknown_model, UnknownModel::Deny);
        assert_eq!(c.missing_usage, MissingUsage::ChargeEstimate);
        assert_eq!(c.provider_errors, MissingUsage::ChargeZero);
        assert!(c.inject_include_usage && !c.shadow);
        assert!(c.filter_state, "the shipped access log prints it");
        assert_eq!(c.limits.max_queue_events, 100_000);
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let mut v = base();
        v["control_plane"]["sync_interval_ms"] = json!(5);
        v["control_plane"]["token"] = json!("");
        v["control_plane"]["snapshot_path"] = json!("v1/snapshot");
        v["control_plane"]["colour"] = json!("blue");
        v["stale_policy"] = json!("sometimes");
        v["limits"] = json!({"max_queue_events": -1});
        v["identity"] = json!({"providers": {"openai": {"cluster": ""}}});
        v["unknown_model"] = json!({"default_price": {"input_per_million": "0.0000025", "output_per_million": "10"}});
        v["typo"] = json!(true);
        let got = fields(parse(v).unwrap_err());
        for want in [
            "control_plane.sync_interval_ms",
            "control_plane.token",
            "control_plane.snapshot_path",
            "control_plane.colour",
            "stale_policy",
            "limits.max_queue_events",
            "identity.providers",
            "unknown_model",
            "typo",
        ] {
            assert!(
                got.contains(&want.to_string()),
                "{want} missing from {got:?}"
            );
        }
    }

    #[test]
    fn missing_control_plane_and_bad_json() {
        let err = parse(json!({})).unwrap_err();
        assert!(fields(err).contains(&"control_plane".to_string()));
        let err = Config::parse(b"{not json").unwrap_err();
        assert_eq!(err.0[0].field, "(root)");
        let err = Config::parse(b"[]").unwrap_err();
        assert!(err.to_string().contains("expected a JSON object"));
    }

    #[test]
    fn policies_and_identity() {
        let mut v = base();
        v["role"] = json!("sync");
        v["unknown_model"] =
            json!({"default_price": {"input_per_million": "2.5", "output_per_million": "10"}});
        v["identity"] = json!({"providers": {"anthropic": {"cluster": " anthropic "}},
                               "trusted_principal_header": "X-Tollgate-Principal"});
        let c = parse(v).unwrap();
        assert_eq!(c.role, Role::Sync);
        let UnknownModel::DefaultPrice(p) = c.unknown_model else {
            panic!()
        };
        assert_eq!(p.rates.input, Decimal::new(25, 7));
        assert_eq!(c.identity.providers["anthropic"].cluster, "anthropic");
        assert_eq!(
            c.identity.trusted_principal_header.as_deref(),
            Some("x-tollgate-principal")
        );
    }

    #[test]
    fn misplaced_secrets_are_not_quoted() {
        // Fuzz reproducer: fuzz/seeds/config/regression-provider-as-string.
        let mut v = base();
        v["identity"] = json!({"providers": {"openai": "Bearer sk-live-123",
                                             "anthropic": {"header": "x-api-key", "value": ["sk-ant-456"]}}});
        v["control_plane"]["token"] = json!(["dp-secret"]);
        let err = parse(v).unwrap_err();
        let shown = err.to_string();
        for secret in ["sk-live-123", "sk-ant-456", "dp-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("identity.providers: openai: expected"),
            "{shown}"
        );
        assert!(
            shown.contains("control_plane.token: must be a string"),
            "{shown}"
        );
    }

    #[test]
    fn an_empty_key_is_named() {
        // Fuzz reproducer: fuzz/seeds/config/regression-empty-key.
        let mut v = base();
        v[""] = json!("deny");
        v["control_plane"][""] = json!(1);
        let got = fields(parse(v).unwrap_err());
        assert_eq!(got, ["\"\"", "control_plane.\"\""]);
    }

    #[test]
    fn secrets_never_print() {
        let c = parse(base()).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("dp-secret"), "{shown}");
        assert_eq!(c.control_plane.token.expose(), "dp-secret");
    }

    fn env_config() -> Value {
        json!({"control_plane": {"cluster": "cp", "authority": "a", "token_env": "TG_TOKEN"}})
    }

    /// Issue 13, item 5: the token comes from Envoy's environment, never from the config.
    #[test]
    fn the_token_comes_from_the_named_environment_variable() {
        let env = |k: &str| (k == "TG_TOKEN").then(|| " dp-from-env ".to_string());
        let c = Config::parse_with_env(env_config().to_string().as_bytes(), &env).unwrap();
        assert_eq!(c.control_plane.token.expose(), "dp-from-env");
        assert!(!format!("{c:?}").contains("dp-from-env"));
    }

    #[test]
    fn a_missing_or_empty_token_variable_refuses_the_config() {
        let bytes = env_config().to_string();
        let unset = |_: &str| None;
        let blank = |_: &str| Some("  ".to_string());
        let envs: [Env<'_>; 2] = [&unset, &blank];
        for env in envs {
            let err = Config::parse_with_env(bytes.as_bytes(), env).unwrap_err();
            let shown = err.to_string();
            assert!(
                shown.contains(
                    "control_plane.token_env: environment variable TG_TOKEN is unset or empty"
                ) && shown.contains("host_env_keys"),
                "{shown}"
            );
        }
        let mut both = env_config();
        both["control_plane"]["token"] = json!("dp-inline");
        let err =
            Config::parse_with_env(both.to_string().as_bytes(), &|_| Some("x".into())).unwrap_err();
        assert!(!err.to_string().contains("dp-inline"), "{err}");
        assert_eq!(fields(err), ["control_plane.token_injected"]);
        let mut bad = env_config();
        bad["control_plane"]["token_env"] = json!("TG TOKEN");
        assert_eq!(fields(parse(bad).unwrap_err()), ["control_plane.token_env"]);
        let mut neither = env_config();
        neither["role"] = json!("sync");
        neither["control_plane"]
            .as_object_mut()
            .unwrap()
            .remove("token_env");
        assert_eq!(
            fields(parse(neither.clone()).unwrap_err()),
            ["control_plane.token_injected"]
        );
        neither["control_plane"]["token_injected"] = json!(true);
        let c = parse(neither.clone()).unwrap();
        assert_eq!(c.control_plane.token.expose(), "");
        neither["control_plane"]["token_env"] = json!("TG_TOKEN");
        assert_eq!(
            fields(parse(neither.clone()).unwrap_err()),
            ["control_plane.token_injected"]
        );
        // The HTTP filter never calls the control plane: no token at all is fine there.
        neither["role"] = json!("filter");
        let cp = neither["control_plane"].as_object_mut().unwrap();
        cp.remove("token_env");
        cp.remove("token_injected");
        assert_eq!(parse(neither).unwrap().control_plane.token.expose(), "");
    }

    /// Issue 13, items 5 and 8: provider keys are refused in the config (without quoting
    /// them); a provider names its cluster, and nothing else.
    #[test]
    fn provider_keys_are_refused_and_clusters_read() {
        let mut v = base();
        v["identity"] = json!({"providers": {
            "openai": {"header": "authorization", "value": "Bearer sk-live-123"},
            "gemini": {"cluster": "gemini", "colour": "blue"},
            "anthropic": {"cluster": 7}}});
        let err = parse(v).unwrap_err();
        let shown = err.to_string();
        assert!(!shown.contains("sk-live-123"), "{shown}");
        for want in [
            "openai: provider keys are no longer read from the plugin config",
            "gemini: unknown field (a provider takes only \"cluster\" and \"deployments\")",
            "anthropic.cluster: required",
        ] {
            assert!(shown.contains(want), "{want} missing from {shown}");
        }
        let mut v = base();
        v["identity"] = json!({"providers": {"azure": {"cluster": "azure",
            "deployments": {"prod": "azure/gpt-4o", "bad": 5, "empty": " "}}}});
        let shown = parse(v.clone()).unwrap_err().to_string();
        assert!(shown.contains("azure.deployments.bad: expected"), "{shown}");
        assert!(
            shown.contains("azure.deployments.empty: expected"),
            "{shown}"
        );
        v["identity"] = json!({"providers": {"azure": {"cluster": "azure", "deployments": {"prod": "azure/gpt-4o"}}}});
        assert_eq!(
            parse(v.clone()).unwrap().identity.providers["azure"].deployments["prod"],
            "azure/gpt-4o"
        );
        v["identity"] = json!({"providers": {"openai": {"cluster": "openai"}, "gemini": {"cluster": "gemini"}}});
        let c = parse(v).unwrap();
        assert_eq!(c.identity.providers["gemini"].cluster, "gemini");
        assert_eq!(c.identity.providers.len(), 2);
    }
}
