"""The official `openai` and `anthropic` Python SDKs against the mock upstream.

Usage: .venv/bin/python tests/upstream/sdk_check.py http://127.0.0.1:PORT

Each case sends one request with the unmodified SDK (only base_url and a dummy key set) and
prints one JSON line: the case name, the API, the request fields the usage rule reads, the
x-mock-* headers sent, the usage object as the SDK parsed it, and the reply text the SDK
assembled. tests/upstream/tests/sdk.rs runs this and compares every usage with
tollgate_upstream::usage_for, so a shape the SDKs cannot parse, or usage they read differently,
fails the Rust test. Any SDK exception fails the script (non-zero exit, traceback on stderr).
"""
import json
import sys

import anthropic
import openai


def emit(case, api, request, headers, usage, text):
    print(json.dumps({"case": case, "api": api, "request": request, "headers": headers,
                      "usage": usage, "text": text}), flush=True)


def main(base):
    oa = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-mock", max_retries=0, timeout=10)
    an = anthropic.Anthropic(base_url=base, api_key="sk-ant-mock", max_retries=0, timeout=10)

    # Chat Completions, JSON, with cache and reasoning controls.
    req = {"model": "gpt-4o-mini",
           "messages": [{"role": "system", "content": "You are terse."},
                        {"role": "user", "content": "How many tokens is this?"}],
           "max_completion_tokens": 12}
    headers = {"x-mock-cached-tokens": "3", "x-mock-reasoning-tokens": "2"}
    r = oa.chat.completions.create(**req, extra_headers=headers)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    emit("chat_json", "openai_chat", req, headers, r.usage.model_dump(),
         r.choices[0].message.content)

    # Chat Completions, streamed, include_usage: usage arrives on the last chunk only.
    req = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Stream to me, please."}]}
    text, usage, usage_chunks = "", None, 0
    for chunk in oa.chat.completions.create(**req, stream=True,
                                            stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage, usage_chunks = chunk.usage.model_dump(), usage_chunks + 1
            assert chunk.choices == []
        for c in chunk.choices:
            text += c.delta.content or ""
    assert usage_chunks == 1, usage_chunks
    emit("chat_stream_include_usage", "openai_chat", req, {}, usage, text)

    # Chat Completions, streamed, without include_usage: no usage at all.
    seen = [c.usage for c in oa.chat.completions.create(**req, stream=True)]
    assert all(u is None for u in seen) and len(seen) > 2, seen

    # Responses, JSON.
    req = {"model": "gpt-4.1-mini", "instructions": "Answer in one line.",
           "input": "What does a tollgate do?"}
    headers = {"x-mock-cached-tokens": "4"}
    r = oa.responses.create(**req, extra_headers=headers)
    assert r.status == "completed", r.status
    emit("responses_json", "openai_responses", req, headers, r.usage.model_dump(), r.output_text)

    # Responses, streamed: typed events, usage on response.completed.
    req = {"model": "gpt-4.1-mini", "input": [{"role": "user", "content": "Stream a reply."}],
           "max_output_tokens": 9}
    text, usage, types = "", None, []
    for ev in oa.responses.create(**req, stream=True):
        types.append(ev.type)
        if ev.type == "response.output_text.delta":
            text += ev.delta
        if ev.type in ("response.completed", "response.incomplete"):
            usage = ev.response.usage.model_dump()
    assert types[0] == "response.created", types
    emit("responses_stream", "openai_responses", req, {}, usage, text)

    # Responses, streamed through the SDK's accumulating helper.
    with oa.responses.stream(model="gpt-4.1-mini", input="Help me stream.") as s:
        final = s.get_final_response()
    emit("responses_stream_helper", "openai_responses",
         {"model": "gpt-4.1-mini", "input": "Help me stream."}, {}, final.usage.model_dump(),
         final.output_text)

    # Anthropic Messages, JSON, with cache reads and writes.
    req = {"model": "claude-mock-1", "max_tokens": 64, "system": "Be brief.",
           "messages": [{"role": "user", "content": "Hello, Claude."}]}
    headers = {"x-mock-cached-tokens": "50", "x-mock-cache-write-5m": "7",
               "x-mock-cache-write-1h": "11"}
    m = an.messages.create(**req, extra_headers=headers)
    assert m.type == "message" and m.role == "assistant" and m.stop_reason == "end_turn"
    emit("messages_json", "anthropic_messages", req, headers, m.usage.model_dump(),
         "".join(b.text for b in m.content))

    # Anthropic Messages, streamed through the SDK's accumulating helper.
    req = {"model": "claude-mock-1", "max_tokens": 5,
           "messages": [{"role": "user", "content": [{"type": "text", "text": "Stream, Claude."}]}]}
    headers = {"x-mock-cached-tokens": "8", "x-mock-cache-write-5m": "2"}
    with an.messages.stream(**req, extra_headers=headers) as s:
        text = "".join(s.text_stream)
        m = s.get_final_message()
    assert m.stop_reason == "max_tokens", m.stop_reason
    emit("messages_stream", "anthropic_messages", req, headers, m.usage.model_dump(), text)

    # Errors in each provider's shape become each SDK's own exception type.
    try:
        oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                   extra_headers={"x-mock-status": "429"})
        raise AssertionError("openai: no RateLimitError")
    except openai.RateLimitError as e:
        assert e.status_code == 429
    try:
        an.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                           extra_headers={"x-mock-status": "529"})
        raise AssertionError("anthropic: no OverloadedError")
    except anthropic.APIStatusError as e:
        assert e.status_code == 529 and e.body["error"]["type"] == "overloaded_error"


if __name__ == "__main__":
    main(sys.argv[1].rstrip("/"))
