//! Server-Sent Events framing (<https://html.spec.whatwg.org/multipage/server-sent-events.html>):
//! each event is built whole as one `Bytes`, so the server can send, delay or cut the stream
//! at event boundaries.

use bytes::Bytes;
use serde::Serialize;

fn frame(name: Option<&str>, body: &impl Serialize, end: &[u8]) -> Bytes {
    let json = serde_json::to_vec(body).unwrap_or_default();
    let mut b = Vec::with_capacity(json.len() + 48);
    if let Some(name) = name {
        b.extend_from_slice(b"event: ");
        b.extend_from_slice(name.as_bytes());
        b.push(b'\n');
    }
    b.extend_from_slice(b"data: ");
    b.extend_from_slice(&json);
    b.extend_from_slice(end);
    Bytes::from(b)
}

/// `data: {json}\n\n` (OpenAI Chat).
pub fn data_event(body: &impl Serialize) -> Bytes {
    frame(None, body, b"\n\n")
}

/// `event: NAME\ndata: {json}\n\n` (OpenAI Responses, Anthropic).
pub fn named_event(name: &str, body: &impl Serialize) -> Bytes {
    frame(Some(name), body, b"\n\n")
}

/// `data: {json}\r\n\r\n` (Gemini, whose servers end lines with CRLF).
pub fn gemini_event(body: &impl Serialize) -> Bytes {
    frame(None, body, b"\r\n\r\n")
}
