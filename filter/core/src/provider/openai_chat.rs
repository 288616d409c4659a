//! OpenAI Chat Completions (`POST /v1/chat/completions`) and legacy Completions
//! (`POST /v1/completions`), which answer with the same usage object and stream framing.
//!
//! - Request: `model`; output cap `max_tokens` or `max_completion_tokens` (the larger when
//!   both are sent: `max_tokens` is the deprecated name); choices `n` and legacy `best_of`
//!   (billed server-side); `stream`, `stream_options.include_usage`; `service_tier`
//!   (`auto`, the default, lets OpenAI choose); `web_search_options`. A streaming request
//!   without `include_usage` is rewritten to ask for it: the stream reports no usage otherwise.
//! - Usage (<https://platform.openai.com/docs/api-reference/chat/object#chat/object-usage>):
//!   `prompt_tokens` includes `prompt_tokens_details.cached_tokens` and `.audio_tokens`;
//!   `completion_tokens` includes `completion_tokens_details.reasoning_tokens` and
//!   `.audio_tokens`. The top-level `service_tier` names the tier that served.
//! - Stream (<https://platform.openai.com/docs/api-reference/chat-streaming>): with
//!   `include_usage` every chunk ends in `"usage":null` and the last chunk before
//!   `data: [DONE]` holds the usage. The `null` ending is recognised from the last few bytes
//!   without parsing the chunk ([`ends_with_null_usage`]), so only the usage chunk is parsed.
//!   Complete when `[DONE]` or the final usage chunk (`"choices": []`) arrived.

use super::{ApiFormat, ProviderApi, RequestField, Route};
use crate::estimate::TierAsk;
use crate::usage::fields::{read_count, read_nested, uncached, Count, Fields, Nested};
use crate::usage::{scan, usage_of, StreamRead, Usage, UsageError, UsageValue};

/// OpenAI Chat Completions.
pub struct OpenAiChat;

impl ProviderApi for OpenAiChat {
    fn format(&self) -> ApiFormat {
        ApiFormat::OpenAiChat
    }

    fn provider(&self) -> &'static str {
        "openai"
    }

    fn route<'p>(&self, path: &'p str) -> Option<Route<'p>> {
        matches!(path, "/v1/chat/completions" | "/v1/completions")
            .then(|| Route::plain(ApiFormat::OpenAiChat))
    }

    fn request_field(&self, key: &str) -> RequestField {
        match key {
            "model" => RequestField::Model,
            "max_tokens" => RequestField::OutputCap("max_tokens"),
            "max_completion_tokens" => RequestField::OutputCap("max_completion_tokens"),
            "n" => RequestField::Choices("n"),
            "best_of" => RequestField::Choices("best_of"),
            "stream" => RequestField::Stream,
            "stream_options" => RequestField::StreamOptions,
            "service_tier" => RequestField::ServiceTier,
            "web_search_options" => RequestField::WebSearchOptions,
            "tools" | "functions" => RequestField::Tools,
            "messages" | "prompt" | "response_format" => RequestField::Prompt,
            _ => RequestField::Other,
        }
    }

    fn default_tier(&self) -> TierAsk {
        TierAsk::Auto
    }

    fn needs_include_usage(&self) -> bool {
        true
    }

    fn read_usage(&self, s: &[u8], i: usize) -> Result<(UsageValue, usize), UsageError> {
        UsageValue::read(s, i, ChatUsage::meaning)
    }

    fn read_event(&self, st: &mut StreamRead, _name: &[u8], data: &[u8]) -> Result<(), UsageError> {
        read_chunk(self, st, data)
    }

    fn oversized_event(&self, _st: &mut StreamRead, _name: &[u8], tail: &[u8]) -> bool {
        ends_with_null_usage(tail)
    }
}

/// Reads one chunk of a chat-shaped stream (Chat, and Embeddings should one ever stream).
pub(super) fn read_chunk(
    api: &dyn ProviderApi,
    st: &mut StreamRead,
    data: &[u8],
) -> Result<(), UsageError> {
    let data = data.trim_ascii();
    if data == b"[DONE]" {
        st.complete = true;
        return Ok(());
    }
    if ends_with_null_usage(data) {
        return Ok(());
    }
    let [usage, choices, model, tier] =
        scan::find_members(data, ["usage", "choices", "model", "service_tier"])?;
    st.served.note_tier(tier);
    let Some(usage) = usage else {
        return Ok(());
    };
    st.served.note_model(model);
    st.usage = Some(usage_of(api, usage)?);
    // OpenAI's final usage chunk has `"choices": []`. Servers that report running usage on
    // every chunk (`continuous_usage_stats`) send choices with it: not the end yet.
    if choices.is_none_or(is_empty_array) {
        st.complete = true;
    }
    Ok(())
}

/// `*_tokens_details` holding the cached and audio parts of the prompt (OpenAI).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct InputDetails {
    pub(crate) cached_tokens: Count,
    pub(crate) audio_tokens: Count,
}

impl Fields for InputDetails {
    fn read_named(&mut self, name: &[u8], s: &[u8], i: usize) -> Result<Option<usize>, UsageError> {
        let slot = match name {
            b"cached_tokens" => &mut self.cached_tokens,
            b"audio_tokens" => &mut self.audio_tokens,
            _ => return Ok(None),
        };
        read_count(s, i, slot).map(Some)
    }
}

/// `*_tokens_details` holding the reasoning and audio parts of the output (OpenAI).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OutputDetails {
    pub(crate) reasoning_tokens: Count,
    pub(crate) audio_tokens: Count,
}

impl Fields for OutputDetails {
    fn read_named(&mut self, name: &[u8], s: &[u8], i: usize) -> Result<Option<usize>, UsageError> {
        let slot = match name {
            b"reasoning_tokens" => &mut self.reasoning_tokens,
            b"audio_tokens" => &mut self.audio_tokens,
            _ => return Ok(None),
        };
        read_count(s, i, slot).map(Some)
    }
}

/// Chat's `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ChatUsage {
    prompt_tokens: Count,
    completion_tokens: Count,
    prompt_tokens_details: Nested<InputDetails>,
    completion_tokens_details: Nested<OutputDetails>,
}

impl Fields for ChatUsage {
    fn read_named(&mut self, name: &[u8], s: &[u8], i: usize) -> Result<Option<usize>, UsageError> {
        match name {
            b"prompt_tokens" => read_count(s, i, &mut self.prompt_tokens),
            b"completion_tokens" => read_count(s, i, &mut self.completion_tokens),
            b"prompt_tokens_details" => read_nested(s, i, &mut self.prompt_tokens_details),
            b"completion_tokens_details" => read_nested(s, i, &mut self.completion_tokens_details),
            _ => return Ok(None),
        }
        .map(Some)
    }
}

impl ChatUsage {
    fn meaning(&self) -> Result<Usage, UsageError> {
        const PROMPT: &str = "usage.prompt_tokens";
        const CACHED: &str = "usage.prompt_tokens_details.cached_tokens";
        let prompt = self.prompt_tokens.required(PROMPT)?;
        let output = self.completion_tokens.required("usage.completion_tokens")?;
        let (cached, input_audio) = match self
            .prompt_tokens_details
            .get("usage.prompt_tokens_details")?
        {
            Some(d) => (
                d.cached_tokens.or_zero(CACHED)?,
                d.audio_tokens
                    .or_zero("usage.prompt_tokens_details.audio_tokens")?,
            ),
            None => (0, 0),
        };
        let (reasoning, output_audio) = match self
            .completion_tokens_details
            .get("usage.completion_tokens_details")?
        {
            Some(d) => (
                d.reasoning_tokens
                    .or_zero("usage.completion_tokens_details.reasoning_tokens")?,
                d.audio_tokens
                    .or_zero("usage.completion_tokens_details.audio_tokens")?,
            ),
            None => (0, 0),
        };
        let input_uncached = uncached(prompt, cached, PROMPT, CACHED)?;
        let reasoning = reasoning.min(output);
        Ok(Usage {
            input_uncached,
            cache_read: cached,
            output,
            reasoning,
            // Parts of the prompt and the output: never more than what is left of them.
            input_audio: input_audio.min(input_uncached),
            output_audio: output_audio.min(output - reasoning),
            ..Usage::default()
        })
    }
}

/// Whether a JSON value token is `[]` (whitespace allowed inside).
fn is_empty_array(token: &[u8]) -> bool {
    token
        .strip_prefix(b"[")
        .and_then(|t| t.strip_suffix(b"]"))
        .is_some_and(|inner| inner.trim_ascii().is_empty())
}

/// Whether a chat chunk ends with a top-level `"usage":null` (whitespace allowed), read from
/// its last bytes only — the fast path that spares parsing every chunk of a stream.
///
/// Why the last bytes are enough, for any valid JSON object: its final `}` closes the
/// top-level object, so the `null` just before it is the value of the top-level object's last
/// member, and the string before the `:` is that member's key. The key is exactly `usage`
/// because the byte before its opening quote is `,` or `{` — an escaped quote (`\"usage"`)
/// would be preceded by a backslash. With repeated keys the last one wins (as in
/// `serde_json::Value`), so the top-level usage is `null`. Malformed JSON can slip through,
/// but a malformed chunk has no readable usage to lose.
pub(crate) fn ends_with_null_usage(data: &[u8]) -> bool {
    fn strip<'a>(d: &'a [u8], suffix: &[u8]) -> Option<&'a [u8]> {
        d.trim_ascii_end().strip_suffix(suffix)
    }
    let rest = strip(data, b"}")
        .and_then(|d| strip(d, b"null"))
        .and_then(|d| strip(d, b":"))
        .and_then(|d| strip(d, b"\"usage\""));
    matches!(
        rest.map(|d| d.trim_ascii_end().last()),
        Some(Some(b',' | b'{'))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_is_clamped_to_output() {
        let u = usage_of(
            &OpenAiChat,
            br#"{"prompt_tokens":1,"completion_tokens":5,"completion_tokens_details":{"reasoning_tokens":9}}"#,
        )
        .unwrap();
        assert_eq!((u.output, u.reasoning), (5, 5));
    }
}
