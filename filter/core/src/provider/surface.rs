//! A provider API served by another provider's infrastructure: the same bodies, answers and
//! streams as the API it wraps, on other paths, through another provider's cluster and key
//! (Azure OpenAI serves OpenAI's APIs; Vertex AI serves Gemini's and Anthropic's). A
//! [`Surface`] delegates everything but its paths and its provider to the wrapped module.

use super::{ApiFormat, ProviderApi, RequestField, Route};
use crate::estimate::TierAsk;
use crate::usage::scan::Key;
use crate::usage::{StreamRead, Usage, UsageError, UsageValue};

/// One API on another provider's surface.
pub struct Surface {
    /// Which API this is.
    pub(super) format: ApiFormat,
    /// The provider whose cluster and key serve it.
    pub(super) provider: &'static str,
    /// The API whose bodies it carries.
    pub(super) inner: &'static dyn ProviderApi,
    /// Its paths (query string removed).
    pub(super) route: fn(ApiFormat, &str) -> Option<Route<'_>>,
    /// Requests name a deployment the provider's `deployments` map prices (Azure).
    pub(super) deployments: bool,
}

impl ProviderApi for Surface {
    fn format(&self) -> ApiFormat {
        self.format
    }

    fn provider(&self) -> &'static str {
        self.provider
    }

    fn route<'p>(&self, path: &'p str) -> Option<Route<'p>> {
        (self.route)(self.format, path)
    }

    fn model_is_deployment(&self) -> bool {
        self.deployments
    }

    fn request_field(&self, key: &str) -> RequestField {
        self.inner.request_field(key)
    }

    fn config_field(&self, key: &str) -> RequestField {
        self.inner.config_field(key)
    }

    fn default_tier(&self) -> TierAsk {
        self.inner.default_tier()
    }

    fn generates(&self) -> bool {
        self.inner.generates()
    }

    fn needs_include_usage(&self) -> bool {
        self.inner.needs_include_usage()
    }

    fn usage_key(&self) -> &'static str {
        self.inner.usage_key()
    }

    fn answer_may_be_array(&self) -> bool {
        self.inner.answer_may_be_array()
    }

    fn read_usage(&self, s: &[u8], i: usize) -> Result<(UsageValue, usize), UsageError> {
        self.inner.read_usage(s, i)
    }

    fn model_key(&self) -> &'static str {
        self.inner.model_key()
    }

    fn prices_answer_model(&self) -> bool {
        self.inner.prices_answer_model()
    }

    fn searches_in(&self, key: Key<'_>, value: &[u8]) -> Result<Option<u64>, UsageError> {
        self.inner.searches_in(key, value)
    }

    fn keeps_event(&self, name: &[u8]) -> bool {
        self.inner.keeps_event(name)
    }

    fn read_event(&self, st: &mut StreamRead, name: &[u8], data: &[u8]) -> Result<(), UsageError> {
        self.inner.read_event(st, name, data)
    }

    fn skipped_event(&self, st: &mut StreamRead, name: &[u8]) {
        self.inner.skipped_event(st, name);
    }

    fn oversized_event(&self, st: &mut StreamRead, name: &[u8], tail: &[u8]) -> bool {
        self.inner.oversized_event(st, name, tail)
    }

    fn stream_usage(&self, st: &StreamRead) -> (Option<Usage>, Option<UsageError>) {
        self.inner.stream_usage(st)
    }
}
