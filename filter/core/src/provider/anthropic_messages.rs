//! Anthropic Messages (`POST /v1/messages`).
//!
//! - Request: `model`; output cap `max_tokens`; `stream`; `service_tier` (`auto`, the
//!   default, may serve priority capacity; `standard_only`); prompt in `system` and
//!   `messages`; `tools` (a `web_search_*` tool enables provider-run searches, up to its
//!   `max_uses`).
//! - Usage (<https://docs.anthropic.com/en/api/messages#response-usage>): `input_tokens` is
//!   the *uncached* part; `cache_read_input_tokens` and `cache_creation_input_tokens` are
//!   separate, and `cache_creation.ephemeral_{5m,1h}_input_tokens` split the write by cache
//!   lifetime. When the split and the total disagree, the split decides the 1h part and the
//!   rest of the total is 5m (the default lifetime), so no written token goes uncharged.
//!   Extended-thinking tokens are inside `output_tokens` and not reported apart, so
//!   `reasoning` stays 0. `usage.service_tier` names the tier that served;
//!   `usage.server_tool_use.web_search_requests` counts billed searches.
//! - Stream (<https://docs.anthropic.com/en/docs/build-with-claude/streaming>):
//!   `message_start` has `message.usage`; each `message_delta` has cumulative `usage` whose
//!   fields replace earlier ones ([`AnthropicParts::merge`]). Complete on `message_stop`.

use super::{event_name, ApiFormat, ProviderApi, RequestField, Route};
use crate::estimate::TierAsk;
use crate::pricing::ServiceTier;
use crate::usage::fields::{read_count, read_nested, skip, tier_of, Count, Fields, Nested};
use crate::usage::{find_member, scan, StreamRead, Usage, UsageError, UsageValue};

/// Anthropic Messages.
pub struct AnthropicMessages;

impl ProviderApi for AnthropicMessages {
    fn format(&self) -> ApiFormat {
        ApiFormat::AnthropicMessages
    }

    /// The tier that served is `usage.service_tier` (read with the usage object).
    fn tier_at_top_level(&self) -> bool {
        false
    }

    fn provider(&self) -> &'static str {
        "anthropic"
    }

    fn route<'p>(&self, path: &'p str) -> Option<Route<'p>> {
        (path == "/v1/messages").then(|| Route::plain(ApiFormat::AnthropicMessages))
    }

    fn request_field(&self, key: &str) -> RequestField {
        match key {
            "model" => RequestField::Model,
            "max_tokens" => RequestField::OutputCap("max_tokens"),
            "stream" => RequestField::Stream,
            "service_tier" => RequestField::ServiceTier,
            "tools" => RequestField::Tools,
            "system" | "messages" => RequestField::Prompt,
            _ => RequestField::Other,
        }
    }

    fn default_tier(&self) -> TierAsk {
        TierAsk::Auto
    }

    fn read_usage(&self, s: &[u8], i: usize) -> Result<(UsageValue, usize), UsageError> {
        UsageValue::read(s, i, |u: &AnthropicUsage| {
            AnthropicParts::from_fields(u)?.to_usage()
        })
    }

    fn keeps_event(&self, name: &[u8]) -> bool {
        matches!(name, b"" | b"message_start" | b"message_delta")
    }

    fn read_event(&self, st: &mut StreamRead, name: &[u8], data: &[u8]) -> Result<(), UsageError> {
        let [ty, message] = scan::find_members(data, ["type", "message"])?;
        let (doc, missing) = match &*event_name(name, ty) {
            b"message_start" => {
                let message = message.ok_or(UsageError::MissingField("message"))?;
                let [model] = scan::find_members(message, ["model"])?;
                st.served.note_model(model);
                (message, "message.usage")
            }
            b"message_delta" => (data, "usage"),
            b"message_stop" => {
                st.complete = true;
                return Ok(());
            }
            _ => return Ok(()),
        };
        let usage = match find_member(doc, "usage", Nested::<AnthropicUsage>::read)? {
            None => return Err(UsageError::MissingField(missing)),
            Some(Nested::Absent) => return Err(UsageError::NoUsage),
            Some(Nested::NotObject) => return Err(UsageError::NotAnObject("usage")),
            Some(Nested::Present(u)) => u,
        };
        let parts = AnthropicParts::from_fields(&usage)?;
        st.parts
            .get_or_insert_with(AnthropicParts::default)
            .merge(parts);
        Ok(())
    }

    fn skipped_event(&self, st: &mut StreamRead, name: &[u8]) {
        if name == b"message_stop" {
            st.complete = true;
        }
    }

    fn stream_usage(&self, st: &StreamRead) -> (Option<Usage>, Option<UsageError>) {
        match st.parts {
            Some(parts) => {
                let (usage, missing) = parts.to_usage_partial();
                (Some(usage), missing)
            }
            None => (st.usage, None),
        }
    }
}

/// `usage.server_tool_use`: calls of tools Anthropic runs and bills per call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ServerToolUse {
    web_search_requests: Count,
}

impl Fields for ServerToolUse {
    fn read_named(&mut self, name: &[u8], s: &[u8], i: usize) -> Result<Option<usize>, UsageError> {
        match name {
            b"web_search_requests" => read_count(s, i, &mut self.web_search_requests).map(Some),
            _ => Ok(None),
        }
    }
}

/// `usage.cache_creation`: the cache write split by lifetime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CacheCreation {
    ephemeral_5m_input_tokens: Count,
    ephemeral_1h_input_tokens: Count,
}

impl Fields for CacheCreation {
    fn read_named(&mut self, name: &[u8], s: &[u8], i: usize) -> Result<Option<usize>, UsageError> {
        let slot = match name {
            b"ephemeral_5m_input_tokens" => &mut self.ephemeral_5m_input_tokens,
            b"ephemeral_1h_input_tokens" => &mut self.ephemeral_1h_input_tokens,
            _ => return Ok(None),
        };
        read_count(s, i, slot).map(Some)
    }
}

/// Anthropic's `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AnthropicUsage {
    input_tokens: Count,
    output_tokens: Count,
    cache_creation_input_tokens: Count,
    cache_read_input_tokens: Count,
    cache_creation: Nested<CacheCreation>,
    server_tool_use: Nested<ServerToolUse>,
    service_tier: Option<ServiceTier>,
}

impl Fields for AnthropicUsage {
    fn read_named(&mut self, name: &[u8], s: &[u8], i: usize) -> Result<Option<usize>, UsageError> {
        match name {
            b"input_tokens" => read_count(s, i, &mut self.input_tokens),
            b"output_tokens" => read_count(s, i, &mut self.output_tokens),
            b"cache_creation_input_tokens" => {
                read_count(s, i, &mut self.cache_creation_input_tokens)
            }
            b"cache_read_input_tokens" => read_count(s, i, &mut self.cache_read_input_tokens),
            b"cache_creation" => read_nested(s, i, &mut self.cache_creation),
            b"server_tool_use" => read_nested(s, i, &mut self.server_tool_use),
            b"service_tier" => {
                let end = skip(s, i)?;
                self.service_tier = tier_of(s.get(i..end).unwrap_or_default());
                Ok(end)
            }
            _ => return Ok(None),
        }
        .map(Some)
    }
}

/// Anthropic's usage fields, each `None` when not sent. A stream reports them in pieces —
/// `message_start` then cumulative `message_delta`s, where a later value replaces an earlier
/// one — so they are kept apart until the end ([`AnthropicParts::merge`]). Anthropic's models
/// on other clouds stream the same events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnthropicParts {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
    write_5m: Option<u64>,
    write_1h: Option<u64>,
    web_searches: Option<u64>,
    service_tier: Option<ServiceTier>,
}

impl AnthropicParts {
    /// Reads Anthropic's fields, checking each one that is present.
    fn from_fields(raw: &AnthropicUsage) -> Result<Self, UsageError> {
        let split = raw.cache_creation.get("usage.cache_creation")?;
        Ok(AnthropicParts {
            input: raw.input_tokens.optional("usage.input_tokens")?,
            output: raw.output_tokens.optional("usage.output_tokens")?,
            cache_read: raw
                .cache_read_input_tokens
                .optional("usage.cache_read_input_tokens")?,
            cache_creation: raw
                .cache_creation_input_tokens
                .optional("usage.cache_creation_input_tokens")?,
            write_5m: match split {
                Some(s) => s
                    .ephemeral_5m_input_tokens
                    .optional("usage.cache_creation.ephemeral_5m_input_tokens")?,
                None => None,
            },
            write_1h: match split {
                Some(s) => s
                    .ephemeral_1h_input_tokens
                    .optional("usage.cache_creation.ephemeral_1h_input_tokens")?,
                None => None,
            },
            web_searches: match raw.server_tool_use.get("usage.server_tool_use")? {
                Some(t) => t
                    .web_search_requests
                    .optional("usage.server_tool_use.web_search_requests")?,
                None => None,
            },
            service_tier: raw.service_tier,
        })
    }

    /// Lays a later event's fields over these: every field the later one sent wins.
    fn merge(&mut self, later: AnthropicParts) {
        let AnthropicParts {
            input,
            output,
            cache_read,
            cache_creation,
            write_5m,
            write_1h,
            web_searches,
            service_tier,
        } = later;
        self.input = input.or(self.input);
        self.output = output.or(self.output);
        self.cache_read = cache_read.or(self.cache_read);
        self.cache_creation = cache_creation.or(self.cache_creation);
        self.write_5m = write_5m.or(self.write_5m);
        self.write_1h = write_1h.or(self.write_1h);
        self.web_searches = web_searches.or(self.web_searches);
        self.service_tier = service_tier.or(self.service_tier);
    }

    /// The usage, counting absent fields as 0, plus the first required field that was absent.
    fn to_usage_partial(self) -> (Usage, Option<UsageError>) {
        let missing = if self.input.is_none() {
            Some(UsageError::MissingField("usage.input_tokens"))
        } else if self.output.is_none() {
            Some(UsageError::MissingField("usage.output_tokens"))
        } else {
            None
        };
        // The split, when sent, is authoritative for the 1h part; whatever of the total it does
        // not account for is a 5m write (the default lifetime), so no written token is lost.
        let total = self.cache_creation.unwrap_or_else(|| {
            self.write_5m
                .unwrap_or(0)
                .saturating_add(self.write_1h.unwrap_or(0))
        });
        let write_1h = self.write_1h.unwrap_or(0);
        let write_5m = self
            .write_5m
            .unwrap_or(0)
            .max(total.saturating_sub(write_1h));
        let usage = Usage {
            input_uncached: self.input.unwrap_or(0),
            cache_read: self.cache_read.unwrap_or(0),
            cache_write_5m: write_5m,
            cache_write_1h: write_1h,
            output: self.output.unwrap_or(0),
            web_searches: self.web_searches.unwrap_or(0),
            service_tier: self.service_tier.unwrap_or_default(),
            ..Usage::default()
        };
        (usage, missing)
    }

    /// The usage, or [`UsageError::MissingField`] when `input_tokens` or `output_tokens` was
    /// never sent.
    fn to_usage(self) -> Result<Usage, UsageError> {
        match self.to_usage_partial() {
            (usage, None) => Ok(usage),
            (_, Some(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::usage_of;

    fn parts(json: &str) -> AnthropicParts {
        match Nested::<AnthropicUsage>::read(json.as_bytes(), 0)
            .unwrap()
            .0
        {
            Nested::Present(u) => AnthropicParts::from_fields(&u).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cache_write_split() {
        let u = |json: &str| usage_of(&AnthropicMessages, json.as_bytes()).unwrap();
        // No split: the whole write is 5m.
        let a = u(r#"{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":100}"#);
        assert_eq!((a.cache_write_5m, a.cache_write_1h), (100, 0));
        // Split sent: it decides.
        let b = u(
            r#"{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":100,
                     "cache_creation":{"ephemeral_5m_input_tokens":30,"ephemeral_1h_input_tokens":70}}"#,
        );
        assert_eq!((b.cache_write_5m, b.cache_write_1h), (30, 70));
        // Split short of the total: the rest is 5m, nothing lost.
        let c = u(
            r#"{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":100,
                     "cache_creation":{"ephemeral_1h_input_tokens":70}}"#,
        );
        assert_eq!((c.cache_write_5m, c.cache_write_1h), (30, 70));
        // Split without the total.
        let d = u(r#"{"input_tokens":1,"output_tokens":2,
                     "cache_creation":{"ephemeral_5m_input_tokens":5,"ephemeral_1h_input_tokens":7}}"#);
        assert_eq!((d.cache_write_5m, d.cache_write_1h), (5, 7));
    }

    #[test]
    fn merge_lets_later_fields_win() {
        let mut a = parts(r#"{"input_tokens":10,"output_tokens":1,"cache_read_input_tokens":4}"#);
        a.merge(parts(r#"{"output_tokens":50}"#));
        let u = a.to_usage().unwrap();
        assert_eq!((u.input_uncached, u.cache_read, u.output), (10, 4, 50));
        a.merge(parts(r#"{"input_tokens":12,"output_tokens":60}"#));
        let u = a.to_usage().unwrap();
        assert_eq!((u.input_uncached, u.cache_read, u.output), (12, 4, 60));
    }
}
