//! OpenAI response shapes: Chat Completions (JSON and `chat.completion.chunk` SSE), Responses
//! (JSON and typed SSE events) and Embeddings, plus the error body.
//!
//! Shapes follow the API reference (<https://platform.openai.com/docs/api-reference/chat>,
//! `/responses`, `/embeddings`) closely enough for the official `openai` Python SDK to parse
//! them; `tests/upstream/sdk_check.py` proves it. Chat chunks are structs, not `json!`, so
//! `"usage"` is the last key of every chunk as OpenAI sends it (`…,"usage":null}`), which
//! lets a meter recognise chunks without usage from their last bytes.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use crate::sse::{data_event, named_event};
use crate::usage::{reply_text, text_chunks, Plan, Usage};
use crate::Ids;

/// `usage` of a chat completion: prompt includes cached, completion includes reasoning.
#[derive(Serialize)]
struct ChatUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

fn chat_usage(u: &Usage) -> ChatUsage {
    let prompt = u.prompt_total();
    ChatUsage {
        prompt_tokens: prompt,
        completion_tokens: u.output,
        total_tokens: prompt + u.output,
        prompt_tokens_details: PromptDetails {
            cached_tokens: u.cache_read,
            audio_tokens: u.input_audio,
        },
        completion_tokens_details: CompletionDetails {
            reasoning_tokens: u.reasoning,
            audio_tokens: u.output_audio,
            accepted_prediction_tokens: 0,
            rejected_prediction_tokens: 0,
        },
    }
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<&'static str>,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: ChatMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: ChatUsage,
    service_tier: &'static str,
    system_fingerprint: Option<&'static str>,
}

fn finish_reason(plan: &Plan) -> &'static str {
    if plan.hit_limit {
        "length"
    } else {
        "stop"
    }
}

/// The non-streaming chat completion.
pub fn chat_json(plan: &Plan, ids: &Ids) -> Vec<u8> {
    let text = reply_text(plan.usage.text_tokens());
    let body = ChatCompletion {
        id: &ids.id("chatcmpl-"),
        object: "chat.completion",
        created: ids.created,
        model: &plan.model,
        choices: [ChatChoice {
            index: 0,
            message: ChatMessage {
                role: "assistant",
                content: &text,
                refusal: None,
                annotations: [],
            },
            logprobs: None,
            finish_reason: finish_reason(plan),
        }],
        usage: chat_usage(&plan.usage),
        service_tier: plan.usage.tier.openai(),
        system_fingerprint: None,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// One `chat.completion.chunk`. `usage` is serialized only when the client asked for usage
/// (`Some(None)` → `"usage":null`, `Some(Some(u))` → the object), always as the last key.
#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: Option<&'static str>,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<ChatUsage>>,
}

/// The chat stream: a role chunk, one chunk per text chunk, a finish chunk, the usage chunk
/// (`"choices": []`) when `stream_options.include_usage` is true, then `data: [DONE]`.
pub fn chat_events(plan: &Plan, ids: &Ids) -> Vec<Bytes> {
    let id = ids.id("chatcmpl-");
    // Declared before the closures so the chunks they borrow outlive them.
    let texts = text_chunks(plan.usage.text_tokens());
    let null_usage = || plan.include_usage.then_some(None);
    let chunk = |choices: Vec<ChunkChoice<'_>>, usage: Option<Option<ChatUsage>>| {
        data_event(&Chunk {
            id: &id,
            object: "chat.completion.chunk",
            created: ids.created,
            model: &plan.model,
            service_tier: plan.usage.tier.openai(),
            system_fingerprint: None,
            choices,
            usage,
        })
    };
    let choice = |delta, finish| ChunkChoice {
        index: 0,
        delta,
        logprobs: None,
        finish_reason: finish,
    };
    let mut out = vec![chunk(
        vec![choice(
            Delta {
                role: Some("assistant"),
                content: Some(""),
            },
            None,
        )],
        null_usage(),
    )];
    for text in &texts {
        out.push(chunk(
            vec![choice(
                Delta {
                    role: None,
                    content: Some(text),
                },
                None,
            )],
            null_usage(),
        ));
    }
    out.push(chunk(
        vec![choice(
            Delta {
                role: None,
                content: None,
            },
            Some(finish_reason(plan)),
        )],
        null_usage(),
    ));
    if plan.include_usage {
        out.push(chunk(vec![], Some(Some(chat_usage(&plan.usage)))));
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

fn responses_usage(u: &Usage) -> Value {
    let input = u.prompt_total();
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": u.cache_read},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": input + u.output,
    })
}

fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message_item(item_id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"id": item_id, "type": "message", "status": status, "role": "assistant",
           "content": content})
}

/// A Responses `response` object. `done` gives the final status, output and usage;
/// otherwise it is the `in_progress` object of `response.created`.
fn response_object(plan: &Plan, resp_id: &str, item_id: &str, created: u64, done: bool) -> Value {
    let (status, incomplete, output, usage) = if done {
        let text = reply_text(plan.usage.text_tokens());
        let status = if plan.hit_limit {
            "incomplete"
        } else {
            "completed"
        };
        let incomplete = plan
            .hit_limit
            .then(|| json!({"reason": "max_output_tokens"}));
        let item = message_item(item_id, status, vec![output_text_part(&text)]);
        // Each search the model ran is a `web_search_call` item before the message.
        let mut output: Vec<Value> = (0..plan.usage.web_searches)
            .map(|i| {
                json!({"type": "web_search_call", "id": format!("ws_{item_id}_{i}"),
                       "status": "completed",
                       "action": {"type": "search", "query": format!("mock query {i}")}})
            })
            .collect();
        output.push(item);
        (status, incomplete, output, responses_usage(&plan.usage))
    } else {
        ("in_progress", None, vec![], Value::Null)
    };
    json!({
        "id": resp_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": null,
        "max_output_tokens": plan.max_output,
        "metadata": {},
        "model": plan.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "service_tier": plan.usage.tier.openai(),
        "store": false,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
    })
}

/// The non-streaming Responses object. A reply cut by `max_output_tokens` is `incomplete`,
/// as OpenAI reports it.
pub fn responses_json(plan: &Plan, ids: &Ids) -> Vec<u8> {
    let body = response_object(plan, &ids.id("resp_"), &ids.id("msg_"), ids.created, true);
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The Responses stream: `response.created`, `response.in_progress`, the output item and
/// content part opening, one `response.output_text.delta` per text chunk, their closing
/// events, then `response.completed` (or `response.incomplete` when the cap bound) with usage.
/// Every event carries its `sequence_number`.
pub fn responses_events(plan: &Plan, ids: &Ids) -> Vec<Bytes> {
    let resp_id = ids.id("resp_");
    let item_id = ids.id("msg_");
    let mut seq = 0u64;
    let mut out = Vec::new();
    let mut push = |name: &str, mut body: Value| {
        if let Value::Object(m) = &mut body {
            m.insert("type".into(), Value::from(name));
            m.insert("sequence_number".into(), Value::from(seq));
        }
        seq += 1;
        out.push(named_event(name, &body));
    };
    let started = response_object(plan, &resp_id, &item_id, ids.created, false);
    push("response.created", json!({"response": started}));
    push("response.in_progress", json!({"response": started}));
    push(
        "response.output_item.added",
        json!({"output_index": 0, "item": message_item(&item_id, "in_progress", vec![])}),
    );
    push(
        "response.content_part.added",
        json!({"item_id": item_id, "output_index": 0, "content_index": 0,
               "part": output_text_part("")}),
    );
    for delta in text_chunks(plan.usage.text_tokens()) {
        push(
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                   "delta": delta, "logprobs": []}),
        );
    }
    let text = reply_text(plan.usage.text_tokens());
    push(
        "response.output_text.done",
        json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text,
               "logprobs": []}),
    );
    push(
        "response.content_part.done",
        json!({"item_id": item_id, "output_index": 0, "content_index": 0,
               "part": output_text_part(&text)}),
    );
    let done = response_object(plan, &resp_id, &item_id, ids.created, true);
    let status = if plan.hit_limit {
        "incomplete"
    } else {
        "completed"
    };
    push(
        "response.output_item.done",
        json!({"output_index": 0,
               "item": message_item(&item_id, status, vec![output_text_part(&text)])}),
    );
    let last = if plan.hit_limit {
        "response.incomplete"
    } else {
        "response.completed"
    };
    push(last, json!({"response": done}));
    out
}

/// Standard base64 (RFC 4648, padded) of little-endian `f32`s: the SDK's default
/// `encoding_format: "base64"` for embeddings.
fn base64_f32(values: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group.first().copied().unwrap_or(0),
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            let c = if i <= group.len() {
                ALPHABET
                    .get(usize::try_from((n >> shift) & 63).unwrap_or(0))
                    .copied()
                    .unwrap_or(b'A')
            } else {
                b'='
            };
            out.push(char::from(c));
        }
    }
    out
}

/// Embeddings: one deterministic vector per input (`dimensions`, default 8), as floats or
/// base64 as `encoding_format` asks; usage is prompt tokens only.
pub fn embeddings_json(plan: &Plan, request: &Value) -> Vec<u8> {
    let dims = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(8)
        .clamp(1, 4096);
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = (0..plan.inputs)
        .map(|i| {
            // Unit-ish vectors that differ per input; the values mean nothing.
            let v: Vec<f32> = (0..dims)
                .map(|d| ((i as f32 + 1.0) * (d as f32 + 1.0)).sin())
                .collect();
            let embedding = if base64 {
                Value::from(base64_f32(&v))
            } else {
                Value::from(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let p = plan.usage.input_uncached;
    let body = json!({"object": "list", "data": data, "model": plan.model,
                      "usage": {"prompt_tokens": p, "total_tokens": p}});
    serde_json::to_vec(&body).unwrap_or_default()
}

/// OpenAI's error body (<https://platform.openai.com/docs/guides/error-codes>).
pub fn error_json(status: u16, message: &str) -> Vec<u8> {
    let (kind, code) = match status {
        400 | 404 | 413 | 422 => ("invalid_request_error", Value::Null),
        401 => ("authentication_error", Value::from("invalid_api_key")),
        403 => ("permission_error", Value::Null),
        429 => ("rate_limit_error", Value::from("rate_limit_exceeded")),
        _ => ("server_error", Value::Null),
    };
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        // 1.0f32 little-endian is 00 00 80 3f.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 1.0, 1.0]), "AACAPwAAgD8AAIA/");
    }
}
