"""The official `openai`, `anthropic` and `google-genai` SDKs through Envoy with the Tollgate
filter.

Usage: TOLLGATE_KEY=tg-... .venv/bin/python tests/e2e/python/sdk_e2e.py CASE BASE_URL [TEXT] [N]

The SDKs are used unchanged except for `base_url` and the virtual key (default retries,
default timeouts). Each case prints one JSON line per request: the request as the client
built it, the usage the SDK parsed, and the Tollgate response headers; the Rust tests
(tests/e2e/tests/sdk.rs) compare them with the ledger and with the price computed
independently; `done_at` (Unix seconds, when the response was complete) times the ledger. Any unexpected exception exits non-zero with a traceback.

Cases:
  openai-chat       one Chat Completions request (JSON)
  openai-stream     one streamed Chat Completions request WITHOUT stream_options: usage must
                    still arrive (the filter injects stream_options.include_usage)
  openai-chat-h2, openai-stream-h2   the same over HTTP/2 (the SDK's own httpx client with
                    http2=True, prior knowledge over cleartext): Envoy takes h2c on the listener
  openai-responses, openai-responses-stream   one Responses API request (JSON, streamed)
  openai-embeddings one Embeddings request (the SDK's default base64 encoding)
  anthropic-messages, anthropic-stream   the same with the Anthropic SDK
  gemini-generate, gemini-stream         the same with google-genai's generate_content and
                    generate_content_stream (default api_version, v1beta)
  gemini-v1-generate, gemini-v1-stream   the same with api_version="v1"
  azure-chat, azure-stream, azure-embeddings   openai.AzureOpenAI (azure_endpoint = BASE_URL,
                    api_version AZURE_API_VERSION): the deployment surface, the virtual key in
                    `api-key`; the deployments are named after their models (envoy/tollgate.yaml)
  azure-v1-chat, azure-v1-responses      openai.OpenAI on Azure's v1 surface
                    (base_url BASE_URL/openai/v1/), the deployment in `model`
  vertex-gemini-generate, vertex-gemini-stream   google-genai with vertexai=True (project
                    VERTEX_PROJECT, location VERTEX_LOCATION, base_url BASE_URL), the virtual key
                    as its OAuth access token (a bearer)
  vertex-anthropic-messages, vertex-anthropic-stream   anthropic.AnthropicVertex (base_url
                    BASE_URL/v1, access_token the virtual key), model VERTEX_ANTHROPIC_MODEL
  bedrock-converse, bedrock-converse-stream   boto3's bedrock-runtime converse and
                    converse_stream (endpoint_url BASE_URL), the virtual key as the client's AWS
                    access key id (its SigV4 Credential); Envoy signs anew with the platform's
  bedrock-invoke, bedrock-invoke-stream   boto3's invoke_model and
                    invoke_model_with_response_stream with an Anthropic Messages body
  bedrock-anthropic-messages, bedrock-anthropic-stream   anthropic.AnthropicBedrock
                    (api_key the virtual key: a Bedrock API key, a bearer; base_url BASE_URL)
  bedrock-exhaust   boto3 converse until the budget refuses one: its ThrottlingException
  openai-exhaust, anthropic-exhaust, azure-exhaust   requests until the budget refuses one (at most N):
                    the last line is the SDK's RateLimitError, with our message
"""
import json
import os
import sys
import time

import anthropic
import openai
from google import genai
from google.genai import types as genai_types

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"
GEMINI_MODEL = "gemini-2.5-flash"
AZURE_API_VERSION = "2024-10-21"
VERTEX_PROJECT = "acme-prod"
VERTEX_LOCATION = "us-east5"
VERTEX_ANTHROPIC_MODEL = "claude-haiku-4-5@20251001"
BEDROCK_REGION = "us-east-1"
# Converse serves every vendor's models; a region profile (us.) bills 10 % over the base model.
BEDROCK_NOVA_MODEL = "amazon.nova-pro-v1:0"
BEDROCK_HAIKU_PROFILE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
BEDROCK_INVOKE_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"


def emit(**fields):
    # done_at: when the response was complete (Unix seconds), for the ledger-latency check.
    print(json.dumps(dict(fields, done_at=time.time())), flush=True)


def tollgate_headers(headers, raw=None):
    # accept_encoding: what the SDK sent by default (httpx: gzip, deflate...); content_encoding:
    # how the answer reached it (Envoy's compressor gzips JSON for such a client).
    sent = raw.http_response.request.headers.get("accept-encoding") if raw is not None else None
    return {
        "remaining": headers.get("x-tollgate-budget-remaining"),
        "budget": headers.get("x-tollgate-budget"),
        "accept_encoding": sent,
        "content_encoding": headers.get("content-encoding"),
    }


def openai_chat(client, text, stream=False, http_version=None):
    req = {"model": OPENAI_MODEL, "max_tokens": 24,
           "messages": [{"role": "user", "content": text}]}
    if stream:
        req["stream"] = True  # and no stream_options: the filter must add include_usage
    raw = client.chat.completions.with_raw_response.create(**req)
    if http_version:
        got = raw.http_response.http_version
        assert got == http_version, f"spoke {got}, not {http_version}"
    if not stream:
        r = raw.parse()
        return dict(api="openai_chat", request=req, usage=r.usage.model_dump(),
                    text=r.choices[0].message.content, **tollgate_headers(raw.headers, raw))
    usage, usage_chunks, out = None, 0, ""
    for chunk in raw.parse():
        if chunk.usage is not None:
            usage, usage_chunks = chunk.usage.model_dump(), usage_chunks + 1
        for c in chunk.choices:
            out += c.delta.content or ""
    assert usage_chunks == 1, f"expected exactly one usage chunk, got {usage_chunks}"
    return dict(api="openai_chat", request=req, usage=usage, text=out,
                **tollgate_headers(raw.headers, raw))


def openai_responses(client, text, stream=False):
    req = {"model": OPENAI_MODEL, "max_output_tokens": 24, "input": text}
    if stream:
        req["stream"] = True
    raw = client.responses.with_raw_response.create(**req)
    if not stream:
        r = raw.parse()
        return dict(api="openai_responses", request=req, usage=r.usage.model_dump(),
                    text=r.output_text, **tollgate_headers(raw.headers, raw))
    usage, out = None, ""
    for ev in raw.parse():
        if ev.type == "response.output_text.delta":
            out += ev.delta
        elif ev.type == "response.completed":
            usage = ev.response.usage.model_dump()
    assert usage is not None, "no response.completed event"
    return dict(api="openai_responses", request=req, usage=usage, text=out,
                **tollgate_headers(raw.headers, raw))


def openai_embeddings(client, text):
    req = {"model": "text-embedding-3-small", "input": text}
    raw = client.embeddings.with_raw_response.create(**req)
    r = raw.parse()
    return dict(api="openai_embeddings", request=req, usage=r.usage.model_dump(),
                text=f"{len(r.data[0].embedding)} dimensions", **tollgate_headers(raw.headers, raw))


def anthropic_messages(client, text, stream=False, model=ANTHROPIC_MODEL):
    req = {"model": model, "max_tokens": 24,
           "messages": [{"role": "user", "content": text}]}
    if stream:
        req["stream"] = True
    raw = client.messages.with_raw_response.create(**req)
    if not stream:
        r = raw.parse()
        return dict(api="anthropic_messages", request=req, usage=r.usage.model_dump(),
                    text="".join(b.text for b in r.content if b.type == "text"),
                    **tollgate_headers(raw.headers, raw))
    usage, out = {}, ""
    for ev in raw.parse():
        if ev.type == "message_start":
            usage.update(ev.message.usage.model_dump())
        elif ev.type == "message_delta":
            usage["output_tokens"] = ev.usage.output_tokens
        elif ev.type == "content_block_delta" and ev.delta.type == "text_delta":
            out += ev.delta.text
    return dict(api="anthropic_messages", request=req, usage=usage, text=out,
                **tollgate_headers(raw.headers, raw))


def gemini_generate(client, text, stream=False):
    # The REST body google-genai builds from these arguments (the mock's usage counts its text).
    req = {"model": GEMINI_MODEL, "contents": [{"role": "user", "parts": [{"text": text}]}],
           "generationConfig": {"maxOutputTokens": 24}}
    config = genai_types.GenerateContentConfig(max_output_tokens=24)
    if not stream:
        r = client.models.generate_content(model=GEMINI_MODEL, contents=text, config=config)
        chunks = [r]
    else:
        chunks = list(client.models.generate_content_stream(
            model=GEMINI_MODEL, contents=text, config=config))
    usage = chunks[-1].usage_metadata
    out = "".join(c.text or "" for c in chunks)
    http = chunks[0].sdk_http_response
    headers = {k.lower(): v for k, v in ((http.headers or {}) if http else {}).items()}
    return dict(api="gemini", request=req,
                usage={"input_tokens": usage.prompt_token_count,
                       "output_tokens": usage.candidates_token_count},
                text=out, **tollgate_headers(headers))


def bedrock_client(base, key):
    """boto3's bedrock-runtime client with the virtual key as its access key id (it signs with
    SigV4 as every AWS SDK does; a Bedrock API key, AWS_BEARER_TOKEN_BEDROCK, works too but
    boto3 sends one over HTTPS only), and what it sent as Accept-Encoding."""
    import boto3
    client = boto3.client("bedrock-runtime", region_name=BEDROCK_REGION, endpoint_url=base,
                          aws_access_key_id=key, aws_secret_access_key="any-secret")
    sent = {}
    client.meta.events.register(
        "before-send", lambda request, **_: sent.update(
            accept_encoding=request.headers.get("Accept-Encoding"),
            authorization=(request.headers.get("Authorization") or b"")[:7]))
    return client, sent


def bedrock_headers(response, sent):
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    accept = sent.get("accept_encoding")
    return {
        "remaining": headers.get("x-tollgate-budget-remaining"),
        "budget": headers.get("x-tollgate-budget"),
        "accept_encoding": accept.decode() if isinstance(accept, bytes) else accept,
        "content_encoding": headers.get("content-encoding"),
    }


def bedrock_converse(client, sent, text, stream=False, model=BEDROCK_NOVA_MODEL):
    req = {"messages": [{"role": "user", "content": [{"text": text}]}],
           "inferenceConfig": {"maxTokens": 24}}
    if not stream:
        r = client.converse(modelId=model, **req)
        usage = r["usage"]
        out = "".join(c.get("text", "") for c in r["output"]["message"]["content"])
    else:
        r = client.converse_stream(modelId=model, **req)
        usage, out = None, ""
        for ev in r["stream"]:
            if "contentBlockDelta" in ev:
                out += ev["contentBlockDelta"]["delta"].get("text", "")
            elif "metadata" in ev:
                usage = ev["metadata"]["usage"]
    # The body the mock reads, with the path's model for the price.
    return dict(api="bedrock_converse", request=dict(req, model=model),
                usage={"input_tokens": usage["inputTokens"], "output_tokens": usage["outputTokens"]},
                text=out, **bedrock_headers(r, sent))


def bedrock_invoke(client, sent, text, stream=False, model=BEDROCK_INVOKE_MODEL):
    req = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 24,
           "messages": [{"role": "user", "content": text}]}
    usage, out = {}, ""
    if not stream:
        r = client.invoke_model(modelId=model, body=json.dumps(req))
        answer = json.loads(r["body"].read())
        usage = answer["usage"]
        out = "".join(b["text"] for b in answer["content"] if b["type"] == "text")
    else:
        r = client.invoke_model_with_response_stream(modelId=model, body=json.dumps(req))
        for ev in r["body"]:
            e = json.loads(ev["chunk"]["bytes"])
            if e["type"] == "message_start":
                usage.update(e["message"]["usage"])
            elif e["type"] == "message_delta":
                usage["output_tokens"] = e["usage"]["output_tokens"]
            elif e["type"] == "content_block_delta" and e["delta"]["type"] == "text_delta":
                out += e["delta"]["text"]
    return dict(api="bedrock_invoke", request=dict(req, model=model), usage=usage, text=out,
                **bedrock_headers(r, sent))


def bedrock_exhaust(client, sent, text, limit):
    from botocore.exceptions import ClientError
    for i in range(limit):
        try:
            emit(case="allowed", **bedrock_converse(client, sent, f"{text} #{i}"))
        except ClientError as e:
            meta = e.response["ResponseMetadata"]
            emit(case="rate_limited",
                 error_class=f"{type(e).__module__}.{type(e).__qualname__}",
                 code=e.response["Error"]["Code"], status=meta["HTTPStatusCode"],
                 message=str(e), attempts=meta.get("RetryAttempts"),
                 budget=meta["HTTPHeaders"].get("x-tollgate-budget"))
            return
    sys.exit(f"no throttling error after {limit} requests")


def exhaust(send, rate_limit_error, text, limit):
    for i in range(limit):
        try:
            emit(case="allowed", **send(f"{text} #{i}"))
        except rate_limit_error as e:
            emit(case="rate_limited",
                 error_class=f"{type(e).__module__}.{type(e).__qualname__}",
                 status=e.status_code, message=str(e), body=e.body,
                 retry_after=e.response.headers.get("retry-after"),
                 budget=e.response.headers.get("x-tollgate-budget"))
            return
    sys.exit(f"no rate-limit error after {limit} requests")


def main():
    case, base = sys.argv[1], sys.argv[2]
    text = sys.argv[3] if len(sys.argv) > 3 else "Hello through Envoy"
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    key = os.environ["TOLLGATE_KEY"]
    oa = openai.OpenAI(base_url=f"{base}/v1", api_key=key)
    an = anthropic.Anthropic(base_url=base, api_key=key)
    if case == "openai-chat":
        emit(case=case, **openai_chat(oa, text))
    elif case == "openai-stream":
        emit(case=case, **openai_chat(oa, text, stream=True))
    elif case in ("openai-chat-h2", "openai-stream-h2"):
        h2 = openai.OpenAI(base_url=f"{base}/v1", api_key=key, http_client=openai.DefaultHttpxClient(
            http1=False, http2=True))
        emit(case=case, **openai_chat(h2, text, stream=case == "openai-stream-h2",
                                      http_version="HTTP/2"))
    elif case == "openai-responses":
        emit(case=case, **openai_responses(oa, text))
    elif case == "openai-responses-stream":
        emit(case=case, **openai_responses(oa, text, stream=True))
    elif case == "openai-embeddings":
        emit(case=case, **openai_embeddings(oa, text))
    elif case == "anthropic-messages":
        emit(case=case, **anthropic_messages(an, text))
    elif case == "anthropic-stream":
        emit(case=case, **anthropic_messages(an, text, stream=True))
    elif case.startswith("gemini-"):
        # Base URL and virtual key only; default settings otherwise.
        opts = {"base_url": base}
        if case.startswith("gemini-v1-"):
            opts["api_version"] = "v1"
        gm = genai.Client(api_key=key, http_options=genai_types.HttpOptions(**opts))
        if case in ("gemini-generate", "gemini-v1-generate"):
            emit(case=case, **gemini_generate(gm, text))
        elif case in ("gemini-stream", "gemini-v1-stream"):
            emit(case=case, **gemini_generate(gm, text, stream=True))
        else:
            sys.exit(f"unknown case {case!r}")
    elif case.startswith("vertex-gemini-"):
        from google.oauth2.credentials import Credentials
        gm = genai.Client(vertexai=True, project=VERTEX_PROJECT, location=VERTEX_LOCATION,
                          credentials=Credentials(token=key),
                          http_options=genai_types.HttpOptions(base_url=base))
        emit(case=case, **gemini_generate(gm, text, stream=case == "vertex-gemini-stream"))
    elif case.startswith("vertex-anthropic-"):
        av = anthropic.AnthropicVertex(region=VERTEX_LOCATION, project_id=VERTEX_PROJECT,
                                       access_token=key, base_url=f"{base}/v1")
        emit(case=case, **anthropic_messages(av, text, stream=case == "vertex-anthropic-stream",
                                             model=VERTEX_ANTHROPIC_MODEL))
    elif case.startswith("bedrock-anthropic-"):
        ab = anthropic.AnthropicBedrock(api_key=key, aws_region=BEDROCK_REGION, base_url=base)
        emit(case=case, **anthropic_messages(ab, text, stream=case == "bedrock-anthropic-stream",
                                             model=BEDROCK_HAIKU_PROFILE))
    elif case.startswith("bedrock-"):
        br, sent = bedrock_client(base, key)
        if case == "bedrock-converse":
            emit(case=case, **bedrock_converse(br, sent, text))
        elif case == "bedrock-converse-stream":
            emit(case=case, **bedrock_converse(br, sent, text, stream=True,
                                               model=BEDROCK_HAIKU_PROFILE))
        elif case == "bedrock-invoke":
            emit(case=case, **bedrock_invoke(br, sent, text))
        elif case == "bedrock-invoke-stream":
            emit(case=case, **bedrock_invoke(br, sent, text, stream=True))
        elif case == "bedrock-exhaust":
            bedrock_exhaust(br, sent, text, limit)
        else:
            sys.exit(f"unknown case {case!r}")
    elif case.startswith("azure-v1-"):
        v1 = openai.OpenAI(base_url=f"{base}/openai/v1/", api_key=key)
        if case == "azure-v1-chat":
            emit(case=case, **openai_chat(v1, text))
        elif case == "azure-v1-responses":
            emit(case=case, **openai_responses(v1, text))
        else:
            sys.exit(f"unknown case {case!r}")
    elif case.startswith("azure-"):
        az = openai.AzureOpenAI(azure_endpoint=base, api_key=key, api_version=AZURE_API_VERSION)
        if case == "azure-exhaust":
            exhaust(lambda t: openai_chat(az, t), openai.RateLimitError, text, limit)
        elif case == "azure-chat":
            emit(case=case, **openai_chat(az, text))
        elif case == "azure-stream":
            emit(case=case, **openai_chat(az, text, stream=True))
        elif case == "azure-embeddings":
            emit(case=case, **openai_embeddings(az, text))
        else:
            sys.exit(f"unknown case {case!r}")
    elif case == "openai-exhaust":
        exhaust(lambda t: openai_chat(oa, t), openai.RateLimitError, text, limit)
    elif case == "anthropic-exhaust":
        exhaust(lambda t: anthropic_messages(an, t), anthropic.RateLimitError, text, limit)
    else:
        sys.exit(f"unknown case {case!r}")


if __name__ == "__main__":
    main()
