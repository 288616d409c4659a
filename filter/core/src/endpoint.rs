//! What the filter does with a request, decided from its method and path.
//!
//! Every request falls in one of three classes ([`classify`]):
//! - **metered**: `POST` on an exact path of one of the provider APIs
//!   ([`crate::provider::APIS`], each module lists its paths);
//! - **free**: the model lists, `GET /v1/models`, `GET /v1/models/{id}`,
//!   `GET /v1beta/models`, `GET /v1beta/models/{model}`: forwarded for a valid virtual key,
//!   counted, never charged;
//! - **refused**: everything else. The providers' clusters inject the provider key upstream,
//!   so whatever the filter let through unjudged would reach the provider with a valid key:
//!   an unknown path (`/v1/files`, `/v1/batches`), a variant of a metered path (trailing
//!   slash, other case, `//`, `/./`) or a path with a percent escape left in it
//!   (`%3A`, `%2F`: Envoy's `normalize_path` decodes only unreserved characters, and a
//!   provider may decode the rest and serve the metered method) is answered by the filter;
//!   the one escape let through is the `%3A` boto3 writes for every `:` of a Bedrock model
//!   id, in the model segment of a Bedrock path only.
//!
//! Matching is exact and case-sensitive: when unsure what a provider does with a variant,
//! Tollgate refuses it rather than guess.

use crate::provider::{model_in_path, route, Route};

/// The `accept-encoding` a metered request is forwarded with, whatever the client accepts
/// (the official SDKs send `gzip, deflate`): the filter reads usage from the answer's bytes,
/// so it asks the provider not to compress them. Envoy's `compressor` filter, first in the
/// shipped chains, still compresses the answer toward a client that accepts it.
pub const METERED_ACCEPT_ENCODING: &str = "identity";

/// Why a request is refused before it reaches a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The path still holds a percent escape after Envoy's normalisation.
    Escaped,
    /// An empty, `.` or `..` segment (Envoy's `normalize_path`/`merge_slashes` remove them;
    /// this catches a deployment that turned them off).
    NotNormal,
    /// Neither metered nor free.
    NotAnEndpoint,
    /// A `key` query parameter (Gemini's other way to pass an API key): the filter reads the
    /// virtual key from headers only, so one in the query would reach the provider.
    KeyInQuery,
}

impl Refusal {
    /// HTTP status of the refusal.
    pub fn status(self) -> u32 {
        match self {
            Refusal::Escaped | Refusal::NotNormal | Refusal::KeyInQuery => 400,
            Refusal::NotAnEndpoint => 404,
        }
    }

    /// Error code (`error.type` and `error.code` of the reply).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Escaped => "escaped_path",
            Refusal::NotNormal => "unnormalized_path",
            Refusal::NotAnEndpoint => "unknown_endpoint",
            Refusal::KeyInQuery => "key_in_query",
        }
    }

    /// What the client is told, naming the method and path (cut to 200 bytes).
    pub fn message(self, method: &str, path: &str) -> String {
        let mut end = path.len().min(200);
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        let shown = path.get(..end).unwrap_or("");
        let why = match self {
            Refusal::Escaped => "percent-encoded characters in the path are refused",
            Refusal::NotNormal => "empty, '.' and '..' path segments are refused",
            Refusal::NotAnEndpoint => {
                "Tollgate forwards only metered endpoints (chat completions, completions, \
                 responses, embeddings, messages, generateContent) and the model lists"
            }
            Refusal::KeyInQuery => {
                "an API key in the query string is refused; send the Tollgate virtual key in \
                 the x-goog-api-key (or authorization) header"
            }
        };
        format!("Tollgate: {method} {shown}: {why}")
    }
}

/// What the filter does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// Judged, reserved and metered.
    Metered(Route<'a>),
    /// A model list: needs a valid identity, forwarded, counted, not charged.
    Free,
    /// Answered by the filter; nothing reaches a provider.
    Refused(Refusal),
}

/// Classifies a request by method and path (query string ignored).
pub fn classify<'a>(method: &str, path: &'a str) -> Endpoint<'a> {
    // Byte searches, not `str` patterns: this runs on every request, and the pattern
    // machinery costs more than the searches on a short path.
    let (bare, query) = match path.as_bytes().iter().position(|&b| b == b'?') {
        Some(at) => (
            path.get(..at).unwrap_or(""),
            path.get(at + 1..).unwrap_or(""),
        ),
        None => (path, ""),
    };
    if bare.as_bytes().contains(&b'%') && !crate::provider::bedrock::escapes_allowed(bare) {
        return Endpoint::Refused(Refusal::Escaped);
    }
    // A parameter name with an escape could decode to `key` at the provider.
    let mut names = query
        .as_bytes()
        .split(|&b| b == b'&')
        .map(|p| p.split(|&b| b == b'=').next().unwrap_or(p));
    if names.any(|n| n == b"key" || n.contains(&b'%')) {
        return Endpoint::Refused(Refusal::KeyInQuery);
    }
    let not_normal = !bare.starts_with('/')
        || bare
            .as_bytes()
            .get(1..)
            .unwrap_or_default()
            .split(|&b| b == b'/')
            .any(|s| s == b"." || s == b"..")
        || crate::usage::scan::contains(bare.as_bytes(), b"//");
    if not_normal {
        return Endpoint::Refused(Refusal::NotNormal);
    }
    match method {
        "POST" => route(bare).map_or(Endpoint::Refused(Refusal::NotAnEndpoint), Endpoint::Metered),
        "GET" if is_free(bare) => Endpoint::Free,
        _ => Endpoint::Refused(Refusal::NotAnEndpoint),
    }
}

/// The model lists: `/v1/models[/{id}]` (OpenAI ids may hold `:`, e.g. fine-tunes) and
/// `/v1beta/models[/{model}]` (Gemini).
fn is_free(path: &str) -> bool {
    if path == "/v1/models" || path == "/v1beta/models" {
        return true;
    }
    if let Some(id) = path.strip_prefix("/v1/models/") {
        return model_in_path(id, true);
    }
    path.strip_prefix("/v1beta/models/")
        .is_some_and(|m| model_in_path(m, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ApiFormat;

    #[test]
    fn routes() {
        let f = |p| route(p).map(|r| (r.format, r.path_model, r.path_stream));
        assert_eq!(
            f("/v1/chat/completions"),
            Some((ApiFormat::OpenAiChat, None, false))
        );
        assert_eq!(
            f("/v1/chat/completions?x=1"),
            Some((ApiFormat::OpenAiChat, None, false))
        );
        assert_eq!(
            f("/v1/responses"),
            Some((ApiFormat::OpenAiResponses, None, false))
        );
        assert_eq!(
            f("/v1/embeddings"),
            Some((ApiFormat::OpenAiEmbeddings, None, false))
        );
        assert_eq!(
            f("/v1/messages"),
            Some((ApiFormat::AnthropicMessages, None, false))
        );
        assert_eq!(
            f("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"),
            Some((
                ApiFormat::GeminiGenerateContent,
                Some("gemini-2.5-pro"),
                true
            ))
        );
        // google-genai with api_version="v1".
        assert_eq!(
            f("/v1/models/gemini-2.5-flash:generateContent"),
            Some((
                ApiFormat::GeminiGenerateContent,
                Some("gemini-2.5-flash"),
                false
            ))
        );
        assert_eq!(f("/v1/models"), None);
        assert_eq!(f("/v1beta/models/x:countTokens"), None);
        assert_eq!(f("/v1beta/models/:generateContent"), None);
        assert_eq!(f("/v1beta/models/a:b:generateContent"), None);
        // No gateway prefix: the shipped routes send nothing but these exact paths (and
        // `/openai/…` is Azure's own surface, not a prefix).
        assert_eq!(f("/gateway/v1/chat/completions"), None);
        assert_eq!(
            f("/openai/v1/chat/completions"),
            Some((ApiFormat::AzureOpenAiChat, None, false))
        );
        assert_eq!(ApiFormat::AnthropicMessages.provider(), "anthropic");
    }

    #[test]
    fn free_list() {
        for p in [
            "/v1/models",
            "/v1/models/gpt-4o-mini",
            "/v1/models/ft:gpt-4o-mini:acme::abc123",
            "/v1beta/models",
            "/v1beta/models?pageSize=50",
            "/v1beta/models/gemini-2.5-pro",
        ] {
            assert_eq!(classify("GET", p), Endpoint::Free, "{p}");
            assert!(
                matches!(classify("POST", p), Endpoint::Refused(_)),
                "{p} by POST"
            );
        }
        for p in ["/v1/models/", "/v1/models/a/b", "/v1beta/models/a:b"] {
            assert_eq!(
                classify("GET", p),
                Endpoint::Refused(Refusal::NotAnEndpoint),
                "{p}"
            );
        }
    }

    /// Issue 13, item 7: every variant of a metered path is refused, never passed unjudged.
    #[test]
    fn variants_of_metered_paths_are_refused() {
        use Refusal::*;
        let cases = [
            ("/v1beta/models/gemini-2.5-pro%3AgenerateContent", Escaped),
            ("/v1beta/models/gemini-2.5-pro%3agenerateContent", Escaped),
            ("/v1%2Fchat%2Fcompletions", Escaped),
            ("/v1/chat/completion%73", Escaped),
            ("/v1/chat/completions/", NotAnEndpoint),
            ("/v1/messages/", NotAnEndpoint),
            (
                "/v1beta/models/gemini-2.5-pro:generateContent/",
                NotAnEndpoint,
            ),
            ("/V1/chat/completions", NotAnEndpoint),
            ("/v1/Chat/Completions", NotAnEndpoint),
            ("/v1/MESSAGES", NotAnEndpoint),
            (
                "/v1beta/models/gemini-2.5-pro:GenerateContent",
                NotAnEndpoint,
            ),
            ("/v1//chat/completions", NotNormal),
            ("//v1/chat/completions", NotNormal),
            ("/v1/./chat/completions", NotNormal),
            ("/v1/x/../chat/completions", NotNormal),
            ("/v1/chat/completions/..", NotNormal),
            ("/v1/chat/completions/.", NotNormal),
            ("/v1/files", NotAnEndpoint),
            ("/v1/batches", NotAnEndpoint),
            ("/v1/audio/speech", NotAnEndpoint),
            ("/v1beta/models/gemini-2.5-pro:countTokens", NotAnEndpoint),
            ("/", NotAnEndpoint),
            ("*", NotNormal),
        ];
        for (p, want) in cases {
            assert_eq!(classify("POST", p), Endpoint::Refused(want), "{p}");
        }
        // The wrong method on a metered path (OpenAI lists stored completions by GET).
        assert_eq!(
            classify("GET", "/v1/chat/completions"),
            Endpoint::Refused(NotAnEndpoint)
        );
        assert!(matches!(
            classify("POST", "/v1/chat/completions?api-version=1"),
            Endpoint::Metered(_)
        ));
        for p in [
            "/v1beta/models/gemini-2.5-flash:generateContent?key=tg-abc",
            "/v1beta/models?pageSize=5&key=AIza",
            "/v1/chat/completions?key",
            "/v1/chat/completions?%6Bey=tg-abc",
            "/v1/chat/completions?a=1&key=tg-abc",
            "/v1/chat/completions?a=1&key=x=y",
        ] {
            let method = if p.contains("pageSize") {
                "GET"
            } else {
                "POST"
            };
            assert_eq!(classify(method, p), Endpoint::Refused(KeyInQuery), "{p}");
        }
        for p in [
            "/v1beta/models/g:streamGenerateContent?alt=sse&monkey=1",
            "/v1/chat/completions?x=key",
            "/v1/chat/completions?=key&",
            "/v1/chat/completions?a=%20",
        ] {
            assert!(matches!(classify("POST", p), Endpoint::Metered(_)), "{p}");
        }
        let msg = NotAnEndpoint.message("POST", &"é".repeat(300));
        assert!(msg.len() < 500 && msg.contains("POST"));
        assert_eq!(Escaped.status(), 400);
        assert_eq!(NotAnEndpoint.as_str(), "unknown_endpoint");
    }
}
