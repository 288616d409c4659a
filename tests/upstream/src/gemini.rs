//! Gemini `generateContent` / `streamGenerateContent` response shapes and the error body
//! (<https://ai.google.dev/api/generate-content>).
//!
//! `promptTokenCount` includes `cachedContentTokenCount`; `thoughtsTokenCount` (reasoning) is
//! outside `candidatesTokenCount` but inside `totalTokenCount`. Zero-valued optional counts
//! are omitted, as Gemini's proto3 JSON does. In a stream every chunk carries
//! `usageMetadata`; only the last one, which also has the `finishReason`, is complete.
//! SSE events end in `\r\n\r\n`, as Google's servers send them.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::sse::gemini_event;
use crate::usage::{reply_text, text_chunks, Plan, Usage};
use crate::Ids;

/// `usageMetadata`; `final_` adds the output counts.
fn usage_metadata(u: &Usage, final_: bool) -> Value {
    let prompt = u.prompt_total();
    let mut m = Map::new();
    m.insert("promptTokenCount".into(), prompt.into());
    if final_ {
        m.insert("candidatesTokenCount".into(), u.text_tokens().into());
        m.insert("totalTokenCount".into(), (prompt + u.output).into());
        if u.reasoning > 0 {
            m.insert("thoughtsTokenCount".into(), u.reasoning.into());
        }
    } else {
        m.insert("totalTokenCount".into(), prompt.into());
    }
    if u.cache_read > 0 {
        m.insert("cachedContentTokenCount".into(), u.cache_read.into());
    }
    m.insert(
        "promptTokensDetails".into(),
        json!([{"modality": "TEXT", "tokenCount": prompt}]),
    );
    Value::Object(m)
}

fn finish_reason(plan: &Plan) -> &'static str {
    if plan.hit_limit {
        "MAX_TOKENS"
    } else {
        "STOP"
    }
}

fn response(plan: &Plan, response_id: &str, text: &str, final_: bool) -> Value {
    let mut candidate = json!({"content": {"parts": [{"text": text}], "role": "model"},
                               "index": 0});
    if final_ {
        if let Value::Object(c) = &mut candidate {
            c.insert("finishReason".into(), finish_reason(plan).into());
            // Grounding with Google Search: the queries it ran, on the final candidate.
            if plan.usage.web_searches > 0 {
                let queries: Vec<String> = (0..plan.usage.web_searches)
                    .map(|i| format!("mock query {i}"))
                    .collect();
                c.insert(
                    "groundingMetadata".into(),
                    json!({"webSearchQueries": queries, "groundingChunks": []}),
                );
            }
        }
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": usage_metadata(&plan.usage, final_),
        "modelVersion": plan.model,
        "responseId": response_id,
    })
}

/// The non-streaming `GenerateContentResponse`.
pub fn generate_json(plan: &Plan, ids: &Ids) -> Vec<u8> {
    let text = reply_text(plan.usage.text_tokens());
    serde_json::to_vec(&response(plan, &ids.id(""), &text, true)).unwrap_or_default()
}

/// The stream's chunks as JSON values: one per text chunk, the last with `finishReason` and
/// the final usage (a reply with no text still gets that one chunk).
fn chunks(plan: &Plan, ids: &Ids) -> Vec<Value> {
    let id = ids.id("");
    let texts = text_chunks(plan.usage.text_tokens());
    let n = texts.len().max(1);
    (0..n)
        .map(|i| {
            let text = texts.get(i).map_or("", String::as_str);
            response(plan, &id, text, i + 1 == n)
        })
        .collect()
}

/// `:streamGenerateContent?alt=sse`: one `data:` event per chunk.
pub fn stream_events(plan: &Plan, ids: &Ids) -> Vec<Bytes> {
    chunks(plan, ids).iter().map(gemini_event).collect()
}

/// `:streamGenerateContent` without `alt=sse`: a JSON array streamed element by element
/// (`[`, `{…}`, `,{…}`, …, `]`).
pub fn stream_array(plan: &Plan, ids: &Ids) -> Vec<Bytes> {
    let mut out = Vec::new();
    for (i, c) in chunks(plan, ids).iter().enumerate() {
        let mut b = Vec::from(if i == 0 { &b"["[..] } else { &b",\r\n"[..] });
        b.extend(serde_json::to_vec(c).unwrap_or_default());
        out.push(Bytes::from(b));
    }
    out.push(Bytes::from_static(b"]"));
    out
}

/// Google's error body (<https://ai.google.dev/gemini-api/docs/troubleshooting>).
pub fn error_json(status: u16, message: &str) -> Vec<u8> {
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    };
    let body = json!({"error": {"code": status, "message": message, "status": name}});
    serde_json::to_vec(&body).unwrap_or_default()
}
