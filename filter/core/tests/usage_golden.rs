//! Golden provider payloads for `tollgate_core::usage`: every response shape Tollgate meters,
//! as JSON bodies and as SSE streams, each with the `Usage` it must produce.
//!
//! The payloads live in `tests/fixtures/usage/` and follow the providers' documented examples
//! (OpenAI chat/responses/embeddings objects and streaming events, Anthropic messages and
//! streaming events, Gemini `GenerateContentResponse` and `alt=sse` chunks); they include cache
//! reads, Anthropic 5m/1h cache writes, reasoning tokens, Gemini thoughts, and message text that
//! mentions `"usage"`. Every stream is also fed split at every byte, byte by byte, at random
//! multi-split points, with each SSE line ending, and cut short at every byte.
//!
//! Run: `cargo test -p tollgate-core --test usage_golden`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::PathBuf;

use proptest::prelude::*;
use tollgate_core::pricing::ServiceTier;
use tollgate_core::provider::ApiFormat;
use tollgate_core::usage::eventstream::from_event_stream;
use tollgate_core::usage::{
    from_json, from_sse, from_usage_object, served_json, EventStreamUsage, SseUsage, StreamOutcome,
    Usage, UsageError,
};

/// Generous for the fixtures (the largest event is ~1.7 KB).
const MAX_EVENT: usize = 64 * 1024;

/// A fixture file, its format and the usage it must produce.
struct Golden {
    file: &'static str,
    format: ApiFormat,
    usage: Usage,
    /// For streams: text at which the end-of-stream mark begins; a stream cut at or before it
    /// must not report `complete`.
    end_mark: &'static str,
}

const JSON_GOLDEN: &[Golden] = &[
    Golden {
        file: "bedrock_converse.json",
        format: ApiFormat::BedrockConverse,
        usage: Usage {
            input_uncached: 125, // inputTokens: the uncached part
            cache_read: 3200,    // cacheReadInputTokens
            cache_write_5m: 800, // cacheWriteInputTokens, no cacheDetails: the default TTL
            output: 60,
            ..Usage::ZERO
        },
        end_mark: "",
    },
    Golden {
        file: "bedrock_invoke.json",
        format: ApiFormat::BedrockInvoke,
        usage: Usage {
            input_uncached: 12, // Anthropic's answer, as InvokeModel returns it
            output: 14,
            ..Usage::ZERO
        },
        end_mark: "",
    },
    Golden {
        file: "gemini_generate_content_audio_image.json",
        format: ApiFormat::GeminiGenerateContent,
        usage: Usage {
            input_uncached: 1580,
            output: 1310,
            input_audio: 1560,  // promptTokensDetails AUDIO
            output_image: 1290, // candidatesTokensDetails IMAGE
            ..Usage::ZERO
        },
        end_mark: "",
    },
    Golden {
        file: "openai_chat_audio_priority.json",
        format: ApiFormat::OpenAiChat,
        usage: Usage {
            input_uncached: 861, // prompt_tokens 1117 - cached_tokens 256
            cache_read: 256,
            output: 266,
            input_audio: 845, // prompt_tokens_details.audio_tokens (part of the prompt)
            output_audio: 214, // completion_tokens_details.audio_tokens (part of the output)
            service_tier: ServiceTier::Priority, // top-level service_tier
            ..Usage::ZERO
        },
        end_mark: "",
    },
    Golden {
        file: "openai_responses_web_search.json",
        format: ApiFormat::OpenAiResponses,
        usage: Usage {
            input_uncached: 8412,
            output: 934,
            reasoning: 448,
            web_searches: 2, // two `web_search_call` output items (text mentioning one is not)
            service_tier: ServiceTier::Flex,
            ..Usage::ZERO
        },
        end_mark: "",
    },
    Golden {
        file: "anthropic_messages_web_search_priority.json",
        format: ApiFormat::AnthropicMessages,
        usage: Usage {
            input_uncached: 6039,
            cache_read: 2048,
            output: 931,
            web_searches: 3, // usage.server_tool_use.web_search_requests
            service_tier: ServiceTier::Priority, // usage.service_tier
            ..Usage::ZERO
        },
        end_mark: "",
    },
    Golden {
        file: "gemini_generate_content_grounding.json",
        format: ApiFormat::GeminiGenerateContent,
        usage: Usage {
            input_uncached: 319, // promptTokenCount 12 + toolUsePromptTokenCount 307
            output: 112,         // candidatesTokenCount 16 + thoughtsTokenCount 96
            reasoning: 96,
            web_searches: 2, // groundingMetadata.webSearchQueries
            ..Usage::ZERO
        },
        end_mark: "",
    },
    Golden {
        file: "openai_chat.json",
        format: ApiFormat::OpenAiChat,
        usage: Usage {
            input_uncached: 86, // prompt_tokens 2006 - cached_tokens 1920
            cache_read: 1920,   // prompt_tokens_details.cached_tokens
            cache_write_5m: 0,  // OpenAI caches implicitly: no cache writes
            cache_write_1h: 0,  // (ditto)
            output: 300,        // completion_tokens (reasoning included)
            reasoning: 192,     // completion_tokens_details.reasoning_tokens
            ..Usage::ZERO
        },
        end_mark: "",
    },
    Golden {
        file: "openai_chat_usage_in_text.json",
        format: ApiFormat::OpenAiChat,
        usage: Usage {
            input_uncached: 57, // prompt_tokens; no *_details (an older or compatible server)
            cache_read: 0,
            cache_write_5m: 0,
            cache_write_1h: 0,
            // completion_tokens; not the 999999 quoted in the message text, the 654321 in the
            // tool-call arguments, nor the nested metadata.usage.
            output: 19,
            reasoning: 0,
            ..Usage::ZERO
        },
        end_mark: "",
    },
    Golden {
        file: "openai_responses.json",
        format: ApiFormat::OpenAiResponses,
        usage: Usage {
            input_uncached: 86, // input_tokens 4182 - input_tokens_details.cached_tokens 4096
            cache_read: 4096,   // input_tokens_details.cached_tokens
            cache_write_5m: 0,
            cache_write_1h: 0,
            output: 1035,   // output_tokens (reasoning included)
            reasoning: 768, // output_tokens_details.reasoning_tokens
            ..Usage::ZERO
        },
        end_mark: "",
    },
    Golden {
        file: "openai_embeddings.json",
        format: ApiFormat::OpenAiEmbeddings,
        usage: Usage {
            input_uncached: 8, // prompt_tokens (== total_tokens)
            cache_read: 0,
            cache_write_5m: 0,
            cache_write_1h: 0,
            output: 0, // embeddings have no output tokens
            reasoning: 0,
            ..Usage::ZERO
        },
        end_mark: "",
    },
    Golden {
        file: "anthropic_messages.json",
        format: ApiFormat::AnthropicMessages,
        usage: Usage {
            input_uncached: 21,   // input_tokens: Anthropic reports the uncached part
            cache_read: 12000,    // cache_read_input_tokens
            cache_write_5m: 1000, // cache_creation.ephemeral_5m_input_tokens
            cache_write_1h: 2000, // cache_creation.ephemeral_1h_input_tokens (sum = 3000)
            output: 393,          // output_tokens
            reasoning: 0,         // thinking is inside output_tokens, not reported apart
            ..Usage::ZERO
        },
        end_mark: "",
    },
    Golden {
        file: "anthropic_messages_no_split.json",
        format: ApiFormat::AnthropicMessages,
        usage: Usage {
            input_uncached: 1200, // input_tokens
            cache_read: 0,        // cache_read_input_tokens
            cache_write_5m: 1500, // cache_creation_input_tokens, no split: the 5m default
            cache_write_1h: 0,
            output: 85, // output_tokens
            reasoning: 0,
            ..Usage::ZERO
        },
        end_mark: "",
    },
    Golden {
        file: "gemini_generate_content.json",
        format: ApiFormat::GeminiGenerateContent,
        usage: Usage {
            input_uncached: 3916, // promptTokenCount 12108 - cachedContentTokenCount 8192
            cache_read: 8192,     // cachedContentTokenCount
            cache_write_5m: 0,
            cache_write_1h: 0,
            output: 1436,    // candidatesTokenCount 412 + thoughtsTokenCount 1024
            reasoning: 1024, // thoughtsTokenCount
            ..Usage::ZERO
        },
        end_mark: "",
    },
];

/// AWS event streams (Bedrock), written by `fixtures/make_eventstream.py` with zlib's CRC.
const EVENTSTREAM_GOLDEN: &[Golden] = &[
    Golden {
        file: "bedrock_converse_stream.eventstream",
        format: ApiFormat::BedrockConverse,
        usage: Usage {
            input_uncached: 21,
            cache_read: 2500,
            cache_write_5m: 400, // cacheWriteInputTokens 1000, cacheDetails 5m 400 / 1h 600
            cache_write_1h: 600,
            output: 87,
            ..Usage::ZERO
        },
        // Complete only once the last message is whole (checked by position below).
        end_mark: "",
    },
    Golden {
        file: "bedrock_invoke_stream.eventstream",
        format: ApiFormat::BedrockInvoke,
        usage: Usage {
            input_uncached: 35, // message_start's usage, inside a base64 chunk
            cache_read: 1800,
            output: 42, // message_delta's
            ..Usage::ZERO
        },
        end_mark: "",
    },
];

const SSE_GOLDEN: &[Golden] = &[
    Golden {
        file: "openai_chat.sse",
        format: ApiFormat::OpenAiChat,
        usage: Usage {
            input_uncached: 226, // prompt_tokens 1250 - cached_tokens 1024, from the last chunk
            cache_read: 1024,    // (choices: []) before [DONE]; every other chunk has usage null
            cache_write_5m: 0,
            cache_write_1h: 0,
            output: 14, // completion_tokens
            reasoning: 0,
            ..Usage::ZERO
        },
        end_mark: r#""usage":{"prompt_tokens""#,
    },
    Golden {
        file: "openai_responses.sse",
        format: ApiFormat::OpenAiResponses,
        usage: Usage {
            input_uncached: 154, // response.completed: input_tokens 1050 - cached_tokens 896
            cache_read: 896,
            cache_write_5m: 0,
            cache_write_1h: 0,
            output: 350,    // output_tokens
            reasoning: 256, // output_tokens_details.reasoning_tokens
            ..Usage::ZERO
        },
        end_mark: "event: response.completed",
    },
    Golden {
        file: "openai_responses_incomplete.sse",
        format: ApiFormat::OpenAiResponses,
        usage: Usage {
            input_uncached: 30, // response.incomplete (max_output_tokens) still ends the
            cache_read: 0,      // stream and carries the final usage
            cache_write_5m: 0,
            cache_write_1h: 0,
            output: 64,
            reasoning: 64, // all of it spent reasoning before the cap
            ..Usage::ZERO
        },
        end_mark: "event: response.incomplete",
    },
    Golden {
        file: "anthropic_messages.sse",
        format: ApiFormat::AnthropicMessages,
        usage: Usage {
            input_uncached: 25,   // message_start message.usage.input_tokens
            cache_read: 10240,    // message_start cache_read_input_tokens
            cache_write_5m: 0,    // message_start cache_creation.ephemeral_5m_input_tokens
            cache_write_1h: 2048, // message_start cache_creation.ephemeral_1h_input_tokens
            output: 158,          // message_delta usage.output_tokens (cumulative; replaces 1)
            reasoning: 0,
            ..Usage::ZERO
        },
        end_mark: "event: message_stop",
    },
    Golden {
        file: "anthropic_messages_delta_usage.sse",
        format: ApiFormat::AnthropicMessages,
        usage: Usage {
            input_uncached: 10682, // message_delta input_tokens (web search results) replaces 472
            cache_read: 0,
            cache_write_5m: 0,
            cache_write_1h: 0,
            output: 510, // message_delta output_tokens
            reasoning: 0,
            web_searches: 1, // message_delta usage.server_tool_use.web_search_requests
            ..Usage::ZERO
        },
        end_mark: "event: message_stop",
    },
    Golden {
        file: "gemini_generate_content.sse",
        format: ApiFormat::GeminiGenerateContent,
        usage: Usage {
            input_uncached: 10, // last chunk's usageMetadata.promptTokenCount (CRLF stream)
            cache_read: 0,
            cache_write_5m: 0,
            cache_write_1h: 0,
            output: 165,    // candidatesTokenCount 45 + thoughtsTokenCount 120
            reasoning: 120, // thoughtsTokenCount
            ..Usage::ZERO
        },
        end_mark: r#""finishReason""#,
    },
    Golden {
        file: "openai_chat_priority.sse",
        format: ApiFormat::OpenAiChat,
        usage: Usage {
            input_uncached: 141, // prompt_tokens 1933 - cached_tokens 1792
            cache_read: 1792,
            output: 12,
            service_tier: ServiceTier::Priority, // every chunk's service_tier
            ..Usage::ZERO
        },
        end_mark: r#""choices":[]"#, // the usage chunk (empty choices) ends an OpenAI stream
    },
];

fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "usage",
        name,
    ]
    .iter()
    .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn whole(g: &Golden) -> StreamOutcome {
    from_sse(g.format, &fixture(g.file), MAX_EVENT)
}

fn pushed(format: ApiFormat, chunks: impl IntoIterator<Item = impl AsRef<[u8]>>) -> StreamOutcome {
    let mut sse = SseUsage::new(format, MAX_EVENT);
    for c in chunks {
        sse.push(c.as_ref());
    }
    sse.finish()
}

#[test]
fn every_fixture_has_an_expectation() {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", "usage"]
        .iter()
        .collect();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            JSON_GOLDEN
                .iter()
                .chain(SSE_GOLDEN)
                .chain(EVENTSTREAM_GOLDEN)
                .any(|g| g.file == name),
            "fixture {name} has no expected usage"
        );
    }
}

#[test]
fn json_bodies() {
    for g in JSON_GOLDEN {
        assert_eq!(
            from_json(g.format, &fixture(g.file)),
            Ok(g.usage),
            "{}",
            g.file
        );
    }
}

#[test]
fn usage_objects_are_recognised_from_their_keys() {
    for g in JSON_GOLDEN {
        let body: serde_json::Value = serde_json::from_slice(&fixture(g.file)).unwrap();
        let key = if g.format == ApiFormat::GeminiGenerateContent {
            "usageMetadata"
        } else {
            "usage"
        };
        // InvokeModel's usage object is Anthropic's own.
        let format = match g.format {
            ApiFormat::BedrockInvoke => ApiFormat::AnthropicMessages,
            f => f,
        };
        // The tier and web searches of OpenAI and Gemini answers are outside the usage object.
        let mut want = g.usage;
        if format != ApiFormat::AnthropicMessages {
            want.service_tier = ServiceTier::Standard;
            want.web_searches = 0;
        }
        assert_eq!(
            from_usage_object(&body[key]),
            Ok((format, want)),
            "{}",
            g.file
        );
    }
}

#[test]
fn sse_streams() {
    for g in SSE_GOLDEN {
        let o = whole(g);
        assert_eq!(o.usage, Some(g.usage), "{}", g.file);
        assert!(o.complete, "{} should be complete", g.file);
        assert_eq!(
            (o.oversized_events, o.failed_events, o.first_error),
            (0, 0, None),
            "{}",
            g.file
        );
    }
}

#[test]
fn sse_split_at_every_byte_gives_the_same_outcome() {
    for g in SSE_GOLDEN {
        let bytes = fixture(g.file);
        let want = whole(g);
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(pushed(g.format, [a, b]), want, "{} split at {cut}", g.file);
        }
        assert_eq!(
            pushed(g.format, bytes.chunks(1)),
            want,
            "{} byte by byte",
            g.file
        );
    }
}

#[test]
fn sse_line_endings_do_not_matter() {
    for g in SSE_GOLDEN {
        let text = String::from_utf8(fixture(g.file))
            .unwrap()
            .replace("\r\n", "\n");
        let want = whole(g);
        for eol in ["\n", "\r\n", "\r"] {
            let variant = text.replace('\n', eol);
            assert_eq!(
                pushed(g.format, variant.as_bytes().chunks(1)),
                want,
                "{} with {eol:?}",
                g.file
            );
            assert_eq!(
                from_sse(g.format, variant.as_bytes(), MAX_EVENT),
                want,
                "{} with {eol:?}",
                g.file
            );
        }
    }
}

#[test]
fn sse_cut_short_reports_what_it_saw() {
    for g in SSE_GOLDEN {
        let bytes = fixture(g.file);
        let text = String::from_utf8(bytes.clone()).unwrap();
        let mark = text.find(g.end_mark).unwrap();
        for cut in 0..bytes.len() {
            let o = from_sse(g.format, &bytes[..cut], MAX_EVENT);
            // A cut-off last event is truncation, never a failed event.
            assert_eq!(o.failed_events, 0, "{} cut at {cut}: {o:?}", g.file);
            if cut <= mark {
                assert!(o.truncated(), "{} cut at {cut} is not complete", g.file);
            }
            if o.complete {
                assert_eq!(o.usage, Some(g.usage), "{} cut at {cut}", g.file);
            }
        }
    }
}

/// Each event stream whole, split at every byte, byte by byte, and cut short at every byte:
/// the same outcome, and never complete before its last message.
#[test]
fn event_streams_split_and_cut_anywhere() {
    for g in EVENTSTREAM_GOLDEN {
        let bytes = fixture(g.file);
        let read = |chunks: &[&[u8]]| {
            let mut es = EventStreamUsage::new(g.format, MAX_EVENT);
            for c in chunks {
                es.push(c);
            }
            es.finish()
        };
        let want = read(&[&bytes]);
        assert_eq!(want.usage, Some(g.usage), "{}", g.file);
        assert!(want.complete, "{}", g.file);
        assert_eq!(
            (want.failed_events, want.first_error.clone()),
            (0, None),
            "{}",
            g.file
        );
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(read(&[a, b]), want, "{} split at {cut}", g.file);
            let o = read(&[a]);
            assert_eq!(o.failed_events, 0, "{} cut at {cut}", g.file);
            assert_eq!(o.complete, cut == bytes.len(), "{} cut at {cut}", g.file);
        }
        let bytes_one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(read(&bytes_one_by_one), want, "{} byte by byte", g.file);
    }
}

#[test]
fn anthropic_cut_before_message_stop_keeps_the_usage() {
    let g = &SSE_GOLDEN[3];
    assert_eq!(g.file, "anthropic_messages.sse");
    let text = String::from_utf8(fixture(g.file)).unwrap();
    let cut = text.find("event: message_stop").unwrap();
    let o = from_sse(g.format, &text.as_bytes()[..cut], MAX_EVENT);
    assert!(o.truncated());
    assert_eq!(o.usage, Some(g.usage));
    // Cut before message_delta: message_start's numbers, output still the initial 1.
    let cut = text.find("event: message_delta").unwrap();
    let o = from_sse(g.format, &text.as_bytes()[..cut], MAX_EVENT);
    assert!(o.truncated());
    assert_eq!(
        o.usage,
        Some(Usage {
            output: 1,
            ..g.usage
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sse_random_multi_splits_give_the_same_outcome(
        which in 0..SSE_GOLDEN.len(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 1..24),
    ) {
        let g = &SSE_GOLDEN[which];
        let bytes = fixture(g.file);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut at = 0;
        for p in points {
            chunks.push(&bytes[at..p]);
            at = p;
        }
        chunks.push(&bytes[at..]);
        prop_assert_eq!(pushed(g.format, chunks), whole(g));
    }

    #[test]
    fn corrupted_fixtures_never_panic(
        which in 0..(JSON_GOLDEN.len() + SSE_GOLDEN.len()),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let g = JSON_GOLDEN.iter().chain(SSE_GOLDEN).nth(which).unwrap();
        let mut bytes = fixture(g.file);
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let _ = from_json(g.format, &bytes);
        let _ = pushed(g.format, bytes.chunks(13));
    }
}

/// Bad bodies: each a typed error naming the field, never a panic.
#[test]
fn bad_json_bodies() {
    use ApiFormat::*;
    let cases: &[(ApiFormat, &str, UsageError)] = &[
        (
            OpenAiChat,
            r#"{"usage":{"prompt_tokens":1,"#,
            UsageError::MalformedJson("unexpected end of input at byte 28".into()),
        ),
        (
            OpenAiChat,
            r#"{"id":"x","usage":null}"#,
            UsageError::NoUsage,
        ),
        (
            OpenAiChat,
            r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
            UsageError::NoUsage,
        ),
        (
            OpenAiChat,
            r#"{"usage":[1,2]}"#,
            UsageError::NotAnObject("usage"),
        ),
        (
            OpenAiChat,
            r#"{"usage":{"prompt_tokens":"12","completion_tokens":3}}"#,
            UsageError::NotANumber("usage.prompt_tokens"),
        ),
        (
            OpenAiChat,
            r#"{"usage":{"prompt_tokens":12,"completion_tokens":-3}}"#,
            UsageError::Negative("usage.completion_tokens"),
        ),
        (
            OpenAiChat,
            r#"{"usage":{"prompt_tokens":12,"completion_tokens":3.5}}"#,
            UsageError::NotAnInteger("usage.completion_tokens"),
        ),
        (
            OpenAiChat,
            r#"{"usage":{"prompt_tokens":18446744073709551616,"completion_tokens":3}}"#,
            UsageError::TooLarge("usage.prompt_tokens"),
        ),
        (
            OpenAiChat,
            r#"{"usage":{"prompt_tokens":10000000000000,"completion_tokens":3}}"#,
            UsageError::TooLarge("usage.prompt_tokens"),
        ),
        (
            OpenAiChat,
            r#"{"usage":{"completion_tokens":3}}"#,
            UsageError::MissingField("usage.prompt_tokens"),
        ),
        (
            OpenAiChat,
            r#"{"usage":{"prompt_tokens":null,"completion_tokens":3}}"#,
            UsageError::MissingField("usage.prompt_tokens"),
        ),
        (
            OpenAiChat,
            r#"{"usage":{"prompt_tokens":5,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":6}}}"#,
            UsageError::Inconsistent {
                part: "usage.prompt_tokens_details.cached_tokens",
                part_value: 6,
                whole: "usage.prompt_tokens",
                whole_value: 5,
            },
        ),
        (
            OpenAiResponses,
            r#"{"usage":{"output_tokens":3}}"#,
            UsageError::MissingField("usage.input_tokens"),
        ),
        (
            OpenAiResponses,
            r#"{"usage":{"input_tokens":3,"output_tokens":{"n":1}}}"#,
            UsageError::NotANumber("usage.output_tokens"),
        ),
        (
            OpenAiEmbeddings,
            r#"{"usage":{}}"#,
            UsageError::MissingField("usage.prompt_tokens"),
        ),
        (
            AnthropicMessages,
            r#"{"usage":{"input_tokens":3}}"#,
            UsageError::MissingField("usage.output_tokens"),
        ),
        (
            AnthropicMessages,
            r#"{"usage":{"input_tokens":3,"output_tokens":1,"cache_creation":"5m"}}"#,
            UsageError::NotAnObject("usage.cache_creation"),
        ),
        (
            AnthropicMessages,
            r#"{"usage":{"input_tokens":3,"output_tokens":1,"cache_read_input_tokens":true}}"#,
            UsageError::NotANumber("usage.cache_read_input_tokens"),
        ),
        (
            GeminiGenerateContent,
            r#"{"usageMetadata":{"candidatesTokenCount":3}}"#,
            UsageError::MissingField("usageMetadata.promptTokenCount"),
        ),
        (
            GeminiGenerateContent,
            r#"{"usageMetadata":{"promptTokenCount":3,"cachedContentTokenCount":4}}"#,
            UsageError::Inconsistent {
                part: "usageMetadata.cachedContentTokenCount",
                part_value: 4,
                whole: "usageMetadata.promptTokenCount",
                whole_value: 3,
            },
        ),
        (
            GeminiGenerateContent,
            r#"{"usage":{"promptTokenCount":3}}"#,
            UsageError::NoUsage,
        ),
    ];
    for (format, body, want) in cases {
        assert_eq!(
            &from_json(*format, body.as_bytes()).unwrap_err(),
            want,
            "{body}"
        );
    }
    // Messages are lowercase and name the field.
    assert_eq!(
        UsageError::Negative("usage.completion_tokens").to_string(),
        "field `usage.completion_tokens` is negative"
    );
}

/// Bad streams: what was seen survives, the problem is reported.
#[test]
fn bad_sse_streams() {
    // No usage at all (include_usage off): complete by [DONE], no usage, no error.
    let o = from_sse(
        ApiFormat::OpenAiChat,
        b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
        MAX_EVENT,
    );
    assert_eq!((o.complete, o.usage, o.failed_events), (true, None, 0));
    assert_eq!(o.into_result(), Err(UsageError::NoUsage));

    // A malformed event in the middle: counted, earlier usage kept, later usage still read.
    let o = from_sse(
        ApiFormat::AnthropicMessages,
        b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n\
          event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":\n\n\
          event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        MAX_EVENT,
    );
    assert!(o.complete);
    assert_eq!(o.failed_events, 1);
    assert!(matches!(o.first_error, Some(UsageError::MalformedJson(_))));
    assert_eq!(o.usage.map(|u| (u.input_uncached, u.output)), Some((9, 1)));

    // A string where a count belongs.
    let o = from_sse(
        ApiFormat::OpenAiResponses,
        b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":\"9\",\"output_tokens\":1}}}\n\n",
        MAX_EVENT,
    );
    assert!(o.complete);
    assert_eq!(
        o.into_result(),
        Err(UsageError::NotANumber("usage.input_tokens"))
    );

    // A negative count in the chat usage chunk.
    let o = from_sse(
        ApiFormat::OpenAiChat,
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n",
        MAX_EVENT,
    );
    assert_eq!(
        o.first_error,
        Some(UsageError::Negative("usage.prompt_tokens"))
    );
    assert_eq!(o.usage, None);

    // message_start never arrived: the output seen is kept and the gap reported.
    let o = from_sse(
        ApiFormat::AnthropicMessages,
        b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n",
        MAX_EVENT,
    );
    assert_eq!(o.usage.map(|u| u.output), Some(7));
    assert_eq!(
        o.first_error,
        Some(UsageError::MissingField("usage.input_tokens"))
    );

    // Usage-bearing event over the limit: skipped, counted, reported.
    let g = &SSE_GOLDEN[1];
    let o = from_sse(g.format, &fixture(g.file), 512);
    assert_eq!(o.oversized_events, 1);
    assert_eq!(o.first_error, Some(UsageError::EventTooLarge(512)));
    assert!(o.usage.is_none());
    assert!(o.complete, "the event line named response.completed");
}

/// The model each provider's answer says served the request (settlement prices that one):
/// `model` for OpenAI and Anthropic (Anthropic streams: `message_start`'s `message.model`;
/// Responses streams: the final event's `response.model`), `modelVersion` for Gemini.
#[test]
fn served_model_is_read_from_every_fixture() {
    let want = |file: &str| -> Option<&'static str> {
        Some(match file {
            // Converse answers name no model; InvokeModel names Anthropic's.
            "bedrock_converse.json" | "bedrock_converse_stream.eventstream" => return None,
            "bedrock_invoke.json" | "bedrock_invoke_stream.eventstream" => {
                "claude-3-5-haiku-20241022"
            }
            "anthropic_messages.json" | "anthropic_messages.sse" => "claude-sonnet-4-5-20250929",
            "anthropic_messages_delta_usage.sse" => "claude-sonnet-4-5-20250929",
            "anthropic_messages_no_split.json" => "claude-3-5-haiku-20241022",
            "gemini_generate_content.json" => "gemini-2.5-pro",
            "gemini_generate_content.sse" => "gemini-2.5-flash",
            "openai_chat.json" | "openai_responses.json" => "o4-mini-2025-04-16",
            "openai_responses.sse" | "openai_responses_incomplete.sse" => "o4-mini-2025-04-16",
            "openai_chat.sse" => "gpt-4.1-2025-04-14",
            "openai_chat_usage_in_text.json" => "gpt-4.1-mini-2025-04-14",
            "openai_embeddings.json" => "text-embedding-3-small",
            "openai_chat_audio_priority.json" => "gpt-4o-audio-preview-2025-06-03",
            "openai_chat_priority.sse" => "gpt-4o-2024-08-06",
            "openai_responses_web_search.json" => "gpt-5-2025-08-07",
            "anthropic_messages_web_search_priority.json" => "claude-sonnet-4-5-20250929",
            "gemini_generate_content_grounding.json" => "gemini-2.5-flash",
            "gemini_generate_content_audio_image.json" => "gemini-2.5-flash-image",
            other => panic!("no served model written down for {other}"),
        })
    };
    for g in JSON_GOLDEN {
        let (usage, model) = served_json(g.format, &fixture(g.file)).unwrap();
        assert_eq!(usage, g.usage, "{}", g.file);
        assert_eq!(model.as_deref(), want(g.file), "{}", g.file);
    }
    for g in SSE_GOLDEN {
        assert_eq!(whole(g).model.as_deref(), want(g.file), "{}", g.file);
    }
    for g in EVENTSTREAM_GOLDEN {
        let o = from_event_stream(g.format, &fixture(g.file), MAX_EVENT);
        assert_eq!(o.model.as_deref(), want(g.file), "{}", g.file);
    }
    // A model in message text or a nested object is not the answer's model.
    let body = br#"{"choices":[{"message":{"content":"\"model\":\"gpt-5\"","model":"x"}}],
        "usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
    assert_eq!(served_json(ApiFormat::OpenAiChat, body).unwrap().1, None);
    // A name that is not a short string is ignored, never an error.
    let body = br#"{"model":123,"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
    assert_eq!(served_json(ApiFormat::OpenAiChat, body).unwrap().1, None);
}
