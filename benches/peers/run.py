#!/usr/bin/env python3
"""Tollgate side by side with LiteLLM's proxy (issue 17), under the same load, in one run.

Run it through run.sh (which builds Tollgate, installs wrk and LiteLLM's pinned proxy in its
own venv):
    bash benches/peers/run.sh [--rounds 3] [--duration 8] [--connections 1,16] [--dry-run]

What it does, with benches/load/compare.py's machinery (imported, not copied):
- starts the mock LLM provider (tollgate-upstream, 1 thread, every request must carry the
  provider key) and Tollgate's control plane (seeded as compare.py does: LiteLLM's price map, a
  virtual key whose chain carries a key budget of 1,000,000 USD that never denies) on core 1;
- starts, each on core 0: Envoy with no filter (envoy/baseline-none.yaml), Envoy with Tollgate
  (envoy/tollgate.yaml as shipped, one worker) and LiteLLM's proxy (`litellm --num_workers 1`,
  uvicorn + uvloop, no database, `LITELLM_LOG=ERROR`, `LITELLM_MODE=PRODUCTION`,
  `LITELLM_LOCAL_MODEL_COST_MAP=True`, one OpenAI-compatible model on the mock), and keeps them
  running;
- each round, for each connection count, in a rotating order, warms up and measures with
  `wrk --latency -s benches/load/chat.lua` (core 1) the mock called directly, Envoy with no
  filter, Envoy + Tollgate and LiteLLM: req/s, p50, p99 and the proxy's CPU time per request
  (/proc/PID/stat utime + stime: Envoy's process; LiteLLM's process and all its descendants);
- the same request everywhere (chat.lua's chat completion): the client holds Tollgate's virtual
  key for Tollgate, LiteLLM's master key for LiteLLM and the provider key for the mock and the
  bare Envoy; both proxies swap in the provider key, or the mock answers 401;
- checks: no non-2xx answer and no socket error in any run; Tollgate's ledger holds one usage
  event per request it served (compare.py's check); LiteLLM priced the probe request
  (`x-litellm-response-cost`);
- writes the report (date, machine, versions, medians, added latency over the direct mock,
  the ratios, every round) between the markers of the "Side by side with LiteLLM (issue 17)"
  section of BENCHMARKS.md (appended if missing; the rest of the file is kept) and of
  benches/peers/README.md.

Added latency is the median over rounds of (proxy p50 − direct p50) in the same round.
--dry-run renders every config (LiteLLM's and both Envoys') and checks the scripts' inputs
exist, without starting anything. Standard library only; no token is printed or written.
"""
import argparse
import datetime
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "load"))
import compare  # noqa: E402  (benches/load/compare.py: the stack, wrk, Envoy and the control plane)
from compare import Fail  # noqa: E402

ROOT = compare.ROOT
HERE = os.path.join(ROOT, "benches", "peers")
SECTION = "## Side by side with LiteLLM (issue 17)"
BEGIN = "<!-- benches/peers/run.sh writes from here to the end marker; edit outside them -->"
END = "<!-- end of what benches/peers/run.sh writes -->"
VARIANTS = ["direct", "envoy", "tollgate", "litellm"]
LABELS = {
    "direct": "the mock provider, called directly (baseline)",
    "envoy": "Envoy, no filter",
    "tollgate": "Envoy + Tollgate (1 budget on the chain)",
    "litellm": "LiteLLM proxy (1 uvicorn worker, no database)",
}
# The goals: Tollgate's added p50 ≥ 100× lower than LiteLLM's at 1 connection, its
# throughput ≥ 100× LiteLLM's at 16.
GOAL = 100


def log(msg):
    print(f"peers: {msg}", flush=True)


def litellm_config(upstream):
    """LiteLLM's config.yaml: the benchmark's model on the mock, its documented production
    settings (no debug logging); keys come from the environment, never the file."""
    return f"""# Written by benches/peers/run.py for one run.
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://{upstream}/v1
      api_key: os.environ/BENCH_PROVIDER_KEY
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
litellm_settings:
  set_verbose: false
  request_timeout: 600
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_seconds(pid):
    """CPU seconds (utime + stime) of a process and all its live descendants: LiteLLM's whole
    server, whatever workers or helpers it forks."""
    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += compare.stat_seconds(f"/proc/{p}/stat")
        except OSError:
            continue
        todo += children.get(p, [])
    return {"total": total}


def start_litellm(stack, litellm, upstream, master_key, provider_key):
    """LiteLLM's proxy pinned to core 0; returns (process, listener) once it answers."""
    config = os.path.join(stack.dir, "litellm.yaml")
    with open(config, "w") as f:
        f.write(litellm_config(upstream))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "LITELLM_", "REDIS_"))}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_MODE="PRODUCTION",
               LITELLM_MASTER_KEY=master_key, BENCH_PROVIDER_KEY=provider_key)
    p = stack.spawn("litellm", stack.pinned(0, [
        litellm, "--config", config, "--host", "127.0.0.1", "--port", str(port),
        "--num_workers", "1", "--telemetry", "False"]), env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        if p.poll() is not None:
            tail = open(os.path.join(stack.dir, "litellm.log"), errors="replace").read()[-2000:]
            raise Fail(f"LiteLLM exited ({p.returncode}):\n{tail}")
        try:
            if compare.http("GET", f"http://127.0.0.1:{port}/health/liveliness", timeout=2)[0] == 200:
                return p, f"127.0.0.1:{port}"
        except OSError:
            pass
        time.sleep(0.5)
    raise Fail("LiteLLM never answered /health/liveliness")


def versions(litellm_python, outputs):
    out = subprocess.run([litellm_python, "-c", (
        "import importlib.metadata as m, json, platform; print(json.dumps({p: m.version(p) for p in "
        "('litellm', 'uvicorn', 'uvloop', 'fastapi')} | {'python': platform.python_version()}))")],
        capture_output=True, check=False)
    found = json.loads(out.stdout) if out.returncode == 0 else {}
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, check=False)
    found["wrk"] = (wrk.stdout or wrk.stderr).decode(errors="replace").split(" [")[0].replace("wrk ", "")
    git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, check=False)
    # The files this bench writes do not count as changes to what was measured.
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--", "."]
                           + [":!" + os.path.relpath(os.path.abspath(o), ROOT) for o in outputs],
                           capture_output=True, check=False).stdout.strip()
    found["tollgate"] = git.stdout.decode().strip() + (" (uncommitted changes)" if dirty else "")
    return found


def summarize(results, conns):
    """Per connection count and variant: medians and the added latency over the direct mock."""
    out = {}
    for c in conns:
        direct = results[("direct", c)]
        for v in VARIANTS:
            rows = results[(v, c)]
            s = {k: statistics.median(r[k] for r in rows) for k in ("rps", "p50_ms", "p99_ms")}
            s["requests"] = sum(r["requests"] for r in rows)
            for k in ("cpu_us", "worker_us", "main_us", "control_plane_us"):
                if k in rows[0]:
                    s[k] = statistics.median(r[k] for r in rows)
            for q in ("p50", "p99"):
                s[f"added_{q}_ms"] = statistics.median(
                    r[f"{q}_ms"] - d[f"{q}_ms"] for r, d in zip(rows, direct))
            out[(v, c)] = s
    return out


def ratios(med, lo, hi):
    t, l, e = (med[("tollgate", lo)], med[("litellm", lo)], med[("envoy", lo)])
    own = t["added_p50_ms"] - e["added_p50_ms"]
    latency = l["added_p50_ms"] / t["added_p50_ms"] if t["added_p50_ms"] > 0 else float("inf")
    throughput = med[("tollgate", hi)]["rps"] / med[("litellm", hi)]["rps"]
    return {
        "latency": latency,
        "throughput": throughput,
        "cpu": med[("litellm", hi)]["cpu_us"] / med[("tollgate", hi)]["cpu_us"],
        "envoy_added": e["added_p50_ms"],
        "tollgate_own": own,
        "latency_own": l["added_p50_ms"] / own if own > 0 else float("inf"),
        "latency_ceiling": l["added_p50_ms"] / e["added_p50_ms"] if e["added_p50_ms"] > 0 else float("inf"),
        "envoy_throughput": med[("envoy", hi)]["rps"] / med[("litellm", hi)]["rps"],
    }


def report(args, conns, info, results, checks, command):
    med = summarize(results, conns)
    lo, hi = min(conns), max(conns)
    x = ratios(med, lo, hi)
    met = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    lines = [
        f"Rerun: `{command}` (about {info['minutes']} min with the build done; `--dry-run` checks the configs only).",
        "",
        f"- Date: {info['date']}; load average {info['load_before']} before, {info['load_after']} after "
        "(a shared machine: compare ratios, measured in the same run)",
        f"- Machine: {info['nproc']} cores, {info['cpu']}, Linux {info['kernel']}",
        f"- Versions: Tollgate {info['tollgate']}; Envoy {info['envoy']}; LiteLLM {info.get('litellm', '?')} "
        f"(`litellm[proxy]`, uvicorn {info.get('uvicorn', '?')}, uvloop {info.get('uvloop', '?')}, "
        f"Python {info.get('python', '?')}); wrk {info['wrk']}",
        "- Pinning: each proxy on core 0 (Envoy `--concurrency 1`; LiteLLM `--num_workers 1`, one uvicorn "
        "process, the production setting LiteLLM's docs give for one core); wrk, the mock provider "
        "(1 thread) and Tollgate's control plane on core 1",
        f"- Load: `wrk -t 1 -c N -d {args.duration}s --latency -s benches/load/chat.lua` for N in "
        f"{', '.join(map(str, conns))}, after a 2 s warm-up, rounds: {args.rounds}, the order rotating each round",
        "- LiteLLM: no database (so it prices each answer but enforces no budget: its budgets need "
        "PostgreSQL), master key auth, `LITELLM_LOG=ERROR`, `LITELLM_MODE=PRODUCTION`, "
        "`LITELLM_LOCAL_MODEL_COST_MAP=True`, `set_verbose: false`",
        "- Tollgate: `envoy/tollgate.yaml` as shipped; a virtual key whose chain carries a budget, "
        "every request metered and its usage event sent to the control plane",
        f"- Check: {checks}",
        "",
        "| proxy | connections | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | proxy CPU µs / request | requests |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in conns:
        for v in VARIANTS:
            m = med[(v, c)]
            added = ("—", "—") if v == "direct" else (f"{m['added_p50_ms']:+.3f}", f"{m['added_p99_ms']:+.3f}")
            cpu = f"{m['cpu_us']:,.1f}" if "cpu_us" in m else "—"
            lines.append(f"| {LABELS[v]} | {c} | {m['rps']:,.0f} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | "
                         f"{added[0]} | {added[1]} | {cpu} | {m['requests']:,} |")
    lines += [
        "",
        "Ratios (medians of this run):",
        "",
        f"- **Added p50 at {lo} connection, LiteLLM / Tollgate: {x['latency']:.1f}×** "
        f"(goal ≥ {GOAL}×: {met(x['latency'] >= GOAL)})",
        f"- **Throughput at {hi} connections, Tollgate / LiteLLM: {x['throughput']:.1f}×** "
        f"(goal ≥ {GOAL}×: {met(x['throughput'] >= GOAL)})",
        f"- Proxy CPU per request at {hi} connections, LiteLLM / Tollgate: {x['cpu']:.1f}×",
        "- Envoy CPU per request by thread, worker / main (where Tollgate's sync service runs): "
        + "; ".join(f"{LABELS[v].split(' (')[0]} at {c}: {med[(v, c)]['worker_us']:.1f} / {med[(v, c)]['main_us']:.1f} µs"
                    for v in ("envoy", "tollgate") for c in conns),
        "- Tollgate's control plane, ingesting every usage event on core 1 (beside wrk and the mock, "
        "so its work is in Tollgate's latency and not in LiteLLM's, which records nothing): "
        + ", ".join(f"{med[('tollgate', c)]['control_plane_us']:.1f} µs CPU per request at {c}" for c in conns),
        f"- Where Tollgate's added p50 at {lo} connection goes: Envoy with no filter adds "
        f"{x['envoy_added'] * 1000:+.0f} µs over the direct call, Tollgate {x['tollgate_own'] * 1000:+.0f} µs "
        f"over Envoy; LiteLLM's added p50 / Tollgate's own part: {x['latency_own']:.0f}×; a filter that "
        f"cost nothing would reach {x['latency_ceiling']:.0f}× (LiteLLM's added p50 / bare Envoy's)",
        f"- Throughput at {hi} connections, Envoy with no filter / LiteLLM: {x['envoy_throughput']:.0f}× "
        "(the most any Envoy filter could reach here)",
        "",
        "Every round:",
        "",
        "| round | connections | proxy | req/s | p50 ms | p99 ms | CPU µs / request |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in range(args.rounds):
        for c in conns:
            for v in VARIANTS:
                m = results[(v, c)][r]
                cpu = f"{m['cpu_us']:,.1f}" if "cpu_us" in m else "—"
                lines.append(f"| {r + 1} | {c} | {v} | {m['rps']:,.0f} | {m['p50_ms']:.3f} | "
                             f"{m['p99_ms']:.3f} | {cpu} |")
    return "\n".join(lines), x


def write_block(path, block, heading):
    """Replaces what stands between BEGIN and END in `path`; where they are missing, appends
    `heading` and the markers. Nothing else in the file changes."""
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + BEGIN + "\n" + block + "\n" + END + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{BEGIN}\n{block}\n{END}\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def dry_run(args, wasm_dir):
    """Renders every config this bench starts, from placeholders: a template that gained a
    variable, a moved file or a broken import fails here rather than at the next real run."""
    stack = compare.Stack(False)
    try:
        upstream = "127.0.0.1:9"
        common = compare.envoy_values(upstream)
        cp = argparse.Namespace(port="9")
        secrets_dir = compare.write_secrets(stack.dir, "tg-dataplane-dry", "sk-dry")
        for name, yaml in [("baseline-none", compare.render(os.path.join(ROOT, "envoy/baseline-none.yaml"), common)),
                           ("tollgate", compare.tollgate_yaml(common, cp, wasm_dir, secrets_dir))]:
            if b"${" in yaml or b"127.0.0.1" not in yaml:
                raise Fail(f"{name}.yaml did not render")
        config = litellm_config(upstream)
        if "os.environ/LITELLM_MASTER_KEY" not in config or f"http://{upstream}/v1" not in config:
            raise Fail("LiteLLM's config did not render")
        for path in (os.path.join(ROOT, "benches/load/chat.lua"), os.path.join(HERE, "requirements.txt"),
                     args.out, args.readme):
            if not os.path.exists(path):
                raise Fail(f"{path} is missing")
        for path in (args.out, args.readme):
            text = open(path, encoding="utf-8").read()
            if (BEGIN in text) != (END in text):
                raise Fail(f"{path}: one of the report's markers is missing")
    finally:
        stack.close()
    log("dry run: the configs render and every input exists")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8, help="seconds per measured run")
    ap.add_argument("--connections", default="1,16", help="comma-separated wrk connection counts")
    ap.add_argument("--litellm", default=os.path.join(HERE, ".venv", "bin", "litellm"),
                    help="LiteLLM's CLI, in its own venv (run.sh installs it)")
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--readme", default=os.path.join(HERE, "README.md"))
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
    ap.add_argument("--command", default="bash benches/peers/run.sh", help="the rerun command to print")
    ap.add_argument("--dry-run", action="store_true", help="render the configs, start nothing")
    args = ap.parse_args()
    conns = sorted({int(c) for c in args.connections.split(",")})
    if args.rounds < 1 or args.duration < 1 or not conns or conns[0] < 1:
        raise Fail("--rounds, --duration and --connections must be positive")
    release = os.path.join(args.target_dir, "release")
    wasm_dir = os.path.join(args.target_dir, "wasm32-wasip1", "release")
    if args.dry_run:
        return dry_run(args, wasm_dir)
    if not os.access(args.litellm, os.X_OK):
        raise Fail(f"no LiteLLM at {args.litellm}: run bash benches/peers/run.sh")

    pin = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    stack = compare.Stack(pin)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    load_before = "%.1f" % os.getloadavg()[0]
    try:
        provider_key = "sk-bench-" + secrets.token_hex(8)
        upstream = compare.start_provider(stack, release, expect_key=provider_key)
        cp = compare.ControlPlane(stack, release)
        key = cp.key("peers", 1)
        common = compare.envoy_values(upstream)
        secrets_dir = compare.write_secrets(stack.dir, cp.dataplane, provider_key)
        envoy_p, _, envoy_at = compare.start_envoy(
            stack, "none", compare.render(os.path.join(ROOT, "envoy/baseline-none.yaml"), common),
            os.getpid() % 50000 * 10)
        tollgate_p, _, tollgate_at = compare.start_envoy(
            stack, "tollgate", compare.tollgate_yaml(common, cp, wasm_dir, secrets_dir),
            os.getpid() % 50000 * 10 + 1)
        master_key = "sk-litellm-" + secrets.token_hex(16)
        log("starting LiteLLM's proxy (imports take a while)")
        litellm_p, litellm_at = start_litellm(stack, args.litellm, upstream, master_key, provider_key)
        time.sleep(3)  # Tollgate's first snapshot (sync interval 1 s), then the worker's tick

        # (listener, client key, CPU of the proxy) per variant.
        targets = {
            "direct": (upstream, provider_key, dict),
            # Envoy's CPU: the whole process, its worker thread and its main thread (where
            # Tollgate's sync service runs).
            "envoy": (envoy_at, provider_key, lambda: compare.cpu_seconds(envoy_p.pid)),
            # Tollgate's control plane ingests the usage events on core 1, beside wrk and the mock.
            "tollgate": (tollgate_at, key["secret"],
                         lambda: dict(compare.cpu_seconds(tollgate_p.pid),
                                      control_plane=compare.stat_seconds(f"/proc/{cp.proc.pid}/stat"))),
            "litellm": (litellm_at, master_key, lambda: tree_seconds(litellm_p.pid)),
        }
        headers = {v: compare.first_chat(at, k, LABELS[v]) for v, (at, k, _) in targets.items()}
        if headers["tollgate"].get("x-tollgate-budget-remaining") is None:
            raise Fail("Tollgate answered without x-tollgate-budget-remaining: the request was not metered")
        cost = headers["litellm"].get("x-litellm-response-cost")
        if not cost or float(cost) <= 0:
            raise Fail(f"LiteLLM did not price the request (x-litellm-response-cost: {cost!r})")
        served = {"tollgate": 1}

        results = {(v, c): [] for v in VARIANTS for c in conns}
        for r in range(args.rounds):
            for c in conns:
                shift = (r + c) % len(VARIANTS)
                for v in VARIANTS[shift:] + VARIANTS[:shift]:
                    at, client_key, cpu = targets[v]
                    m = compare.measure(stack, f"{v} at {c} connections", f"http://{at}", args.duration,
                                        c, client_key, cpu)
                    results[(v, c)].append(m)
                    if v == "tollgate":
                        served["tollgate"] += m["served"]
                    cpu_text = f"{m['cpu_us']:9.1f} µs CPU/request" if "cpu_us" in m else ""
                    log(f"round {r + 1}/{args.rounds} c={c:<3d} {v:9s} {m['rps']:9.0f} req/s  "
                        f"p50 {m['p50_ms']:7.3f} ms  p99 {m['p99_ms']:7.3f} ms  {cpu_text}")

        held, total = cp.await_ledger({"tollgate": key["id"]}, served, 2 * args.rounds * sum(conns))
        checks = (f"every run answered 2xx only with no socket errors (the mock requires the provider key, "
                  f"so both proxies swapped it in); Tollgate's ledger holds {held:,} usage events for the "
                  f"{total:,} requests it completed (requests cut off at the end of a run are metered too); "
                  f"LiteLLM priced the probe request (x-litellm-response-cost {float(cost):.8f} USD)")
        info = compare.machine()
        info.update(versions(os.path.join(os.path.dirname(args.litellm), "python"), (args.out, args.readme)))
        info.update({
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_before": load_before,
            "load_after": "%.1f" % os.getloadavg()[0],
            "minutes": max(1, round((time.time() - started) / 60)),
        })
        if not pin:
            log("no pinning (fewer than 2 cores or no taskset): figures are not comparable to pinned runs")
        command = args.command + "".join(
            f" --{name} {value}" for name, value, default in
            [("rounds", args.rounds, 3), ("duration", args.duration, 8),
             ("connections", ",".join(map(str, conns)), "1,16")] if value != default)
        block, x = report(args, conns, info, results, checks, command)
        write_block(args.out, block, SECTION)
        write_block(args.readme, block, "## Results")
        log(f"added p50 at {conns[0]}: LiteLLM / Tollgate = {x['latency']:.1f}×; throughput at {conns[-1]}: "
            f"Tollgate / LiteLLM = {x['throughput']:.1f}×; wrote {args.out} and {args.readme}")
    finally:
        stack.close()


if __name__ == "__main__":
    compare.run(main, "peers")
