//! Azure OpenAI: OpenAI's Chat Completions, Responses and Embeddings served by an Azure
//! resource, on two surfaces:
//! - deployments: `/openai/deployments/{deployment}/chat/completions`, `/completions`,
//!   `/embeddings` (with `?api-version=…`), the deployment in the path;
//! - v1: `/openai/v1/chat/completions`, `/openai/v1/responses`, `/openai/v1/embeddings`
//!   (and the preview `/openai/responses`), the deployment in the body's `model`.
//!
//! The bodies, answers and streams are OpenAI's: each surface reads them with the OpenAI
//! module it wraps. What differs is the provider (`azure`: its own cluster and key header,
//! `api-key`) and the model: a deployment is a name the customer chose, so admission maps it to
//! a price-book model through `identity.providers.azure.deployments` (filter config, beside
//! the cluster that reaches the resource: deployments are infrastructure the platform team
//! wires with the route, a request to an unlisted one is refused before it reaches Azure). The
//! model the answer reports is checked against the map at settlement.

use super::{
    openai_chat, openai_embeddings, openai_responses, ApiFormat, ProviderApi, RequestField, Route,
};
use crate::estimate::TierAsk;
use crate::usage::{Served, StreamRead, Usage, UsageError, UsageValue};

/// One Azure surface of an OpenAI API.
pub struct Azure {
    format: ApiFormat,
    /// The OpenAI API whose bodies it carries.
    openai: &'static dyn ProviderApi,
    /// The action after `/openai/deployments/{deployment}/`, and the v1 paths.
    deployment_actions: &'static [&'static str],
    v1_paths: &'static [&'static str],
}

/// Chat Completions (and legacy Completions) on Azure.
pub static CHAT: Azure = Azure {
    format: ApiFormat::AzureOpenAiChat,
    openai: &openai_chat::OpenAiChat,
    deployment_actions: &["chat/completions", "completions"],
    v1_paths: &["/openai/v1/chat/completions"],
};

/// Responses on Azure.
pub static RESPONSES: Azure = Azure {
    format: ApiFormat::AzureOpenAiResponses,
    openai: &openai_responses::OpenAiResponses,
    deployment_actions: &[],
    v1_paths: &["/openai/v1/responses", "/openai/responses"],
};

/// Embeddings on Azure.
pub static EMBEDDINGS: Azure = Azure {
    format: ApiFormat::AzureOpenAiEmbeddings,
    openai: &openai_embeddings::OpenAiEmbeddings,
    deployment_actions: &["embeddings"],
    v1_paths: &["/openai/v1/embeddings"],
};

/// A deployment name as Azure allows them (letters, digits, `-`, `_`, `.`).
fn is_deployment(s: &str) -> bool {
    super::model_in_path(s, false)
}

impl ProviderApi for Azure {
    fn format(&self) -> ApiFormat {
        self.format
    }

    fn provider(&self) -> &'static str {
        "azure"
    }

    fn route<'p>(&self, path: &'p str) -> Option<Route<'p>> {
        if self.v1_paths.contains(&path) {
            return Some(Route::plain(self.format));
        }
        let (deployment, action) = path.strip_prefix("/openai/deployments/")?.split_once('/')?;
        (is_deployment(deployment) && self.deployment_actions.contains(&action)).then_some(Route {
            format: self.format,
            path_model: Some(deployment),
            path_stream: false,
        })
    }

    fn model_is_deployment(&self) -> bool {
        true
    }

    fn request_field(&self, key: &str) -> RequestField {
        self.openai.request_field(key)
    }

    fn default_tier(&self) -> TierAsk {
        self.openai.default_tier()
    }

    fn generates(&self) -> bool {
        self.openai.generates()
    }

    fn needs_include_usage(&self) -> bool {
        self.openai.needs_include_usage()
    }

    fn read_usage(&self, s: &[u8], i: usize) -> Result<(UsageValue, usize), UsageError> {
        self.openai.read_usage(s, i)
    }

    fn note_answer_member(
        &self,
        served: &mut Served,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), UsageError> {
        self.openai.note_answer_member(served, key, value)
    }

    fn keeps_event(&self, name: &[u8]) -> bool {
        self.openai.keeps_event(name)
    }

    fn read_event(&self, st: &mut StreamRead, name: &[u8], data: &[u8]) -> Result<(), UsageError> {
        self.openai.read_event(st, name, data)
    }

    fn skipped_event(&self, st: &mut StreamRead, name: &[u8]) {
        self.openai.skipped_event(st, name);
    }

    fn oversized_event(&self, st: &mut StreamRead, name: &[u8], tail: &[u8]) -> bool {
        self.openai.oversized_event(st, name, tail)
    }

    fn stream_usage(&self, st: &StreamRead) -> (Option<Usage>, Option<UsageError>) {
        self.openai.stream_usage(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
