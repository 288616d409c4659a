//! Amazon Bedrock runtime response shapes: Converse's JSON and its event stream, InvokeModel's
//! Anthropic answers and their `chunk` event stream, Bedrock's errors, and the AWS event-stream
//! framing they travel in (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html>,
//! `API_runtime_ConverseStream.html`, `API_runtime_InvokeModelWithResponseStream.html`).
//!
//! The framing is written here with its own CRC (crc32fast), not with Tollgate's encoder, so
//! the filter's parser is checked against an independent writer (and botocore's reader checks
//! this one in the SDK tests).

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::usage::{reply_text, text_chunks, Plan, Usage};

/// One event-stream message: prelude (total length, headers length, their CRC), string
/// headers, payload, message CRC.
pub fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        h.extend_from_slice(name.as_bytes());
        h.push(7); // string
        h.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    m.extend_from_slice(&u32::try_from(h.len()).unwrap_or(u32::MAX).to_be_bytes());
    let prelude_crc = crc32fast::hash(&m);
    m.extend_from_slice(&prelude_crc.to_be_bytes());
    m.extend_from_slice(&h);
    m.extend_from_slice(payload);
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    Bytes::from(m)
}

/// An `event` message named `event_type` carrying `body` as JSON, with Bedrock's `p` padding
/// member (random-length filler it adds against traffic analysis).
fn event(event_type: &str, mut body: Value) -> Bytes {
    if let Some(o) = body.as_object_mut() {
        o.insert("p".into(), json!("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"));
    }
    frame(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        &serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// An exception message ending a stream (`modelStreamErrorException`, `throttlingException`…).
pub fn exception(kind: &str, message: &str) -> Bytes {
    frame(
        &[
            (":exception-type", kind),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        &serde_json::to_vec(&json!({ "message": message })).unwrap_or_default(),
    )
}

/// Converse's `usage` (`TokenUsage`): `inputTokens` is the uncached prompt; cache reads and
/// writes are apart, `cacheDetails` splits the write by TTL.
fn converse_usage(u: &Usage) -> Value {
    let write = u.cache_write_5m + u.cache_write_1h;
    let mut usage = serde_json::Map::new();
    usage.insert("inputTokens".into(), json!(u.input_uncached));
    usage.insert("outputTokens".into(), json!(u.output));
    usage.insert("totalTokens".into(), json!(u.prompt_total() + u.output));
    if u.cache_read > 0 || write > 0 {
        usage.insert("cacheReadInputTokens".into(), json!(u.cache_read));
        usage.insert("cacheWriteInputTokens".into(), json!(write));
    }
    if u.cache_write_1h > 0 {
        usage.insert(
            "cacheDetails".into(),
            json!([
                {"ttl": "5m", "inputTokens": u.cache_write_5m},
                {"ttl": "1h", "inputTokens": u.cache_write_1h},
            ]),
        );
    }
    Value::Object(usage)
}

fn stop_reason(plan: &Plan) -> &'static str {
    if plan.hit_limit {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// Converse's answer.
pub fn converse_json(plan: &Plan) -> Vec<u8> {
    let body = json!({
        "output": {"message": {"role": "assistant",
                               "content": [{"text": reply_text(plan.usage.text_tokens())}]}},
        "stopReason": stop_reason(plan),
        "usage": converse_usage(&plan.usage),
        "metrics": {"latencyMs": 42},
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// ConverseStream: `messageStart`, a `contentBlockDelta` per text chunk, `contentBlockStop`,
/// `messageStop`, then `metadata` with the usage.
pub fn converse_events(plan: &Plan) -> Vec<Bytes> {
    let mut out = vec![event("messageStart", json!({"role": "assistant"}))];
    for text in text_chunks(plan.usage.text_tokens()) {
        out.push(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": text}}),
        ));
    }
    out.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
    out.push(event(
        "messageStop",
        json!({"stopReason": stop_reason(plan)}),
    ));
    out.push(event(
        "metadata",
        json!({"usage": converse_usage(&plan.usage), "metrics": {"latencyMs": 42}}),
    ));
    out
}

/// The name Anthropic gives the model a Bedrock id names: `us.anthropic.claude-x-20250101-v1:0`
/// answers as `claude-x-20250101`.
pub fn vendor_model(id: &str) -> String {
    let name = id.split_once("anthropic.").map_or(id, |(_, m)| m);
    let name = name.rsplit_once(":").map_or(name, |(m, _)| m);
    match name.rsplit_once("-v") {
        Some((m, v)) if v.bytes().all(|b| b.is_ascii_digit()) => m.to_owned(),
        _ => name.to_owned(),
    }
}

/// InvokeModelWithResponseStream: each Anthropic stream event (its SSE `data`, decoded) as the
/// base64 `bytes` of a `chunk` event; `message_stop` carries Bedrock's invocation metrics.
pub fn invoke_events(anthropic_sse: &[Bytes], usage: &Usage) -> Vec<Bytes> {
    anthropic_sse
        .iter()
        .filter_map(|sse| {
            let data = sse
                .split(|&b| b == b'\n')
                .find_map(|l| l.strip_prefix(b"data: "))?;
            let mut ev: serde_json::Map<String, Value> = serde_json::from_slice(data).ok()?;
            let ty = ev.get("type").and_then(Value::as_str).unwrap_or_default();
            if ty == "ping" {
                return None; // Bedrock forwards no pings
            }
            if ty == "message_stop" {
                ev.insert(
                    "amazon-bedrock-invocationMetrics".into(),
                    json!({
                        "inputTokenCount": usage.input_uncached,
                        "outputTokenCount": usage.output,
                        "invocationLatency": 420,
                        "firstByteLatency": 120,
                    }),
                );
            }
            let b64 = base64::engine::general_purpose::STANDARD
                .encode(serde_json::to_vec(&ev).unwrap_or_default());
            Some(event("chunk", json!({ "bytes": b64 })))
        })
        .collect()
}

/// Bedrock's error: `{"message": …}` and the error's name in `x-amzn-ErrorType`, as botocore
/// reads it.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "ValidationException",
        401 | 403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// The JSON of a Bedrock error.
pub fn error_json(message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "message": message })).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn vendor_names() {
        assert_eq!(
            vendor_model("us.anthropic.claude-haiku-4-5-20251001-v1:0"),
            "claude-haiku-4-5-20251001"
        );
        assert_eq!(
            vendor_model("anthropic.claude-3-5-haiku-20241022-v1:0"),
            "claude-3-5-haiku-20241022"
        );
    }

    #[test]
    fn frames_match_zlib() {
        // Python: zlib.crc32 over the same prelude and message (no headers, `{'foo':'bar'}`).
        let m = frame(&[], b"{'foo':'bar'}");
        assert_eq!(
            m[..12],
            [0x00, 0x00, 0x00, 0x1d, 0x00, 0x00, 0x00, 0x00, 0xfd, 0x52, 0x8c, 0x5a]
        );
        assert_eq!(m[m.len() - 4..], [0xc3, 0x65, 0x39, 0x36]);
    }
}
