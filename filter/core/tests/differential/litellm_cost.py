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
"""

import json
import os
import sys
from decimal import Decimal, getcontext

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
getcontext().prec = 80

import litellm  # noqa: E402
from litellm.litellm_core_utils.llm_cost_calc import tiered_pricing, utils as cost_utils  # noqa: E402
from litellm.llms.dashscope import cost_calculator as dashscope_cost  # noqa: E402
from litellm.types.utils import (  # noqa: E402
    CacheCreationTokenDetails,
    CompletionTokensDetailsWrapper,
    PromptTokensDetailsWrapper,
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


COST_MODULES = (cost_utils, tiered_pricing, dashscope_cost)
_original_get_model_info = {m: getattr(m, "get_model_info", None) for m in COST_MODULES}


def exact_mode(on):
    """Rebinds `float` (and model info lookups) inside LiteLLM's cost modules."""
    for module in COST_MODULES:
        if on:
            module.float = Exact
            original = _original_get_model_info[module]
            if original is not None:
                module.get_model_info = lambda *a, _o=original, **k: to_exact(dict(_o(*a, **k)))
        else:
            module.__dict__.pop("float", None)
            if _original_get_model_info[module] is not None:
                module.get_model_info = _original_get_model_info[module]


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
        ),
        completion_tokens_details=CompletionTokensDetailsWrapper(reasoning_tokens=u["reasoning"]),
    )


def litellm_cost(case):
    """(prompt, completion) from litellm.cost_per_token for one case."""
    return litellm.cost_per_token(
        model=case["model"],
        custom_llm_provider=case["provider"],
        usage_object=litellm_usage(case["usage"]),
    )


def check(path):
    with open(path) as f:
        doc = json.load(f)
    # Synthetic entries (several tiers, inclusive thresholds) join LiteLLM's own map.
    for name, entry in doc.get("synthetic", {}).items():
        litellm.model_cost[name] = entry
    mismatches, float_drift = [], []
    for case in doc["cases"]:
        ours = {k: Decimal(v) for k, v in case["ours"].items()}
        exact_mode(True)
        try:
            prompt, completion = litellm_cost(case)
        finally:
            exact_mode(False)
        theirs = {"prompt": Decimal(prompt), "completion": Decimal(completion)}
        theirs["total"] = theirs["prompt"] + theirs["completion"]
        if any(ours[k] != theirs[k] for k in theirs):
            mismatches.append({"case": case["id"], "ours": {k: str(v) for k, v in ours.items()},
                               "litellm": {k: str(v) for k, v in theirs.items()}})
        fp, fc = litellm_cost(case)
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
