//! Usage from a streamed (Server-Sent Events) response, read incrementally as Envoy hands over
//! body chunks.
//!
//! Line handling follows the HTML spec's event-stream parser
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>):
//! lines end in `\n`, `\r\n` or `\r`; `field: value` drops one space after the colon; several
//! `data` lines join with `\n`; a blank line dispatches the event; lines starting with `:` are
//! comments. Chunks may split anywhere (inside a line, between `\r` and `\n`, inside a UTF-8
//! character): the parser keeps only the state of the current line, never decodes text, and
//! reads JSON only from whole events. A leading byte-order mark is not stripped: no provider
//! sends one, and it would only garble the first line's field name.
//!
//! Memory is bounded by one event: data of an event whose `event:` name shows it cannot carry
//! usage is dropped as it arrives, and a kept event may not exceed `max_event_bytes` (past it,
//! the event is skipped and counted, the buffer stops growing). The buffer is reused, so a
//! stream allocates once, not per event.
//!
//! What each event means is the API's ([`ProviderApi::keeps_event`],
//! [`ProviderApi::read_event`]; see each module under `crate::provider` for what marks usage
//! and what marks the end of its streams); this module only frames them.
//!
//! Run the tests with `cargo test -p tollgate-core --lib usage::sse` and the split-anywhere
//! golden tests with `cargo test -p tollgate-core --test usage_golden`.

use super::scan::find_line_end;
use super::stream::{Events, StreamOutcome};
use super::Usage;
use crate::provider::ApiFormat;

/// Longest `event:` name kept; every name that matters is shorter, longer ones are "other".
const EVENT_NAME_MAX: usize = 24;
/// Longest field name kept (`event`, `data`, `id`, `retry`); longer ones are unknown fields.
const FIELD_NAME_MAX: usize = 8;
/// Bytes of an oversized OpenAI chat chunk kept to recognise its `"usage":null}` ending.
const TAIL_MAX: usize = 32;

/// Where the parser is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// Reading the field name, before any `:`.
    Name,
    /// Right after `field:`, where one space is dropped.
    ValueStart(Field),
    /// Inside the field's value.
    Value(Field),
}

/// The fields the parser acts on; every other field (and every comment) is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    Other,
}

/// What happens to the current event's data bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataMode {
    /// Appended to the buffer.
    Keep,
    /// Dropped: the API says the event cannot carry usage.
    Skip,
    /// Dropped: the event outgrew `max_event_bytes`; only a short tail is kept.
    Oversized,
}

/// Incremental usage reader for one SSE response stream.
///
/// ```
/// use tollgate_core::provider::ApiFormat;
/// use tollgate_core::usage::SseUsage;
/// let mut sse = SseUsage::new(ApiFormat::OpenAiChat, 64 * 1024);
/// sse.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\nda");
/// sse.push(b"ta: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\r\n\r\n");
/// sse.push(b"data: [DONE]\n\n");
/// let outcome = sse.finish();
/// assert!(outcome.complete);
/// assert_eq!(outcome.usage.unwrap().output, 1);
/// ```
#[derive(Debug, Clone)]
pub struct SseUsage {
    /// What the events say.
    events: Events,

    // Line parser.
    line: LineState,
    /// The previous chunk ended in `\r`: a `\n` opening this one belongs to the same line end.
    after_cr: bool,
    name: [u8; FIELD_NAME_MAX],
    /// Bytes of the field name so far; past `FIELD_NAME_MAX` the field is unknown.
    name_len: usize,

    // Current event.
    event_name: [u8; EVENT_NAME_MAX],
    event_name_len: usize,
    data: Vec<u8>,
    /// `data` lines in the current event (the spec dispatches only events that had one).
    data_lines: u32,
    mode: DataMode,
    tail: Vec<u8>,
}

impl SseUsage {
    /// A reader for a stream in `format` that keeps at most `max_event_bytes` of one event.
    ///
    /// Size `max_event_bytes` for the largest event that carries usage: OpenAI chat and
    /// Anthropic usage events are under 1 KB, but OpenAI's `response.completed` repeats the
    /// whole response (all output text) and Gemini chunks carry their text or image data.
    pub fn new(format: ApiFormat, max_event_bytes: usize) -> Self {
        SseUsage {
            events: Events::new(format, max_event_bytes),
            line: LineState::Name,
            after_cr: false,
            name: [0; FIELD_NAME_MAX],
            name_len: 0,
            event_name: [0; EVENT_NAME_MAX],
            event_name_len: 0,
            data: Vec::new(),
            data_lines: 0,
            mode: DataMode::Keep,
            tail: Vec::new(),
        }
    }

    /// Feeds the next body chunk; chunks may split the stream at any byte.
    pub fn push(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if let Some(rest) = chunk.strip_prefix(b"\n") {
                    chunk = rest;
                    continue;
                }
            }
            chunk = match self.line {
                LineState::Name => self.read_name(chunk),
                LineState::ValueStart(field) => {
                    let rest = chunk.strip_prefix(b" ").unwrap_or(chunk);
                    self.begin_value(field);
                    rest
                }
                LineState::Value(field) => self.read_value(field, chunk),
            };
        }
    }

    /// The usage seen so far (for a client that goes away mid-stream).
    pub fn usage(&self) -> Option<Usage> {
        self.events.usage()
    }

    /// Ends the stream and reports what it said. An event left without its closing blank line
    /// is still read (a proxy may drop the last newline); if its JSON was cut short that is
    /// truncation, not a failed event.
    pub fn finish(mut self) -> StreamOutcome {
        if self.line != LineState::Name || self.name_len > 0 {
            self.end_line(true);
        }
        if self.data_lines > 0 {
            self.dispatch(true);
        }
        self.events.finish()
    }

    /// Reads field-name bytes up to the `:` or the end of the line.
    fn read_name<'c>(&mut self, chunk: &'c [u8]) -> &'c [u8] {
        for (i, &b) in chunk.iter().enumerate() {
            match b {
                b':' => {
                    let field = if self.name_len == 0 {
                        Field::Other // a comment line
                    } else {
                        self.field()
                    };
                    self.line = LineState::ValueStart(field);
                    return chunk.get(i + 1..).unwrap_or_default();
                }
                b'\n' | b'\r' => return self.line_break(chunk, i),
                _ => {
                    if let Some(slot) = self.name.get_mut(self.name_len) {
                        *slot = b;
                    }
                    self.name_len = self.name_len.saturating_add(1);
                }
            }
        }
        &[]
    }

    fn field(&self) -> Field {
        match self.name.get(..self.name_len) {
            Some(b"data") => Field::Data,
            Some(b"event") => Field::Event,
            _ => Field::Other,
        }
    }

    /// Starts the value of `field` (after the optional space).
    fn begin_value(&mut self, field: Field) {
        match field {
            Field::Data => {
                if self.data_lines > 0 {
                    self.append_data(b"\n");
                }
                self.data_lines = self.data_lines.saturating_add(1);
            }
            Field::Event => self.event_name_len = 0,
            Field::Other => {}
        }
        self.line = LineState::Value(field);
    }

    /// Reads value bytes up to the end of the line.
    fn read_value<'c>(&mut self, field: Field, chunk: &'c [u8]) -> &'c [u8] {
        let end = find_line_end(chunk);
        let value = match end {
            Some(i) => chunk.get(..i).unwrap_or_default(),
            None => chunk,
        };
        match field {
            Field::Data => self.append_data(value),
            Field::Event => {
                for &b in value {
                    if let Some(slot) = self.event_name.get_mut(self.event_name_len) {
                        *slot = b;
                    }
                    self.event_name_len = self.event_name_len.saturating_add(1);
                }
            }
            Field::Other => {}
        }
        match end {
            Some(i) => self.line_break(chunk, i),
            None => &[],
        }
    }

    /// `chunk[i]` is `\r` or `\n`: ends the line and returns what follows the line break.
    fn line_break<'c>(&mut self, chunk: &'c [u8], i: usize) -> &'c [u8] {
        let mut next = i + 1;
        if chunk.get(i) == Some(&b'\r') {
            match chunk.get(next) {
                Some(b'\n') => next += 1,
                Some(_) => {}
                None => self.after_cr = true,
            }
        }
        self.end_line(false);
        chunk.get(next..).unwrap_or_default()
    }

    /// Acts on the line just ended.
    fn end_line(&mut self, at_eof: bool) {
        match self.line {
            LineState::Name if self.name_len == 0 => {
                if !at_eof {
                    self.dispatch(false);
                }
            }
            // A field with no colon: the whole line is the name, the value is empty.
            LineState::Name => {
                let field = self.field();
                self.begin_value(field);
                self.end_value(field);
            }
            LineState::ValueStart(field) => {
                self.begin_value(field);
                self.end_value(field);
            }
            LineState::Value(field) => self.end_value(field),
        }
        self.line = LineState::Name;
        self.name_len = 0;
    }

    fn end_value(&mut self, field: Field) {
        if field == Field::Event {
            // A name longer than the buffer matches no name that matters.
            let name = self
                .event_name
                .get(..self.event_name_len)
                .unwrap_or(b"\xff");
            if self.events.keeps(name) {
                if self.mode == DataMode::Skip {
                    self.mode = DataMode::Keep;
                }
            } else {
                self.mode = DataMode::Skip;
                self.data.clear();
            }
        }
    }

    fn append_data(&mut self, bytes: &[u8]) {
        match self.mode {
            DataMode::Skip => {}
            DataMode::Keep => {
                let needed = self.data.len().saturating_add(bytes.len());
                if needed > self.events.max_event_bytes {
                    self.mode = DataMode::Oversized;
                    self.tail.clear();
                    let keep_from = self.data.len().saturating_sub(TAIL_MAX);
                    self.tail
                        .extend_from_slice(self.data.get(keep_from..).unwrap_or_default());
                    self.data.clear();
                    self.push_tail(bytes);
                } else {
                    if needed > self.data.capacity() {
                        // Grow by doubling but never past the cap, so an event near the limit
                        // cannot leave twice the limit allocated.
                        let target = needed
                            .max(self.data.capacity().saturating_mul(2))
                            .min(self.events.max_event_bytes);
                        self.data.reserve_exact(target - self.data.len());
                    }
                    self.data.extend_from_slice(bytes);
                }
            }
            DataMode::Oversized => self.push_tail(bytes),
        }
    }

    /// Keeps the last `TAIL_MAX` bytes of an oversized event.
    fn push_tail(&mut self, bytes: &[u8]) {
        let bytes = bytes
            .get(bytes.len().saturating_sub(TAIL_MAX)..)
            .unwrap_or_default();
        self.tail.extend_from_slice(bytes);
        let excess = self.tail.len().saturating_sub(TAIL_MAX);
        self.tail.drain(..excess);
    }

    /// The blank line (or the end of the stream, `at_eof`): reads the event and resets.
    fn dispatch(&mut self, at_eof: bool) {
        if self.data_lines > 0 {
            // A name longer than the buffer matches no name that matters.
            let name = self
                .event_name
                .get(..self.event_name_len)
                .unwrap_or(b"\xff");
            match self.mode {
                DataMode::Keep => self.events.kept(name, &self.data, at_eof),
                DataMode::Skip => self.events.skipped(name),
                DataMode::Oversized => self.events.oversized(name, &self.tail),
            }
        }
        self.data.clear();
        self.tail.clear();
        self.data_lines = 0;
        self.event_name_len = 0;
        self.mode = DataMode::Keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::openai_chat::ends_with_null_usage;
    use crate::usage::UsageError;
    use proptest::prelude::*;

    fn run(format: ApiFormat, chunks: &[&[u8]]) -> StreamOutcome {
        let mut sse = SseUsage::new(format, 4096);
        for c in chunks {
            sse.push(c);
        }
        sse.finish()
    }

    #[test]
    fn null_usage_suffix() {
        for (text, want) in [
            (&br#"{"a":1,"usage":null}"#[..], true),
            (br#"{"usage" : null } "#, true),
            (br#"{"a":1,"usage":{"x":1}}"#, false),
            (br#"{"a":"\"usage\":null}"#, false),
            (br#"{"a":"x\"usage":null}"#, false),
            (br#"{"m":{"usage":null}}"#, false),
            (br#""usage":null}"#, false),
            (br#"{"usage":nulll}"#, false),
        ] {
            assert_eq!(
                ends_with_null_usage(text),
                want,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn line_endings_and_fields_follow_the_spec() {
        // CR-only line ends, a comment, an id field, no space after the colon, two data lines.
        let stream: &[u8] = b": keep-alive\rid: 7\rdata:{\"choices\":[],\r\
            data: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\r\rdata:[DONE]\r\r";
        let o = run(ApiFormat::OpenAiChat, &[stream]);
        assert!(o.complete);
        assert_eq!(o.usage.map(|u| (u.input_uncached, u.output)), Some((3, 4)));
        assert_eq!(o.events, 2);
        assert_eq!(o.first_error, None);
    }

    #[test]
    fn cr_lf_split_across_chunks_is_one_line_end() {
        let o = run(
            ApiFormat::OpenAiChat,
            &[b"data: [DONE]\r", b"\n", b"\r", b"\n"],
        );
        assert!(o.complete);
        assert_eq!(o.events, 1);
    }

    #[test]
    fn cr_then_lf_in_the_next_chunk_does_not_end_a_second_line() {
        // Were the `\n` taken as a line of its own, the empty line would dispatch the first
        // data line alone (malformed) and the second as another event.
        let o = run(
            ApiFormat::OpenAiChat,
            &[
                b"data: {\"choices\":[],\r",
                b"\ndata: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\r",
                b"\n\r",
                b"\n",
            ],
        );
        assert_eq!(o.failed_events, 0);
        assert_eq!(o.events, 1);
        assert_eq!(o.usage.map(|u| u.output), Some(4));
    }

    #[test]
    fn anthropic_skips_unneeded_events_without_buffering() {
        let mut sse = SseUsage::new(ApiFormat::AnthropicMessages, 1 << 20);
        sse.push(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"");
        for _ in 0..100 {
            sse.push(&[b'x'; 1000]);
        }
        sse.push(b"\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n");
        // Only the small usage event was ever buffered.
        assert!(sse.data.capacity() < 128, "{}", sse.data.capacity());
        let o = sse.finish();
        assert_eq!((o.oversized_events, o.failed_events), (0, 0));
        assert_eq!(o.usage.map(|u| u.output), Some(7));
    }

    #[test]
    fn oversized_events_are_counted_and_memory_stays_capped() {
        let mut sse = SseUsage::new(ApiFormat::OpenAiResponses, 100);
        sse.push(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":\"");
        for _ in 0..100 {
            sse.push(&[b'a'; 1000]);
        }
        assert!(sse.data.capacity() <= 100);
        sse.push(b"\"}}\n\n");
        let o = sse.finish();
        assert_eq!(o.oversized_events, 1);
        assert_eq!(o.first_error, Some(UsageError::EventTooLarge(100)));
        assert!(o.usage.is_none());
    }

    #[test]
    fn oversized_chat_chunk_without_usage_is_not_an_error() {
        let mut sse = SseUsage::new(ApiFormat::OpenAiChat, 64);
        sse.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"");
        sse.push(&[b'a'; 500]);
        sse.push(b"\"}}],\"usage\":null}\n\n");
        let o = sse.finish();
        assert_eq!((o.oversized_events, o.first_error), (0, None));
    }

    #[test]
    fn truncated_stream_keeps_what_it_saw() {
        let o = run(
            ApiFormat::AnthropicMessages,
            &[b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n",
              b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_"],
        );
        assert!(o.truncated());
        assert_eq!(o.usage.map(|u| (u.input_uncached, u.output)), Some((10, 1)));
        assert_eq!(
            o.failed_events, 0,
            "a cut-off last event is truncation, not failure"
        );
    }

    #[test]
    fn running_usage_is_not_the_end_of_a_chat_stream() {
        // vLLM-style `continuous_usage_stats`: usage on every chunk, choices alongside.
        let chunk = |content: &str, n: u32| {
            format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{content}\"}}}}],\
                 \"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":{n}}}}}\n\n"
            )
        };
        let stream = chunk("a", 1) + &chunk("b", 2);
        let o = run(ApiFormat::OpenAiChat, &[stream.as_bytes()]);
        assert!(o.truncated());
        assert_eq!(o.usage.map(|u| u.output), Some(2));
        let done = stream
            + "data: {\"choices\":[ ],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n";
        assert!(run(ApiFormat::OpenAiChat, &[done.as_bytes()]).complete);
    }

    #[test]
    fn final_event_without_blank_line_is_read() {
        let o = run(
            ApiFormat::OpenAiChat,
            &[b"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}"],
        );
        assert!(o.complete);
        assert_eq!(o.usage.map(|u| u.output), Some(2));
    }

    #[test]
    fn malformed_event_is_reported_and_earlier_usage_kept() {
        let o = run(
            ApiFormat::GeminiGenerateContent,
            &[b"data: {\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":1}}\n\n",
              b"data: {\"usageMetadata\":{\"promptTokenCount\":4,\n\n"],
        );
        assert_eq!(o.usage.map(|u| u.output), Some(1));
        assert_eq!(o.failed_events, 1);
        assert!(matches!(o.first_error, Some(UsageError::MalformedJson(_))));
        assert!(o.truncated());
    }

    #[test]
    fn responses_event_names_can_come_from_the_data() {
        let o = run(
            ApiFormat::OpenAiResponses,
            &[b"data: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":6}}}\n\n"],
        );
        assert!(o.complete);
        assert_eq!(o.usage.map(|u| u.output), Some(6));
    }

    /// Pieces of SSE and provider JSON for the noise test.
    const NOISE: &[&[u8]] = &[
        b"data: ",
        b"event: ",
        b"\n",
        b"\r",
        b"\r\n",
        b":",
        b"{\"usage\":",
        b"{\"usageMetadata\":",
        b"null",
        b"}",
        b"[DONE]",
        b"message_start",
        b"message_delta",
        b"message_stop",
        b"response.completed",
        b"{\"input_tokens\":1,\"output_tokens\":2}",
        b"\"candidates\":[{\"finishReason\":\"STOP\"}]",
        b"{\"type\":\"message_stop\"}",
    ];

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            max in 0usize..256,
        ) {
            for format in [ApiFormat::OpenAiChat, ApiFormat::OpenAiResponses, ApiFormat::OpenAiEmbeddings,
                           ApiFormat::AnthropicMessages, ApiFormat::GeminiGenerateContent] {
                let mut sse = SseUsage::new(format, max);
                let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
                points.sort_unstable();
                let mut at = 0;
                for p in points {
                    sse.push(&bytes[at..p]);
                    at = p;
                }
                sse.push(&bytes[at..]);
                prop_assert!(sse.data.capacity() <= max);
                let _ = sse.finish();
            }
        }

        /// Arbitrary bytes made to look like SSE (field names, line ends, JSON fragments).
        #[test]
        fn sse_shaped_noise_never_panics(parts in prop::collection::vec(prop::sample::select(NOISE), 0..40)) {
            let bytes: Vec<u8> = parts.concat();
            for format in [ApiFormat::OpenAiChat, ApiFormat::OpenAiResponses,
                           ApiFormat::AnthropicMessages, ApiFormat::GeminiGenerateContent] {
                let mut sse = SseUsage::new(format, 128);
                for b in bytes.chunks(7) { sse.push(b); }
                let _ = sse.finish();
            }
        }
    }
}
