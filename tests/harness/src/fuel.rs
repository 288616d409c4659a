//! The fuel gate: how much wasm work the filter does per metered request, in wasmtime fuel.
//!
//! Fuel counts the wasm operators a VM runs. The harness's clocks and random numbers are its
//! own, so the same module serving the same requests uses the same fuel on every machine and
//! every run: unlike time, it can gate CI without flaking. [`measure`] runs each [`Case`]
//! (a request shape against a snapshot: JSON or SSE, 0, 1 or 4 budgets on the chain, a denial)
//! on the worker VM, the sync service beside it as in Envoy, and reports the worker VM's fuel
//! per request, with the no-op and the body-reading floor modules on the JSON request for
//! scale. [`check`] compares a run with the committed figures (`tests/harness/bench/fuel.json`):
//! more than the stated margin over them fails, and so does a drop past the margin for a
//! decrease, so the committed figures stay tight enough to catch the next regression.
//!
//! The sync service's own work (draining the usage queue, applying snapshots) runs on Envoy's
//! main thread, once per batch or interval, and is not in the per-request figure.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{bench, Host, HttpResponse, Plugin, Request, Upstream, VmId};

/// The bench's plugin configurations and snapshot (`tests/harness/bench/`).
const FILTER_CONFIG: &str = include_str!("../bench/filter.json");
const SYNC_CONFIG: &str = include_str!("../bench/sync.json");
const SNAPSHOT: &str = include_str!("../bench/snapshot.json");

/// Requests served before counting (VM warm-up: first allocations, caches filled).
const WARMUP: u64 = 64;
/// Requests counted per case: a multiple of the filter's usage batch (64), so every case
/// flushes the same number of whole batches.
const COUNTED: u64 = 256;

/// One measured case: a request shape on a snapshot, and the status it must get.
#[derive(Clone, Debug)]
pub struct Case {
    /// Its name in the committed file, e.g. `json-1-budget`.
    pub name: &'static str,
    /// The snapshot the sync service publishes.
    pub snapshot: Value,
    /// The request, with the provider's answer.
    pub request: Request,
    /// The status the client must get (a case that silently stopped metering, e.g. an
    /// unknown key, would use less fuel and pass the gate).
    pub status: u16,
}

/// The bench snapshot with these budgets on the bench key's chain (`key`, `user`, `project`,
/// `org`), each with `spent` of a limit of 1,000,000 USD.
fn snapshot_with(scopes: &[&str], spent: &str) -> Result<Value> {
    let mut snapshot: Value = serde_json::from_str(SNAPSHOT).context("the bench snapshot")?;
    let template = snapshot["budgets"][0].clone();
    let principal = snapshot["keys"][0]["principal"].clone();
    let budgets: Vec<Value> = scopes
        .iter()
        .map(|scope| {
            let mut budget = template.clone();
            budget["id"] = json!(format!("b-{scope}"));
            budget["scope"] = json!(scope);
            budget["scope_id"] = principal[*scope].clone();
            budget["spent_usd"] = json!(spent);
            budget
        })
        .collect();
    snapshot["budgets"] = Value::Array(budgets);
    Ok(snapshot)
}

/// An OpenAI chat completion streamed as the API does: a role chunk, `deltas` content chunks,
/// the finish chunk, the usage chunk `include_usage` asks for, and `[DONE]`, one per data
/// callback, then the end of stream.
fn streamed_chat(deltas: usize) -> Request {
    let body = json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 256,
        "messages": [{"role": "user", "content": "Summarize the plot of Hamlet in two sentences."}]});
    let chunk = |delta: Value, finish: Value, usage: Value| {
        let choices = if delta.is_null() {
            json!([])
        } else {
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])
        };
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-9x8y7z6w5v4u3t2s1r0q", "object": "chat.completion.chunk",
                "created": 1735689600, "model": "gpt-4o-mini-2024-07-18",
                "system_fingerprint": "fp_0123456789", "choices": choices, "usage": usage})
        )
    };
    let mut request = bench::chat_completion_request_with(body.to_string())
        .response_status(200)
        .response_header("content-type", "text/event-stream; charset=utf-8")
        .response_chunk(chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
            Value::Null,
        ));
    for i in 0..deltas {
        request = request.response_chunk(chunk(
            json!({"content": format!(" word{i}")}),
            Value::Null,
            Value::Null,
        ));
    }
    request
        .response_chunk(chunk(json!({}), json!("stop"), Value::Null))
        .response_chunk(chunk(
            Value::Null,
            Value::Null,
            json!({"prompt_tokens": 31, "completion_tokens": deltas, "total_tokens": 31 + deltas,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}),
        ))
        .response_chunk("data: [DONE]\n\n")
        .response_chunk("")
}

/// The cases the gate holds, in the committed file's order.
pub fn cases() -> Result<Vec<Case>> {
    let json = bench::chat_completion_request();
    Ok(vec![
        Case {
            name: "json-0-budgets",
            snapshot: snapshot_with(&[], "0")?,
            request: json.clone(),
            status: 200,
        },
        Case {
            name: "json-1-budget",
            snapshot: snapshot_with(&["key"], "0")?,
            request: json.clone(),
            status: 200,
        },
        Case {
            name: "json-4-budgets",
            snapshot: snapshot_with(&["key", "user", "project", "org"], "0")?,
            request: json.clone(),
            status: 200,
        },
        Case {
            name: "sse-1-budget",
            snapshot: snapshot_with(&["key"], "0")?,
            request: streamed_chat(20),
            status: 200,
        },
        Case {
            name: "deny-1-budget",
            snapshot: snapshot_with(&["key"], "1000000")?,
            request: json,
            status: 429,
        },
    ])
}

/// The modules measured.
#[derive(Clone, Debug)]
pub struct Modules {
    /// `tollgate_filter.wasm`.
    pub filter: Vec<u8>,
    /// `tollgate_sync.wasm`.
    pub sync: Vec<u8>,
    /// `tollgate_noop.wasm`.
    pub noop: Vec<u8>,
    /// `tollgate_floor.wasm`.
    pub floor: Vec<u8>,
}

/// One case's fuel per request on the worker VM.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measured {
    /// In all.
    pub total: u64,
    /// By the callback that used it (`proxy_on_request_body`, ...), rounded up.
    pub by_callback: BTreeMap<&'static str, u64>,
    /// Host calls per request (proxy-wasm and WASI): each crosses the VM boundary, which in
    /// Envoy costs far more than fuel says.
    pub host_calls: f64,
}

/// Fuel per request of `plugin`'s worker VM over [`COUNTED`] requests of `request`, after
/// [`WARMUP`]; `services` (with the snapshot upstream) started beside it first.
fn per_request(
    plugin: &Plugin,
    services: Option<(&Plugin, &Value)>,
    request: &Request,
    status: u16,
) -> Result<Measured> {
    let mut host = started(plugin, services)?;
    let worker = VmId(0);
    let (mut start, mut start_by, mut start_calls) = (0, BTreeMap::new(), 0);
    for i in 0..WARMUP + COUNTED {
        if i == WARMUP {
            start = host.fuel_used(worker);
            start_by = host.fuel_by_callback(worker);
            start_calls = host.host_calls(worker);
        }
        let outcome = host.send(request)?;
        bench::served(&mut host, &outcome, status).with_context(|| format!("request {i}"))?;
        host.take_logs();
    }
    let by_callback = host
        .fuel_by_callback(worker)
        .into_iter()
        .map(|(name, fuel)| {
            let before = start_by.get(name).copied().unwrap_or(0);
            (name, (fuel - before).div_ceil(COUNTED))
        })
        .filter(|(_, fuel)| *fuel > 0)
        .collect();
    let host_calls = (host.host_calls(worker) - start_calls) as f64 / COUNTED as f64;
    Ok(Measured {
        total: (host.fuel_used(worker) - start).div_ceil(COUNTED),
        by_callback,
        host_calls,
    })
}

/// `plugin`'s host, with `services` (and the snapshot upstream they pull) started and settled
/// beside it.
fn started(plugin: &Plugin, services: Option<(&Plugin, &Value)>) -> Result<Host> {
    let mut host = plugin.start()?;
    if let Some((sync, snapshot)) = services {
        let body = serde_json::to_vec(snapshot)?;
        host.upstream(
            "tollgate_control_plane",
            Upstream::by_path(vec![(
                "/v1/snapshot".to_owned(),
                HttpResponse::json(200, body),
            )]),
        );
        host.add_vm(sync)?;
        host.advance(bench::SETTLE)?;
    }
    Ok(host)
}

/// A module as the gate runs it (vm_id `tollgate`): counting fuel, or timing its host calls.
fn build(wasm: &[u8], config: &str, count_fuel: bool) -> Result<Plugin> {
    Plugin::builder(wasm.to_vec())
        .vm_id("tollgate")
        .configuration(config.as_bytes().to_vec())
        .count_fuel(count_fuel)
        .time_host_calls(!count_fuel)
        .build()
}

/// Fuel per request for every case (`tollgate/<case>`) and for the no-op and floor modules on
/// the JSON request (`noop/json`, `floor/json`).
pub fn measure(modules: &Modules) -> Result<BTreeMap<String, Measured>> {
    let build = |wasm: &[u8], config: &str| build(wasm, config, true);
    let filter = build(&modules.filter, FILTER_CONFIG)?;
    let sync = build(&modules.sync, SYNC_CONFIG)?;
    let mut fuel = BTreeMap::new();
    for case in cases()? {
        let used = per_request(
            &filter,
            Some((&sync, &case.snapshot)),
            &case.request,
            case.status,
        )
        .with_context(|| format!("case {}", case.name))?;
        fuel.insert(format!("tollgate/{}", case.name), used);
    }
    let json = bench::chat_completion_request();
    for (name, wasm) in [("noop", &modules.noop), ("floor", &modules.floor)] {
        let plugin = build(wasm, "")?;
        let used =
            per_request(&plugin, None, &json, 200).with_context(|| format!("module {name}"))?;
        fuel.insert(format!("{name}/json"), used);
    }
    Ok(fuel)
}

/// The time per request of every case and of the no-op and floor modules (named as in
/// [`measure`]), `requests` of each in interleaved rounds (fuel not counted): what the fuel
/// figures are in time on this machine, all from one run, so the differences between cases
/// (each budget on the chain, a denial, streaming) are measured against the same drift.
pub fn time(modules: &Modules, requests: usize) -> Result<BTreeMap<String, Timed>> {
    let filter = build(&modules.filter, FILTER_CONFIG, false)?;
    let sync = build(&modules.sync, SYNC_CONFIG, false)?;
    let mut names = Vec::new();
    let mut subjects = Vec::new();
    for case in cases()? {
        subjects.push(bench::Subject {
            host: started(&filter, Some((&sync, &case.snapshot)))?,
            request: case.request,
            status: case.status,
        });
        names.push(format!("tollgate/{}", case.name));
    }
    for (name, wasm) in [("noop", &modules.noop), ("floor", &modules.floor)] {
        subjects.push(bench::Subject {
            host: started(&build(wasm, "", false)?, None)?,
            request: bench::chat_completion_request(),
            status: 200,
        });
        names.push(format!("{name}/json"));
    }
    // The host calls of start-up (configuration, the first snapshot) are not a request's.
    let at_start: Vec<_> = subjects.iter().map(|s| s.host.host_time(VmId(0))).collect();
    let (stats, _) = bench::interleaved(&mut subjects, requests)?;
    let served = (bench::warmup(requests) + requests) as f64;
    Ok(names
        .into_iter()
        .zip(stats)
        .zip(subjects.iter().zip(at_start))
        .map(|((name, stats), (s, start))| {
            let in_host = s.host.host_time(VmId(0)).saturating_sub(start);
            let host_us = in_host.as_secs_f64() * 1e6 / served;
            (name, Timed { stats, host_us })
        })
        .collect())
}

/// One case's time per request.
#[derive(Clone, Copy, Debug)]
pub struct Timed {
    /// End to end through the harness.
    pub stats: bench::Stats,
    /// Of it, the mean time inside the worker VM's host calls: the harness standing in for
    /// Envoy (shared data, buffers, headers), clock reads included. The rest is the guest's
    /// own work and the harness driving the callbacks.
    pub host_us: f64,
}

/// The committed figures (`tests/harness/bench/fuel.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Committed {
    /// Why the figures are what they are (the last deliberate update).
    pub reason: String,
    /// How far a figure may move before the gate fails, as a fraction (0.03 = 3 %).
    pub margin: f64,
    /// Fuel per request by `module/case`.
    pub fuel: BTreeMap<String, u64>,
    /// Host calls per request by `module/case` (any change fails: a call is a call).
    #[serde(default)]
    pub host_calls: BTreeMap<String, f64>,
}

/// The margin of a new committed file.
pub const MARGIN: f64 = 0.03;

/// Reads the committed figures.
pub fn read_committed(path: &std::path::Path) -> Result<Committed> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

/// What is wrong with `measured` against `committed`: one line per figure past the margin
/// (fuel) or changed at all (host calls, which are whole calls per request), per case missing
/// from either side.
pub fn check(committed: &Committed, measured: &BTreeMap<String, Measured>) -> Vec<String> {
    let fuel = measured.iter().map(|(k, m)| (k, m.total as f64));
    let mut problems = compare(
        "fuel",
        committed.fuel.iter().map(|(k, v)| (k, *v as f64)),
        fuel,
        committed.margin,
    );
    if !committed.host_calls.is_empty() {
        let calls = measured.iter().map(|(k, m)| (k, m.host_calls));
        problems.extend(compare(
            "host calls",
            committed.host_calls.iter().map(|(k, v)| (k, *v)),
            calls,
            0.0,
        ));
    }
    problems
}

/// One figure per case, committed against measured, with `margin` either way.
fn compare<'a>(
    what: &str,
    committed: impl Iterator<Item = (&'a String, f64)>,
    measured: impl Iterator<Item = (&'a String, f64)>,
    margin: f64,
) -> Vec<String> {
    let committed: BTreeMap<&String, f64> = committed.collect();
    let measured: BTreeMap<&String, f64> = measured.collect();
    let mut problems = Vec::new();
    for (name, &was) in &committed {
        let Some(&now) = measured.get(name) else {
            problems.push(format!("{name}: {what} committed but not measured"));
            continue;
        };
        let change = if was > 0.0 { now / was - 1.0 } else { 0.0 };
        // Compared as products, not as `change`: 1030 / 1000 - 1 is a hair over 0.03 in f64.
        // Half a hundredth absorbs the rounding of per-request averages.
        if now > was * (1.0 + margin) + 0.005 {
            problems.push(format!(
                "{name}: {now} {what} per request, {:+.1} % over the committed {was} (margin {:.0} %): \
                 a regression, or a deliberate change whose figures must be committed with the reason",
                change * 100.0,
                margin * 100.0
            ));
        } else if now < was * (1.0 - margin) - 0.005 {
            problems.push(format!(
                "{name}: {now} {what} per request, {:+.1} % under the committed {was}: commit the \
                 new figures (tollgate-harness fuel --write) so the gate holds the gain",
                change * 100.0
            ));
        }
    }
    for name in measured.keys() {
        if !committed.contains_key(name) {
            problems.push(format!("{name}: {what} measured but not committed"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(fuel: &[(&str, u64)]) -> Committed {
        Committed {
            reason: "test".to_owned(),
            margin: 0.03,
            fuel: fuel.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            host_calls: fuel.iter().map(|(k, _)| ((*k).to_owned(), 20.0)).collect(),
        }
    }

    fn measured(fuel: &[(&str, u64)]) -> BTreeMap<String, Measured> {
        fuel.iter()
            .map(|(k, v)| {
                let m = Measured {
                    total: *v,
                    host_calls: 20.0,
                    ..Measured::default()
                };
                ((*k).to_owned(), m)
            })
            .collect()
    }

    #[test]
    fn one_more_host_call_fails() {
        let c = committed(&[("a", 1000)]);
        let mut m = measured(&[("a", 1000)]);
        m.get_mut("a").unwrap().host_calls = 21.0;
        let problems = check(&c, &m);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("host calls"), "{problems:?}");
    }

    #[test]
    fn within_the_margin_passes_either_way() {
        let c = committed(&[("a", 1000), ("b", 1000)]);
        assert!(check(&c, &measured(&[("a", 1030), ("b", 970)])).is_empty());
    }

    #[test]
    fn growth_past_the_margin_fails_and_says_how_much() {
        let c = committed(&[("a", 1000)]);
        let problems = check(&c, &measured(&[("a", 1031)]));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("+3.1 %"), "{problems:?}");
    }

    #[test]
    fn a_gain_past_the_margin_asks_for_the_figures() {
        let c = committed(&[("a", 1000)]);
        let problems = check(&c, &measured(&[("a", 900)]));
        assert!(
            problems[0].contains("commit the new figures"),
            "{problems:?}"
        );
    }

    #[test]
    fn cases_must_match_both_ways() {
        let c = committed(&[("a", 1000)]);
        let problems = check(&c, &measured(&[("b", 1000)]));
        assert_eq!(problems.len(), 4, "fuel and host calls: {problems:?}");
    }

    #[test]
    fn the_four_budget_snapshot_covers_the_whole_chain() {
        let s = snapshot_with(&["key", "user", "project", "org"], "0").unwrap();
        let ids: Vec<&str> = s["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["scope_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["k-bench", "u-bench", "p-bench", "o-bench"]);
    }
}
