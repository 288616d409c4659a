//! Which provider API a request path speaks, and the model named in the path (Gemini).
//!
//! Paths follow the providers' docs: OpenAI `/v1/chat/completions`, `/v1/completions`,
//! `/v1/responses`, `/v1/embeddings`; Anthropic `/v1/messages`; Gemini
//! `/v1beta/models/{model}:generateContent` and `:streamGenerateContent`.

use crate::usage::ApiFormat;

/// A metered route: the API format and, for Gemini, the model from the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// The API the request speaks.
    pub format: ApiFormat,
    /// Model named by the path (Gemini), else `None` (the body names it).
    pub path_model: Option<&'a str>,
    /// Gemini's `:streamGenerateContent`: streaming is chosen by the path, not the body.
    pub path_stream: bool,
}

/// The provider whose upstream key a route needs (`openai`, `anthropic`, `gemini`).
pub fn provider(format: ApiFormat) -> &'static str {
    match format {
        ApiFormat::OpenAiChat | ApiFormat::OpenAiResponses | ApiFormat::OpenAiEmbeddings => {
            "openai"
        }
        ApiFormat::AnthropicMessages => "anthropic",
        ApiFormat::GeminiGenerateContent => "gemini",
    }
}

/// Recognises a metered route from a request path (query string ignored). `None` for
/// anything else, which the filter passes through unmetered.
pub fn route(path: &str) -> Option<Route<'_>> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let simple = |format| {
        Some(Route {
            format,
            path_model: None,
            path_stream: false,
        })
    };
    // Accept an optional gateway prefix such as `/openai/v1/...` by matching the suffix.
    if path.ends_with("/chat/completions") || path.ends_with("/v1/completions") {
        return simple(ApiFormat::OpenAiChat);
    }
    if path.ends_with("/v1/responses") {
        return simple(ApiFormat::OpenAiResponses);
    }
    if path.ends_with("/v1/embeddings") {
        return simple(ApiFormat::OpenAiEmbeddings);
    }
    if path.ends_with("/v1/messages") {
        return simple(ApiFormat::AnthropicMessages);
    }
    let (_, rest) = path.split_once("/models/")?;
    let (model, method) = rest.rsplit_once(':')?;
    let path_stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return None,
    };
    (!model.is_empty() && !model.contains('/')).then_some(Route {
        format: ApiFormat::GeminiGenerateContent,
        path_model: Some(model),
        path_stream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let f = |p| route(p).map(|r| (r.format, r.path_model, r.path_stream));
        assert_eq!(
            f("/v1/chat/completions"),
            Some((ApiFormat::OpenAiChat, None, false))
        );
        assert_eq!(
            f("/openai/v1/chat/completions?x=1"),
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
        assert_eq!(f("/v1/models"), None);
        assert_eq!(f("/v1beta/models/x:countTokens"), None);
        assert_eq!(f("/v1beta/models/:generateContent"), None);
        assert_eq!(provider(ApiFormat::AnthropicMessages), "anthropic");
    }
}
