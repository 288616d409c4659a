//! Usage from a whole (non-streaming) JSON answer, and from a bare usage object.
//!
//! The body is not decoded: [`super::scan`] walks its top-level structure to the member the
//! API names for usage (`usage`, Gemini's `usageMetadata`), and only that object is read,
//! field by field, in the same pass by the API's own reader ([`ProviderApi::read_usage`]).
//! The other top-level members are offered to the API to say how the request was served
//! ([`Served`]). Run the tests with `cargo test -p tollgate-core --lib usage`.

use super::{scan, Usage, UsageError};
use crate::pricing::ServiceTier;
use crate::provider::{self, ApiFormat, ProviderApi};

/// Reads the usage of a whole JSON answer in `format`.
///
/// The top-level usage member is used (for Gemini a JSON array of answers —
/// `streamGenerateContent` without `alt=sse` — gives the last element's, the counts being
/// cumulative). A `usage` anywhere else (in message text, in a nested object) is ignored.
/// Errors: [`UsageError::MalformedJson`] when the body's structure is broken,
/// [`UsageError::NoUsage`] when there is no usage or it is `null`, and a field-naming error
/// when the usage object itself is wrong.
///
/// ```
/// use tollgate_core::provider::ApiFormat;
/// use tollgate_core::usage::from_json;
/// let body = br#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":12,
///     "completion_tokens":3,"prompt_tokens_details":{"cached_tokens":8}}}"#;
/// let usage = from_json(ApiFormat::OpenAiChat, body).unwrap();
/// assert_eq!((usage.input_uncached, usage.cache_read, usage.output), (4, 8, 3));
/// ```
pub fn from_json(format: ApiFormat, body: &[u8]) -> Result<Usage, UsageError> {
    served_json(format, body).map(|(usage, _)| usage)
}

/// Like [`from_json`], and the model the provider says served the request (`model`, Gemini's
/// `modelVersion`), read in the same pass. `None` when the body names none (or names it with
/// something other than a short string).
///
/// ```
/// use tollgate_core::provider::ApiFormat;
/// use tollgate_core::usage::served_json;
/// let body = br#"{"model":"gpt-4o-2024-08-06","usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
/// let (usage, model) = served_json(ApiFormat::OpenAiChat, body).unwrap();
/// assert_eq!((usage.output, model.as_deref()), (2, Some("gpt-4o-2024-08-06")));
/// ```
pub fn served_json(format: ApiFormat, body: &[u8]) -> Result<(Usage, Option<String>), UsageError> {
    let api = format.api();
    let mut served = Served::default();
    let usage = walk_answer(
        body,
        api.usage_key(),
        api.answer_may_be_array(),
        |s, i| api.read_usage(s, i),
        |key, value| served.note_member(api, key, value),
    )?;
    let mut usage = usage
        .ok_or(UsageError::NoUsage)?
        .into_usage(api.usage_key())?;
    served.apply(&mut usage);
    Ok((usage, served.model))
}

/// What an answer says about how it was served, outside its usage object: the model, the
/// service tier (OpenAI's top-level `service_tier`) and the web searches run (OpenAI Responses'
/// `web_search_call` output items, Gemini's `groundingMetadata.webSearchQueries`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    pub(crate) model: Option<String>,
    pub(crate) service_tier: Option<ServiceTier>,
    pub(crate) web_searches: u64,
}

impl Served {
    /// Reads the top-level member `key` (value token `value`) of an answer of `api`, if it is
    /// one that says how the request was served: the model, the tier, the searches.
    pub(crate) fn note_member(
        &mut self,
        api: &dyn ProviderApi,
        key: scan::Key<'_>,
        value: &[u8],
    ) -> Result<(), UsageError> {
        if key.is(api.model_key()) {
            self.note_model(Some(value));
        } else if key.is("service_tier") && api.tier_at_top_level() {
            self.note_tier(Some(value));
        } else if let Some(n) = api.searches_in(key, value)? {
            self.note_searches(n);
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
        if let Some(tier) = value.and_then(super::fields::tier_of) {
            self.service_tier = Some(tier);
        }
    }

    /// Searches an answer (or one event of a stream) reports; the largest count stands, as
    /// streams repeat them.
    pub(crate) fn note_searches(&mut self, n: u64) {
        self.web_searches = self.web_searches.max(n);
    }

    /// Lays these facts over a usage read from the usage object.
    pub(crate) fn apply(&self, usage: &mut Usage) {
        if let Some(tier) = self.service_tier {
            usage.service_tier = tier;
        }
        usage.web_searches = usage.web_searches.max(self.web_searches);
    }
}

/// Longest model name kept from a response: real ones are under 100 bytes; a longer value is
/// not a model name worth pricing by.
const MAX_MODEL_BYTES: usize = 256;

/// The model name in a JSON value token: a string of at most [`MAX_MODEL_BYTES`].
fn model_name(token: &[u8]) -> Option<String> {
    let name = scan::unquote_str(token)?;
    if name.is_empty() || name.len() > MAX_MODEL_BYTES {
        return None;
    }
    Some(name.into_owned())
}

/// Walks `doc` once: `read` reads the value of each top-level member named `key` (the last
/// one wins), `other` sees every other member's key and value tokens. With `through_array`,
/// the objects of a top-level array are walked too. `None` when there is no such member.
pub(crate) fn walk_answer<T>(
    doc: &[u8],
    key: &str,
    through_array: bool,
    mut read: impl FnMut(&[u8], usize) -> Result<(T, usize), UsageError>,
    mut other: impl FnMut(scan::Key<'_>, &[u8]) -> Result<(), UsageError>,
) -> Result<Option<T>, UsageError> {
    let mut found = None;
    let mut object = |open: usize| -> Result<usize, UsageError> {
        scan::walk_object(doc, open, |k, i| {
            if k.is(key) {
                let (value, end) = read(doc, i)?;
                found = Some(value);
                Ok(end)
            } else {
                let end = scan::skip_value(doc, i)?;
                other(k, doc.get(i..end).unwrap_or_default())?;
                Ok(end)
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
    Ok(found)
}

/// Reads the member `key` of the object `doc` (an event, or an object inside one) with
/// `read`; `Ok(None)` when the member is absent.
pub(crate) fn find_member<T>(
    doc: &[u8],
    key: &str,
    read: impl FnMut(&[u8], usize) -> Result<(T, usize), UsageError>,
) -> Result<Option<T>, UsageError> {
    walk_answer(doc, key, false, read, |_, _| Ok(()))
}

/// Reads the usage member of the object `doc` (an event, or an object inside one) as `api`'s
/// usage; `Ok(None)` when the member is absent.
pub(crate) fn usage_in(api: &dyn ProviderApi, doc: &[u8]) -> Result<Option<Usage>, UsageError> {
    find_member(doc, api.usage_key(), |s, i| api.read_usage(s, i))?
        .map(|value| value.into_usage(api.usage_key()))
        .transpose()
}

/// Reads `value`, the bytes of exactly one usage value (an object, or `null`), as `api`'s
/// usage.
pub(crate) fn usage_of(api: &dyn ProviderApi, value: &[u8]) -> Result<Usage, UsageError> {
    let (usage, end) = api.read_usage(value, scan::skip_ws(value, 0))?;
    scan::expect_end(value, end)?;
    usage.into_usage(api.usage_key())
}

/// Recognises a provider's usage object by its keys and reads it: what `tollgate cost --usage`
/// accepts. `value` is the inner object (`{"prompt_tokens":…}`, `{"promptTokenCount":…}`);
/// for convenience a whole response holding one under `usage` or `usageMetadata` is accepted
/// too.
///
/// ```
/// use tollgate_core::provider::ApiFormat;
/// use tollgate_core::usage::from_usage_object;
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
    let format = provider::detect(|k| object.contains_key(k)).ok_or(UsageError::UnknownFormat)?;
    // One reader for every source: the object goes back to bytes, read as an answer's is.
    let bytes = serde_json::to_vec(value).map_err(|e| UsageError::MalformedJson(e.to_string()))?;
    Ok((format, usage_of(format.api(), &bytes)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::UsageValue;
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

    /// Found by the fuzzer: Anthropic's tier is `usage.service_tier`; a top-level
    /// `service_tier` (OpenAI's place for it) in an answer read as Anthropic's changes nothing,
    /// as the control plane's reader of the usage object sees it.
    #[test]
    fn anthropic_tier_is_the_usage_objects_only() {
        let body = br#"{"service_tier": "flex", "model": "claude-sonnet-4-5",
            "usage": {"input_tokens": 10, "output_tokens": 5, "service_tier": "priority"}}"#;
        let u = from_json(ApiFormat::AnthropicMessages, body).unwrap();
        assert_eq!(u.service_tier, ServiceTier::Priority);
        let body =
            br#"{"service_tier": "flex", "usage": {"input_tokens": 10, "output_tokens": 5}}"#;
        let u = from_json(ApiFormat::AnthropicMessages, body).unwrap();
        assert_eq!(u.service_tier, ServiceTier::Standard);
        let u = from_json(ApiFormat::OpenAiChat, CHAT).unwrap();
        assert_eq!(u.service_tier, ServiceTier::Standard, "OpenAI's default");
    }

    #[test]
    fn a_repeated_gemini_details_list_overwrites_the_first() {
        // As serde_json's `Value` reads it (the last one wins): the fuzzer's reproducer, cut
        // down. The first list's 1,560 audio tokens must not stay once a second list replaces it.
        let body = br#"{"usageMetadata":{"promptTokenCount":1580,
            "promptTokensDetails":[{"modality":"TEXT","tokenCount":20},{"modality":"AUDIO","tokenCount":1560}],
            "promptTokensDetails":[{"modality":"TEXT","tokenCount":1580}]}}"#;
        let u = from_json(ApiFormat::GeminiGenerateContent, body).unwrap();
        assert_eq!((u.input_uncached, u.input_audio), (1580, 0));
        let doc: serde_json::Value = serde_json::from_slice(body).unwrap();
        let canonical = serde_json::to_vec(&doc).unwrap();
        assert_eq!(
            from_json(ApiFormat::GeminiGenerateContent, &canonical),
            Ok(u)
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
        let gemini = ApiFormat::GeminiGenerateContent.api();
        let find = |doc: &str, arr| {
            walk_answer(
                doc.as_bytes(),
                "usageMetadata",
                arr,
                |s, i| gemini.read_usage(s, i),
                |_, _| Ok(()),
            )
            .unwrap()
        };
        let doc = r#"[{"usageMetadata":{"promptTokenCount":1}}, 5, {"x":{"usageMetadata":{"promptTokenCount":9}}},
                      {"usageMetadata":{"promptTokenCount":2}}]"#;
        let last = find(doc, true).unwrap().into_usage("u").unwrap();
        assert_eq!(last.input_uncached, 2);
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
