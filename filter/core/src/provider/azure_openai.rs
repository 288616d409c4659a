//! Azure OpenAI: OpenAI's Chat Completions, Responses and Embeddings served by an Azure
//! resource, on two surfaces:
//! - deployments: `/openai/deployments/{deployment}/chat/completions`, `/completions`,
//!   `/embeddings` (with `?api-version=…`), the deployment in the path;
//! - v1: `/openai/v1/chat/completions`, `/openai/v1/responses`, `/openai/v1/embeddings`
//!   (and the preview `/openai/responses`), the deployment in the body's `model`.
//!
//! The bodies, answers and streams are OpenAI's: each [`Surface`] reads them with the OpenAI
//! module it wraps. What differs is the provider (`azure`: its own cluster and key header,
//! `api-key`) and the model: a deployment is a name the customer chose, so admission maps it to
//! a price-book model through `identity.providers.azure.deployments` (filter config, beside
//! the cluster that reaches the resource: deployments are infrastructure the platform team
//! wires with the route, a request to an unlisted one is refused before it reaches Azure). The
//! model the answer reports is checked against the map at settlement.

use super::surface::Surface;
use super::{openai_chat, openai_embeddings, openai_responses, ApiFormat, Route};

/// Chat Completions (and legacy Completions) on Azure.
pub static CHAT: Surface = Surface {
    format: ApiFormat::AzureOpenAiChat,
    provider: "azure",
    inner: &openai_chat::OpenAiChat,
    route: |format, path| {
        route(
            format,
            path,
            &["chat/completions", "completions"],
            &["/openai/v1/chat/completions"],
        )
    },
    deployments: true,
};

/// Responses on Azure.
pub static RESPONSES: Surface = Surface {
    format: ApiFormat::AzureOpenAiResponses,
    provider: "azure",
    inner: &openai_responses::OpenAiResponses,
    route: |format, path| {
        route(
            format,
            path,
            &[],
            &["/openai/v1/responses", "/openai/responses"],
        )
    },
    deployments: true,
};

/// Embeddings on Azure.
pub static EMBEDDINGS: Surface = Surface {
    format: ApiFormat::AzureOpenAiEmbeddings,
    provider: "azure",
    inner: &openai_embeddings::OpenAiEmbeddings,
    route: |format, path| route(format, path, &["embeddings"], &["/openai/v1/embeddings"]),
    deployments: true,
};

/// `path` as one of a surface's `v1` paths, or `/openai/deployments/{deployment}/{action}`
/// for one of its `actions`.
fn route<'p>(format: ApiFormat, path: &'p str, actions: &[&str], v1: &[&str]) -> Option<Route<'p>> {
    if v1.contains(&path) {
        return Some(Route::plain(format));
    }
    let (deployment, action) = path.strip_prefix("/openai/deployments/")?.split_once('/')?;
    // A deployment name as Azure allows them (letters, digits, `-`, `_`, `.`).
    (super::model_in_path(deployment, false) && actions.contains(&action)).then_some(Route {
        format,
        path_model: Some(deployment),
        path_stream: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderApi;

    #[test]
    fn routes() {
        let r = |p| super::super::route(p).map(|r| (r.format, r.path_model));
        assert_eq!(
            r("/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21"),
            Some((ApiFormat::AzureOpenAiChat, Some("prod-gpt4o")))
        );
        assert_eq!(
            r("/openai/deployments/old/completions"),
            Some((ApiFormat::AzureOpenAiChat, Some("old")))
        );
        assert_eq!(
            r("/openai/deployments/emb-3/embeddings"),
            Some((ApiFormat::AzureOpenAiEmbeddings, Some("emb-3")))
        );
        assert_eq!(
            r("/openai/v1/chat/completions"),
            Some((ApiFormat::AzureOpenAiChat, None))
        );
        assert_eq!(
            r("/openai/v1/responses"),
            Some((ApiFormat::AzureOpenAiResponses, None))
        );
        for p in [
            "/openai/deployments//chat/completions",
            "/openai/deployments/a/b/chat/completions",
            "/openai/deployments/x/responses",
            "/openai/deployments/x/audio/speech",
            "/openai/v1/files",
        ] {
            assert_eq!(r(p), None, "{p}");
        }
        assert_eq!(CHAT.provider(), "azure");
        assert!(CHAT.model_is_deployment() && !openai_chat::OpenAiChat.model_is_deployment());
    }
}
