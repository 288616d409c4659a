//! Usage from a whole (non-streaming) JSON response body, and from a bare usage object.
//!
//! The body is not decoded: [`super::scan`] walks its top-level structure to the `usage` (or
//! Gemini's `usageMetadata`) member, and only that object is read, field by field, in the
//! same pass (`provider::read_usage_at`). A bare usage object from the CLI arrives as a
//! `serde_json::Value` and goes through serde's derive instead; a property test keeps the two
//! readers equal. Run the tests with `cargo test -p tollgate-core --lib usage`.

use serde::Deserialize;

use super::provider::{self, RawUsage, TierName, UsageValue};
use super::{scan, ApiFormat, Usage, UsageError};
use crate::pricing::ServiceTier;

/// The member of a response body that holds its usage.
pub(crate) fn usage_key(format: ApiFormat) -> &'static str {
    match format {
        ApiFormat::GeminiGenerateContent => "usageMetadata",
        _ => "usage",
    }
}

/// Reads the usage of a whole JSON response body in `format`.
///
/// The top-level `usage` member is used (`usageMetadata` for Gemini; for Gemini a JSON array
/// of responses — `streamGenerateContent` without `alt=sse` — gives the last element's, the
/// counts being cumulative). A `usage` anywhere else (in message text, in a nested object) is
/// ignored. Errors: [`UsageError::MalformedJson`] when the body's structure is broken,
/// [`UsageError::NoUsage`] when there is no usage or it is `null`, and a field-naming error
/// when the usage object itself is wrong.
///
/// ```
/// use tollgate_core::usage::{from_json, ApiFormat};
/// let body = br#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":12,
///     "completion_tokens":3,"prompt_tokens_details":{"cached_tokens":8}}}"#;
/// let usage = from_json(ApiFormat::OpenAiChat, body).unwrap();
/// assert_eq!((usage.input_uncached, usage.cache_read, usage.output), (4, 8, 3));
/// ```
pub fn from_json(format: ApiFormat, body: &[u8]) -> Result<Usage, UsageError> {
    served_json(format, body).map(|(usage, _)| usage)
}

/// Like [`from_json`], and the model the provider says served the request: the top-level
/// `model` (OpenAI, Anthropic) or `modelVersion` (Gemini), read in the same pass. `None` when
/// the body names none (or names it with something other than a short string).
///
/// ```
/// use tollgate_core::usage::{served_json, ApiFormat};
/// let body = br#"{"model":"gpt-4o-2024-08-06","usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
/// let (usage, model) = served_json(ApiFormat::OpenAiChat, body).unwrap();
/// assert_eq!((usage.output, model.as_deref()), (2, Some("gpt-4o-2024-08-06")));
/// ```
pub fn served_json(format: ApiFormat, body: &[u8]) -> Result<(Usage, Option<String>), UsageError> {
    let key = usage_key(format);
    let through_array = format == ApiFormat::GeminiGenerateContent;
    let (usage, served) = find_usage_and_served(body, key, Some(format), through_array)?;
    let raw = usage.ok_or(UsageError::NoUsage)?.into_raw(key)?;
    let mut usage = provider::to_usage(format, &raw)?;
    served.apply(&mut usage);
    Ok((usage, served.model))
}

/// What a response says about how it was served, outside its usage object: the model, the
/// service tier (OpenAI's top-level `service_tier`) and the web searches run (OpenAI Responses'
/// `web_search_call` output items, Gemini's `groundingMetadata.webSearchQueries`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Served {
    pub(crate) model: Option<String>,
    pub(crate) service_tier: Option<ServiceTier>,
    pub(crate) web_searches: u64,
}

impl Served {
    /// Reads the member `key` (value token `value`) of a response of `format`, if it is one
    /// that says how the request was served.
    pub(crate) fn note(
        &mut self,
        format: ApiFormat,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), UsageError> {
        if scan::key_is(key, model_key(format)) {
            self.note_model(Some(value));
        } else if scan::key_is(key, "service_tier") {
            self.note_tier(Some(value));
        } else if format == ApiFormat::OpenAiResponses && scan::key_is(key, "output") {
            self.note_output(Some(value))?;
        } else if format == ApiFormat::GeminiGenerateContent && scan::key_is(key, "candidates") {
            self.note_candidates(Some(value))?;
        }
        Ok(())
    }

    /// The model a `model` / `modelVersion` value names (the last one named wins).
    pub(crate) fn note_model(&mut self, value: Option<&[u8]>) {
        if let Some(name) = value.and_then(model_name) {
            self.model = Some(name);
        }
    }

    /// The tier a `service_tier` value names.
    pub(crate) fn note_tier(&mut self, value: Option<&[u8]>) {
        if let Some(tier) = value.and_then(|v| TierName::from_token(v).0) {
            self.service_tier = Some(tier);
        }
    }

    /// The web searches of a Responses `output` array.
    pub(crate) fn note_output(&mut self, value: Option<&[u8]>) -> Result<(), UsageError> {
        if let Some(v) = value {
            self.web_searches = self.web_searches.max(web_search_calls(v)?);
        }
        Ok(())
    }

    /// The grounding queries of a Gemini `candidates` array.
    pub(crate) fn note_candidates(&mut self, value: Option<&[u8]>) -> Result<(), UsageError> {
        if let Some(v) = value {
            self.web_searches = self.web_searches.max(grounding_queries(v)?);
        }
        Ok(())
    }

    /// Lays these facts over a usage read from the usage object.
    pub(crate) fn apply(&self, usage: &mut Usage) {
        if let Some(tier) = self.service_tier {
            usage.service_tier = tier;
        }
        usage.web_searches = usage.web_searches.max(self.web_searches);
    }
}

/// The `web_search_call` items of a Responses `output` array.
fn web_search_calls(output: &[u8]) -> Result<u64, UsageError> {
    let mut calls = 0u64;
    if output.first() == Some(&b'[') {
        scan::walk_array(output, 0, |i| {
            let end = scan::skip_value(output, i)?;
            let item = output.get(i..end).unwrap_or_default();
            let [ty] = scan::find_members(item, ["type"])?;
            if ty.is_some_and(|t| t == b"\"web_search_call\"") {
                calls = calls.saturating_add(1);
            }
            Ok::<_, UsageError>(end)
        })?;
    }
    Ok(calls)
}

/// The search queries Gemini's grounding ran: `webSearchQueries` of each candidate's
/// `groundingMetadata`, the largest count (candidates search alike).
fn grounding_queries(candidates: &[u8]) -> Result<u64, UsageError> {
    let mut most = 0u64;
    if candidates.first() == Some(&b'[') {
        scan::walk_array(candidates, 0, |i| {
            let end = scan::skip_value(candidates, i)?;
            let candidate = candidates.get(i..end).unwrap_or_default();
            let [grounding] = scan::find_members(candidate, ["groundingMetadata"])?;
            if let Some(g) = grounding {
                let [queries] = scan::find_members(g, ["webSearchQueries"])?;
                if let Some(q) = queries.filter(|q| q.first() == Some(&b'[')) {
                    let mut n = 0u64;
                    scan::walk_array(q, 0, |j| {
                        n = n.saturating_add(1);
                        Ok::<_, UsageError>(scan::skip_value(q, j)?)
                    })?;
                    most = most.max(n);
                }
            }
            Ok::<_, UsageError>(end)
        })?;
    }
    Ok(most)
}

/// The member of a response (or of a stream's event) naming the model that served it.
pub(crate) fn model_key(format: ApiFormat) -> &'static str {
    match format {
        ApiFormat::GeminiGenerateContent => "modelVersion",
        _ => "model",
    }
}

/// Longest model name kept from a response: real ones are under 100 bytes; a longer value is
/// not a model name worth pricing by.
const MAX_MODEL_BYTES: usize = 256;

/// The model name in a JSON value token: a string of at most [`MAX_MODEL_BYTES`].
pub(crate) fn model_name(token: &[u8]) -> Option<String> {
    let name = scan::unquote_str(token)?;
    if name.is_empty() || name.len() > MAX_MODEL_BYTES {
        return None;
    }
    Some(name.into_owned())
}

/// Walks `doc` once and reads the value of its last top-level member named `key` (with
/// `through_array`, of the objects in a top-level array too) as a usage object, in the same
/// pass. `None` when there is no such member.
pub(crate) fn find_usage(
    doc: &[u8],
    key: &str,
    through_array: bool,
) -> Result<Option<UsageValue>, UsageError> {
    find_usage_and_served(doc, key, None, through_array).map(|(usage, _)| usage)
}

/// [`find_usage`], also reading (when `served_as` names the format) the top-level members
/// that say how the request was served ([`Served`]).
pub(crate) fn find_usage_and_served(
    doc: &[u8],
    key: &str,
    served_as: Option<ApiFormat>,
    through_array: bool,
) -> Result<(Option<UsageValue>, Served), UsageError> {
    let mut found = None;
    let mut served = Served::default();
    let mut object = |open: usize| -> Result<usize, UsageError> {
        scan::walk_object(doc, open, |k, i| {
            if scan::key_is(k, key) {
                let (value, end) = provider::read_usage_at(doc, i)?;
                found = Some(value);
                Ok(end)
            } else if let Some(format) = served_as {
                let end = scan::skip_value(doc, i)?;
                served.note(format, k, doc.get(i..end).unwrap_or_default())?;
                Ok(end)
            } else {
                Ok(scan::skip_value(doc, i)?)
            }
        })
    };
    let start = scan::skip_ws(doc, 0);
    let end = match doc.get(start) {
        Some(b'{') => object(start)?,
        Some(b'[') if through_array => scan::walk_array(doc, start, |i| {
            if doc.get(i) == Some(&b'{') {
                object(i)
            } else {
                Ok(scan::skip_value(doc, i)?)
            }
        })?,
        _ => scan::skip_value(doc, start)?,
    };
    scan::expect_end(doc, end)?;
    Ok((found, served))
}

/// Reads the bytes of one usage value (an object, or `null`) as `format`'s usage.
pub(crate) fn usage_value(
    format: ApiFormat,
    value: &[u8],
    field: &'static str,
) -> Result<Usage, UsageError> {
    provider::to_usage(format, &provider::parse_raw(value, field)?)
}

/// Reads the usage member `key` of the object `doc` (an SSE event, or an object inside one) as
/// `format`'s usage; `Ok(None)` when the member is absent.
pub(crate) fn usage_in(
    format: ApiFormat,
    doc: &[u8],
    key: &'static str,
) -> Result<Option<Usage>, UsageError> {
    match find_usage(doc, key, false)? {
        None => Ok(None),
        Some(value) => provider::to_usage(format, &value.into_raw(key)?).map(Some),
    }
}

/// Recognises a provider's usage object by its keys and reads it: what `tollgate cost --usage`
/// accepts. `value` is the inner object (`{"prompt_tokens":…}`, `{"promptTokenCount":…}`);
/// for convenience a whole response holding one under `usage` or `usageMetadata` is accepted
/// too.
///
/// ```
/// use tollgate_core::usage::{from_usage_object, ApiFormat};
/// let v = serde_json::json!({"input_tokens": 10, "output_tokens": 5,
///                            "cache_read_input_tokens": 100});
/// let (format, usage) = from_usage_object(&v).unwrap();
/// assert_eq!(format, ApiFormat::AnthropicMessages);
/// assert_eq!(usage.cache_read, 100);
/// ```
pub fn from_usage_object(value: &serde_json::Value) -> Result<(ApiFormat, Usage), UsageError> {
    let object = match value {
        serde_json::Value::Null => return Err(UsageError::NoUsage),
        serde_json::Value::Object(map) => map,
        _ => return Err(UsageError::NotAnObject("usage")),
    };
    for wrapper in ["usage", "usageMetadata"] {
        if let Some(inner) = object.get(wrapper) {
            if inner.is_object() || inner.is_null() {
                return from_usage_object(inner);
            }
        }
    }
    let raw = RawUsage::deserialize(value).map_err(|e| UsageError::json(&e))?;
    let format = provider::detect(&raw).ok_or(UsageError::UnknownFormat)?;
    Ok((format, provider::to_usage(format, &raw)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const CHAT: &[u8] = br#"{
      "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
      "object": "chat.completion",
      "created": 1741570283,
      "model": "gpt-4o-2024-08-06",
      "choices": [{
        "index": 0,
        "message": {"role": "assistant",
          "content": "The \"usage\": {\"prompt_tokens\": 999} field tells you \\ what it cost.",
          "refusal": null, "annotations": []},
        "logprobs": null, "finish_reason": "stop"}],
      "metadata": {"usage": {"prompt_tokens": 5, "completion_tokens": 5}},
      "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 30, "audio_tokens": 0,
          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
      "service_tier": "default",
      "system_fingerprint": "fp_fc9f1d7035"
    }"#;

    #[test]
    fn top_level_usage_wins_over_text_and_nested_objects() {
        let u = from_json(ApiFormat::OpenAiChat, CHAT).unwrap();
        assert_eq!(
            u,
            Usage {
                input_uncached: 93,
                cache_read: 1024,
                output: 46,
                reasoning: 30,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn gemini_array_body_takes_the_last_chunk() {
        let body = br#"[{"candidates":[],"usageMetadata":{"promptTokenCount":9,"totalTokenCount":9}},
                        {"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":20,"thoughtsTokenCount":7}}]"#;
        let u = from_json(ApiFormat::GeminiGenerateContent, body).unwrap();
        assert_eq!((u.input_uncached, u.output, u.reasoning), (9, 27, 7));
    }

    #[test]
    fn usage_key_is_found_through_nesting_and_arrays_correctly() {
        let find = |doc: &str, arr| find_usage(doc.as_bytes(), "usageMetadata", arr).unwrap();
        let doc = r#"[{"usageMetadata":{"promptTokenCount":1}}, 5, {"x":{"usageMetadata":{"promptTokenCount":9}}},
                      {"usageMetadata":{"promptTokenCount":2}}]"#;
        let last = find(doc, true).unwrap().into_raw("u").unwrap();
        assert_eq!(
            provider::to_usage(ApiFormat::GeminiGenerateContent, &last)
                .unwrap()
                .input_uncached,
            2
        );
        assert!(find(doc, false).is_none());
        assert_eq!(
            find(r#"{"usageMetadata":null}"#, false),
            Some(UsageValue::Null)
        );
        assert_eq!(
            find(r#"{"usageMetadata":[1]}"#, false),
            Some(UsageValue::NotObject)
        );
    }

    #[test]
    fn errors_are_typed() {
        let chat = |s: &str| from_json(ApiFormat::OpenAiChat, s.as_bytes());
        assert!(matches!(
            chat("{\"usage\":"),
            Err(UsageError::MalformedJson(_))
        ));
        assert!(matches!(
            chat("not json"),
            Err(UsageError::MalformedJson(_))
        ));
        assert_eq!(
            chat(r#"{"error":{"message":"x"}}"#),
            Err(UsageError::NoUsage)
        );
        assert_eq!(chat(r#"{"usage":null}"#), Err(UsageError::NoUsage));
        assert_eq!(chat(r#"[1,2]"#), Err(UsageError::NoUsage));
        assert_eq!(
            chat(r#"{"usage":"12"}"#),
            Err(UsageError::NotAnObject("usage"))
        );
        assert_eq!(
            chat(r#"{"usage":{"completion_tokens":1}}"#),
            Err(UsageError::MissingField("usage.prompt_tokens"))
        );
        assert_eq!(
            chat(r#"{"usage":{"prompt_tokens":"7","completion_tokens":1}}"#),
            Err(UsageError::NotANumber("usage.prompt_tokens"))
        );
        assert_eq!(
            chat(r#"{"usage":{"prompt_tokens":-7,"completion_tokens":1}}"#),
            Err(UsageError::Negative("usage.prompt_tokens"))
        );
        assert_eq!(
            chat(r#"{"usage":{"prompt_tokens":99999999999999999999999,"completion_tokens":1}}"#),
            Err(UsageError::TooLarge("usage.prompt_tokens"))
        );
        assert_eq!(
            chat(
                r#"{"usage":{"prompt_tokens":1,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":2}}}"#
            ),
            Err(UsageError::Inconsistent {
                part: "usage.prompt_tokens_details.cached_tokens",
                part_value: 2,
                whole: "usage.prompt_tokens",
                whole_value: 1
            })
        );
        assert_eq!(
            chat(
                r#"{"usage":{"prompt_tokens":1,"completion_tokens":1,"prompt_tokens_details":3}}"#
            ),
            Err(UsageError::NotAnObject("usage.prompt_tokens_details"))
        );
    }

    #[test]
    fn usage_objects_are_recognised() {
        let (f, u) = from_usage_object(
            &json!({"promptTokenCount": 10, "cachedContentTokenCount": 4,
            "candidatesTokenCount": 3, "thoughtsTokenCount": 2}),
        )
        .unwrap();
        assert_eq!(f, ApiFormat::GeminiGenerateContent);
        assert_eq!(
            (u.input_uncached, u.cache_read, u.output, u.reasoning),
            (6, 4, 5, 2)
        );
        let (f, _) =
            from_usage_object(&json!({"usage": {"prompt_tokens": 3, "total_tokens": 3}})).unwrap();
        assert_eq!(f, ApiFormat::OpenAiEmbeddings);
        assert_eq!(
            from_usage_object(&json!({"tokens": 3})),
            Err(UsageError::UnknownFormat)
        );
        assert_eq!(from_usage_object(&json!(null)), Err(UsageError::NoUsage));
        assert_eq!(
            from_usage_object(&json!([1])),
            Err(UsageError::NotAnObject("usage"))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            for format in [ApiFormat::OpenAiChat, ApiFormat::OpenAiResponses, ApiFormat::OpenAiEmbeddings,
                           ApiFormat::AnthropicMessages, ApiFormat::GeminiGenerateContent] {
                let _ = from_json(format, &bytes);
            }
        }

        /// Every cut of a valid body either fails with a typed error or (when the cut only
        /// removed trailing whitespace) reads the same usage.
        #[test]
        fn truncated_bodies_fail_cleanly(cut in 0..CHAT.len()) {
            match from_json(ApiFormat::OpenAiChat, &CHAT[..cut]) {
                Ok(u) => prop_assert_eq!(Some(u), from_json(ApiFormat::OpenAiChat, CHAT).ok()),
                Err(UsageError::MalformedJson(_)) => {}
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }
}
