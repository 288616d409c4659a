//! OpenAI Responses (`POST /v1/responses`).
//!
//! - Request: `model`; output cap `max_output_tokens`; `stream`; `service_tier` (`auto`, the
//!   default, lets OpenAI choose); prompt in `input`, `instructions`, `text`; `tools` (a
//!   `web_search` / `web_search_preview` tool enables provider-run searches).
//! - Usage (<https://platform.openai.com/docs/api-reference/responses/object#responses/object-usage>):
//!   `input_tokens` includes `input_tokens_details.cached_tokens`; `output_tokens` includes
//!   `output_tokens_details.reasoning_tokens`. The top-level `service_tier` names the tier
//!   that served; each `web_search_call` item of `output` is one billed search.
//! - Stream (<https://platform.openai.com/docs/api-reference/responses-streaming>):
//!   `response.completed`, `response.incomplete` and `response.failed` carry the final
//!   `response` with its usage; every other event is dropped unbuffered. Complete when one of
//!   those three arrived (each ends the stream).

use super::openai_chat::{InputDetails, OutputDetails};
use super::{event_name, ApiFormat, ProviderApi, RequestField, Route};
use crate::estimate::TierAsk;
use crate::usage::fields::{read_count, read_nested, uncached, Count, Fields, Nested};
use crate::usage::{scan, usage_in, StreamRead, Usage, UsageError, UsageValue};

/// OpenAI Responses.
pub struct OpenAiResponses;

/// The events that end a Responses stream and carry its final usage.
fn is_final(name: &[u8]) -> bool {
    matches!(
        name,
        b"response.completed" | b"response.incomplete" | b"response.failed"
    )
}

impl ProviderApi for OpenAiResponses {
    fn format(&self) -> ApiFormat {
        ApiFormat::OpenAiResponses
    }

    fn provider(&self) -> &'static str {
        "openai"
    }

    fn route<'p>(&self, path: &'p str) -> Option<Route<'p>> {
        (path == "/v1/responses").then(|| Route::plain(ApiFormat::OpenAiResponses))
    }

    fn request_field(&self, key: &str) -> RequestField {
        match key {
            "model" => RequestField::Model,
            "max_output_tokens" => RequestField::OutputCap("max_output_tokens"),
            "stream" => RequestField::Stream,
            "service_tier" => RequestField::ServiceTier,
            "tools" => RequestField::Tools,
            "input" | "instructions" | "text" => RequestField::Prompt,
            _ => RequestField::Other,
        }
    }

    fn default_tier(&self) -> TierAsk {
        TierAsk::Auto
    }

    fn read_usage(&self, s: &[u8], i: usize) -> Result<(UsageValue, usize), UsageError> {
        UsageValue::read(s, i, ResponsesUsage::meaning)
    }

    fn searches_in(&self, key: scan::Key<'_>, value: &[u8]) -> Result<Option<u64>, UsageError> {
        if key.is("output") {
            return web_search_calls(value).map(Some);
        }
        Ok(None)
    }

    fn keeps_event(&self, name: &[u8]) -> bool {
        name.is_empty() || is_final(name)
    }

    fn read_event(&self, st: &mut StreamRead, name: &[u8], data: &[u8]) -> Result<(), UsageError> {
        let [ty, response] = scan::find_members(data, ["type", "response"])?;
        if !is_final(&event_name(name, ty)) {
            return Ok(());
        }
        // The stream's last event: complete whether or not its usage reads.
        st.complete = true;
        let response = response.ok_or(UsageError::MissingField("response"))?;
        let [model, tier, output] =
            scan::find_members(response, ["model", "service_tier", "output"])?;
        st.served.note_model(model);
        st.served.note_tier(tier);
        if let Some(output) = output {
            st.served.note_searches(web_search_calls(output)?);
        }
        st.usage = Some(usage_in(self, response)?.ok_or(UsageError::NoUsage)?);
        Ok(())
    }

    fn oversized_event(&self, st: &mut StreamRead, name: &[u8], _tail: &[u8]) -> bool {
        // Named by its `event:` line as the last event: the stream did end, though its usage
        // could not be read.
        if is_final(name) {
            st.complete = true;
        }
        false
    }
}

/// The `web_search_call` items of a Responses `output` array.
fn web_search_calls(output: &[u8]) -> Result<u64, UsageError> {
    let mut calls = 0u64;
    scan::for_each_element(output, |item| {
        let [ty] = scan::find_members(item, ["type"])?;
        if ty.is_some_and(|t| t == b"\"web_search_call\"") {
            calls = calls.saturating_add(1);
        }
        Ok::<_, UsageError>(())
    })?;
    Ok(calls)
}

/// Responses' `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ResponsesUsage {
    input_tokens: Count,
    output_tokens: Count,
    input_tokens_details: Nested<InputDetails>,
    output_tokens_details: Nested<OutputDetails>,
}

impl Fields for ResponsesUsage {
    fn read_named(&mut self, name: &[u8], s: &[u8], i: usize) -> Result<Option<usize>, UsageError> {
        match name {
            b"input_tokens" => read_count(s, i, &mut self.input_tokens),
            b"output_tokens" => read_count(s, i, &mut self.output_tokens),
            b"input_tokens_details" => read_nested(s, i, &mut self.input_tokens_details),
            b"output_tokens_details" => read_nested(s, i, &mut self.output_tokens_details),
            _ => return Ok(None),
        }
        .map(Some)
    }
}

impl ResponsesUsage {
    fn meaning(&self) -> Result<Usage, UsageError> {
        const INPUT: &str = "usage.input_tokens";
        const CACHED: &str = "usage.input_tokens_details.cached_tokens";
        let input = self.input_tokens.required(INPUT)?;
        let output = self.output_tokens.required("usage.output_tokens")?;
        let cached = match self
            .input_tokens_details
            .get("usage.input_tokens_details")?
        {
            Some(d) => d.cached_tokens.or_zero(CACHED)?,
            None => 0,
        };
        let reasoning = match self
            .output_tokens_details
            .get("usage.output_tokens_details")?
        {
            Some(d) => d
                .reasoning_tokens
                .or_zero("usage.output_tokens_details.reasoning_tokens")?,
            None => 0,
        };
        Ok(Usage {
            input_uncached: uncached(input, cached, INPUT, CACHED)?,
            cache_read: cached,
            output,
            reasoning: reasoning.min(output),
            ..Usage::default()
        })
    }
}
