#!/usr/bin/env python3
"""Writes the committed seed corpus of every fuzz target (fuzz/seeds/<target>/) from the
project's own fixtures and examples: provider payloads (filter/core/tests/fixtures/usage), the
Envoy plugin configs (envoy/tollgate.yaml), the harness snapshot, a slice of LiteLLM's price
map (the project's .venv) and hand-written request bodies and wire items. Idempotent; run from
anywhere: `python3 fuzz/make_seeds.py`. Reproducers of fixed bugs live next to the seeds as
`regression-*` files and are kept."""
import json
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"
FIXTURES = ROOT / "filter" / "core" / "tests" / "fixtures" / "usage"
# Selector bytes: the order of tollgate_core::provider::APIS (tollgate_fuzz::format_of).
FORMAT = {"openai_chat": 0, "openai_responses": 1, "openai_embeddings": 2,
          "anthropic_messages": 3, "gemini_generate_content": 4,
          "bedrock_converse": 10, "bedrock_invoke": 11}


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob(name):
        old.unlink()
    (d / name).write_bytes(data)


def selector(fixture):
    return next(v for k, v in FORMAT.items() if fixture.startswith(k))


def usage_seeds():
    for f in sorted(FIXTURES.iterdir()):
        sel = bytes([selector(f.name)])
        target = "usage_eventstream" if f.suffix == ".eventstream" else "usage_sse"
        if f.suffix == ".json":
            write("usage_json", f.stem, sel + f.read_bytes())
        else:
            body = f.read_bytes()
            cuts = [len(body) // 3, len(body) // 2, 2 * len(body) // 3]
            header = sel + struct.pack("<HB", 8000, len(cuts)) + b"".join(
                struct.pack("<H", c) for c in cuts)
            write(target, f.stem, header + body)
            # A small limit: most events are oversized and must be reported, not kept.
            write(target, f.stem + "-small", sel + struct.pack("<HB", 48, 0) + body)
    write("usage_json", "error_body", b"\x00" + b'{"error":{"message":"x","type":"server_error"}}')


def config_seeds():
    yaml = (ROOT / "envoy" / "tollgate.yaml").read_text()
    for i, m in enumerate(re.finditer(r"value: \|\n((?:[ ]+.*\n)+)", yaml)):
        text = re.sub(r"\$\{(\w+)\}", lambda v: v.group(1).lower() + "-0123456789", m.group(1))
        doc, _ = json.JSONDecoder().raw_decode(text.strip())
        write("config", f"envoy-{i}", json.dumps(doc).encode())
    write("config", "every-field", json.dumps({
        "role": "filter", "vm_id": "tollgate",
        "control_plane": {"cluster": "cp", "authority": "127.0.0.1:8080", "token": "dp-secret-token",
                          "snapshot_path": "/v1/snapshot", "usage_path": "/v1/usage",
                          "sync_interval_ms": 1000, "timeout_ms": 2000, "batch_max_events": 500},
        "identity": {"providers": {"openai": {"header": "authorization", "value": "Bearer sk-live-123456"}},
                     "trusted_principal_header": "x-tollgate-principal"},
        "max_staleness_s": 300, "stale_policy": "deny",
        "unknown_model": {"default_price": {"input_per_million": "2.5", "output_per_million": "10"}},
        "missing_usage": "charge_zero", "shadow": True, "inject_include_usage": False,
        "limits": {"max_request_body_bytes": 1048576, "max_response_event_bytes": 65536,
                   "max_queue_events": 1000, "default_max_output_tokens": 4096}}).encode())


def litellm_seeds():
    venv = ROOT / ".venv" / "lib"
    maps = sorted(venv.glob("python3*/site-packages/litellm/model_prices_and_context_window_backup.json"))
    if maps:
        full = json.loads(maps[0].read_text())
        def pick(pred, n):
            return [k for k, v in full.items() if isinstance(v, dict) and pred(v)][:n]
        names = ["sample_spec", "gpt-4o", "o3", "claude-sonnet-4-20250514", "gemini/gemini-2.5-pro"]
        names += pick(lambda v: any(k.startswith("input_cost_per_token_above") for k in v), 2)
        names += pick(lambda v: "tiered_pricing" in v, 2)
        names += pick(lambda v: v.get("litellm_provider") in ("dashscope", "xai"), 2)
        names += pick(lambda v: v.get("mode") in ("embedding", "image_generation"), 2)
        names += pick(lambda v: "cache_creation_input_token_cost_above_1hr" in v, 1)
        names += pick(lambda v: "output_cost_per_image_token" in v, 1)
        write("litellm_import", "litellm-slice",
              json.dumps({k: full[k] for k in names if k in full}, indent=1).encode())
    # The differential test's synthetic entries (filter/core/tests/litellm_differential.rs).
    write("litellm_import", "synthetic", json.dumps({
        "two-tiers": {"litellm_provider": "xai", "mode": "chat",
                      "input_cost_per_token": 1e-06, "output_cost_per_token": 4e-06,
                      "cache_read_input_token_cost": 1e-07, "cache_creation_input_token_cost": 1.25e-06,
                      "cache_creation_input_token_cost_above_1hr": 2e-06,
                      "output_cost_per_reasoning_token": 5e-06,
                      "input_cost_per_token_above_128k_tokens": 2e-06,
                      "output_cost_per_token_above_128k_tokens": 8e-06,
                      "input_cost_per_token_above_256k_tokens": "3e-06"},
        "ranges": {"litellm_provider": "dashscope", "mode": "chat",
                   "input_cost_per_token": 9e-07, "output_cost_per_token": 9e-06,
                   "tiered_pricing": [
                       {"range": [0, 32000.0], "input_cost_per_token": 1.2e-07, "output_cost_per_token": 1.2e-06},
                       {"range": [32000.0, 128000.0], "input_cost_per_token": 2.4e-07,
                        "cache_creation_input_token_cost": 3e-07}]}}).encode())


def snapshot_seeds():
    write("snapshot", "harness-bench", (ROOT / "tests" / "harness" / "bench" / "snapshot.json").read_bytes())
    write("snapshot", "every-scope", json.dumps({
        "version": 7, "generated_at": 1735689600,
        "prices": {"version": 3, "models": {"m": {"provider": "openai", "kind": "chat",
            "rates": {"input": "0.000001", "output": "0.000004", "cache_read": "0.0000001",
                      "cache_write_5m": "0.00000125", "cache_write_1h": "0.000002", "reasoning": "0.000005"},
            "tiers": [{"above_prompt_tokens": 200000, "inclusive": True, "input": "0.000002", "output": "0.000008"}],
            "ranges": [{"from": 0, "to": 1000, "rates": {"input": "0.0000005", "output": "0.000001",
                        "cache_read": "0", "cache_write_5m": "0", "cache_write_1h": "0", "reasoning": "0.000001"}}],
            "max_output_tokens": 8192}}},
        "budgets": [
            {"id": "bk", "scope": "key", "scope_id": "k", "limit_usd": "1", "soft_limit_usd": "0.5",
             "mode": "enforce", "window": {"period": "weekly", "boundaries": [1735516800, 1736121600, 1736726400]},
             "spent_window_start": 1735516800, "spent_usd": "0.99"},
            {"id": "bu", "scope": "user", "scope_id": "u", "limit_usd": "10", "mode": "shadow",
             "window": {"period": "total"}, "spent_usd": "12"},
            {"id": "bp", "scope": "project", "scope_id": "p", "limit_usd": "0", "mode": "enforce",
             "window": {"period": "daily", "boundaries": [1735689600, 1735776000]}, "spent_usd": "0"},
            {"id": "bo", "scope": "org", "scope_id": "o", "limit_usd": "100", "mode": "enforce",
             "window": {"period": "monthly", "boundaries": [1735689600, 1738368000, 1740787200]},
             "spent_window_start": 1733011200, "spent_usd": "50"}],
        "keys": [{"sha256": "AB" * 32, "principal": {"key": "k", "user": "u", "project": "p", "org": "o"}},
                 {"sha256": "cd" * 32, "principal": {"org": "o"}}],
        "reporters": {"envoy-1": 42}}).encode())


def dec(mantissa, scale):
    """rust_decimal's 16-byte `serialize()` form: flags (scale, sign), then lo, mid, hi."""
    flags = (scale << 16) | (0x80000000 if mantissa < 0 else 0)
    m = abs(mantissa)
    return struct.pack("<IIII", flags, m & 0xFFFFFFFF, (m >> 32) & 0xFFFFFFFF, m >> 64)


def s(text):
    b = text.encode()
    return struct.pack("<I", len(b)) + b


def codec_seeds():
    # Queue item (sync_protocol.rs QueuedUsage::encode, format 3): version, ts, principal, model, api,
    # 11 counts (Usage::named_counts), service tier and search context tags, 11 cost buckets
    # (CostBreakdown::named_buckets) and the total, price version, charge, uncharged, status,
    # stream, requested model, charges.
    item = b"\x03" + struct.pack("<q", 1735689600) + s("o") + b"\x01" + s("p") + b"\x00" + b"\x01" + s("k")
    item += s("gpt-4o") + b"\x00" + struct.pack("<11Q", 86, 1920, 0, 0, 300, 192, 40, 0, 20, 0, 2)
    item += b"\x01" + b"\x02"
    item += dec(215, 6) + dec(24, 4) + dec(0, 0) + dec(0, 0) + dec(108, 5) + dec(192, 5)
    item += dec(16, 4) + dec(0, 0) + dec(16, 4) + dec(0, 0) + dec(6, 2) + dec(6927, 6)
    item += struct.pack("<Q", 3) + b"\x00" + b"\x00" + struct.pack("<Q", 200) + b"\x01"
    item += b"\x01" + s("gpt-4o-2024-08-06")
    item += struct.pack("<Q", 2) + s("bk") + struct.pack("<q", 1735689600) + dec(6927, 6)
    item += s("bo") + struct.pack("<q", -(1 << 63)) + dec(6927, 6)
    write("codec", "queue-item", b"\x00" + item)
    # Local budget (local_spend.rs LocalBudget::encode): reserved, count, (window, amount) pairs.
    local = dec(125, 2) + b"\x02" + struct.pack("<q", 1735689600) + dec(5, 1) + struct.pack("<q", 1735776000) + dec(7, 0)
    write("codec", "local-budget", b"\x01" + local)
    batch = {"events": [{"id": "r-1", "reporter": "r", "seq": 1, "ts": 1735689600,
                         "principal": {"key": "k", "org": "o"}, "model": "gpt-4o", "api": "open_ai_chat",
                         "usage": {"input_uncached": 86, "cache_read": 1920, "output": 300, "reasoning": 192},
                         "cost": {"input": "0.000215", "cache_read": "0.0024", "cache_write_5m": "0",
                                  "cache_write_1h": "0", "output": "0.00108", "reasoning": "0.00192",
                                  "total": "0.005615"},
                         "price_version": 3, "charge": "actual", "status": 200, "stream": True}]}
    write("codec", "usage-batch", b"\x02" + json.dumps(batch).encode())


def request_seeds():
    bodies = {
        "chat-stream": (0, {"model": "gpt-4o", "stream": True, "max_tokens": 100, "n": 2,
                            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                                      {"type": "image_url", "image_url": {"url": "data:x"}}]}],
                            "tools": [{"type": "function", "function": {"name": "f"}}]}),
        "chat-usage": (0, {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": False},
                           "max_completion_tokens": 5, "messages": []}),
        "responses": (1, {"model": "o3", "input": "hello", "max_output_tokens": 1000, "instructions": "x"}),
        "embeddings": (2, {"model": "text-embedding-3-small", "input": ["a", "b"]}),
        "anthropic": (3, {"model": "claude-sonnet-4-20250514", "max_tokens": 1024, "system": "s",
                          "messages": [{"role": "user", "content": "hi"}], "stream": True}),
        "gemini": (4, {"contents": [{"parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "AA"}}]}],
                       "generationConfig": {"maxOutputTokens": 64, "candidateCount": 2}}),
    }
    for name, (sel, body) in bodies.items():
        write("request", name, bytes([sel]) + json.dumps(body).encode())
    # Spacing and escapes kept verbatim by the rewrite.
    write("request", "chat-spacing", b'\x00 { "model" : "gpt-\\u0034o" ,"stream":true , "messages":[ ] } ')


if __name__ == "__main__":
    usage_seeds()
    config_seeds()
    litellm_seeds()
    snapshot_seeds()
    codec_seeds()
    request_seeds()
    for d in sorted(SEEDS.iterdir()):
        print(f"{d.name}: {len(list(d.iterdir()))} seeds")
