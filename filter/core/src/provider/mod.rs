//! The provider APIs Tollgate meters, one module each, behind one small trait.
//!
//! Everything that differs between provider APIs lives in its module and nowhere else: the
//! paths it serves, the provider whose cluster carries it, the request fields that bound its
//! cost, the body rewrite it needs, where its answer reports usage and how to read it, and what
//! its stream events mean. The engines that do the work — the request reader
//! ([`crate::estimate`]), the JSON walker ([`crate::usage::scan`]), the answer reader
//! (`usage/json.rs`) and the SSE parser (`usage/sse.rs`) — are shared and ask the module.
//!
//! | module | API | paths |
//! |---|---|---|
//! | [`openai_chat`] | OpenAI Chat Completions (and legacy Completions) | `/v1/chat/completions`, `/v1/completions` |
//! | [`openai_responses`] | OpenAI Responses | `/v1/responses` |
//! | [`openai_embeddings`] | OpenAI Embeddings | `/v1/embeddings` |
//! | [`anthropic_messages`] | Anthropic Messages | `/v1/messages` |
//! | [`gemini`] | Gemini `generateContent` | `/v1beta/models/{m}:generateContent`, `:streamGenerateContent` (and under `/v1/`) |
//! | [`vertex`] | Vertex AI: Gemini, Anthropic's Messages | `/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent`, `:streamGenerateContent`; `…/publishers/anthropic/models/{m}:rawPredict`, `:streamRawPredict` |
//! | [`bedrock`] | Amazon Bedrock: Converse; InvokeModel for Anthropic's models | `/model/{id}/converse`, `/converse-stream`, `/invoke`, `/invoke-with-response-stream` |
//! | [`azure_openai`] | Azure OpenAI: the three OpenAI APIs | `/openai/deployments/{d}/chat/completions`, `/completions`, `/embeddings`; `/openai/v1/chat/completions`, `/responses`, `/embeddings` |
//!
//! Adding an API is one module implementing [`ProviderApi`] (or, for an API another provider
//! serves with the same bodies, a `Surface` over it: Azure, Vertex), a variant of [`ApiFormat`]
//! and a row of [`APIS`], plus its fixtures under `tests/fixtures/usage/`.

use serde::{Deserialize, Serialize};

use crate::estimate::TierAsk;
use crate::pricing::ServiceTier;
use crate::usage::scan::Key;
use crate::usage::{StreamRead, Usage, UsageError, UsageValue};

pub mod anthropic_messages;
pub mod azure_openai;
pub mod bedrock;
pub mod gemini;
pub mod openai_chat;
pub mod openai_embeddings;
pub mod openai_responses;
mod surface;
pub mod vertex;

/// The provider API a request or response speaks. Its serialized name is what usage events
/// and the ledger record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiFormat {
    /// OpenAI `POST /v1/chat/completions` (and `/v1/completions`).
    OpenAiChat,
    /// OpenAI `POST /v1/responses`.
    OpenAiResponses,
    /// OpenAI `POST /v1/embeddings`.
    OpenAiEmbeddings,
    /// Anthropic `POST /v1/messages`.
    AnthropicMessages,
    /// Gemini `models/*:generateContent` and `:streamGenerateContent`.
    GeminiGenerateContent,
    /// Azure OpenAI Chat Completions (deployments and v1).
    AzureOpenAiChat,
    /// Azure OpenAI Responses (v1).
    AzureOpenAiResponses,
    /// Azure OpenAI Embeddings (deployments and v1).
    AzureOpenAiEmbeddings,
    /// Gemini on Vertex AI (`publishers/google`).
    VertexGemini,
    /// Anthropic's Messages on Vertex AI (`publishers/anthropic`, `rawPredict`).
    VertexAnthropic,
    /// Amazon Bedrock Converse and ConverseStream.
    BedrockConverse,
    /// Amazon Bedrock InvokeModel (and its response stream) for Anthropic's models.
    BedrockInvoke,
}

/// Every metered API, in the order routes are tried. The queue record stores an API by its
/// position here, so new APIs go at the end.
pub const APIS: [&dyn ProviderApi; 12] = [
    &openai_chat::OpenAiChat,
    &openai_responses::OpenAiResponses,
    &openai_embeddings::OpenAiEmbeddings,
    &anthropic_messages::AnthropicMessages,
    &gemini::Gemini,
    &azure_openai::CHAT,
    &azure_openai::RESPONSES,
    &azure_openai::EMBEDDINGS,
    &vertex::GEMINI,
    &vertex::ANTHROPIC,
    &bedrock::BedrockConverse,
    &bedrock::BedrockInvoke,
];

impl ApiFormat {
    /// The module that knows this API.
    pub fn api(self) -> &'static dyn ProviderApi {
        match self {
            ApiFormat::OpenAiChat => &openai_chat::OpenAiChat,
            ApiFormat::OpenAiResponses => &openai_responses::OpenAiResponses,
            ApiFormat::OpenAiEmbeddings => &openai_embeddings::OpenAiEmbeddings,
            ApiFormat::AnthropicMessages => &anthropic_messages::AnthropicMessages,
            ApiFormat::GeminiGenerateContent => &gemini::Gemini,
            ApiFormat::AzureOpenAiChat => &azure_openai::CHAT,
            ApiFormat::AzureOpenAiResponses => &azure_openai::RESPONSES,
            ApiFormat::AzureOpenAiEmbeddings => &azure_openai::EMBEDDINGS,
            ApiFormat::VertexGemini => &vertex::GEMINI,
            ApiFormat::VertexAnthropic => &vertex::ANTHROPIC,
            ApiFormat::BedrockConverse => &bedrock::BedrockConverse,
            ApiFormat::BedrockInvoke => &bedrock::BedrockInvoke,
        }
    }

    /// The provider whose cluster and key serve this API (`openai`, `anthropic`, `gemini`,
    /// `azure`, `vertex_ai`, `bedrock`).
    pub fn provider(self) -> &'static str {
        self.api().provider()
    }
}

/// A metered route: the API and what the path itself says about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// The API the request speaks.
    pub format: ApiFormat,
    /// Model named by the path (Gemini), else `None` (the body names it).
    pub path_model: Option<&'a str>,
    /// Streaming chosen by the path (Gemini's `:streamGenerateContent`), not the body.
    pub path_stream: bool,
}

impl<'a> Route<'a> {
    /// A route whose body names the model and whether it streams.
    pub fn plain(format: ApiFormat) -> Route<'a> {
        Route {
            format,
            path_model: None,
            path_stream: false,
        }
    }
}

/// What a top-level member of a request body (or of a config object inside it) means for the
/// estimate. The shared reader ([`crate::estimate::summarize`]) reads each by its meaning;
/// the names are the API's own, used in errors and to refuse a member sent twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestField {
    /// The model name (a string).
    Model,
    /// An output-token cap per choice; the largest of them bounds the request.
    OutputCap(&'static str),
    /// How many choices the provider generates and bills; the largest counts.
    Choices(&'static str),
    /// `stream: true`.
    Stream,
    /// OpenAI's `stream_options` (its `include_usage` flag).
    StreamOptions,
    /// An object whose members [`ProviderApi::config_field`] names (Gemini's
    /// `generationConfig`).
    Config(&'static str),
    /// Prompt-bearing content: sized for the prompt estimate.
    Prompt,
    /// Tool declarations: sized like the prompt and searched for a provider-run web search.
    Tools,
    /// The service tier asked for (a string).
    ServiceTier,
    /// OpenAI chat's `web_search_options`: enables a provider-run web search.
    WebSearchOptions,
    /// Anything else: stepped over.
    Other,
}

impl RequestField {
    /// The name a duplicate of this member is refused under; `None` for members that may
    /// repeat (content, tools, unknown keys).
    pub(crate) fn once(self) -> Option<&'static str> {
        Some(match self {
            RequestField::Model => "model",
            RequestField::OutputCap(n) | RequestField::Choices(n) | RequestField::Config(n) => n,
            RequestField::Stream => "stream",
            RequestField::StreamOptions => "stream_options",
            RequestField::ServiceTier => "service_tier",
            RequestField::WebSearchOptions => "web_search_options",
            RequestField::Prompt | RequestField::Tools | RequestField::Other => return None,
        })
    }
}

/// One provider API. Implementations are unit structs listed in [`APIS`]; all state lives
/// in the engines' structs ([`StreamRead`], [`Served`]).
pub trait ProviderApi: Sync {
    /// Which API this is.
    fn format(&self) -> ApiFormat;

    /// The provider whose cluster (and upstream key) serves it: `identity.providers.NAME`.
    fn provider(&self) -> &'static str;

    /// The metered route `path` names (exact and case-sensitive, query string removed), if
    /// it is one of this API's.
    fn route<'p>(&self, path: &'p str) -> Option<Route<'p>>;

    /// Whether the request names a deployment (in its path or its `model`) that the
    /// provider's `deployments` map turns into a price-book model (Azure).
    fn model_is_deployment(&self) -> bool {
        false
    }

    /// What the top-level request member `key` means.
    fn request_field(&self, key: &str) -> RequestField;

    /// What a member of a [`RequestField::Config`] object means.
    fn config_field(&self, _key: &str) -> RequestField {
        RequestField::Other
    }

    /// The tier asked for when the request names none (or names `auto`): the provider's
    /// default. A provider without tiers serves the standard one.
    fn default_tier(&self) -> TierAsk {
        TierAsk::Only(ServiceTier::Standard)
    }

    /// Whether the API generates output (an embedding does not: no output is reserved).
    fn generates(&self) -> bool {
        true
    }

    /// Whether a streaming request must be rewritten to ask for usage
    /// (`stream_options.include_usage`, OpenAI chat): the stream reports none otherwise.
    fn needs_include_usage(&self) -> bool {
        false
    }

    /// The member of an answer that holds its usage.
    fn usage_key(&self) -> &'static str {
        "usage"
    }

    /// Whether a whole answer may be a JSON array of answers (Gemini's
    /// `streamGenerateContent` without `alt=sse`), whose last usage counts.
    fn answer_may_be_array(&self) -> bool {
        false
    }

    /// Reads the usage value at `s[i]` (the value of [`Self::usage_key`]); returns it and
    /// the index just past it. Structural errors end the walk; what the fields mean is
    /// judged in [`UsageValue::Object`].
    fn read_usage(&self, s: &[u8], i: usize) -> Result<(UsageValue, usize), UsageError>;

    /// Whether an answer names its service tier in a top-level `service_tier` member
    /// (OpenAI's); not where the tier is inside the usage object (Anthropic's
    /// `usage.service_tier`), so that a stray top-level one cannot override it.
    fn tier_at_top_level(&self) -> bool {
        true
    }

    /// The top-level member of an answer naming the model that served it.
    fn model_key(&self) -> &'static str {
        "model"
    }

    /// Whether the model an answer names is priced when it differs from the requested one.
    /// Not where the path's model id carries the rate and the answer only the vendor's name
    /// for the same model (Bedrock: `us.anthropic.…-v1:0` answers `claude-…`).
    fn prices_answer_model(&self) -> bool {
        true
    }

    /// The provider-run searches a top-level member `key` (value token `value`) of an answer
    /// reports, if it is the member that reports them.
    fn searches_in(&self, _key: Key<'_>, _value: &[u8]) -> Result<Option<u64>, UsageError> {
        Ok(None)
    }

    /// Whether the data of a stream event named `name` (by its `event:` line; empty when it
    /// has none) has to be kept to read it. Events that can carry nothing are dropped as
    /// they arrive.
    fn keeps_event(&self, _name: &[u8]) -> bool {
        true
    }

    /// Whether a kept event can change what the stream reports. A binary event stream checks
    /// the checksum of, and reads, those only; the others are counted as skipped (Bedrock's
    /// InvokeModel streams keep every `chunk`, most of them text, whose checksum is the
    /// client's to check).
    fn event_matters(&self, _name: &[u8], _data: &[u8]) -> bool {
        true
    }

    /// Reads one whole stream event (`name` as for [`Self::keeps_event`]).
    fn read_event(&self, st: &mut StreamRead, name: &[u8], data: &[u8]) -> Result<(), UsageError>;

    /// An event whose data was dropped because [`Self::keeps_event`] said so.
    fn skipped_event(&self, _st: &mut StreamRead, _name: &[u8]) {}

    /// An event whose data outgrew the reader's bound; `tail` holds its last bytes. Returns
    /// whether it is harmless (known to carry no usage), else it counts as unreadable.
    fn oversized_event(&self, _st: &mut StreamRead, _name: &[u8], _tail: &[u8]) -> bool {
        false
    }

    /// The usage a stream has reported so far, and a required field still missing.
    fn stream_usage(&self, st: &StreamRead) -> (Option<Usage>, Option<UsageError>) {
        (st.usage, None)
    }
}

/// The model a route's path names, as the provider reads it: Bedrock's `%3A` decoded.
pub fn path_model_name(raw: &str) -> std::borrow::Cow<'_, str> {
    bedrock::model_id(raw)
}

/// A model name or id as the providers spell them in paths (`colon`: OpenAI ids may hold
/// `:`, e.g. fine-tunes).
pub(crate) fn model_in_path(s: &str, colon: bool) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') || (colon && b == b':')
        })
}

impl std::fmt::Debug for dyn ProviderApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.format())
    }
}

/// The API whose route `path` (query string removed) is, if any.
pub fn route(path: &str) -> Option<Route<'_>> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    APIS.iter().find_map(|api| api.route(path))
}

/// Which provider a bare usage object comes from, judged by its top-level keys (each
/// provider has a key no other sends): `inputTokens` / `outputTokens` are Bedrock Converse;
/// Gemini's camelCase counts end in `TokenCount`; `cache_*` keys are
/// Anthropic; `input_tokens` with `total_tokens` or `*_details` is OpenAI Responses, without
/// them Anthropic; `prompt_tokens` with `completion_tokens` is OpenAI Chat, without it OpenAI
/// Embeddings.
pub fn detect(has: impl Fn(&str) -> bool) -> Option<ApiFormat> {
    let any = |keys: &[&str]| keys.iter().any(|k| has(k));
    if any(&["inputTokens", "outputTokens", "cacheReadInputTokens"]) {
        return Some(ApiFormat::BedrockConverse);
    }
    if any(&[
        "promptTokenCount",
        "candidatesTokenCount",
        "totalTokenCount",
        "cachedContentTokenCount",
        "thoughtsTokenCount",
    ]) {
        Some(ApiFormat::GeminiGenerateContent)
    } else if any(&[
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cache_creation",
    ]) {
        Some(ApiFormat::AnthropicMessages)
    } else if any(&["input_tokens", "output_tokens"]) {
        if any(&[
            "total_tokens",
            "input_tokens_details",
            "output_tokens_details",
        ]) {
            Some(ApiFormat::OpenAiResponses)
        } else {
            Some(ApiFormat::AnthropicMessages)
        }
    } else if has("prompt_tokens") {
        if any(&["completion_tokens", "completion_tokens_details"]) {
            Some(ApiFormat::OpenAiChat)
        } else {
            Some(ApiFormat::OpenAiEmbeddings)
        }
    } else {
        None
    }
}

/// A stream event's name: its `event:` line, else the `type` member of its data (Responses
/// and Anthropic send both; a proxy may drop the former).
pub(crate) fn event_name<'a>(name: &'a [u8], ty: Option<&'a [u8]>) -> std::borrow::Cow<'a, [u8]> {
    if !name.is_empty() {
        return std::borrow::Cow::Borrowed(name);
    }
    ty.and_then(crate::usage::scan::unquote).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_every_provider() {
        let cases = [
            (
                r#"{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}"#,
                ApiFormat::OpenAiChat,
            ),
            (
                r#"{"prompt_tokens":1,"total_tokens":1}"#,
                ApiFormat::OpenAiEmbeddings,
            ),
            (
                r#"{"input_tokens":1,"output_tokens":2,"total_tokens":3,"input_tokens_details":{"cached_tokens":0}}"#,
                ApiFormat::OpenAiResponses,
            ),
            (
                r#"{"input_tokens":1,"output_tokens":2}"#,
                ApiFormat::AnthropicMessages,
            ),
            (
                r#"{"input_tokens":1,"cache_read_input_tokens":0,"output_tokens":2}"#,
                ApiFormat::AnthropicMessages,
            ),
            (
                r#"{"promptTokenCount":1,"totalTokenCount":1}"#,
                ApiFormat::GeminiGenerateContent,
            ),
        ];
        for (json, want) in cases {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            let keys = v.as_object().unwrap();
            assert_eq!(detect(|k| keys.contains_key(k)), Some(want), "{json}");
        }
        assert_eq!(detect(|k| k == "foo"), None);
    }

    #[test]
    fn the_table_and_the_enum_agree() {
        for (i, api) in APIS.iter().enumerate() {
            let format = api.format();
            assert_eq!(format.api().format(), format);
            assert_eq!(APIS.iter().position(|a| a.format() == format), Some(i));
        }
    }
}
