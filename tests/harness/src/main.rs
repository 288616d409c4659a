//! `tollgate-harness`: replay scenarios against a proxy-wasm module and measure its
//! per-request overhead, outside Envoy.
//!
//! ```text
//! tollgate-harness bench --wasm filter.wasm --config config.json --baseline noop.wasm [--requests N]
//! tollgate-harness run   --wasm filter.wasm --config config.json scenario.json
//! ```
//!
//! `bench` prints p50/p99 per module and ends with `ratio=<filter p50 / baseline p50>`;
//! `run` prints one line per mismatch and exits non-zero if there is any.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use tollgate_harness::{bench, fuel, scenario, HttpResponse, Plugin, PluginBuilder, Upstream};

/// wasmtime host of the proxy-wasm ABI 0.2.1 for Tollgate's filter.
#[derive(Parser)]
#[command(name = "tollgate-harness", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per-request time of a module against a baseline module, interleaved in one run.
    Bench {
        /// The module to measure.
        #[arg(long)]
        wasm: PathBuf,
        /// Its plugin configuration (the bytes `proxy_on_configure` reads).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The baseline module (the no-op filter).
        #[arg(long)]
        baseline: PathBuf,
        /// Measured requests per module.
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// `vm_config.vm_id` for both modules.
        #[arg(long, default_value = "")]
        vm_id: String,
        /// Plugin configuration of an extra VM started beside the worker with the same vm_id
        /// (e.g. Tollgate's sync service). Repeatable.
        #[arg(long)]
        service_config: Vec<PathBuf>,
        /// The module of those extra VMs (default: the measured module), e.g.
        /// `tollgate_sync.wasm`.
        #[arg(long)]
        service_wasm: Option<PathBuf>,
        /// `CLUSTER:PATH=FILE`: the cluster answers calls to PATH with FILE (200, JSON), e.g.
        /// the control plane's snapshot for the sync service. Repeatable.
        #[arg(long)]
        upstream: Vec<String>,
        /// `KEY=FILE`: shared data preloaded for the measured module's vm_id before the
        /// warm-up (e.g. a snapshot), followed by 1.2 s of virtual time so ticks see it.
        /// Repeatable.
        #[arg(long)]
        shared_data: Vec<String>,
        /// A second baseline measured in the same rounds: the body-reading floor
        /// (tests/floor-filter), which reads what a metering filter must and nothing else.
        #[arg(long)]
        floor: Option<PathBuf>,
        /// The baseline is another build of the measured filter (a before/after comparison):
        /// it gets the same configuration, service VMs and shared data.
        #[arg(long)]
        baseline_is_filter: bool,
        /// With `--baseline-is-filter`: the service VMs' module for the baseline (default:
        /// `--service-wasm`), when the two builds' filter and sync service change together
        /// (e.g. the queue record's format).
        #[arg(long)]
        baseline_service_wasm: Option<PathBuf>,
    },
    /// Wasm work per metered request in wasmtime fuel (deterministic), per case, beside the
    /// no-op and floor modules; checked against or written to the committed figures.
    Fuel {
        /// `tollgate_filter.wasm`.
        #[arg(long)]
        wasm: PathBuf,
        /// `tollgate_sync.wasm`.
        #[arg(long)]
        service_wasm: PathBuf,
        /// `tollgate_noop.wasm`.
        #[arg(long)]
        noop: PathBuf,
        /// `tollgate_floor.wasm`.
        #[arg(long)]
        floor: PathBuf,
        /// The committed figures (`tests/harness/bench/fuel.json`): exit non-zero when a figure
        /// moved past their margin.
        #[arg(long)]
        check: Option<PathBuf>,
        /// Write the measured figures to this file (keeping its margin), with `--reason`.
        #[arg(long, requires = "reason")]
        write: Option<PathBuf>,
        /// Why the figures changed (kept in the file with them).
        #[arg(long)]
        reason: Option<String>,
        /// Also print each case's fuel per request by callback.
        #[arg(long)]
        phases: bool,
        /// Also time this many requests of every case and module, in interleaved rounds,
        /// and print what each budget on the chain costs (JSON, 4 budgets against 1).
        #[arg(long)]
        time: Option<usize>,
    },
    /// Replays a JSON scenario and checks the expected decisions.
    Run {
        /// The module to test.
        #[arg(long)]
        wasm: PathBuf,
        /// Its plugin configuration.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The module of the scenario's `services` (default: the module under test), e.g.
        /// `tollgate_sync.wasm`.
        #[arg(long)]
        service_wasm: Option<PathBuf>,
        /// The scenario file.
        scenario: PathBuf,
    },
}

/// Reads a file with its name in the error.
fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// A plugin builder for a module and optional configuration file.
fn builder(wasm: &Path, config: Option<&Path>) -> Result<PluginBuilder> {
    let mut builder = Plugin::builder(read(wasm)?);
    if let Some(config) = config {
        builder = builder.configuration(read(config)?);
    }
    Ok(builder)
}

#[allow(clippy::print_stdout)] // printing the report is this binary's job
fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tollgate-harness: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)] // printing the report is this binary's job
fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Bench {
            wasm,
            config,
            baseline,
            requests,
            vm_id,
            service_config,
            service_wasm,
            upstream,
            shared_data,
            baseline_is_filter,
            baseline_service_wasm,
            floor,
        } => {
            let filter = builder(&wasm, config.as_deref())?.vm_id(&vm_id).build()?;
            let baseline_plugin = if baseline_is_filter {
                builder(&baseline, config.as_deref())?
            } else {
                Plugin::builder(read(&baseline)?)
            }
            .vm_id(&vm_id)
            .build()?;
            if baseline_is_filter && floor.is_some() {
                anyhow::bail!(
                    "--floor measures against the no-op baseline; drop --baseline-is-filter"
                );
            }
            let floor_plugin = match &floor {
                Some(path) => Some(Plugin::builder(read(path)?).vm_id(&vm_id).build()?),
                None => None,
            };
            let request = bench::chat_completion_request();
            let service_plugin = match &service_wasm {
                Some(path) => Some(Plugin::builder(read(path)?).vm_id(&vm_id).build()?),
                None => None,
            };
            let baseline_service_plugin = match &baseline_service_wasm {
                Some(_) if !baseline_is_filter => {
                    anyhow::bail!("--baseline-service-wasm goes with --baseline-is-filter")
                }
                Some(path) => Some(Plugin::builder(read(path)?).vm_id(&vm_id).build()?),
                None => None,
            };
            let mut services = Vec::new();
            let mut baseline_services = Vec::new();
            for path in &service_config {
                let config = read(path)?;
                services.push(
                    service_plugin
                        .as_ref()
                        .unwrap_or(&filter)
                        .with_configuration(config.clone()),
                );
                baseline_services.push(
                    baseline_service_plugin
                        .as_ref()
                        .or(service_plugin.as_ref())
                        .unwrap_or(&baseline_plugin)
                        .with_configuration(config),
                );
            }
            let mut clusters: std::collections::BTreeMap<String, Vec<(String, HttpResponse)>> =
                std::collections::BTreeMap::new();
            for item in &upstream {
                let (route, file) = item
                    .split_once('=')
                    .with_context(|| format!("--upstream {item:?}: expected CLUSTER:PATH=FILE"))?;
                let (cluster, path) = route
                    .split_once(':')
                    .with_context(|| format!("--upstream {item:?}: expected CLUSTER:PATH=FILE"))?;
                let body = read(Path::new(file))?;
                clusters
                    .entry(cluster.to_string())
                    .or_default()
                    .push((path.to_string(), HttpResponse::json(200, body)));
            }
            let mut preload = Vec::new();
            for item in &shared_data {
                let (key, file) = item
                    .split_once('=')
                    .with_context(|| format!("--shared-data {item:?}: expected KEY=FILE"))?;
                preload.push((key.to_string(), read(Path::new(file))?));
            }
            let setup = |host: &mut tollgate_harness::Host, is_filter: bool| -> Result<()> {
                if !is_filter && !baseline_is_filter {
                    return Ok(());
                }
                let vms = if is_filter {
                    &services
                } else {
                    &baseline_services
                };
                for (cluster, routes) in &clusters {
                    host.upstream(cluster, Upstream::by_path(routes.clone()));
                }
                for service in vms {
                    host.add_vm(service)?;
                }
                for (key, value) in &preload {
                    host.set_shared_data(&vm_id, key, value.clone());
                }
                host.advance(bench::SETTLE)
            };
            let report = bench::run_with(
                &filter,
                &baseline_plugin,
                floor_plugin.as_ref(),
                &request,
                requests.max(1),
                setup,
            )?;
            println!(
                "tollgate-harness bench: {} requests per module in {} interleaved rounds",
                report.filter.samples, report.rounds
            );
            println!(
                "{:<10} {:>10} {:>10} {:>10}",
                "module", "p50_us", "p99_us", "mean_us"
            );
            let modules = [
                Some(("filter", report.filter)),
                Some(("baseline", report.baseline)),
                report.floor.map(|f| ("floor", f)),
            ];
            for (name, stats) in modules.into_iter().flatten() {
                println!(
                    "{:<10} {:>10.2} {:>10.2} {:>10.2}",
                    name, stats.p50_us, stats.p99_us, stats.mean_us
                );
            }
            println!("ratio={:.2}", report.ratio());
            if let Some(floor) = report.floor.filter(|f| f.p50_us > 0.0) {
                println!("ratio_to_floor={:.2}", report.filter.p50_us / floor.p50_us);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fuel {
            wasm,
            service_wasm,
            noop,
            floor,
            check,
            write,
            reason,
            phases,
            time,
        } => {
            let modules = fuel::Modules {
                filter: read(&wasm)?,
                sync: read(&service_wasm)?,
                noop: read(&noop)?,
                floor: read(&floor)?,
            };
            let detail = fuel::measure(&modules)?;
            let floor_json = detail.get("floor/json").map_or(0, |m| m.total).max(1);
            println!(
                "{:<26} {:>12} {:>10} {:>14}",
                "module/case", "fuel/request", "/ floor", "host calls/req"
            );
            for (name, m) in &detail {
                println!(
                    "{name:<26} {:>12} {:>10.2} {:>14.2}",
                    m.total,
                    m.total as f64 / floor_json as f64,
                    m.host_calls
                );
            }
            if phases {
                for (name, m) in &detail {
                    println!("{name}:");
                    for (callback, used) in &m.by_callback {
                        println!("  {callback:<32} {used:>10}");
                    }
                }
            }
            if let Some(requests) = time {
                print_times(&fuel::time(&modules, requests)?, requests);
            }
            let mut code = ExitCode::SUCCESS;
            if let Some(path) = &check {
                let committed = fuel::read_committed(path)?;
                let problems = fuel::check(&committed, &detail);
                for problem in &problems {
                    println!("FUEL {problem}");
                }
                if !problems.is_empty() {
                    code = ExitCode::FAILURE;
                }
            }
            if let (Some(path), Some(reason)) = (&write, reason) {
                let margin = fuel::read_committed(path).map_or(fuel::MARGIN, |c| c.margin);
                let committed = fuel::Committed {
                    reason,
                    margin,
                    fuel: detail.iter().map(|(k, m)| (k.clone(), m.total)).collect(),
                    host_calls: detail
                        .iter()
                        .map(|(k, m)| (k.clone(), m.host_calls))
                        .collect(),
                };
                let text = serde_json::to_string_pretty(&committed)? + "\n";
                std::fs::write(path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
            Ok(code)
        }
        Command::Run {
            wasm,
            config,
            service_wasm,
            scenario: path,
        } => {
            let text = String::from_utf8(read(&path)?).context("the scenario is not UTF-8")?;
            let parsed = scenario::parse(&text)?;
            let services = service_wasm.as_deref().map(read).transpose()?;
            let problems = scenario::run(builder(&wasm, config.as_deref())?, services, &parsed)?;
            if problems.is_empty() {
                println!(
                    "{}: all {} steps as expected",
                    path.display(),
                    parsed.steps.len()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                for problem in &problems {
                    println!("MISMATCH {problem}");
                }
                println!("{}: {} mismatches", path.display(), problems.len());
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// `fuel --time`: each case's time beside the floor's, and the cost of each budget on the chain.
#[allow(clippy::print_stdout)] // printing the report is this binary's job
fn print_times(times: &std::collections::BTreeMap<String, fuel::Timed>, requests: usize) {
    let p50 = |name: &str| times.get(name).map_or(f64::NAN, |t| t.stats.p50_us);
    let host = |name: &str| times.get(name).map_or(f64::NAN, |t| t.host_us);
    let floor = p50("floor/json");
    println!("time per request, {requests} of each, interleaved:");
    println!(
        "{:<26} {:>10} {:>10} {:>10} {:>14}",
        "module/case", "p50 µs", "p99 µs", "/ floor", "in host calls"
    );
    for (name, t) in times {
        println!(
            "{name:<26} {:>10.2} {:>10.2} {:>10.2} {:>14.2}",
            t.stats.p50_us,
            t.stats.p99_us,
            t.stats.p50_us / floor,
            t.host_us
        );
    }
    let (four, one) = ("tollgate/json-4-budgets", "tollgate/json-1-budget");
    let per_budget = (p50(four) - p50(one)) / 3.0;
    let in_host = (host(four) - host(one)) / 3.0;
    println!(
        "per budget on the chain (json-4 - json-1) / 3: {per_budget:.2} µs p50 ({:.2} x the floor's request), \
         of which {in_host:.2} µs (mean) inside the harness's host calls",
        per_budget / floor
    );
}
