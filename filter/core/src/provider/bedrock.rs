//! Amazon Bedrock runtime: Converse, and InvokeModel for Anthropic's models.
//!
//! Paths are `/model/{modelId}/{operation}`. The model id is the path's, as the SDKs send it:
//! boto3 escapes its `:` as `%3A` (the only escape Tollgate lets into a metered path, and only
//! there; an ARN's `/` would be `%2F`, which Envoy refuses). It names the model *and* the
//! region profile that sets the rate (`us.anthropic.claude-haiku-4-5-20251001-v1:0` costs 10 %
//! more than `anthropic.claude-…`), so it is the one priced, from LiteLLM's `bedrock` and
//! `bedrock_converse` entries, whatever name the answer gives the model.
//!
//! - **Converse** (`/converse`, `/converse-stream`;
//!   <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html>): the
//!   body has no model and no stream flag; `inferenceConfig.maxTokens` caps the output; prompt
//!   in `messages` and `system`; tools in `toolConfig`. Usage
//!   (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_TokenUsage.html>):
//!   `inputTokens` is the uncached part, `cacheReadInputTokens` and `cacheWriteInputTokens`
//!   are apart (as LiteLLM reads them); `cacheDetails` splits the write by TTL (`5m`, `1h`):
//!   the split decides the 1h part, the rest of the write is 5m. The stream
//!   (`application/vnd.amazon.eventstream`) ends with a `metadata` event holding `usage`, after
//!   `messageStop`: complete when it arrived; no other event is read.
//! - **InvokeModel** for Anthropic's models (`/invoke`, `/invoke-with-response-stream`): an
//!   Anthropic Messages body (with `anthropic_version`, without `model`) and answer. Its stream
//!   is an event stream of `chunk` events whose `bytes` is the base64 of one Anthropic stream
//!   event; only the first 48 bytes of each are decoded to learn its type, and only
//!   `message_start` / `message_delta` whole. Other models' InvokeModel bodies are their
//!   vendors' own: not metered, so refused.
//!
//! The provider is `bedrock`: its cluster signs each request with SigV4 (Envoy's
//! `aws_request_signing`, after Tollgate removed the virtual key). The SDKs send the virtual
//! key as a Bedrock API key, `Authorization: Bearer` (boto3's `AWS_BEARER_TOKEN_BEDROCK`,
//! `AnthropicBedrock(api_key=…)`).

use std::borrow::Cow;

use base64::Engine;

use super::anthropic_messages::AnthropicMessages;
use super::{ApiFormat, ProviderApi, RequestField, Route};
use crate::usage::fields::{read_count, skip, Count, Fields, Nested};
use crate::usage::{scan, usage_in, StreamRead, Usage, UsageError, UsageValue};

/// Bedrock Converse and ConverseStream.
pub struct BedrockConverse;

/// Bedrock InvokeModel and InvokeModelWithResponseStream, for Anthropic's models.
pub struct BedrockInvoke;

/// `/model/{id}/{operation}`: the id (escapes kept) and the operation.
fn split(path: &str) -> Option<(&str, &str)> {
    let (id, op) = path.strip_prefix("/model/")?.split_once('/')?;
    (!op.contains('/') && id_ok(id)).then_some((id, op))
}

/// A model id as the SDKs put it in the path: letters, digits, `-_.:` and `%3A`.
fn id_ok(id: &str) -> bool {
    let mut rest = id;
    while let Some((head, tail)) = rest.split_once('%') {
        if !plain(head) || !(tail.starts_with("3A") || tail.starts_with("3a")) {
            return false;
        }
        rest = tail.get(2..).unwrap_or_default();
    }
    plain(rest) && !id.is_empty()
}

fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Whether the percent escapes in `path` are only the `%3A`s of a Bedrock model id: the one
/// escape a metered path may hold (boto3 sends every model id that way).
pub(crate) fn escapes_allowed(path: &str) -> bool {
    split(path).is_some_and(|(_, op)| !op.contains('%'))
}

/// The model id a path names, its `%3A` decoded.
pub(crate) fn model_id(raw: &str) -> Cow<'_, str> {
    if raw.contains('%') {
        Cow::Owned(raw.replace("%3A", ":").replace("%3a", ":"))
    } else {
        Cow::Borrowed(raw)
    }
}

/// Whether a model id (any region profile prefix: `us.`, `global.`…) is Anthropic's.
fn is_anthropic(id: &str) -> bool {
    id.split('.').take(2).any(|part| part == "anthropic")
}

impl ProviderApi for BedrockConverse {
    fn format(&self) -> ApiFormat {
        ApiFormat::BedrockConverse
    }

    fn provider(&self) -> &'static str {
        "bedrock"
    }

    fn route<'p>(&self, path: &'p str) -> Option<Route<'p>> {
        let (id, op) = split(path)?;
        let path_stream = match op {
            "converse" => false,
            "converse-stream" => true,
            _ => return None,
        };
        Some(Route {
            format: ApiFormat::BedrockConverse,
            path_model: Some(id),
            path_stream,
        })
    }

    fn request_field(&self, key: &str) -> RequestField {
        match key {
            "messages" | "system" => RequestField::Prompt,
            "toolConfig" => RequestField::Tools,
            "inferenceConfig" => RequestField::Config("inferenceConfig"),
            _ => RequestField::Other,
        }
    }

    fn config_field(&self, key: &str) -> RequestField {
        match key {
            "maxTokens" => RequestField::OutputCap("inferenceConfig.maxTokens"),
            _ => RequestField::Other,
        }
    }

    fn prices_answer_model(&self) -> bool {
        false
    }

    fn read_usage(&self, s: &[u8], i: usize) -> Result<(UsageValue, usize), UsageError> {
        UsageValue::read(s, i, ConverseUsage::meaning)
    }

    fn keeps_event(&self, name: &[u8]) -> bool {
        name == b"metadata"
    }

    fn read_event(&self, st: &mut StreamRead, name: &[u8], data: &[u8]) -> Result<(), UsageError> {
        if name != b"metadata" {
            return Ok(());
        }
        let usage = usage_in(self, data)?.ok_or(UsageError::MissingField("metadata.usage"))?;
        st.usage = Some(usage);
        st.complete = true;
        Ok(())
    }
}

impl ProviderApi for BedrockInvoke {
    fn format(&self) -> ApiFormat {
        ApiFormat::BedrockInvoke
    }

    fn provider(&self) -> &'static str {
        "bedrock"
    }

    fn route<'p>(&self, path: &'p str) -> Option<Route<'p>> {
        let (id, op) = split(path)?;
        let path_stream = match op {
            "invoke" => false,
            "invoke-with-response-stream" => true,
            _ => return None,
        };
        is_anthropic(&model_id(id)).then_some(Route {
            format: ApiFormat::BedrockInvoke,
            path_model: Some(id),
            path_stream,
        })
    }

    fn request_field(&self, key: &str) -> RequestField {
        match key {
            // Bedrock has no Anthropic service tiers, and the path names the model.
            "service_tier" | "model" => RequestField::Other,
            _ => AnthropicMessages.request_field(key),
        }
    }

    fn prices_answer_model(&self) -> bool {
        false
    }

    fn read_usage(&self, s: &[u8], i: usize) -> Result<(UsageValue, usize), UsageError> {
        AnthropicMessages.read_usage(s, i)
    }

    fn keeps_event(&self, name: &[u8]) -> bool {
        name == b"chunk"
    }

    fn event_matters(&self, name: &[u8], data: &[u8]) -> bool {
        let mut buf = [0u8; 48];
        match in_place_head(name, data).map(|head| chunk_type(head, &mut buf)) {
            // Anthropic's reader reads the events it keeps; of the others only its end mark
            // changes what the stream reports.
            Some(Ok(Some(ty))) => AnthropicMessages.keeps_event(ty) || ty == b"message_stop",
            _ => true,
        }
    }

    fn read_event(&self, st: &mut StreamRead, name: &[u8], data: &[u8]) -> Result<(), UsageError> {
        if name != b"chunk" {
            return Ok(());
        }
        let mut buf = [0u8; 48];
        if let Some(head) = in_place_head(name, data) {
            if let Some(ty) = chunk_type(head, &mut buf)? {
                if !AnthropicMessages.keeps_event(ty) {
                    AnthropicMessages.skipped_event(st, ty);
                    return Ok(());
                }
            }
        }
        let [bytes] = scan::find_members(data, ["bytes"])?;
        let b64 = bytes
            .and_then(scan::unquote)
            .ok_or(UsageError::MissingField("chunk.bytes"))?;
        let event = base64::engine::general_purpose::STANDARD
            .decode(&*b64)
            .map_err(not_base64)?;
        AnthropicMessages.read_event(st, b"", &event)
    }

    fn stream_usage(&self, st: &StreamRead) -> (Option<Usage>, Option<UsageError>) {
        AnthropicMessages.stream_usage(st)
    }
}

fn not_base64<E>(_: E) -> UsageError {
    UsageError::MalformedJson("chunk.bytes is not base64".into())
}

/// The first 64 base64 characters of a `chunk` event's `bytes`, read in place: Bedrock writes
/// `bytes` first, and they name the type of the Anthropic event inside (the first member of
/// every one), so most chunks (text deltas) are stepped over without scanning the rest.
/// `None` when the chunk is not laid out so; it is then decoded whole.
fn in_place_head<'a>(name: &[u8], data: &'a [u8]) -> Option<&'a [u8]> {
    if name != b"chunk" {
        return None;
    }
    data.strip_prefix(br#"{"bytes":""#)
        .and_then(|rest| rest.get(..64))
        .filter(|p| !p.iter().any(|&b| b == b'"' || b == b'\\'))
}

/// The type of the Anthropic event whose base64 begins with `head` (64 characters, decoded
/// into `buf`), if it is whole there.
fn chunk_type<'b>(head: &[u8], buf: &'b mut [u8; 48]) -> Result<Option<&'b [u8]>, UsageError> {
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(head, buf)
        .map_err(not_base64)?;
    Ok(event_type(buf.get(..n).unwrap_or_default()))
}

/// The name in `{"type":"NAME"` at the start of an event, if it is whole there.
fn event_type(head: &[u8]) -> Option<&[u8]> {
    let rest = head.strip_prefix(br#"{"type":""#)?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    (rest.get(end) == Some(&b'"')).then(|| rest.get(..end).unwrap_or_default())
}

/// Converse's `usage` (`TokenUsage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ConverseUsage {
    input_tokens: Count,
    output_tokens: Count,
    cache_read: Count,
    cache_write: Count,
    /// The `1h` entries of `cacheDetails`, summed.
    write_1h: u64,
}

/// One `CacheDetail`: `{"ttl": "5m" | "1h", "inputTokens": n}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CacheDetail {
    one_hour: bool,
    input_tokens: Count,
}

impl Fields for CacheDetail {
    fn read_named(&mut self, name: &[u8], s: &[u8], i: usize) -> Result<Option<usize>, UsageError> {
        match name {
            b"ttl" => {
                let end = skip(s, i)?;
                self.one_hour = s.get(i..end) == Some(br#""1h""#);
                Ok(Some(end))
            }
            b"inputTokens" => read_count(s, i, &mut self.input_tokens).map(Some),
            _ => Ok(None),
        }
    }
}

impl Fields for ConverseUsage {
    fn read_named(&mut self, name: &[u8], s: &[u8], i: usize) -> Result<Option<usize>, UsageError> {
        match name {
            b"inputTokens" => read_count(s, i, &mut self.input_tokens),
            b"outputTokens" => read_count(s, i, &mut self.output_tokens),
            b"cacheReadInputTokens" => read_count(s, i, &mut self.cache_read),
            b"cacheWriteInputTokens" => read_count(s, i, &mut self.cache_write),
            b"cacheDetails" => {
                let end = skip(s, i)?;
                scan::for_each_element(s.get(i..end).unwrap_or_default(), |item| {
                    let (detail, _) = Nested::<CacheDetail>::read(item, 0)?;
                    let d = detail.get("usage.cacheDetails")?.unwrap_or_default();
                    if d.one_hour {
                        let n = d.input_tokens.or_zero("usage.cacheDetails.inputTokens")?;
                        self.write_1h = self.write_1h.saturating_add(n);
                    }
                    Ok::<(), UsageError>(())
                })?;
                Ok(end)
            }
            _ => return Ok(None),
        }
        .map(Some)
    }
}

impl ConverseUsage {
    fn meaning(&self) -> Result<Usage, UsageError> {
        let write = self.cache_write.or_zero("usage.cacheWriteInputTokens")?;
        let write_1h = self.write_1h.min(write);
        Ok(Usage {
            input_uncached: self.input_tokens.required("usage.inputTokens")?,
            cache_read: self.cache_read.or_zero("usage.cacheReadInputTokens")?,
            cache_write_5m: write - write_1h,
            cache_write_1h: write_1h,
            output: self.output_tokens.required("usage.outputTokens")?,
            ..Usage::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{eventstream, from_json};

    #[test]
    fn routes() {
        let r = |p: &str| {
            super::super::route(p).map(|r| {
                (
                    r.format,
                    r.path_model.map(|m| model_id(m).into_owned()),
                    r.path_stream,
                )
            })
        };
        let some = |m: &str| Some(m.to_string());
        assert_eq!(
            r("/model/amazon.nova-pro-v1:0/converse"),
            Some((
                ApiFormat::BedrockConverse,
                some("amazon.nova-pro-v1:0"),
                false
            ))
        );
        assert_eq!(
            r("/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/converse-stream"),
            Some((
                ApiFormat::BedrockConverse,
                some("us.anthropic.claude-haiku-4-5-20251001-v1:0"),
                true
            ))
        );
        assert_eq!(
            r("/model/anthropic.claude-3-5-haiku-20241022-v1%3a0/invoke"),
            Some((
                ApiFormat::BedrockInvoke,
                some("anthropic.claude-3-5-haiku-20241022-v1:0"),
                false
            ))
        );
        assert_eq!(
            r("/model/global.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke-with-response-stream"),
            Some((
                ApiFormat::BedrockInvoke,
                some("global.anthropic.claude-sonnet-4-5-20250929-v1:0"),
                true
            ))
        );
        for p in [
            // Other vendors' InvokeModel bodies are not metered.
            "/model/meta.llama3-70b-instruct-v1:0/invoke",
            "/model/amazon.titan-embed-text-v2:0/invoke",
            "/model/x/count-tokens",
            "/model//converse",
            "/model/a%2Fb/converse",
            "/model/a%3/converse",
            "/model/a/converse/",
            "/model/arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.m/invoke",
        ] {
            assert_eq!(r(p), None, "{p}");
        }
        assert!(escapes_allowed("/model/a%3A0/converse"));
        assert!(!escapes_allowed("/model/a%3A0/conv%65rse"));
        assert!(!escapes_allowed("/model/a%2F0/converse"));
    }

    #[test]
    fn converse_usage_with_a_cache_split() {
        let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"usage"}]}},
            "stopReason":"end_turn",
            "usage":{"inputTokens":30,"outputTokens":12,"totalTokens":1542,
                     "cacheReadInputTokens":1000,"cacheWriteInputTokens":500,
                     "cacheDetails":[{"ttl":"1h","inputTokens":200},{"ttl":"5m","inputTokens":300}]},
            "metrics":{"latencyMs":310}}"#;
        let u = from_json(ApiFormat::BedrockConverse, body).unwrap();
        assert_eq!(
            (
                u.input_uncached,
                u.cache_read,
                u.cache_write_5m,
                u.cache_write_1h,
                u.output
            ),
            (30, 1000, 300, 200, 12)
        );
        let bad = br#"{"usage":{"inputTokens":1,"outputTokens":1,"cacheDetails":[{"ttl":"1h","inputTokens":"x"}]}}"#;
        assert!(from_json(ApiFormat::BedrockConverse, bad).is_err());
        let missing = br#"{"usage":{"outputTokens":1}}"#;
        assert_eq!(
            from_json(ApiFormat::BedrockConverse, missing),
            Err(UsageError::MissingField("usage.inputTokens"))
        );
    }

    fn chunk(event: &str) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(event);
        eventstream::encode_event(
            "chunk",
            format!(r#"{{"bytes":"{b64}","p":"abc"}}"#).as_bytes(),
        )
    }

    #[test]
    fn invoke_stream_reads_anthropic_events_inside_chunks() {
        let stream = [
            chunk(r#"{"type":"message_start","message":{"id":"msg_bdrk_01","type":"message","role":"assistant","model":"claude-3-5-haiku-20241022","content":[],"usage":{"input_tokens":25,"cache_read_input_tokens":100,"output_tokens":1}}}"#),
            chunk(r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
            chunk(r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\"usage\": {\"output_tokens\": 99}"}}"#),
            chunk(r#"{"type":"content_block_stop","index":0}"#),
            chunk(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#),
            chunk(r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":25,"outputTokenCount":15,"invocationLatency":900,"firstByteLatency":300}}"#),
        ]
        .concat();
        for cut in 0..=stream.len() {
            let mut es = eventstream::EventStreamUsage::new(ApiFormat::BedrockInvoke, 4096);
            es.push(&stream[..cut]);
            es.push(&stream[cut..]);
            let o = es.finish();
            assert!(o.complete, "{cut}");
            assert_eq!(o.failed_events, 0);
            let u = o.usage.unwrap();
            assert_eq!((u.input_uncached, u.cache_read, u.output), (25, 100, 15));
        }
        let cut = eventstream::from_event_stream(
            ApiFormat::BedrockInvoke,
            &stream[..stream.len() - 1],
            4096,
        );
        assert!(cut.truncated());
        let bad = eventstream::encode_event("chunk", br#"{"bytes":"not base64!"}"#);
        let o = eventstream::from_event_stream(ApiFormat::BedrockInvoke, &bad, 4096);
        assert!(matches!(o.first_error, Some(UsageError::MalformedJson(_))));
    }
}
