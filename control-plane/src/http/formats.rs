//! The string formats and parameters the API checks, for the OpenAPI document: request
//! fields name a format with `#[schema(value_type = …)]` and handlers their parameters with
//! `params(…)`, so each published pattern and description is written once, next to the
//! checks that enforce it (`check_id`, `check_name`, `money::parse`, …). These types are never
//! built; they only describe.

use utoipa::{IntoParams, ToSchema};

/// A registered id (`acme`, `team.web`, `alice@example.com`), as `check_id` accepts it.
#[derive(ToSchema)]
#[schema(pattern = "^[A-Za-z0-9._@:-]{1,128}$")]
pub struct Id(pub String);

/// A display name: 1 to 200 characters, no control characters (Unicode Cc, as Rust's
/// `char::is_control`), as `check_name` accepts it.
#[derive(ToSchema)]
#[schema(
    min_length = 1,
    max_length = 200,
    pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
)]
pub struct Name(pub String);

/// The id a budget applies to: 1 to 256 characters without `;`, `=` or control characters
/// (it may name a principal the control plane has not registered).
#[derive(ToSchema)]
#[schema(
    min_length = 1,
    max_length = 256,
    pattern = "^[^;=\\x00-\\x1f\\x7f-\\x9f]*$"
)]
pub struct ScopeId(pub String);

/// An e-mail address: at most 254 characters with an `@`, no control characters.
#[derive(ToSchema)]
#[schema(
    max_length = 254,
    pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*@[^\\x00-\\x1f\\x7f-\\x9f]*$"
)]
pub struct Email(pub String);

/// USD as a decimal string (`money::parse`: no exponent, no `+`, at most 28 significant
/// digits).
#[derive(ToSchema)]
#[schema(pattern = "^-?[0-9]+(\\.[0-9]+)?$")]
pub struct Money(pub String);

/// USD per 1M tokens as a decimal string; refused when off by 10^6.
#[derive(ToSchema)]
#[schema(pattern = "^[0-9]+(\\.[0-9]+)?$")]
pub struct Rate(pub String);

/// USD per call as a decimal string, at most 1.
#[derive(ToSchema)]
#[schema(pattern = "^[0-9]+(\\.[0-9]+)?$")]
pub struct Fee(pub String);

/// An Envoy node id: 1 to 64 characters of letters, digits and `._:-`.
#[derive(ToSchema)]
#[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._:-]+$")]
pub struct Node(pub String);

/// LiteLLM's `model_prices_and_context_window.json`: model names to their entries.
#[derive(ToSchema)]
pub struct LiteLlmMap(pub std::collections::BTreeMap<String, serde_json::Value>);

/// The `{id}` of an org, project, user, key or budget path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// Id.
    pub id: String,
}

/// The `{model}` of a price path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ModelPath {
    /// Model name; may contain `/` (e.g. `gemini/gemini-2.5-pro`).
    pub model: String,
}

/// The filter of project, user and key lists.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrgFilter {
    /// Only this organisation's.
    pub org_id: Option<String>,
}
