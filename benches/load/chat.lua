-- wrk script: one OpenAI chat completion per request, with a Tollgate virtual key and
-- max_tokens, so every request through Tollgate is metered (estimate, decision, reservation,
-- usage parsed from the response, exact cost, usage event to the control plane). The same
-- request goes to the baselines. The key comes from the environment (TOLLGATE_KEY), never the
-- command line.
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TOLLGATE_KEY") or "tg-missing")
wrk.body = '{"model":"gpt-4o-mini","max_tokens":16,'
  .. '"messages":[{"role":"system","content":"You are terse."},'
  .. '{"role":"user","content":"Say hello to the load test, briefly."}]}'
-- compare.py --compression: a client that accepts gzip (ACCEPT_ENCODING) and a provider edge
-- that compresses whatever was asked (FORCE_ENCODING, the mock's x-mock-force-encoding).
local accept = os.getenv("ACCEPT_ENCODING")
if accept then wrk.headers["Accept-Encoding"] = accept end
local force = os.getenv("FORCE_ENCODING")
if force then wrk.headers["x-mock-force-encoding"] = force end
