//! Usage from a whole JSON response body, as the filter reads a buffered non-streaming
//! response (`http.rs`: `from_json(format, &body)`), in every provider format.
//!
//! Input: a format selector byte, then the body. Checks: no panic; a usage read keeps the
//! usage invariants and prices to a non-negative, exactly summed cost; the byte scanner gives
//! the same answer for the body and for serde_json's re-serialization of it (same document,
//! other whitespace, escapes and number spellings); and where the body holds one usage object,
//! the control plane's reader (`from_usage_object`, serde derive) agrees with the scanner.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_core::pricing::ServiceTier;
use tollgate_core::provider::ApiFormat;
use tollgate_core::usage::{from_json, from_usage_object};
use tollgate_fuzz::{check_cost, check_usage, format_of, sample_price, split_selector};

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = split_selector(data) else {
        return;
    };
    let format = format_of(selector);
    let got = from_json(format, body);
    if let Ok(u) = &got {
        check_usage(u);
        check_cost(&sample_price(), u);
    }
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let canonical = serde_json::to_vec(&doc).unwrap_or_default();
    assert_eq!(
        from_json(format, &canonical),
        got,
        "same document, other spelling: {}",
        String::from_utf8_lossy(&canonical)
    );
    // The control plane's reader recognises the format from the keys; compare where it is
    // unambiguous: one wrapper key holding an object the scanner read, with no wrapper key of
    // its own (`from_usage_object` unwraps nested wrappers, accepting a body or a usage object,
    // while the filter reads the top-level one: found by the fuzzer, a usage inside a usage).
    let key = if format == ApiFormat::GeminiGenerateContent {
        "usageMetadata"
    } else {
        "usage"
    };
    if let (Ok(u), Some(map)) = (&got, doc.as_object()) {
        let wrappers = ["usage", "usageMetadata"]
            .iter()
            .filter(|k| map.get(**k).is_some_and(|v| v.is_object() || v.is_null()))
            .count();
        let plain = |v: &serde_json::Value| {
            v.as_object()
                .is_some_and(|o| !o.contains_key("usage") && !o.contains_key("usageMetadata"))
        };
        if wrappers == 1 && map.get(key).is_some_and(plain) {
            if let Ok((f, u2)) = from_usage_object(&doc) {
                if f == format {
                    // OpenAI's and Gemini's service tier and web searches are outside the
                    // usage object (top-level `service_tier`, `output`, `candidates`): only
                    // the body's reader sees them.
                    let mut inside = *u;
                    if format != ApiFormat::AnthropicMessages {
                        inside.service_tier = ServiceTier::Standard;
                        inside.web_searches = 0;
                    }
                    assert_eq!(u2, inside, "from_usage_object and from_json disagree");
                }
            }
        }
    }
});
