//! Vertex AI: Gemini and Anthropic's Messages served by Google Cloud, on the regional
//! endpoint's `publishers` paths (`v1` and `v1beta1`):
//! - Gemini: `/v1/projects/{project}/locations/{location}/publishers/google/models/{model}`
//!   `:generateContent` and `:streamGenerateContent` (`?alt=sse`), Gemini's bodies and answers;
//! - Anthropic: `…/publishers/anthropic/models/{model}:rawPredict` and `:streamRawPredict`,
//!   a Messages body without `model` (and with `anthropic_version`), Messages' answers and
//!   stream events.
//!
//! The model is the path's. The provider is `vertex_ai`: its cluster injects a Google OAuth
//! access token that the platform rotates (an SDS file the cluster's `credential_injector`
//! reads), so the virtual key travels where the SDKs put the token, `Authorization: Bearer`.
//! Prices come from LiteLLM's Vertex entries (`vertex_ai/claude-…`, and Gemini's unprefixed
//! names, which LiteLLM files under Vertex).

use super::surface::Surface;
use super::{anthropic_messages, gemini, model_in_path, ApiFormat, Route};

/// Gemini on Vertex AI.
pub static GEMINI: Surface = Surface {
    format: ApiFormat::VertexGemini,
    provider: "vertex_ai",
    inner: &gemini::Gemini,
    route: |format, path| {
        route(
            format,
            path,
            "google",
            "generateContent",
            "streamGenerateContent",
        )
    },
    deployments: false,
};

/// Anthropic's Messages on Vertex AI.
pub static ANTHROPIC: Surface = Surface {
    format: ApiFormat::VertexAnthropic,
    provider: "vertex_ai",
    inner: &anthropic_messages::AnthropicMessages,
    route: |format, path| route(format, path, "anthropic", "rawPredict", "streamRawPredict"),
    deployments: false,
};

/// `/{v1|v1beta1}/projects/{p}/locations/{l}/publishers/{publisher}/models/{m}:{method}`,
/// `method` being `once` or `streaming`.
fn route<'p>(
    format: ApiFormat,
    path: &'p str,
    publisher: &str,
    once: &str,
    streaming: &str,
) -> Option<Route<'p>> {
    let rest = path
        .strip_prefix("/v1/projects/")
        .or_else(|| path.strip_prefix("/v1beta1/projects/"))?;
    let mut parts = rest.splitn(7, '/');
    let project = parts.next()?;
    let (locations, location) = (parts.next()?, parts.next()?);
    let (publishers, who) = (parts.next()?, parts.next()?);
    let (models, model_method) = (parts.next()?, parts.next()?);
    let names_ok = [project, location].iter().all(|s| model_in_path(s, false));
    if locations != "locations"
        || publishers != "publishers"
        || who != publisher
        || models != "models"
        || !names_ok
    {
        return None;
    }
    let (model, method) = model_method.split_once(':')?;
    let path_stream = if method == once {
        false
    } else if method == streaming {
        true
    } else {
        return None;
    };
    // Vertex names model versions with `@` (`claude-haiku-4-5@20251001`).
    let model_ok = !model.is_empty()
        && model.split('@').count() <= 2
        && model.split('@').all(|m| model_in_path(m, false));
    model_ok.then_some(Route {
        format,
        path_model: Some(model),
        path_stream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderApi;

    #[test]
    fn routes() {
        let r = |p: &str| {
            super::super::route(p)
                .map(|r| (r.format, r.path_model.map(str::to_string), r.path_stream))
        };
        let some = |m: &str| Some(m.to_string());
        let base = "/v1/projects/acme-prod/locations/us-east5/publishers";
        assert_eq!(
            r(&format!(
                "{base}/google/models/gemini-2.5-flash:generateContent"
            )),
            Some((ApiFormat::VertexGemini, some("gemini-2.5-flash"), false))
        );
        assert_eq!(
            r(&format!(
                "{base}/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
            )),
            Some((ApiFormat::VertexGemini, some("gemini-2.5-flash"), true))
        );
        assert_eq!(
            r(&format!(
                "{base}/anthropic/models/claude-haiku-4-5@20251001:rawPredict"
            )),
            Some((
                ApiFormat::VertexAnthropic,
                some("claude-haiku-4-5@20251001"),
                false
            ))
        );
        assert_eq!(
            r("/v1beta1/projects/p/locations/global/publishers/anthropic/models/m:streamRawPredict"),
            Some((ApiFormat::VertexAnthropic, some("m"), true))
        );
        for p in [
            format!("{base}/anthropic/models/claude:generateContent"),
            format!("{base}/google/models/gemini:rawPredict"),
            format!("{base}/google/models/gemini:countTokens"),
            format!("{base}/google/models/:generateContent"),
            format!("{base}/google/models/a@b@c:generateContent"),
            "/v1/projects/p/locations/l/endpoints/e:predict".to_string(),
            "/v1/projects/p/locations/l/publishers/google/models/g/x:generateContent".to_string(),
        ] {
            assert_eq!(r(&p), None, "{p}");
        }
        assert_eq!(GEMINI.provider(), "vertex_ai");
        assert_eq!(GEMINI.usage_key(), "usageMetadata");
        assert!(GEMINI.answer_may_be_array());
    }
}
