#!/usr/bin/env python3
"""Render an Envoy config template: replace every ${NAME} with its value and print the result.

Usage: python3 envoy/render.py TEMPLATE [NAME=VALUE ...] > rendered.yaml
Values come from the NAME=VALUE arguments, else from the environment. Every placeholder must
have a value (the script names the missing ones and exits 2), and values may not contain a
double quote, a backslash or a line break: they land inside YAML and JSON strings, where such a
character would silently change the config. Only ${NAME} with NAME in [A-Z0-9_] is a
placeholder; Envoy's own %FORMAT% operators are left alone. Standard library only (no envsubst,
which is not installed everywhere). The Rust tests use the same rule
(tollgate_upstream::envoy::render).
"""
import os
import re
import sys

PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        sys.stderr.write(__doc__)
        return 2
    values = dict(os.environ)
    for arg in argv[2:]:
        name, sep, value = arg.partition("=")
        if not sep:
            sys.stderr.write(f"render.py: expected NAME=VALUE, got {arg!r}\n")
            return 2
        values[name] = value
    with open(argv[1], encoding="utf-8") as f:
        template = f.read()
    names = sorted(set(PLACEHOLDER.findall(template)))
    missing = [n for n in names if n not in values]
    if missing:
        sys.stderr.write(f"render.py: {argv[1]}: no value for {', '.join(missing)}\n")
        return 2
    bad = [n for n in names if any(c in values[n] for c in '"\\\r\n')]
    if bad:
        sys.stderr.write(f"render.py: value of {', '.join(bad)} contains a quote, backslash or line break\n")
        return 2
    sys.stdout.write(PLACEHOLDER.sub(lambda m: values[m.group(1)], template))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
