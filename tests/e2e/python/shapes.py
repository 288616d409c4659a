"""Sends one LLM request to Envoy in an exact wire shape and prints what came back.

Real clients differ in how a request body ends: HTTP/1.1 with Content-Length, chunked (with or
without trailers), `Expect: 100-continue`, several requests pipelined on one connection; HTTP/2
with END_STREAM on the last DATA frame, with a trailers HEADERS frame (gRPC-style), or reset
before the body ends. The request shape sweep (tests/e2e/tests/request_shapes.rs) sends every
metered API in each of these shapes. The socket work is done here by hand (and with the `h2`
package for HTTP/2 framing) because no HTTP client library lets a caller choose these shapes.

Usage: python shapes.py SPEC_JSON
SPEC_JSON: {"port": P, "proto": "h1"|"h2", "shape": NAME, "path": "/v1/...",
            "headers": [[name, value], ...], "body": "<request body>", "copies": N}
The virtual key is read from the environment (TOLLGATE_KEY) and sent in the header named by
the spec's "key_header" (`authorization` gets "Bearer "). Prints one JSON line per response:
{"status": 200, "headers": {...}, "body": "..."}; status 0 means no response (reset shapes).
"""
import json
import os
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events

TIMEOUT_S = 20


def key_headers(spec):
    name = spec.get("key_header", "authorization")
    key = os.environ["TOLLGATE_KEY"]
    return [(name, "Bearer " + key if name == "authorization" else key)]


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    sock.settimeout(TIMEOUT_S)
    return sock


# --- HTTP/1.1 -------------------------------------------------------------------------------


def h1_head(spec, body, framing):
    lines = [f"POST {spec['path']} HTTP/1.1", f"host: 127.0.0.1:{spec['port']}"]
    for name, value in spec.get("headers", []) + key_headers(spec):
        lines.append(f"{name}: {value}")
    lines.append("content-type: application/json")
    if framing == "length":
        lines.append(f"content-length: {len(body)}")
    else:
        lines.append("transfer-encoding: chunked")
    return ("\r\n".join(lines) + "\r\n").encode()


def chunked(body, trailers):
    out = b""
    # Split into a few chunks, as a streaming client writes.
    step = max(1, len(body) // 3)
    for i in range(0, len(body), step):
        part = body[i:i + step]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    out += b"0\r\n"
    if trailers:
        out += b"x-client-checksum: 1234\r\n"
    return out + b"\r\n"


def read_h1_response(f):
    """One response from a buffered socket file; skips 1xx interim responses."""
    while True:
        status_line = f.readline()
        if not status_line:
            return {"status": 0, "headers": {}, "body": ""}
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = f.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            continue
        break
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int(f.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += f.read(size)
            f.readline()
    elif "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    else:
        body = f.read()
    return {"status": status, "headers": headers, "body": body.decode(errors="replace")}


def h1(spec):
    body = spec["body"].encode()
    shape = spec["shape"]
    sock = connect(spec["port"])
    f = sock.makefile("rb")
    results = []
    if shape == "length":
        sock.sendall(h1_head(spec, body, "length") + b"\r\n" + body)
        results.append(read_h1_response(f))
    elif shape in ("chunked", "chunked_trailers"):
        sock.sendall(h1_head(spec, body, "chunked") + b"\r\n" + chunked(body, shape == "chunked_trailers"))
        results.append(read_h1_response(f))
    elif shape == "expect_continue":
        sock.sendall(h1_head(spec, body, "length") + b"expect: 100-continue\r\n\r\n")
        # A client waits for 100 Continue (or a final answer) before sending the body.
        first = f.peek(12)[:12]
        if first.startswith(b"HTTP/1.1 100"):
            f.readline()
            f.readline()
            sock.sendall(body)
            results.append(read_h1_response(f))
        else:
            results.append(read_h1_response(f))
    elif shape == "pipelined":
        copies = spec.get("copies", 2)
        one = h1_head(spec, body, "length") + b"\r\n" + body
        sock.sendall(one * copies)
        for _ in range(copies):
            results.append(read_h1_response(f))
    elif shape == "reset":
        # Headers and half the body, then the connection is gone.
        sock.sendall(h1_head(spec, body, "length") + b"\r\n" + body[: len(body) // 2])
        time.sleep(0.3)
        sock.close()
        results.append({"status": 0, "headers": {}, "body": ""})
    else:
        raise SystemExit(f"unknown h1 shape {shape!r}")
    sock.close()
    return results


# --- HTTP/2 ---------------------------------------------------------------------------------


def h2_request(spec):
    body = spec["body"].encode()
    shape = spec["shape"]
    sock = connect(spec["port"])
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    sid = conn.get_next_available_stream_id()
    headers = [(":method", "POST"), (":path", spec["path"]), (":authority", f"127.0.0.1:{spec['port']}"),
               (":scheme", "http"), ("content-type", "application/json")]
    headers += [(n.lower(), v) for n, v in spec.get("headers", []) + key_headers(spec)]
    if shape == "end_stream":
        headers.append(("content-length", str(len(body))))
    conn.send_headers(sid, headers)
    if shape == "end_stream":
        conn.send_data(sid, body, end_stream=True)
    elif shape == "trailers":
        half = len(body) // 2
        conn.send_data(sid, body[:half])
        conn.send_data(sid, body[half:])
        conn.send_headers(sid, [("x-client-checksum", "1234")], end_stream=True)
    elif shape == "reset":
        conn.send_data(sid, body[: len(body) // 2])
    else:
        raise SystemExit(f"unknown h2 shape {shape!r}")
    sock.sendall(conn.data_to_send())
    if shape == "reset":
        time.sleep(0.3)
        conn.reset_stream(sid)
        sock.sendall(conn.data_to_send())
        time.sleep(0.3)
        sock.close()
        return [{"status": 0, "headers": {}, "body": ""}]
    status, got, data = 0, {}, b""
    deadline = time.monotonic() + TIMEOUT_S
    done = False
    while not done and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                got = {k: v for k, v in ev.headers}
                status = int(got.get(":status", "0"))
            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and ev.stream_id == sid:
                done = True
        sock.sendall(conn.data_to_send())
    sock.close()
    return [{"status": status, "headers": got, "body": data.decode(errors="replace")}]


def main():
    spec = json.loads(sys.argv[1])
    results = h1(spec) if spec["proto"] == "h1" else h2_request(spec)
    for r in results:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
