//! The request path, as the filter runs it on a buffered request body (`http.rs::admit`):
//! `summarize` (model, output cap, choices, stream, prompt size), the worst-case estimate at a
//! price, and for streaming OpenAI chat the `stream_options.include_usage` body rewrite
//! spliced from what that one read recorded.
//!
//! Input: a format selector byte, then the body; for Gemini the path names a model too.
//! Checks: no panic; the estimate is non-negative; the rewrite happens exactly when the
//! summary says the stream lacks usage, and the rewritten body is valid JSON that summarizes
//! the same except that it now asks for usage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;
use tollgate_core::estimate::{summarize, worst_case, EstimateConfig};
use tollgate_core::provider::ApiFormat;
use tollgate_fuzz::{format_of, sample_price, split_selector};

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = split_selector(data) else {
        return;
    };
    let format = format_of(selector);
    let path_model = (format == ApiFormat::GeminiGenerateContent).then_some("gemini-2.5-pro");
    let cfg = EstimateConfig::default();
    let summary = summarize(body, format, path_model, &cfg);
    if let Ok(s) = &summary {
        assert!(!s.model.is_empty());
        assert!(s.choices >= 1);
        if let Ok(e) = worst_case(s, &sample_price(), &cfg) {
            assert!(e.cost >= Decimal::ZERO, "negative estimate {e:?}");
        }
    }
    if format != ApiFormat::OpenAiChat {
        return;
    }
    let Ok(s) = &summary else {
        return;
    };
    let Some(new_body) = s.usage_rewrite(body) else {
        assert!(
            !s.stream || s.include_usage,
            "a stream without usage was not rewritten"
        );
        return;
    };
    assert!(
        s.stream && !s.include_usage,
        "rewrote a body that needed nothing"
    );
    let after = summarize(&new_body, format, path_model, &cfg).unwrap_or_else(|e| {
        panic!(
            "rewritten body refused ({e}): {}",
            String::from_utf8_lossy(&new_body)
        )
    });
    assert!(
        after.include_usage,
        "the rewritten body does not ask for usage"
    );
    let mut want = s.clone();
    want.include_usage = true;
    want.usage_splice = None;
    assert_eq!(after, want, "the rewrite changed more than include_usage");
});
