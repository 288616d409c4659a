//! Anthropic Messages response shapes: the JSON message, the SSE event sequence and the error
//! body (<https://docs.anthropic.com/en/api/messages>,
//! <https://docs.anthropic.com/en/docs/build-with-claude/streaming>).
//!
//! `input_tokens` is the *uncached* prompt; cache reads and writes are separate fields, and
//! `cache_creation` splits the write by lifetime. Reasoning (thinking) tokens are inside
//! `output_tokens`, as Anthropic bills them. A stream reports input and cache usage in
//! `message_start` (with `output_tokens: 1`, as Anthropic does) and the final `output_tokens`
//! in `message_delta`.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::sse::named_event;
use crate::usage::{reply_text, text_chunks, Plan, Usage};
use crate::Ids;

fn usage(u: &Usage, output_tokens: u64) -> Value {
    json!({
        "input_tokens": u.input_uncached,
        "cache_creation_input_tokens": u.cache_write_5m + u.cache_write_1h,
        "cache_read_input_tokens": u.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": u.cache_write_5m,
            "ephemeral_1h_input_tokens": u.cache_write_1h,
        },
        "output_tokens": output_tokens,
        "server_tool_use": {"web_search_requests": u.web_searches, "web_fetch_requests": 0},
        "service_tier": u.tier.anthropic(),
    })
}

fn stop_reason(plan: &Plan) -> &'static str {
    if plan.hit_limit {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// The non-streaming message.
pub fn message_json(plan: &Plan, ids: &Ids) -> Vec<u8> {
    let text = reply_text(plan.usage.text_tokens());
    let body = json!({
        "id": ids.id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason(plan),
        "stop_sequence": null,
        "usage": usage(&plan.usage, plan.usage.output),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The stream: `message_start`, `content_block_start`, a `ping`, one `content_block_delta`
/// per text chunk, `content_block_stop`, `message_delta` (stop reason, final
/// `output_tokens`), `message_stop`.
pub fn message_events(plan: &Plan, ids: &Ids) -> Vec<Bytes> {
    let mut out = Vec::new();
    let start = json!({
        "type": "message_start",
        "message": {
            "id": ids.id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage(&plan.usage, 1),
        },
    });
    out.push(named_event("message_start", &start));
    out.push(named_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
    ));
    out.push(named_event("ping", &json!({"type": "ping"})));
    for text in text_chunks(plan.usage.text_tokens()) {
        out.push(named_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": text}}),
        ));
    }
    out.push(named_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push(named_event(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason(plan), "stop_sequence": null},
                "usage": {"output_tokens": plan.usage.output}}),
    ));
    out.push(named_event(
        "message_stop",
        &json!({"type": "message_stop"}),
    ));
    out
}

/// Anthropic's error body (<https://docs.anthropic.com/en/api/errors>).
pub fn error_json(status: u16, message: &str, request_id: &str) -> Vec<u8> {
    let kind = match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message},
                      "request_id": request_id});
    serde_json::to_vec(&body).unwrap_or_default()
}
