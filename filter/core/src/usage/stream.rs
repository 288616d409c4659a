//! What every stream framing shares: the API's reading of each whole event, and the tally of
//! what the stream said. The framings (`sse.rs` for Server-Sent Events, `eventstream.rs` for
//! AWS's binary event stream) cut the bytes into named events and hand each here as kept
//! (its data whole), skipped (the API said it carries nothing) or oversized (past the bound).

use super::json::Served;
use super::{Usage, UsageError};
use crate::provider::anthropic_messages::AnthropicParts;
use crate::provider::{ApiFormat, ProviderApi};

/// What a stream reported once it ended (see [`super::SseUsage::finish`],
/// [`super::EventStreamUsage::finish`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOutcome {
    /// The usage the stream reported: the last readable one, or for Anthropic the merge of
    /// `message_start` and the `message_delta`s. `None` when no event carried readable usage.
    pub usage: Option<Usage>,
    /// The provider's end-of-stream mark arrived (see the module docs per provider). When
    /// `false` the stream was cut short and `usage`, if any, is what had been seen by then.
    pub complete: bool,
    /// Events dispatched (blank-line terminated, or left open when the stream ended).
    pub events: u64,
    /// Events skipped because their data exceeded `max_event_bytes`.
    pub oversized_events: u32,
    /// Events that could carry usage but could not be read (malformed JSON, bad usage).
    pub failed_events: u32,
    /// The first problem met, for logs: what made an event fail or be skipped, or a required
    /// field that never arrived.
    pub first_error: Option<UsageError>,
    /// The model the provider says served the stream (OpenAI chat's usage chunk `model`,
    /// Responses' final `response.model`, Anthropic's `message_start` `message.model`, Gemini's
    /// `modelVersion`), when it named one.
    pub model: Option<String>,
}

impl StreamOutcome {
    /// The stream ended without the provider's end-of-stream mark.
    pub fn truncated(&self) -> bool {
        !self.complete
    }

    /// The usage, or why there is none: the first error, else [`UsageError::NoUsage`].
    pub fn into_result(self) -> Result<Usage, UsageError> {
        match (self.usage, self.first_error) {
            (Some(u), _) => Ok(u),
            (None, Some(e)) => Err(e),
            (None, None) => Err(UsageError::NoUsage),
        }
    }
}

/// What a stream has said so far, as the API's event reader records it.
#[derive(Debug, Clone, Default)]
pub struct StreamRead {
    /// The last usage an event reported whole.
    pub(crate) usage: Option<Usage>,
    /// Usage reported in pieces (Anthropic's `message_start` and `message_delta`s).
    pub(crate) parts: Option<AnthropicParts>,
    /// The provider's end-of-stream mark arrived.
    pub(crate) complete: bool,
    /// The model, service tier and web searches the events named outside their usage.
    pub(crate) served: Served,
}

/// The events of one stream as the API reads them, and what went wrong with them.
#[derive(Debug, Clone)]
pub(crate) struct Events {
    pub(crate) api: &'static dyn ProviderApi,
    pub(crate) max_event_bytes: usize,
    read: StreamRead,
    count: u64,
    oversized: u32,
    failed: u32,
    first_error: Option<UsageError>,
}

impl Events {
    pub(crate) fn new(format: ApiFormat, max_event_bytes: usize) -> Self {
        Events {
            api: format.api(),
            max_event_bytes,
            read: StreamRead::default(),
            count: 0,
            oversized: 0,
            failed: 0,
            first_error: None,
        }
    }

    /// Whether the API reads an event named `name`.
    pub(crate) fn keeps(&self, name: &[u8]) -> bool {
        self.api.keeps_event(name)
    }

    /// Whether the kept event `name` can change what the stream reports.
    pub(crate) fn matters(&self, name: &[u8], data: &[u8]) -> bool {
        self.api.event_matters(name, data)
    }

    /// A whole event the API reads. `at_eof`: the stream ended inside it, so JSON cut short
    /// is truncation (which `complete == false` already reports), not a failed event.
    pub(crate) fn kept(&mut self, name: &[u8], data: &[u8], at_eof: bool) {
        self.count = self.count.saturating_add(1);
        match self.api.read_event(&mut self.read, name, data) {
            Ok(()) | Err(UsageError::NoUsage) => {}
            Err(UsageError::MalformedJson(_)) if at_eof => {}
            Err(e) => self.failed(e),
        }
    }

    /// An event the API said carries nothing; its data was dropped as it arrived.
    pub(crate) fn skipped(&mut self, name: &[u8]) {
        self.count = self.count.saturating_add(1);
        self.api.skipped_event(&mut self.read, name);
    }

    /// An event that outgrew the bound; `tail` holds its last bytes.
    pub(crate) fn oversized(&mut self, name: &[u8], tail: &[u8]) {
        self.count = self.count.saturating_add(1);
        if !self.api.oversized_event(&mut self.read, name, tail) {
            self.oversized = self.oversized.saturating_add(1);
            self.note_error(UsageError::EventTooLarge(self.max_event_bytes));
        }
    }

    /// An event that could carry usage but could not be read.
    pub(crate) fn failed(&mut self, e: UsageError) {
        self.failed = self.failed.saturating_add(1);
        self.note_error(e);
    }

    fn note_error(&mut self, e: UsageError) {
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    /// The usage seen so far.
    pub(crate) fn usage(&self) -> Option<Usage> {
        self.api.stream_usage(&self.read).0
    }

    /// What the stream reported.
    pub(crate) fn finish(mut self) -> StreamOutcome {
        let (usage, missing) = self.api.stream_usage(&self.read);
        if let Some(e) = missing {
            self.note_error(e);
        }
        let usage = usage.map(|mut u| {
            self.read.served.apply(&mut u);
            u
        });
        StreamOutcome {
            usage,
            complete: self.read.complete,
            events: self.count,
            oversized_events: self.oversized,
            failed_events: self.failed,
            first_error: self.first_error,
            model: self.read.served.model,
        }
    }
}
