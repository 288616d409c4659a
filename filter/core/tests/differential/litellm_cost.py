"""Differential oracle: LiteLLM's own `cost_per_token`, computed exactly.

Driven by `filter/core/tests/litellm_differential.rs`; run by hand as
    .venv/bin/python filter/core/tests/differential/litellm_cost.py map-path
    .venv/bin/python filter/core/tests/differential/litellm_cost.py check CASES.json

LiteLLM computes in binary floats, so its sums carry rounding noise that no exact engine can
equal. To compare exactly we run LiteLLM's real code with `float` rebound, inside its cost
modules only, to `Exact`: a `Decimal` that takes float operands by their shortest repr (the
same digits the price map was written with). Every branch, tier rule and fallback is still
LiteLLM's; only the arithmetic becomes exact. A plain float run of the same case is kept as a
sanity check that the rebinding changed nothing but rounding.

Where Tollgate deliberately differs from LiteLLM's cost path, the oracle applies Tollgate's
documented rule to the model's entry and lets LiteLLM compute the rest (`fill_fallbacks`):
a cache read, cache write or input audio token the map has no rate for is billed by the
provider, so Tollgate resolves it as LiteLLM's own `calculate_prompt_caching_savings` does
(reads and writes at the input rate, 1-hour writes at the 5-minute rate, each per threshold
and service tier) where LiteLLM's cost path bills it at zero. Web-search fees are LiteLLM's
per-provider functions (`get_cost_for_web_search`, `get_cost_for_anthropic_web_search`,
Gemini's `cost_per_web_search_request`), returned as `tools`.
"""

import json
import os
import sys
from decimal import Decimal, getcontext

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
getcontext().prec = 80

import litellm  # noqa: E402
from litellm.litellm_core_utils.llm_cost_calc import tiered_pricing, utils as cost_utils  # noqa: E402
from litellm.litellm_core_utils.llm_cost_calc import tool_call_cost_tracking  # noqa: E402
from litellm.litellm_core_utils.llm_cost_calc.tool_call_cost_tracking import (  # noqa: E402
    StandardBuiltInToolCostTracking,
)
from litellm.llms.anthropic import cost_calculation as anthropic_cost  # noqa: E402
from litellm.llms.dashscope import cost_calculator as dashscope_cost  # noqa: E402
from litellm.llms.gemini import cost_calculator as gemini_cost  # noqa: E402
from litellm.types.utils import (  # noqa: E402
    CacheCreationTokenDetails,
    CompletionTokensDetailsWrapper,
    PromptTokensDetailsWrapper,
    ServerToolUse,
    Usage,
)


class Exact(Decimal):
    """A Decimal that accepts floats (by repr) and stays Exact through arithmetic."""

    def __new__(cls, value=0):
        if isinstance(value, float):
            value = repr(value)
        return super().__new__(cls, value)


def _exact_op(name):
    base = getattr(Decimal, name)

    def op(self, other):
        if isinstance(other, float):
            other = Exact(other)
        result = base(self, other)
        return result if result is NotImplemented else Exact(result)

    return op


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__"):
    setattr(Exact, _name, _exact_op(_name))


def to_exact(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return Exact(value)
    if isinstance(value, dict):
        return {k: to_exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_exact(v) for v in value]
    return value


COST_MODULES = (cost_utils, tiered_pricing, dashscope_cost, tool_call_cost_tracking, anthropic_cost, gemini_cost)
_original_get_model_info = {m: getattr(m, "get_model_info", None) for m in COST_MODULES}


def whole_entry(original):
    """`get_model_info` with every key of the map's entry: LiteLLM's own keeps a fixed list of
    keys and drops the tier variants it does not list (`input_cost_per_audio_token_priority`,
    `cache_creation_input_token_cost_above_200k_tokens_priority`, ...), so the map's rate for
    them is silently the standard one. Tollgate prices what the map says; the oracle runs
    LiteLLM's algorithm over the whole entry."""

    def get(*a, **k):
        info = dict(original(*a, **k))
        raw = litellm.model_cost.get(info.get("key"), {})
        return {**raw, **{key: v for key, v in info.items() if v is not None}}

    return get


def exact_mode(on):
    """Rebinds `float` (and model info lookups) inside LiteLLM's cost modules."""
    for module in COST_MODULES:
        original = _original_get_model_info[module]
        if on:
            module.float = Exact
            if original is not None:
                module.get_model_info = lambda *a, _o=whole_entry(original), **k: to_exact(_o(*a, **k))
        else:
            module.__dict__.pop("float", None)
            if original is not None:
                module.get_model_info = whole_entry(original)


exact_mode(False)


def litellm_usage(u):
    prompt = u["input_uncached"] + u["cache_read"] + u["cache_write_5m"] + u["cache_write_1h"]
    writes = u["cache_write_5m"] + u["cache_write_1h"]
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=u["output"],
        total_tokens=prompt + u["output"],
        prompt_tokens_details=PromptTokensDetailsWrapper(
            cached_tokens=u["cache_read"],
            cache_creation_tokens=writes,
            cache_creation_token_details=CacheCreationTokenDetails(
                ephemeral_5m_input_tokens=u["cache_write_5m"],
                ephemeral_1h_input_tokens=u["cache_write_1h"],
            ),
            audio_tokens=u.get("input_audio", 0),
            image_tokens=u.get("input_image", 0),
        ),
        completion_tokens_details=CompletionTokensDetailsWrapper(
            reasoning_tokens=u["reasoning"],
            audio_tokens=u.get("output_audio", 0),
            image_tokens=u.get("output_image", 0),
        ),
    )


TIER_SUFFIXES = ("_priority", "_flex")


def fill_fallbacks(entry):
    """Tollgate's resolution of rates the map lacks (module doc), written into a copy of the
    entry: where LiteLLM's lookup chain for a cache rate (tier and threshold key, threshold
    key, tier key, base key) finds nothing, the rate is the input rate of that tier and
    threshold; a missing 1-hour write rate is the 5-minute one; a missing input audio rate
    the input rate of the tier."""
    e = dict(entry)
    has = lambda k: entry.get(k) is not None  # noqa: E731 (the original entry decides)
    thresholds = [k[len("input_cost_per_token"):] for k in entry if k.startswith("input_cost_per_token_above_")
                  and not k.endswith(("_priority", "_flex", "_fast", "_ultrafast", "_auto"))]
    tiers = [""] + [t for t in TIER_SUFFIXES if any(k.endswith(t) for k in entry)]
    for rate in ("cache_read_input_token_cost", "cache_creation_input_token_cost"):
        for above in [""] + thresholds:
            for tier in tiers:
                chain = [f"{rate}{above}{tier}", f"{rate}{above}", f"{rate}{tier}", rate]
                if not any(has(k) for k in chain):
                    inputs = [f"input_cost_per_token{above}{tier}", f"input_cost_per_token{above}",
                              f"input_cost_per_token{tier}", "input_cost_per_token"]
                    fallback = next((entry[k] for k in inputs if has(k)), None)
                    if fallback is not None:  # range-table models price cache rows themselves
                        e[chain[0]] = fallback
    if not has("cache_creation_input_token_cost_above_1hr"):
        e["cache_creation_input_token_cost_above_1hr"] = e.get("cache_creation_input_token_cost")
    for above in thresholds:
        key = f"cache_creation_input_token_cost_above_1hr{above}"
        if not has(key) and not has("cache_creation_input_token_cost_above_1hr"):
            e[key] = e.get(f"cache_creation_input_token_cost{above}")
    if not has("input_cost_per_audio_token") and has("input_cost_per_token"):
        e["input_cost_per_audio_token"] = entry["input_cost_per_token"]
        for tier in tiers[1:]:
            if not has(f"input_cost_per_audio_token{tier}") and has(f"input_cost_per_token{tier}"):
                e[f"input_cost_per_audio_token{tier}"] = entry[f"input_cost_per_token{tier}"]
    return e


def litellm_cost(case):
    """(prompt, completion) from litellm.cost_per_token for one case."""
    tier = case["usage"].get("service_tier")
    return litellm.cost_per_token(
        model=case["model"],
        custom_llm_provider=case["provider"],
        usage_object=litellm_usage(case["usage"]),
        service_tier=tier,
    )


def tool_cost(case):
    """LiteLLM's web-search fee for the case's searches, by provider."""
    searches = case["usage"].get("web_searches", 0)
    if not searches:
        return 0
    info = to_exact(whole_entry(litellm.get_model_info)(model=case["model"], custom_llm_provider=case["provider"]))
    provider = case["provider"]
    if provider == "anthropic":
        usage = Usage(server_tool_use=ServerToolUse(web_search_requests=searches))
        return anthropic_cost.get_cost_for_anthropic_web_search(model_info=info, usage=usage)
    if provider == "gemini" or provider.startswith("vertex_ai"):
        usage = Usage(prompt_tokens_details=PromptTokensDetailsWrapper(web_search_requests=searches))
        return gemini_cost.cost_per_web_search_request(usage=usage, model_info=info)
    size = case["usage"].get("search_context", "medium")
    per_call = StandardBuiltInToolCostTracking.get_cost_for_web_search(
        web_search_options={"search_context_size": size}, model_info=info)
    return per_call * searches


def check(path):
    with open(path) as f:
        doc = json.load(f)
    # Synthetic entries (several tiers, inclusive thresholds) join LiteLLM's own map.
    for name, entry in doc.get("synthetic", {}).items():
        litellm.model_cost[name] = entry
    for name in {case["model"] for case in doc["cases"]}:
        litellm.model_cost[name] = fill_fallbacks(litellm.model_cost[name])
    mismatches, float_drift = [], []
    for case in doc["cases"]:
        ours = {k: Decimal(v) for k, v in case["ours"].items()}
        exact_mode(True)
        try:
            prompt, completion = litellm_cost(case)
            tools = tool_cost(case)
            # A fee from a constant in LiteLLM's code (Gemini's $0.035 default) is a float
            # literal: its digits, not its binary expansion.
            tools = Exact(tools) if isinstance(tools, float) else tools
        finally:
            exact_mode(False)
        theirs = {"prompt": Decimal(prompt), "completion": Decimal(completion), "tools": Decimal(tools)}
        theirs["total"] = theirs["prompt"] + theirs["completion"] + theirs["tools"]
        if any(ours[k] != theirs[k] for k in theirs):
            mismatches.append({"case": case["id"], "usage": case["usage"], "ours": {k: str(v) for k, v in ours.items()},
                               "litellm": {k: str(v) for k, v in theirs.items()}})
        fp, fc = litellm_cost(case)
        fp += tool_cost(case)
        if abs(Decimal(fp + fc) - theirs["total"]) > theirs["total"] * Decimal("1e-12") + Decimal("1e-18"):
            float_drift.append({"case": case["id"], "float": repr(fp + fc), "exact": str(theirs["total"])})
    print(json.dumps({"checked": len(doc["cases"]), "mismatches": mismatches, "float_drift": float_drift}))


def main():
    if sys.argv[1:2] == ["map-path"]:
        print(os.path.join(os.path.dirname(litellm.__file__), "model_prices_and_context_window_backup.json"))
    elif sys.argv[1:2] == ["check"] and len(sys.argv) == 3:
        check(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
