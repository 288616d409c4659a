//! Differential test: our `cost` against LiteLLM's own `cost_per_token`, exactly equal in
//! `Decimal`, on a few hundred generated cases from LiteLLM's bundled price map (offline,
//! `LITELLM_LOCAL_MODEL_COST_MAP=True`) plus synthetic entries for rules the map lacks.
//!
//! Needs the project venv (`scripts/setup.sh`); it fails loudly without it. Set
//! `TOLLGATE_SKIP_LITELLM=1` to opt out explicitly. The oracle is
//! `tests/differential/litellm_cost.py`; run with
//! `cargo test -p tollgate-core --test litellm_differential -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use tollgate_core::cost::cost;
use tollgate_core::pricing::litellm::{import, import_entry};
use tollgate_core::pricing::{ModelPrice, SearchContext};
use tollgate_core::usage::Usage;

/// A pricing feature a chosen model must have.
type Feature = fn(&ModelPrice) -> bool;

/// Providers whose `cost_per_token` LiteLLM computes with its generic or range-table code.
const PROVIDERS: [&str; 9] = [
    "openai",
    "anthropic",
    "gemini",
    "dashscope",
    "azure",
    "vertex_ai-language-models",
    "vertex_ai-anthropic_models",
    "bedrock",
    "bedrock_converse",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> Option<PathBuf> {
    let py = repo_root().join(".venv/bin/python");
    if py.exists() {
        return Some(py);
    }
    if std::env::var("TOLLGATE_SKIP_LITELLM").as_deref() == Ok("1") {
        return None;
    }
    panic!(
        "{} missing: run scripts/setup.sh (or set TOLLGATE_SKIP_LITELLM=1 to opt out)",
        py.display()
    );
}

fn oracle(py: &Path, args: &[&str]) -> String {
    let script = repo_root().join("filter/core/tests/differential/litellm_cost.py");
    let out = Command::new(py)
        .arg(script)
        .args(args)
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Small deterministic generator (xorshift64*), so every run checks the same cases.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Entries LiteLLM's map lacks but the rules cover: two threshold tiers on one model (the
/// highest crossed wins), a tier that reprices cache writes, and a range table with cache and
/// reasoning rates of its own.
fn synthetic() -> Value {
    json!({
        "tollgate-synthetic-two-tiers": {
            "litellm_provider": "openai", "mode": "chat",
            "input_cost_per_token": 1e-06, "output_cost_per_token": 4e-06,
            "cache_read_input_token_cost": 1e-07, "cache_creation_input_token_cost": 1.25e-06,
            "cache_creation_input_token_cost_above_1hr": 2e-06,
            "output_cost_per_reasoning_token": 5e-06,
            "input_cost_per_token_above_128k_tokens": 2e-06,
            "output_cost_per_token_above_128k_tokens": 8e-06,
            "input_cost_per_token_above_256k_tokens": 3e-06,
            "cache_read_input_token_cost_above_256k_tokens": 3e-07,
            "cache_creation_input_token_cost_above_256k_tokens": 3.75e-06,
            "cache_creation_input_token_cost_above_1hr_above_256k_tokens": 6e-06
        },
        "tollgate-synthetic-ranges": {
            "litellm_provider": "openai", "mode": "chat",
            "input_cost_per_token": 9e-07, "output_cost_per_token": 9e-06,
            "output_cost_per_reasoning_token": 1.1e-05,
            "tiered_pricing": [
                {"range": [0, 32000.0], "input_cost_per_token": 1.2e-07, "output_cost_per_token": 1.2e-06,
                 "cache_read_input_token_cost": 2.4e-08},
                {"range": [32000.0, 128000.0], "input_cost_per_token": 2.4e-07,
                 "cache_creation_input_token_cost": 3e-07, "output_cost_per_reasoning_token": 7e-06},
                {"range": [128000.0, 252000.0], "input_cost_per_token": 3e-07, "output_cost_per_token": 2.4e-06,
                 "cache_creation_input_token_cost_above_1hr": 6.1e-07}
            ]
        }
    })
}

fn usage(input: u64, read: u64, w5: u64, w1: u64, output: u64, reasoning: u64) -> Usage {
    Usage {
        input_uncached: input,
        cache_read: read,
        cache_write_5m: w5,
        cache_write_1h: w1,
        output,
        reasoning,
        ..Usage::default()
    }
}

/// Splits `prompt` tokens over the four prompt buckets in a way chosen by `rng`.
fn split_prompt(rng: &mut Rng, prompt: u64, output: u64, reasoning: u64) -> Usage {
    let read = rng.below(prompt / 2 + 1);
    let w5 = rng.below((prompt - read) / 3 + 1);
    let w1 = rng.below((prompt - read - w5) / 3 + 1);
    usage(prompt - read - w5 - w1, read, w5, w1, output, reasoning)
}

/// The usages to check for one model: the shapes every model gets, plus each tier boundary
/// (at it and one over) and each range edge.
fn usages_for(price: &ModelPrice, rng: &mut Rng) -> Vec<Usage> {
    let out = |o: u64| {
        if price.kind == tollgate_core::pricing::ModelKind::Embedding {
            0
        } else {
            o
        }
    };
    let (p1, o1) = (1 + rng.below(150_000), out(rng.below(30_000)));
    let (p2, reasoning) = (1 + rng.below(9_000), out(rng.below(5000)));
    let o2 = out(reasoning + rng.below(5000));
    let mut v = vec![
        usage(1234, 0, 0, 0, out(567), 0),
        usage(1000, 3000, 0, 0, out(200), 0),
        usage(100, 0, 2000, 0, out(50), 0),
        usage(10, 100, 0, 5000, out(10), 0),
        usage(777, 888, 99, 111, out(4000), out(3000)),
        usage(0, 0, 0, 0, 0, 0),
        split_prompt(rng, p1, o1, 0),
        split_prompt(rng, p2, o2, reasoning),
    ];
    for t in &price.tiers {
        for prompt in [t.above_prompt_tokens, t.above_prompt_tokens + 1] {
            v.push(usage(prompt, 0, 0, 0, out(100), 0));
            v.push(split_prompt(rng, prompt, out(1000), out(10)));
        }
    }
    for r in &price.ranges {
        for prompt in [r.from + 1, r.to, r.to + 1] {
            v.push(split_prompt(rng, prompt, out(2000), out(500)));
        }
    }
    // Audio and images inside the prompt and the output, on every model (a model without an
    // input audio rate exercises the fallback), with and without cache reads. Range tables
    // bill every token at the row's rates (Alibaba's calculator; the map's range tables are
    // Alibaba's and Volcengine's), which LiteLLM's generic calculator, pricing the synthetic
    // OpenAI-provider table, does not: no modality cases there.
    if price.ranges.is_empty() || price.provider.as_deref() != Some("openai") {
        v.extend(modality_usages(rng, out));
    }
    // Every service tier the model has, below and above each threshold.
    for tier in price.service_tiers.keys() {
        let mut prompts = vec![1 + rng.below(20_000)];
        prompts.extend(price.tiers.iter().map(|t| t.above_prompt_tokens + 1));
        for prompt in prompts {
            let (o, r) = (out(1000 + rng.below(4000)), out(rng.below(500)));
            let u = split_prompt(rng, prompt, o, r);
            // LiteLLM has no per-tier 1-hour write rate, so no tier reprices those.
            v.push(Usage {
                service_tier: *tier,
                input_audio: rng.below(2) * 50,
                input_uncached: u.input_uncached + u.cache_write_1h,
                cache_write_1h: 0,
                ..u
            });
        }
    }
    // Web searches at each context size. LiteLLM charges Claude on Vertex one search fee per
    // request however many searches ran; Anthropic and Google bill each search ($10 per 1,000),
    // as Tollgate does. So for those entries the oracle is only asked about one search.
    let per_request_fee = price.provider.as_deref() == Some("vertex_ai-anthropic_models");
    if price.tools.web_search.is_some() {
        for context in [
            SearchContext::Low,
            SearchContext::Medium,
            SearchContext::High,
        ] {
            v.push(Usage {
                web_searches: if per_request_fee { 1 } else { 1 + rng.below(4) },
                search_context: context,
                ..usage(2000 + rng.below(9000), 0, 0, 0, out(300), 0)
            });
        }
    }
    v
}

/// Usages with audio and image tokens in the prompt and the output.
fn modality_usages(rng: &mut Rng, out: impl Fn(u64) -> u64) -> Vec<Usage> {
    let text = 100 + rng.below(5000);
    vec![
        Usage {
            input_audio: rng.below(3000),
            input_image: rng.below(500),
            output_audio: out(rng.below(900)),
            output_image: out(rng.below(90)),
            ..usage(text + 3500, 0, 0, 0, out(1000), out(rng.below(10)))
        },
        Usage {
            input_audio: 700,
            ..usage(1200, 300 + rng.below(900), 0, 0, out(100), 0)
        },
    ]
}

#[test]
fn costs_equal_litellm_exactly() {
    let Some(py) = python() else {
        eprintln!("TOLLGATE_SKIP_LITELLM=1: differential test skipped by request");
        return;
    };
    let map_path = oracle(&py, &["map-path"]);
    let map = std::fs::read(map_path.trim()).expect("read LiteLLM's bundled price map");
    let mut book = import(&map).expect("import LiteLLM map").book;
    let synthetic = synthetic();
    for (name, entry) in synthetic.as_object().unwrap() {
        book.models
            .insert(name.clone(), import_entry(name, entry).unwrap());
    }

    // Pick models so every pricing feature is covered several times, spread over the map.
    let features: [(&str, Feature); 15] = [
        // Amazon Bedrock (issue 15): base model ids, region profiles (`us.`, `eu.`, `global.`)
        // and the regional `bedrock/<region>/` entries.
        ("bedrock", |p| {
            p.provider
                .as_deref()
                .is_some_and(|v| v.starts_with("bedrock"))
        }),
        // Vertex AI (issue 15): Claude's `vertex_ai/` entries and Gemini's Vertex ones.
        ("vertex", |p| {
            p.provider
                .as_deref()
                .is_some_and(|v| v.starts_with("vertex_ai"))
        }),
        // Azure OpenAI (issue 15): regional and data-zone entries price like the others.
        ("azure", |p| p.provider.as_deref() == Some("azure")),
        ("flat", |p| {
            p.rates.cache_read.is_none() && p.tiers.is_empty() && p.ranges.is_empty()
        }),
        ("cache read", |p| p.rates.cache_read.is_some()),
        ("cache write", |p| p.rates.cache_write_5m.is_some()),
        ("1h cache write", |p| p.rates.cache_write_1h.is_some()),
        ("reasoning rate", |p| p.rates.reasoning.is_some()),
        ("threshold tiers", |p| !p.tiers.is_empty()),
        ("range table", |p| !p.ranges.is_empty()),
        ("service tiers", |p| !p.service_tiers.is_empty()),
        ("service tiers above a threshold", |p| {
            p.service_tiers.values().any(|t| !t.above.is_empty())
        }),
        ("input audio rate", |p| p.modality.input_audio.is_some()),
        ("web search fee", |p| p.tools.web_search.is_some()),
        ("no cache-read rate", |p| {
            p.rates.cache_read.is_none() && p.ranges.is_empty()
        }),
    ];
    let mut chosen: Vec<&str> = synthetic
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for (feature, has) in features {
        let candidates: Vec<&str> = book
            .models
            .iter()
            // LiteLLM's Gemini calculator finds only `gemini/`-prefixed names.
            .filter(|(k, p)| {
                let provider = p.provider.as_deref().unwrap_or("");
                PROVIDERS.contains(&provider)
                    && (provider != "gemini" || k.starts_with("gemini/"))
                    && has(p)
            })
            .map(|(k, _)| k.as_str())
            .collect();
        assert!(
            candidates.len() >= 2,
            "LiteLLM map has too few models with {feature}"
        );
        let step = (candidates.len() / 8).max(1);
        chosen.extend(candidates.iter().step_by(step).take(8));
    }
    chosen.sort_unstable();
    chosen.dedup();

    let mut rng = Rng(0x7011_6a7e);
    let mut cases = Vec::new();
    for name in &chosen {
        let price = &book.models[*name];
        for u in usages_for(price, &mut rng) {
            let c = cost(price, &u).unwrap();
            cases.push(json!({
                "id": format!("{name}#{}", cases.len()),
                "model": name,
                "provider": price.provider.as_deref().unwrap_or("openai"),
                "usage": u,
                "ours": {"prompt": c.prompt().to_string(), "completion": c.completion().to_string(),
                         "tools": c.tools().to_string(), "total": c.total.to_string()},
            }));
        }
    }
    assert!(cases.len() >= 300, "only {} cases", cases.len());

    let dir = std::env::temp_dir().join(format!("tollgate-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cases.json");
    std::fs::write(
        &file,
        json!({"cases": cases, "synthetic": synthetic}).to_string(),
    )
    .unwrap();
    let report: Value =
        serde_json::from_str(&oracle(&py, &["check", file.to_str().unwrap()])).unwrap();
    std::fs::remove_dir_all(&dir).ok();

    let mismatches = report["mismatches"].as_array().unwrap();
    eprintln!(
        "litellm differential: {} models, {} cases, {} mismatches, {} float-drift warnings",
        chosen.len(),
        report["checked"],
        mismatches.len(),
        report["float_drift"].as_array().unwrap().len()
    );
    assert_eq!(report["checked"].as_u64().unwrap() as usize, cases.len());
    let ids: Vec<&str> = mismatches
        .iter()
        .filter_map(|m| m["case"].as_str())
        .collect();
    assert!(
        mismatches.is_empty(),
        "costs differ from LiteLLM in {ids:?}; first ones: {:#}",
        Value::Array(mismatches.iter().take(5).cloned().collect())
    );
    assert!(
        report["float_drift"].as_array().unwrap().is_empty(),
        "exact and float LiteLLM runs disagree: {:#}",
        report["float_drift"]
    );
}
