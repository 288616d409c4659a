//! The deterministic usage rule: what a request costs in tokens, computed from the request
//! alone so a test can predict the exact bill (see the crate docs for the rule in prose).
//!
//! [`plan`] reads a request once into a [`Plan`] (model, stream flags, output text length,
//! usage); the server renders every response from the plan, and tests call [`usage_for`] to
//! get the same [`Usage`] the response reports. Run the unit tests with
//! `cargo test -p tollgate-upstream --lib`.

use axum::http::HeaderMap;
use serde_json::Value;

/// The provider API a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI Chat Completions, `POST /v1/chat/completions`.
    OpenAiChat,
    /// OpenAI Responses, `POST /v1/responses`.
    OpenAiResponses,
    /// OpenAI Embeddings, `POST /v1/embeddings`.
    OpenAiEmbeddings,
    /// Anthropic Messages, `POST /v1/messages`.
    AnthropicMessages,
    /// Gemini `POST /v1beta/models/{model}:generateContent` / `:streamGenerateContent`.
    Gemini,
    /// Bedrock `POST /model/{modelId}/converse` / `converse-stream`.
    BedrockConverse,
    /// Bedrock `POST /model/{modelId}/invoke` / `invoke-with-response-stream` (an Anthropic
    /// Messages body).
    BedrockInvoke,
}

impl Api {
    /// Top-level request fields whose text counts as prompt.
    fn prompt_fields(self) -> &'static [&'static str] {
        match self {
            Api::OpenAiChat => &["messages"],
            Api::OpenAiResponses => &["instructions", "input"],
            Api::OpenAiEmbeddings => &["input"],
            Api::AnthropicMessages | Api::BedrockConverse | Api::BedrockInvoke => {
                &["system", "messages"]
            }
            Api::Gemini => &["systemInstruction", "system_instruction", "contents"],
        }
    }

    /// Request fields that cap the output, in order of precedence.
    fn cap_fields(self) -> &'static [&'static str] {
        match self {
            Api::OpenAiChat => &["max_completion_tokens", "max_tokens"],
            Api::OpenAiResponses => &["max_output_tokens"],
            Api::OpenAiEmbeddings => &[],
            Api::AnthropicMessages | Api::BedrockInvoke => &["max_tokens"],
            // Gemini and Converse nest it; looked up separately in `output_cap`.
            Api::Gemini | Api::BedrockConverse => &[],
        }
    }
}

/// Output tokens when the request sets no cap.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 16;
/// Most text chunks one streamed response carries; longer outputs put several filler words
/// in a chunk, so a huge `max_tokens` cannot turn one request into a flood of events.
pub const MAX_TEXT_CHUNKS: u64 = 256;

/// Test controls read from `x-mock-*` request headers. All default to "off".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controls {
    /// `x-mock-cached-tokens`: prompt tokens read from the provider cache (OpenAI
    /// `cached_tokens`, Anthropic `cache_read_input_tokens`, Gemini `cachedContentTokenCount`).
    pub cached_tokens: u64,
    /// `x-mock-cache-write-5m`: Anthropic cache write with the 5-minute lifetime.
    pub cache_write_5m: u64,
    /// `x-mock-cache-write-1h`: Anthropic cache write with the 1-hour lifetime.
    pub cache_write_1h: u64,
    /// `x-mock-reasoning-tokens`: reasoning tokens on top of the visible output.
    pub reasoning_tokens: u64,
    /// `x-mock-output-tokens`: the reply's length before the cap, instead of the rule's
    /// `8 + P % 17` (benches use it for long streams).
    pub output_tokens: Option<u64>,
    /// `x-mock-status`: answer with this status and the provider's error body, no usage.
    pub status: Option<u16>,
    /// `x-mock-truncate-after`: streams close abruptly after this many events (JSON bodies
    /// after this many bytes), with no end marker.
    pub truncate_after: Option<u64>,
    /// `x-mock-delay-ms`: sleep this long before a JSON response, or before each streamed event.
    pub delay_ms: u64,
    /// `x-mock-garbage: 1`: a 200 whose body is not what the provider sends (a JSON body that
    /// does not parse; a stream whose events do not parse; an AWS event stream that ends in a
    /// `modelStreamErrorException` message after two events), ending normally.
    pub garbage: bool,
    /// `x-mock-pad-bytes: N` (at most [`MAX_PAD_BYTES`]): N filler bytes in the response, a
    /// `"padding"` string first in a JSON body, an SSE comment before the first event.
    pub pad_bytes: Option<u64>,
    /// `x-mock-served-model: M`: the answer says model `M` served the request (the `model` of
    /// OpenAI and Anthropic answers, Gemini's `modelVersion`), as a provider does when it
    /// resolves an alias to a dated snapshot or routes to another model.
    pub served_model: Option<String>,
    /// `x-mock-service-tier: T` (`default`, `priority`, `flex`): the tier the mock's "project"
    /// serves a request at when the request lets the provider choose (OpenAI and Anthropic
    /// `auto`, their default). A request naming a tier is served at it, as OpenAI does.
    pub service_tier: Option<Tier>,
    /// `x-mock-web-searches: N`: searches run for a request that enables a web-search tool
    /// (1 when unsaid); a request without one runs none, whatever the header says.
    pub web_searches: Option<u64>,
    /// `x-mock-input-audio-tokens` / `x-mock-output-audio-tokens`: audio tokens inside the
    /// prompt and the output (OpenAI chat's `*_tokens_details.audio_tokens`).
    pub input_audio: u64,
    /// See `input_audio`.
    pub output_audio: u64,
}

/// A service tier as the providers name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tier {
    /// OpenAI `default`, Anthropic `standard`.
    #[default]
    Default,
    /// `priority` at both.
    Priority,
    /// OpenAI `flex` (Anthropic has none: `standard`).
    Flex,
}

impl Tier {
    fn named(name: &str) -> Option<Tier> {
        match name {
            "default" | "standard" | "standard_only" => Some(Tier::Default),
            "priority" => Some(Tier::Priority),
            "flex" => Some(Tier::Flex),
            _ => None,
        }
    }

    /// OpenAI's name of the tier.
    pub fn openai(self) -> &'static str {
        match self {
            Tier::Default => "default",
            Tier::Priority => "priority",
            Tier::Flex => "flex",
        }
    }

    /// Anthropic's name of the tier.
    pub fn anthropic(self) -> &'static str {
        match self {
            Tier::Priority => "priority",
            Tier::Default | Tier::Flex => "standard",
        }
    }
}

/// Largest `x-mock-pad-bytes`.
pub const MAX_PAD_BYTES: u64 = 64 << 20;

impl Controls {
    /// Reads the `x-mock-*` headers; a header that is not a number is an error naming it.
    pub fn from_headers(headers: &HeaderMap) -> Result<Controls, String> {
        let num = |name: &str| -> Result<Option<u64>, String> {
            match headers.get(name) {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(Some)
                    .ok_or_else(|| format!("{name}: expected a non-negative integer")),
            }
        };
        let status = match num("x-mock-status")? {
            None => None,
            Some(s @ 400..=599) => u16::try_from(s).ok(),
            Some(_) => return Err("x-mock-status: expected a status in 400..=599".into()),
        };
        Ok(Controls {
            cached_tokens: num("x-mock-cached-tokens")?.unwrap_or(0),
            cache_write_5m: num("x-mock-cache-write-5m")?.unwrap_or(0),
            cache_write_1h: num("x-mock-cache-write-1h")?.unwrap_or(0),
            reasoning_tokens: num("x-mock-reasoning-tokens")?.unwrap_or(0),
            output_tokens: num("x-mock-output-tokens")?,
            status,
            truncate_after: num("x-mock-truncate-after")?,
            service_tier: match headers.get("x-mock-service-tier").map(|v| v.to_str()) {
                None => None,
                Some(Ok(t)) => Some(Tier::named(t.trim()).ok_or_else(|| {
                    "x-mock-service-tier: expected default, priority or flex".to_string()
                })?),
                Some(Err(_)) => return Err("x-mock-service-tier: not text".into()),
            },
            web_searches: num("x-mock-web-searches")?,
            input_audio: num("x-mock-input-audio-tokens")?.unwrap_or(0),
            output_audio: num("x-mock-output-audio-tokens")?.unwrap_or(0),
            served_model: match headers.get("x-mock-served-model").map(|v| v.to_str()) {
                None => None,
                Some(Ok(m)) if !m.trim().is_empty() => Some(m.trim().to_owned()),
                Some(_) => return Err("x-mock-served-model: expected a model name".into()),
            },
            delay_ms: num("x-mock-delay-ms")?.unwrap_or(0),
            garbage: match num("x-mock-garbage")? {
                None | Some(0) => false,
                Some(1) => true,
                Some(_) => return Err("x-mock-garbage: expected 0 or 1".into()),
            },
            pad_bytes: match num("x-mock-pad-bytes")? {
                Some(n) if n > MAX_PAD_BYTES => {
                    return Err(format!("x-mock-pad-bytes: at most {MAX_PAD_BYTES}"))
                }
                n => n,
            },
        })
    }
}

/// Token counts as the response reports them, in provider-neutral buckets (the same buckets
/// as `tollgate_core::usage::Usage`, so a test compares them field by field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens not read from or written to a cache: the byte rule over the prompt.
    pub input_uncached: u64,
    /// Prompt tokens read from the cache (`x-mock-cached-tokens`; 0 for embeddings).
    pub cache_read: u64,
    /// Cache write, 5-minute lifetime (Anthropic only, else 0).
    pub cache_write_5m: u64,
    /// Cache write, 1-hour lifetime (Anthropic only, else 0).
    pub cache_write_1h: u64,
    /// Output tokens, reasoning included (0 for embeddings).
    pub output: u64,
    /// The part of `output` spent on reasoning (`x-mock-reasoning-tokens`).
    pub reasoning: u64,
    /// The part of `input_uncached` that was audio (OpenAI chat only).
    pub input_audio: u64,
    /// The part of `output` that was audio (OpenAI chat only).
    pub output_audio: u64,
    /// Web searches run (requests that enable a web-search tool).
    pub web_searches: u64,
    /// The tier that served the request.
    pub tier: Tier,
}

impl Usage {
    /// Visible output tokens: the filler words in the reply (audio output is the reply's
    /// spoken form, reported apart).
    pub fn text_tokens(&self) -> u64 {
        self.output
            .saturating_sub(self.reasoning)
            .saturating_sub(self.output_audio)
    }

    /// All prompt tokens, cached ones included (OpenAI `prompt_tokens`, Gemini
    /// `promptTokenCount`).
    pub fn prompt_total(&self) -> u64 {
        self.input_uncached + self.cache_read + self.cache_write_5m + self.cache_write_1h
    }
}

/// What a request asked for, read once; every response shape renders from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The API.
    pub api: Api,
    /// `model` from the body (Gemini: from the path), `mock-model` when absent.
    pub model: String,
    /// The client asked for a stream (`"stream": true`; Gemini: the path).
    pub stream: bool,
    /// `stream_options.include_usage` (OpenAI Chat streams only).
    pub include_usage: bool,
    /// The output cap the request set, if any.
    pub max_output: Option<u64>,
    /// The output stopped at the cap (finish reason `length` / `max_tokens` / `MAX_TOKENS`).
    pub hit_limit: bool,
    /// The reported usage.
    pub usage: Usage,
    /// Embeddings: how many vectors (one per input).
    pub inputs: usize,
}

/// Why a request could not be planned: becomes a 400 in the provider's error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError(pub String);

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Counts prompt bytes: string values by UTF-8 length (except under `role` and `type`, which
/// are structure, not text), numbers as 4 bytes each (so token-id arrays count one token per
/// id), everything else as 0.
fn prompt_bytes(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        Value::Number(_) => 4,
        Value::Array(items) => items.iter().map(prompt_bytes).sum(),
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| k.as_str() != "role" && k.as_str() != "type")
            .map(|(_, v)| prompt_bytes(v))
            .sum(),
        Value::Bool(_) | Value::Null => 0,
    }
}

/// Prompt tokens of a request: `max(1, ceil(prompt_bytes / 4))`.
pub fn prompt_tokens(api: Api, request: &Value) -> u64 {
    let bytes: u64 = api
        .prompt_fields()
        .iter()
        .filter_map(|f| request.get(f))
        .map(prompt_bytes)
        .sum();
    bytes.div_ceil(4).max(1)
}

/// The output length the mock chooses before any cap: `8 + prompt_tokens % 17`.
pub fn natural_output_tokens(prompt_tokens: u64) -> u64 {
    8 + prompt_tokens % 17
}

fn cap_value(name: &str, v: &Value) -> Result<Option<u64>, RequestError> {
    match v {
        Value::Null => Ok(None),
        v => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| RequestError(format!("{name}: expected a non-negative integer"))),
    }
}

fn output_cap(api: Api, request: &Value) -> Result<Option<u64>, RequestError> {
    if api == Api::BedrockConverse {
        if let Some(v) = request
            .get("inferenceConfig")
            .and_then(|c| c.get("maxTokens"))
        {
            return cap_value("maxTokens", v);
        }
    }
    if api == Api::Gemini {
        for (cfg, field) in [
            ("generationConfig", "maxOutputTokens"),
            ("generation_config", "max_output_tokens"),
        ] {
            if let Some(v) = request.get(cfg).and_then(|c| c.get(field)) {
                return cap_value(field, v);
            }
        }
        return Ok(None);
    }
    for field in api.cap_fields() {
        if let Some(v) = request.get(*field) {
            if let Some(cap) = cap_value(field, v)? {
                return Ok(Some(cap));
            }
        }
    }
    Ok(None)
}

/// Reads a request into a [`Plan`]. `path_model` and `path_stream` come from a Gemini path.
pub fn plan(
    api: Api,
    request: &Value,
    controls: &Controls,
    path_model: Option<&str>,
    path_stream: bool,
) -> Result<Plan, RequestError> {
    if !request.is_object() {
        return Err(RequestError("request body must be a JSON object".into()));
    }
    let model = controls
        .served_model
        .clone()
        .or_else(|| path_model.map(str::to_owned))
        .or_else(|| {
            request
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "mock-model".to_owned());
    let stream = path_stream || request.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = api == Api::OpenAiChat
        && stream
        && request
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
    let input = prompt_tokens(api, request);
    let max_output = output_cap(api, request)?;
    let natural = controls
        .output_tokens
        .unwrap_or_else(|| natural_output_tokens(input));
    let (text, hit_limit) = match (api, max_output) {
        (Api::OpenAiEmbeddings, _) => (0, false),
        (_, Some(cap)) => (cap.min(natural), cap < natural),
        (_, None) => (DEFAULT_MAX_OUTPUT_TOKENS.min(natural), false),
    };
    let web_searches = if enables_web_search(api, request) {
        controls.web_searches.unwrap_or(1)
    } else {
        0
    };
    let tier = served_tier(api, request, controls);
    let usage = match api {
        Api::OpenAiEmbeddings => Usage {
            input_uncached: input,
            ..Usage::default()
        },
        // Bedrock serves Anthropic's models with Anthropic's caching (and no server tools).
        Api::AnthropicMessages | Api::BedrockConverse | Api::BedrockInvoke => Usage {
            input_uncached: input,
            cache_read: controls.cached_tokens,
            cache_write_5m: controls.cache_write_5m,
            cache_write_1h: controls.cache_write_1h,
            output: text + controls.reasoning_tokens,
            reasoning: controls.reasoning_tokens,
            web_searches,
            tier,
            ..Usage::default()
        },
        // OpenAI and Gemini report no cache writes; audio is OpenAI chat's.
        Api::OpenAiChat | Api::OpenAiResponses | Api::Gemini => {
            let chat = api == Api::OpenAiChat;
            let input_audio = if chat { controls.input_audio } else { 0 };
            let output_audio = if chat { controls.output_audio } else { 0 };
            Usage {
                input_uncached: input + input_audio,
                cache_read: controls.cached_tokens,
                output: text + controls.reasoning_tokens + output_audio,
                reasoning: controls.reasoning_tokens,
                input_audio,
                output_audio,
                web_searches,
                tier,
                ..Usage::default()
            }
        }
    };
    let inputs = match request.get("input") {
        Some(Value::Array(items)) if items.iter().all(|i| i.is_string() || i.is_array()) => {
            items.len().max(1)
        }
        _ => 1,
    };
    Ok(Plan {
        api,
        model,
        stream,
        include_usage,
        max_output,
        hit_limit,
        usage,
        inputs,
    })
}

/// Whether the request enables the provider's web search: OpenAI chat `web_search_options`,
/// a `web_search*` tool (OpenAI Responses, Anthropic `web_search_20250305`), Gemini's
/// `googleSearch` tool.
fn enables_web_search(api: Api, request: &Value) -> bool {
    if api == Api::OpenAiChat
        && request
            .get("web_search_options")
            .is_some_and(Value::is_object)
    {
        return true;
    }
    let tools = request.get("tools").and_then(Value::as_array);
    tools.into_iter().flatten().any(|t| {
        let typed = t.get("type").and_then(Value::as_str);
        typed.is_some_and(|ty| ty.starts_with("web_search"))
            || ["googleSearch", "google_search"]
                .iter()
                .any(|k| t.get(k).is_some())
    })
}

/// The tier that serves a request: the one it names, else the project's (`x-mock-service-tier`,
/// standard by default). Gemini answers name no tier.
fn served_tier(api: Api, request: &Value, controls: &Controls) -> Tier {
    if matches!(
        api,
        Api::Gemini | Api::OpenAiEmbeddings | Api::BedrockConverse | Api::BedrockInvoke
    ) {
        return Tier::Default;
    }
    let asked = request.get("service_tier").and_then(Value::as_str);
    match asked.and_then(Tier::named) {
        // Anthropic's `standard_only` only keeps a request off priority.
        Some(t) if api != Api::AnthropicMessages => t,
        Some(_) => Tier::Default,
        None => controls.service_tier.unwrap_or_default(),
    }
}

/// The usage the mock reports for `request` (a JSON body) sent to `api` with `controls`.
/// Gemini's model and stream flag come from the path and do not change usage.
pub fn usage_for(api: Api, request: &Value, controls: &Controls) -> Result<Usage, RequestError> {
    plan(api, request, controls, None, false).map(|p| p.usage)
}

/// The filler words the reply is made of, one per output token.
const WORDS: [&str; 16] = [
    "tollgate", "meters", "every", "token", "of", "this", "mock", "reply", "and", "prices", "it",
    "exactly", "before", "the", "budget", "ends",
];

fn word(i: u64) -> &'static str {
    WORDS
        .get(usize::try_from(i % WORDS.len() as u64).unwrap_or(0))
        .copied()
        .unwrap_or("token")
}

/// The reply text for `tokens` visible output tokens: filler words joined by spaces.
pub fn reply_text(tokens: u64) -> String {
    text_chunks(tokens).concat()
}

/// The reply split into stream chunks: one word per chunk (a space before every word but
/// the first), at most [`MAX_TEXT_CHUNKS`] chunks, longer replies grouping several words per
/// chunk. The chunks concatenate to [`reply_text`].
pub fn text_chunks(tokens: u64) -> Vec<String> {
    let chunks = tokens.min(MAX_TEXT_CHUNKS);
    (0..chunks)
        .map(|k| {
            let (from, to) = (k * tokens / chunks, (k + 1) * tokens / chunks);
            let mut s = String::new();
            for i in from..to {
                if i > 0 {
                    s.push(' ');
                }
                s.push_str(word(i));
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_rule_counts_text_not_structure() {
        // "Hello" (5) + "be brief" (8) = 13 bytes → 4 tokens; roles and types are not text.
        let req = json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "Hello"}]}]});
        assert_eq!(prompt_tokens(Api::OpenAiChat, &req), 4);
        assert_eq!(prompt_tokens(Api::OpenAiChat, &json!({})), 1);
        // Token-id arrays count one token per id.
        assert_eq!(
            prompt_tokens(Api::OpenAiEmbeddings, &json!({"input": [1, 2, 3]})),
            3
        );
        let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "12345678"}]}],
                            "systemInstruction": {"parts": [{"text": "1234"}]}});
        assert_eq!(prompt_tokens(Api::Gemini, &gemini), 3);
    }

    #[test]
    fn output_rule_and_caps() {
        let req = json!({"messages": [{"role": "user", "content": "Hello"}]}); // 2 tokens
        let u = usage_for(Api::OpenAiChat, &req, &Controls::default()).unwrap();
        assert_eq!((u.input_uncached, u.output), (2, 10)); // 8 + 2 % 17
        let capped = json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3});
        let p = plan(Api::OpenAiChat, &capped, &Controls::default(), None, false).unwrap();
        assert_eq!((p.usage.output, p.hit_limit), (3, true));
        // max_completion_tokens wins over max_tokens.
        let both = json!({"max_completion_tokens": 4, "max_tokens": 2});
        assert_eq!(
            usage_for(Api::OpenAiChat, &both, &Controls::default())
                .unwrap()
                .output,
            4
        );
        let gem = json!({"contents": [], "generationConfig": {"maxOutputTokens": 5}});
        assert_eq!(
            usage_for(Api::Gemini, &gem, &Controls::default())
                .unwrap()
                .output,
            5
        );
        assert!(usage_for(
            Api::OpenAiChat,
            &json!({"max_tokens": "9"}),
            &Controls::default()
        )
        .is_err());
        // 64 prompt tokens: natural output 8 + 64 % 17 = 21, above the default cap of 16.
        let long = json!({"input": "x".repeat(256)});
        let p = plan(
            Api::OpenAiResponses,
            &long,
            &Controls::default(),
            None,
            false,
        )
        .unwrap();
        assert_eq!((p.usage.output, p.hit_limit), (16, false));
    }

    #[test]
    fn controls_fill_the_buckets_each_provider_reports() {
        let c = Controls {
            cached_tokens: 7,
            cache_write_5m: 3,
            cache_write_1h: 2,
            reasoning_tokens: 5,
            ..Controls::default()
        };
        let req = json!({"messages": [{"role": "user", "content": "Hello"}]});
        let a = usage_for(Api::AnthropicMessages, &req, &c).unwrap();
        assert_eq!(
            (
                a.input_uncached,
                a.cache_read,
                a.cache_write_5m,
                a.cache_write_1h
            ),
            (2, 7, 3, 2)
        );
        assert_eq!((a.output, a.reasoning, a.text_tokens()), (15, 5, 10));
        let o = usage_for(Api::OpenAiChat, &req, &c).unwrap();
        assert_eq!(
            (o.cache_write_5m, o.cache_write_1h, o.prompt_total()),
            (0, 0, 9)
        );
        let e = usage_for(Api::OpenAiEmbeddings, &json!({"input": "abcd"}), &c).unwrap();
        assert_eq!(
            e,
            Usage {
                input_uncached: 1,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn chunks_concatenate_to_the_text_and_are_capped() {
        assert_eq!(reply_text(3), "tollgate meters every");
        assert_eq!(text_chunks(3), vec!["tollgate", " meters", " every"]);
        let many = text_chunks(1000);
        assert_eq!(many.len() as u64, MAX_TEXT_CHUNKS);
        assert_eq!(many.concat(), reply_text(1000));
        assert_eq!(reply_text(1000).split(' ').count(), 1000);
        assert!(text_chunks(0).is_empty());
    }

    #[test]
    fn headers_parse_and_bad_values_are_named() {
        let mut h = HeaderMap::new();
        h.insert("x-mock-cached-tokens", "12".parse().unwrap());
        h.insert("x-mock-status", "503".parse().unwrap());
        let c = Controls::from_headers(&h).unwrap();
        assert_eq!((c.cached_tokens, c.status), (12, Some(503)));
        h.insert("x-mock-delay-ms", "soon".parse().unwrap());
        assert!(Controls::from_headers(&h)
            .unwrap_err()
            .contains("x-mock-delay-ms"));
        let mut h = HeaderMap::new();
        h.insert("x-mock-status", "200".parse().unwrap());
        assert!(Controls::from_headers(&h).is_err());
    }
}
