//! Usage from an AWS event stream (`application/vnd.amazon.eventstream`: Bedrock's
//! ConverseStream and InvokeModelWithResponseStream), read incrementally as Envoy hands over
//! body chunks.
//!
//! The framing (<https://docs.aws.amazon.com/transcribe/latest/dg/event-stream.html>): each
//! message is its total length (u32, big-endian, the whole message), its headers' length
//! (u32), a CRC-32 of those 8 bytes, the headers, the payload, and a CRC-32 of everything
//! before it. A header is a name (u8 length, bytes), a type (u8) and a value whose size the
//! type sets (strings and byte arrays: u16 length, bytes). `:message-type` is `event` (named by
//! `:event-type`), `exception` or `error`.
//!
//! Chunks may split anywhere. Only the 12-byte prelude and the headers are always kept; the
//! lengths are known before the payload arrives, so the payload of an event the API does not
//! read is stepped over without being looked at (cheaper than SSE, whose every byte must be
//! scanned for line ends), and an event over `max_event_bytes` is known to be one at its
//! first byte. The prelude's checksum is verified on every message (a wrong length would lose
//! the framing for the rest of the stream); the message checksum on every message whose
//! payload can change what the stream reports (`ProviderApi::event_matters`: not the text
//! chunks of an InvokeModel stream, whose checksum is the client SDK's to check, and which
//! cost 80 % of reading such a stream when checked). A broken frame ends the reading: nothing
//! after it can be framed.
//!
//! What each event means is the API's ([`crate::provider::ProviderApi::keeps_event`],
//! [`crate::provider::ProviderApi::read_event`]; `provider/bedrock.rs`); this module only frames
//! them. Tests: `cargo test -p tollgate-core --lib usage::eventstream` and the split-at-every-byte
//! golden tests in `tests/usage_golden.rs`.

use crc::{Crc, Table, CRC_32_ISO_HDLC};

use super::stream::{Events, StreamOutcome};
use super::{Usage, UsageError};
use crate::provider::ApiFormat;

/// Total length, headers length, prelude checksum.
const PRELUDE: usize = 12;
/// The message checksum that ends a message.
const TRAILER: usize = 4;
/// The format's limits: 128 KiB of headers, 16 MiB of payload.
const MAX_HEADERS: usize = 128 * 1024;
const MAX_MESSAGE: usize = PRELUDE + MAX_HEADERS + 16 * 1024 * 1024 + TRAILER;
/// Most header bytes kept: Bedrock's are ~100 bytes; a message with more is stepped over
/// unread, so one message can never hold more than this plus one payload.
const MAX_KEPT_HEADERS: usize = 1024;
/// Longest event name kept; every name that matters is shorter, longer ones are "other".
const EVENT_NAME_MAX: usize = 24;

/// CRC-32 (ISO-HDLC, as zlib's) with one 256-entry table: the filter's size matters more than
/// the few messages whose payload is checked.
static CRC32: Crc<u32, Table<1>> = Crc::<u32, Table<1>>::new(&CRC_32_ISO_HDLC);

/// Which part of a message the next byte belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Prelude,
    Headers,
    Payload,
    Trailer,
    /// The framing is lost: the rest of the stream is not read.
    Broken,
}

/// What happens to the current message's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// Kept and read (after its checksum).
    Read,
    /// Stepped over: the API says the event carries nothing.
    Skip,
    /// Stepped over: longer than `max_event_bytes`.
    Oversized,
    /// Stepped over: an exception or error message (the stream failed).
    Exception,
    /// Stepped over: headers that could not be read.
    Unreadable,
}

/// Incremental usage reader for one AWS event stream.
#[derive(Debug)]
pub struct EventStreamUsage {
    events: Events,
    part: Part,
    /// Bytes of the current part seen so far.
    have: usize,
    prelude: [u8; PRELUDE],
    trailer: [u8; TRAILER],
    headers: Vec<u8>,
    headers_len: usize,
    payload_len: usize,
    payload: Payload,
    data: Vec<u8>,
    name: [u8; EVENT_NAME_MAX],
    /// Length of the event name; past `EVENT_NAME_MAX` it matches nothing.
    name_len: usize,
}

impl EventStreamUsage {
    /// A reader for a stream in `format` that reads at most `max_event_bytes` of one payload.
    pub fn new(format: ApiFormat, max_event_bytes: usize) -> Self {
        EventStreamUsage {
            events: Events::new(format, max_event_bytes),
            part: Part::Prelude,
            have: 0,
            prelude: [0; PRELUDE],
            trailer: [0; TRAILER],
            headers: Vec::new(),
            headers_len: 0,
            payload_len: 0,
            payload: Payload::Skip,
            data: Vec::new(),
            name: [0; EVENT_NAME_MAX],
            name_len: 0,
        }
    }

    /// Feeds the next body chunk; chunks may split the stream at any byte.
    pub fn push(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            let (want, part) = match self.part {
                Part::Prelude => (PRELUDE, Part::Prelude),
                Part::Headers => (self.headers_len, Part::Headers),
                Part::Payload => (self.payload_len, Part::Payload),
                Part::Trailer => (TRAILER, Part::Trailer),
                Part::Broken => return,
            };
            let n = want.saturating_sub(self.have).min(chunk.len());
            let (bytes, rest) = chunk.split_at(n);
            chunk = rest;
            match part {
                Part::Prelude => copy_into(&mut self.prelude, self.have, bytes),
                Part::Headers if self.headers_len <= MAX_KEPT_HEADERS => {
                    self.headers.extend_from_slice(bytes);
                }
                Part::Payload if self.payload == Payload::Read => {
                    self.data.extend_from_slice(bytes);
                }
                Part::Trailer => copy_into(&mut self.trailer, self.have, bytes),
                Part::Headers | Part::Payload | Part::Broken => {}
            }
            self.have += n;
            if self.have == want {
                self.have = 0;
                self.end_part(part);
            }
        }
    }

    /// The usage seen so far (for a client that goes away mid-stream).
    pub fn usage(&self) -> Option<Usage> {
        self.events.usage()
    }

    /// Ends the stream and reports what it said. A message cut short is not read: the stream
    /// is then truncated (unless the API's end mark had already arrived).
    pub fn finish(self) -> StreamOutcome {
        self.events.finish()
    }

    /// The part just completed: move to the next, skipping parts of length zero.
    fn end_part(&mut self, part: Part) {
        match part {
            Part::Prelude => self.end_prelude(),
            Part::Headers => self.end_headers(),
            Part::Payload => self.part = Part::Trailer,
            Part::Trailer => self.end_message(),
            Part::Broken => {}
        }
        // Parts of length zero end as soon as they begin.
        match self.part {
            Part::Headers if self.headers_len == 0 => self.end_part(Part::Headers),
            Part::Payload if self.payload_len == 0 => self.end_part(Part::Payload),
            _ => {}
        }
    }

    fn end_prelude(&mut self) {
        let word = |at: usize| {
            let mut b = [0u8; 4];
            copy_into(&mut b, 0, self.prelude.get(at..at + 4).unwrap_or_default());
            u32::from_be_bytes(b) as usize
        };
        let (total, headers, checksum) = (word(0), word(4), word(8));
        if CRC32.checksum(self.prelude.get(..8).unwrap_or_default()) as usize != checksum {
            return self.broken("prelude checksum");
        }
        if !(PRELUDE + TRAILER..=MAX_MESSAGE).contains(&total) {
            return self.broken("message length");
        }
        if headers > MAX_HEADERS || headers > total - PRELUDE - TRAILER {
            return self.broken("headers length");
        }
        self.headers_len = headers;
        self.payload_len = total - PRELUDE - TRAILER - headers;
        self.headers.clear();
        self.part = Part::Headers;
    }

    fn end_headers(&mut self) {
        self.name_len = 0;
        self.data.clear();
        let kept = self.headers_len <= MAX_KEPT_HEADERS;
        self.payload = match read_headers(&self.headers) {
            Err(()) => Payload::Unreadable,
            Ok(_) if !kept => Payload::Unreadable,
            Ok(h) if h.message_type.is_some_and(|t| t != b"event") => Payload::Exception,
            Ok(h) => {
                let name = h.event_type.unwrap_or_default();
                self.name_len = name.len();
                if let Some(slot) = self.name.get_mut(..name.len()) {
                    slot.copy_from_slice(name);
                }
                if !self.events.keeps(self.name()) {
                    Payload::Skip
                } else if self.payload_len > self.events.max_event_bytes {
                    Payload::Oversized
                } else {
                    self.data.reserve_exact(self.payload_len);
                    Payload::Read
                }
            }
        };
        self.part = Part::Payload;
    }

    fn end_message(&mut self) {
        self.part = Part::Prelude;
        // A copy of the name, so `events` can be borrowed mutably beside it; one too long to
        // keep matches no name that matters.
        let (buf, len) = match self.name.get(..self.name_len) {
            Some(_) => (self.name, self.name_len),
            None => ([0xff; EVENT_NAME_MAX], 1),
        };
        let name = buf.get(..len).unwrap_or_default();
        match self.payload {
            // An event that cannot change the outcome is counted and not read again.
            Payload::Read if !self.events.matters(name, &self.data) => self.events.skipped(name),
            Payload::Read => {
                let mut digest = CRC32.digest();
                digest.update(&self.prelude);
                digest.update(&self.headers);
                digest.update(&self.data);
                if digest.finalize() == u32::from_be_bytes(self.trailer) {
                    self.events.kept(name, &self.data, false);
                } else {
                    self.events.failed(UsageError::BadFrame("message checksum"));
                }
            }
            Payload::Skip => self.events.skipped(name),
            Payload::Oversized => self.events.oversized(name, &[]),
            Payload::Exception => self.events.failed(UsageError::StreamException),
            Payload::Unreadable => self.events.failed(UsageError::BadFrame("headers")),
        }
        self.data.clear();
    }

    /// The current event's name; one too long to keep matches no name that matters.
    fn name(&self) -> &[u8] {
        self.name.get(..self.name_len).unwrap_or(b"\xff")
    }

    fn broken(&mut self, why: &'static str) {
        self.part = Part::Broken;
        self.events.failed(UsageError::BadFrame(why));
    }
}

/// Copies `bytes` into `buf` at `at` (as far as it fits).
fn copy_into(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(slot) = buf.get_mut(at..at + bytes.len()) {
        slot.copy_from_slice(bytes);
    }
}

/// The headers a reader acts on.
#[derive(Debug, Default)]
struct Headers<'a> {
    message_type: Option<&'a [u8]>,
    event_type: Option<&'a [u8]>,
}

/// Reads a message's headers; `Err` when they do not parse.
fn read_headers(mut h: &[u8]) -> Result<Headers<'_>, ()> {
    fn take<'a>(h: &mut &'a [u8], n: usize) -> Result<&'a [u8], ()> {
        if h.len() < n {
            return Err(());
        }
        let (a, b) = h.split_at(n);
        *h = b;
        Ok(a)
    }
    let mut out = Headers::default();
    while !h.is_empty() {
        let name_len = *take(&mut h, 1)?.first().ok_or(())?;
        let name = take(&mut h, usize::from(name_len))?;
        let ty = *take(&mut h, 1)?.first().ok_or(())?;
        let len = match ty {
            0 | 1 => 0, // true, false
            2 => 1,     // byte
            3 => 2,     // short
            4 => 4,     // integer
            5 | 8 => 8, // long, timestamp
            9 => 16,    // uuid
            6 | 7 => {
                // byte array, string: a u16 length first
                let l = take(&mut h, 2)?;
                usize::from(u16::from_be_bytes([
                    *l.first().ok_or(())?,
                    *l.get(1).ok_or(())?,
                ]))
            }
            _ => return Err(()),
        };
        let value = take(&mut h, len)?;
        if ty == 7 {
            match name {
                b":message-type" => out.message_type = Some(value),
                b":event-type" => out.event_type = Some(value),
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Reads a whole event stream held in memory (tests, replayed traffic); the filter feeds
/// [`EventStreamUsage`] chunk by chunk instead.
pub fn from_event_stream(
    format: ApiFormat,
    stream: &[u8],
    max_event_bytes: usize,
) -> StreamOutcome {
    let mut es = EventStreamUsage::new(format, max_event_bytes);
    es.push(stream);
    es.finish()
}

/// Encodes one event-stream message with string headers (fixtures, benches, the mock
/// provider's twin in tests/upstream).
pub fn encode_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE + h.len() + payload.len() + TRAILER;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    m.extend_from_slice(&u32::try_from(h.len()).unwrap_or(u32::MAX).to_be_bytes());
    let prelude_crc = CRC32.checksum(&m);
    m.extend_from_slice(&prelude_crc.to_be_bytes());
    m.extend_from_slice(&h);
    m.extend_from_slice(payload);
    let crc = CRC32.checksum(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m
}

/// An `event` message named `event_type` carrying JSON, as Bedrock sends them.
pub fn encode_event(event_type: &str, json: &[u8]) -> Vec<u8> {
    encode_message(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        json,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn metadata(input: u64, output: u64) -> Vec<u8> {
        encode_event(
            "metadata",
            format!(
                r#"{{"usage":{{"inputTokens":{input},"outputTokens":{output},"totalTokens":{}}},"metrics":{{"latencyMs":120}}}}"#,
                input + output
            )
            .as_bytes(),
        )
    }

    fn delta(text: &str) -> Vec<u8> {
        encode_event(
            "contentBlockDelta",
            format!(r#"{{"contentBlockIndex":0,"delta":{{"text":"{text}"}},"p":"abcd"}}"#)
                .as_bytes(),
        )
    }

    fn converse(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn checksums_agree_with_zlib() {
        // A message without headers carrying `{'foo':'bar'}`; the expected bytes are
        // Python's `zlib.crc32` over the same prelude and message.
        let m = encode_message(&[], b"{'foo':'bar'}");
        assert_eq!(
            &m[..12],
            &[0x00, 0x00, 0x00, 0x1d, 0x00, 0x00, 0x00, 0x00, 0xfd, 0x52, 0x8c, 0x5a]
        );
        assert_eq!(&m[m.len() - 4..], &[0xc3, 0x65, 0x39, 0x36]);
    }

    #[test]
    fn converse_stream_usage_split_at_every_byte() {
        let stream = converse(&[
            encode_event("messageStart", br#"{"role":"assistant","p":"ab"}"#),
            delta("Hello"),
            delta(" world"),
            encode_event("messageStop", br#"{"stopReason":"end_turn"}"#),
            metadata(11, 7),
        ]);
        for cut in 0..=stream.len() {
            let mut es = EventStreamUsage::new(ApiFormat::BedrockConverse, 4096);
            es.push(&stream[..cut]);
            es.push(&stream[cut..]);
            let o = es.finish();
            assert!(o.complete, "{cut}");
            assert_eq!(o.usage.map(|u| (u.input_uncached, u.output)), Some((11, 7)));
            assert_eq!((o.events, o.failed_events), (5, 0));
        }
        let mut es = EventStreamUsage::new(ApiFormat::BedrockConverse, 4096);
        for b in &stream {
            es.push(std::slice::from_ref(b));
        }
        assert!(es.finish().complete);
        // Cut anywhere before the metadata's last byte: not complete, no usage.
        let last = stream.len() - metadata(11, 7).len();
        for cut in last..stream.len() {
            let o = from_event_stream(ApiFormat::BedrockConverse, &stream[..cut], 4096);
            assert!(o.truncated() && o.usage.is_none(), "{cut}");
        }
    }

    #[test]
    fn skipped_payloads_are_never_buffered() {
        let mut es = EventStreamUsage::new(ApiFormat::BedrockConverse, 1 << 20);
        let big = delta(&"x".repeat(100_000));
        for piece in big.chunks(1000) {
            es.push(piece);
        }
        assert!(es.data.capacity() < 128, "{}", es.data.capacity());
        es.push(&metadata(1, 2));
        assert_eq!(es.finish().usage.map(|u| u.output), Some(2));
    }

    #[test]
    fn a_corrupt_payload_is_not_read_and_the_stream_goes_on() {
        let mut bad = metadata(5, 5);
        let at = bad.len() - 10;
        bad[at] ^= 1;
        let o = from_event_stream(
            ApiFormat::BedrockConverse,
            &[bad, metadata(3, 4)].concat(),
            4096,
        );
        assert_eq!(o.failed_events, 1);
        assert_eq!(
            o.first_error,
            Some(UsageError::BadFrame("message checksum"))
        );
        assert_eq!(o.usage.map(|u| u.output), Some(4));
    }

    #[test]
    fn a_broken_prelude_ends_the_reading() {
        let mut bad = delta("hi");
        bad[3] ^= 0x40;
        let o = from_event_stream(
            ApiFormat::BedrockConverse,
            &[bad, metadata(3, 4)].concat(),
            4096,
        );
        assert_eq!(
            o.first_error,
            Some(UsageError::BadFrame("prelude checksum"))
        );
        assert!(o.usage.is_none() && o.truncated());
    }

    #[test]
    fn an_exception_message_fails_the_stream() {
        let exc = encode_message(
            &[
                (":exception-type", "modelStreamErrorException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            br#"{"message":"The model stream failed"}"#,
        );
        let o = from_event_stream(
            ApiFormat::BedrockConverse,
            &[delta("a"), exc].concat(),
            4096,
        );
        assert_eq!(o.first_error, Some(UsageError::StreamException));
        assert!(o.truncated());
    }

    #[test]
    fn an_oversized_usage_event_is_counted() {
        let o = from_event_stream(ApiFormat::BedrockConverse, &metadata(1, 2), 16);
        assert_eq!(o.oversized_events, 1);
        assert_eq!(o.first_error, Some(UsageError::EventTooLarge(16)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            cut in any::<prop::sample::Index>(),
            max in 0usize..256,
        ) {
            for format in [ApiFormat::BedrockConverse, ApiFormat::BedrockInvoke] {
                let mut es = EventStreamUsage::new(format, max);
                let at = cut.index(bytes.len() + 1);
                es.push(&bytes[..at]);
                es.push(&bytes[at..]);
                prop_assert!(es.data.capacity() <= max.max(PRELUDE));
                let _ = es.finish();
            }
        }

        /// Well-framed messages with arbitrary names and payloads.
        #[test]
        fn framed_noise_never_panics(
            msgs in prop::collection::vec(
                (prop::sample::select(&["metadata", "chunk", "messageStop", "x"][..]),
                 prop::collection::vec(any::<u8>(), 0..64)), 0..8),
        ) {
            let stream: Vec<u8> = msgs.iter().flat_map(|(n, p)| encode_event(n, p)).collect();
            for format in [ApiFormat::BedrockConverse, ApiFormat::BedrockInvoke] {
                let o = from_event_stream(format, &stream, 128);
                prop_assert_eq!(o.events, msgs.len() as u64);
            }
        }
    }
}
