//! Envoy for the stack: the shipped `envoy/tollgate.yaml` rendered with our ports and its
//! secrets directory (`tollgate_upstream::envoy::render`, the same rule as `envoy/render.py`;
//! [`write_secrets`] writes the SDS files and key files there, as a deployment would), a few textual
//! edits a deployment would make by hand (sync interval, a real provider cluster, whole
//! plugin configs for scenario tests), and a running Envoy on free ports.
//!
//! Envoy starts with listener and admin port 0: the admin address comes from
//! `--admin-address-path`, the listener's port from `GET /listeners?format=json` once
//! `/ready` answers. `--disable-hot-restart` and a distinct `--base-id` keep parallel
//! instances apart.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use tollgate_upstream::envoy::{render, workspace_root};

use crate::eventually;
use crate::process::{Echo, Proc, Secrets};

/// How long Envoy may take to become ready (V8 compiles the module first).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The sync interval written in `envoy/tollgate.yaml`, replaced by [`set_sync_interval`].
const TEMPLATE_SYNC_INTERVAL: &str = r#""sync_interval_ms": 1000"#;

/// A real provider to send one provider's traffic to instead of the local mock.
#[derive(Clone)]
pub struct RealProvider {
    /// `openai`, `anthropic` or `gemini`: the cluster (and route) to repoint.
    pub provider: String,
    /// `https://HOST[:PORT]` (or `http://` for a plain-text endpoint); no path.
    pub url: String,
    /// The provider key its cluster injects.
    pub key: String,
}

impl std::fmt::Debug for RealProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealProvider")
            .field("provider", &self.provider)
            .field("url", &self.url)
            .field("key", &"***")
            .finish()
    }
}

/// What `envoy/tollgate.yaml` needs.
#[derive(Clone)]
pub struct TollgateVars {
    /// The LLM listener (0: any free port).
    pub listen_port: u16,
    /// The control plane's port.
    pub cp_port: u16,
    /// The mock upstream's port.
    pub upstream_port: u16,
    /// `tollgate_filter.wasm`.
    pub wasm: PathBuf,
    /// `tollgate_sync.wasm`.
    pub sync_wasm: PathBuf,
    /// The data-plane token (the control-plane cluster injects it).
    pub dataplane_token: String,
    /// The provider keys for the mock, one per provider (each cluster injects its own).
    pub provider_keys: ProviderKeys,
    /// The directory of the SDS and key files, of its own: Envoy watches it with inotify and
    /// logs every event in it at debug, so no log may be written there.
    pub secrets_dir: PathBuf,
    /// Where the access log goes.
    pub access_log: PathBuf,
    /// Both roles' `control_plane.sync_interval_ms`.
    pub sync_interval_ms: u64,
    /// One provider on a real endpoint instead of the mock.
    pub real_provider: Option<RealProvider>,
    /// Control-plane replicas after the one on `cp_port`, as the control-plane cluster's next
    /// priorities (each taken when the ones before fail their health check).
    pub cp_standby_ports: Vec<u16>,
}

/// One key per provider.
#[derive(Clone)]
pub struct ProviderKeys {
    /// OpenAI's (`authorization: Bearer`).
    pub openai: String,
    /// Anthropic's (`x-api-key`).
    pub anthropic: String,
    /// Gemini's (`x-goog-api-key`).
    pub gemini: String,
    /// Azure OpenAI's (`api-key`).
    pub azure: String,
    /// Vertex AI's OAuth access token (`authorization: Bearer`).
    pub vertex_ai: String,
    /// Bedrock's IAM access key id (SigV4 `Credential=`); its secret is `bedrock_secret`.
    pub bedrock: String,
    /// The IAM secret access key Envoy signs Bedrock requests with.
    pub bedrock_secret: String,
}

impl ProviderKeys {
    /// The same key for every provider.
    pub fn same(key: &str) -> ProviderKeys {
        ProviderKeys {
            openai: key.into(),
            anthropic: key.into(),
            gemini: key.into(),
            azure: key.into(),
            vertex_ai: key.into(),
            bedrock: key.into(),
            bedrock_secret: key.into(),
        }
    }

    /// `(provider, key)` pairs (Bedrock's: the access key id the mock expects).
    pub fn all(&self) -> [(&'static str, &str); 6] {
        [
            ("openai", &self.openai),
            ("anthropic", &self.anthropic),
            ("gemini", &self.gemini),
            ("azure", &self.azure),
            ("vertex_ai", &self.vertex_ai),
            ("bedrock", &self.bedrock),
        ]
    }

    /// The mock upstream's arguments demanding each key in its provider's header.
    pub fn expect_args(&self) -> Vec<String> {
        self.all().iter().map(|(p, k)| format!("{p}={k}")).collect()
    }
}

impl std::fmt::Debug for ProviderKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderKeys(***)")
    }
}

/// Writes the secrets `envoy/tollgate.yaml` reads into `v.secrets_dir` (created, mode 0700):
/// per secret an SDS file naming a key file, and the key file (mode 0600, no newline). Each
/// file is written to a temporary name and renamed over, as a rotation does.
pub fn write_secrets(v: &TollgateVars) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(&v.secrets_dir)
        .with_context(|| format!("creating {}", v.secrets_dir.display()))?;
    std::fs::set_permissions(&v.secrets_dir, std::fs::Permissions::from_mode(0o700))?;
    let key = |p: &str, k: &str| match &v.real_provider {
        Some(r) if r.provider == p => r.key.clone(),
        _ => k.to_string(),
    };
    let mut all = vec![("dataplane", "dataplane_token", v.dataplane_token.clone())];
    let keys = &v.provider_keys;
    write_secret_file(
        &v.secrets_dir.join("bedrock.credentials"),
        aws_credentials(&keys.bedrock, &keys.bedrock_secret).as_bytes(),
    )?;
    for (p, k) in keys.all().into_iter().filter(|(p, _)| *p != "bedrock") {
        let file = if p == "vertex_ai" { "vertex" } else { p };
        all.push((file, secret_name(p), key(p, k)));
    }
    for (file, name, value) in all {
        let key_file = v.secrets_dir.join(format!("{file}.key"));
        write_secret_file(&key_file, value.as_bytes())?;
        let sds = format!(
            "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: {name}\n  generic_secret: {{ secret: {{ filename: \"{}\" }} }}\n",
            key_file.display()
        );
        write_secret_file(&v.secrets_dir.join(format!("{file}.yaml")), sds.as_bytes())?;
    }
    Ok(())
}

/// An AWS credentials file (what Envoy's `credentials_file_provider` reads) for one key.
pub fn aws_credentials(access_key_id: &str, secret: &str) -> String {
    format!("[default]\naws_access_key_id = {access_key_id}\naws_secret_access_key = {secret}\n")
}

/// The SDS secret name of a provider's key in `envoy/tollgate.yaml`.
fn secret_name(provider: &str) -> &'static str {
    match provider {
        "openai" => "openai_key",
        "anthropic" => "anthropic_key",
        "azure" => "azure_key",
        "vertex_ai" => "vertex_token",
        _ => "gemini_key",
    }
}

/// Replaces a file atomically: a temporary file in the same directory (mode 0600), renamed
/// over the old one. Envoy's SDS watch sees the rename (what a rotation must look like).
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    crate::stack::write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))
}

/// Adds each standby control plane to the control-plane cluster as the next priority.
fn add_standbys(yaml: &str, ports: &[u16]) -> Result<String> {
    if ports.is_empty() {
        return Ok(yaml.to_string());
    }
    let cluster = yaml
        .find("  - name: tollgate_control_plane\n")
        .context("envoy/tollgate.yaml has no tollgate_control_plane cluster")?;
    let (head, tail) = yaml.split_at(cluster);
    let at = tail
        .find("      - lb_endpoints:\n")
        .context("the control-plane cluster has no endpoints")?;
    let end = tail[at..]
        .find("} } }\n")
        .map(|e| at + e + "} } }\n".len())
        .context("the control-plane cluster's endpoint line")?;
    let mut out = format!("{head}{}", &tail[..end]);
    for (i, port) in ports.iter().enumerate() {
        out.push_str(&format!(
            "      - priority: {}\n        lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}\n",
            i + 1
        ));
    }
    out.push_str(&tail[end..]);
    Ok(out)
}

/// Renders `envoy/tollgate.yaml` for these values (the secrets go to files:
/// [`write_secrets`]).
pub fn render_tollgate(v: &TollgateVars) -> Result<String> {
    let path = workspace_root().join("envoy/tollgate.yaml");
    let template =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let vars = BTreeMap::from([
        ("ADMIN_PORT", "0".to_string()),
        ("LISTEN_PORT", v.listen_port.to_string()),
        ("CP_PORT", v.cp_port.to_string()),
        ("UPSTREAM_PORT", v.upstream_port.to_string()),
        ("WASM_PATH", v.wasm.display().to_string()),
        ("SYNC_WASM_PATH", v.sync_wasm.display().to_string()),
        ("SECRETS_DIR", v.secrets_dir.display().to_string()),
        ("ACCESS_LOG_PATH", v.access_log.display().to_string()),
    ]);
    // The error names placeholders, never values.
    let text = render(&template, &vars).map_err(|e| anyhow::anyhow!("envoy/tollgate.yaml: {e}"))?;
    let text = set_sync_interval(&text, v.sync_interval_ms)?;
    let text = add_standbys(&text, &v.cp_standby_ports)?;
    match &v.real_provider {
        Some(r) => use_real_provider(&text, &r.provider, &r.url),
        None => Ok(text),
    }
}

/// Sets `sync_interval_ms` in both plugin configs (the template says 1000).
pub fn set_sync_interval(yaml: &str, ms: u64) -> Result<String> {
    let n = yaml.matches(TEMPLATE_SYNC_INTERVAL).count();
    if n != 2 {
        bail!("envoy/tollgate.yaml: expected {TEMPLATE_SYNC_INTERVAL} in both plugin configs, found it {n} times");
    }
    Ok(yaml.replace(
        TEMPLATE_SYNC_INTERVAL,
        &format!(r#""sync_interval_ms": {ms}"#),
    ))
}

/// Points `provider`'s cluster at `url` (`https://host[:port]` → LOGICAL_DNS with TLS and SNI;
/// `http://` → plain text) and rewrites the Host header on its route, as the template's
/// header comment describes.
pub fn use_real_provider(yaml: &str, provider: &str, url: &str) -> Result<String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        bail!("--provider-url {url:?}: expected https://HOST[:PORT] or http://HOST[:PORT]");
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', '"', ' ']) {
        bail!("--provider-url {url:?}: only scheme://HOST[:PORT] is supported (no path)");
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .with_context(|| format!("--provider-url {url:?}: bad port"))?,
        ),
        None => (authority, if tls { 443 } else { 80 }),
    };
    let head = format!("  - name: {provider}\n    type: STATIC\n");
    let start = yaml
        .find(&head)
        .with_context(|| format!("envoy/tollgate.yaml has no STATIC cluster {provider:?}"))?;
    let after = start + head.len();
    let end = yaml
        .get(after..)
        .and_then(|t| t.find("\n  - name: "))
        .map_or(yaml.len(), |i| after + i + 1);
    let transport = if tls {
        format!(
            "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        sni: {host}\n"
        )
    } else {
        String::new()
    };
    // The cluster's upstream filters (the credential injector) stay as they were.
    let old = yaml.get(start..end).unwrap_or("");
    let options = old
        .find("    typed_extension_protocol_options:")
        .and_then(|i| old.get(i..))
        .unwrap_or("");
    let cluster = format!(
        "  - name: {provider}\n    type: LOGICAL_DNS\n    dns_lookup_family: V4_ONLY\n    connect_timeout: 5s\n    load_assignment:\n      cluster_name: {provider}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: {host}, port_value: {port} }} }} }}\n{transport}{options}"
    );
    let mut out = String::with_capacity(yaml.len() + cluster.len());
    out.push_str(yaml.get(..start).unwrap_or(""));
    out.push_str(&cluster);
    out.push_str(yaml.get(end..).unwrap_or(""));
    let route = format!("route: {{ cluster: {provider}, ");
    if !out.contains(&route) {
        bail!("envoy/tollgate.yaml has no route to cluster {provider:?}");
    }
    Ok(out.replace(
        &route,
        &format!("route: {{ cluster: {provider}, auto_host_rewrite: true, "),
    ))
}

/// The byte range of the plugin config JSON object whose `"role"` is `role`.
fn plugin_config_range(yaml: &str, role: &str) -> Result<(usize, usize)> {
    let start = yaml
        .find(&format!(r#"{{"role": "{role}""#))
        .with_context(|| format!("no plugin config with role {role:?}"))?;
    let mut depth = 0usize;
    for (i, c) in yaml.get(start..).unwrap_or("").char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Ok((start, start + i + 1));
                }
            }
            _ => {}
        }
    }
    bail!("unterminated plugin config with role {role:?}")
}

/// The plugin config of `role` (`filter` or `sync`) embedded in a rendered config.
pub fn plugin_config(yaml: &str, role: &str) -> Result<Value> {
    let (a, b) = plugin_config_range(yaml, role)?;
    serde_json::from_str(yaml.get(a..b).unwrap_or(""))
        .with_context(|| format!("the {role} plugin config is not JSON"))
}

/// Replaces the plugin config of `role` with `config` (one line of JSON in the YAML block).
pub fn replace_plugin_config(yaml: &str, role: &str, config: &Value) -> Result<String> {
    let (a, b) = plugin_config_range(yaml, role)?;
    Ok(format!(
        "{}{}{}",
        yaml.get(..a).unwrap_or(""),
        config,
        yaml.get(b..).unwrap_or("")
    ))
}

/// A running Envoy.
#[derive(Debug)]
pub struct Envoy {
    /// The process.
    pub proc: Proc,
    /// Admin interface.
    pub admin: SocketAddr,
    /// The first listener (LLM traffic).
    pub listener: SocketAddr,
}

/// A `--base-id` no other Envoy of this process uses.
fn base_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 50_000 * 20 + N.fetch_add(1, Ordering::Relaxed) % 20).to_string()
}

impl Envoy {
    /// Starts `bin -c config` with `concurrency` workers and waits until it is ready.
    pub fn start(
        bin: &Path,
        config: &Path,
        dir: &Path,
        concurrency: u32,
        secrets: &Secrets,
        echo: Echo,
    ) -> Result<Envoy> {
        Envoy::start_with_args(bin, config, dir, concurrency, &[], secrets, echo)
    }

    /// [`Envoy::start`] with extra command-line arguments (`--log-level warning`).
    pub fn start_with_args(
        bin: &Path,
        config: &Path,
        dir: &Path,
        concurrency: u32,
        args: &[String],
        secrets: &Secrets,
        echo: Echo,
    ) -> Result<Envoy> {
        let admin_file = dir.join("envoy-admin.addr");
        let _ = std::fs::remove_file(&admin_file);
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(config)
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["--disable-hot-restart", "--base-id", &base_id()])
            .args(["--concurrency", &concurrency.to_string()])
            // Access log lines within 250 ms instead of Envoy's default 10 s, so a test (or
            // the demo's reader) sees a request's line right after it.
            .args(["--file-flush-interval-msec", "250"])
            .args(args);
        let (mut proc, _) = Proc::spawn("envoy", cmd, secrets, echo)?;
        let mut exited = None;
        let admin: Option<SocketAddr> = eventually(START_TIMEOUT, || {
            if let Some(status) = proc.exited() {
                exited = Some(status);
                return Some(None);
            }
            let text = std::fs::read_to_string(&admin_file).ok()?;
            text.trim().parse().ok().map(Some)
        })
        .flatten();
        let Some(admin) = admin else {
            proc.wait_exit(Duration::from_millis(200));
            match exited {
                Some(status) => bail!("envoy exited ({status}) while starting:\n{}", proc.output()),
                None => bail!(
                    "envoy wrote no admin address within {START_TIMEOUT:?}:\n{}",
                    proc.output()
                ),
            }
        };
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let listener = eventually(START_TIMEOUT, || {
            let ready = http.get(format!("http://{admin}/ready")).send().ok()?;
            if ready.status() != 200 {
                return None;
            }
            let v: Value = http
                .get(format!("http://{admin}/listeners?format=json"))
                .send()
                .ok()?
                .json()
                .ok()?;
            let port = v
                .pointer("/listener_statuses/0/local_address/socket_address/port_value")?
                .as_u64()?;
            let port = u16::try_from(port).ok().filter(|p| *p > 0)?;
            Some(SocketAddr::from(([127, 0, 0, 1], port)))
        });
        let Some(listener) = listener else {
            bail!("envoy never became ready:\n{}", proc.output());
        };
        Ok(Envoy {
            proc,
            admin,
            listener,
        })
    }

    /// Envoy's counters and gauges whose name contains `needle` (wasm metrics are named
    /// `wasmcustom.NAME`), by full name.
    pub fn stats(&self, needle: &str) -> Result<HashMap<String, u64>> {
        let v: Value = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?
            .get(format!("http://{}/stats?format=json", self.admin))
            .send()?
            .json()?;
        let mut out = HashMap::new();
        for s in v
            .get("stats")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if let (Some(name), Some(value)) = (
                s.get("name").and_then(Value::as_str),
                s.get("value").and_then(Value::as_u64),
            ) {
                if name.contains(needle) {
                    out.insert(name.to_string(), value);
                }
            }
        }
        Ok(out)
    }

    /// One metric by its short name (`tollgate_requests_allowed`), 0 when absent.
    pub fn stat(&self, name: &str) -> Result<u64> {
        let all = self.stats(name)?;
        Ok(all
            .iter()
            .find(|(k, _)| k.ends_with(name))
            .map_or(0, |(_, v)| *v))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    const YAML: &str = r#"              routes:
              - match: { prefix: "/v1/" }
                route: { cluster: openai, timeout: 600s }
          value: |
            {"role": "filter", "vm_id": "x",
             "control_plane": {"sync_interval_ms": 1000}}
  clusters:
  - name: openai
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: openai
    typed_extension_protocol_options:
      injector: here
  - name: anthropic
    type: STATIC
"#;

    #[test]
    fn real_provider_replaces_one_cluster_and_rewrites_its_host() {
        let out = use_real_provider(YAML, "openai", "https://api.openai.com").unwrap();
        assert!(out.contains("type: LOGICAL_DNS"), "{out}");
        assert!(
            out.contains("address: api.openai.com, port_value: 443"),
            "{out}"
        );
        assert!(out.contains("sni: api.openai.com"), "{out}");
        assert!(out.contains("route: { cluster: openai, auto_host_rewrite: true, timeout"));
        assert!(
            out.contains("  - name: anthropic\n    type: STATIC\n"),
            "{out}"
        );
        assert!(!out.contains("connect_timeout: 2s"), "{out}");
        assert!(
            out.contains("sni: api.openai.com\n    typed_extension_protocol_options:\n      injector: here\n  - name: anthropic"),
            "{out}"
        );
        let plain = use_real_provider(YAML, "openai", "http://127.0.0.1:9000/").unwrap();
        assert!(plain.contains("port_value: 9000"));
        assert!(!plain.contains("UpstreamTlsContext"));
        assert!(use_real_provider(YAML, "openai", "https://h/v1").is_err());
        assert!(use_real_provider(YAML, "gemini", "https://h").is_err());
    }

    #[test]
    fn plugin_configs_are_found_and_replaced() {
        let v = plugin_config(YAML, "filter").unwrap();
        assert_eq!(v["control_plane"]["sync_interval_ms"], 1000);
        let out =
            replace_plugin_config(YAML, "filter", &serde_json::json!({"role": "filter"})).unwrap();
        assert!(
            out.contains("value: |\n            {\"role\":\"filter\"}\n  clusters:"),
            "{out}"
        );
        assert!(plugin_config(YAML, "sync").is_err());
    }
}
