//! The HTTP side: routes, the `x-mock-*` controls, error bodies, and streamed bodies that can
//! be slowed down (`x-mock-delay-ms`) or cut off (`x-mock-truncate-after`).
//!
//! Each request is handled on its own: parse the body once, build a [`Plan`], render it. No
//! state is kept between requests.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use bytes::Bytes;
use futures_util::stream;
use serde_json::Value;
use tower_http::compression::CompressionLayer;

use crate::usage::{plan, Api, Controls, Plan};
use crate::{anthropic, bedrock, gemini, openai, Ids, Options};

/// How long a cut stream waits after its last event before failing, so the events already
/// handed to hyper are flushed to the socket rather than dropped with the connection.
const CUT_FLUSH_DELAY: Duration = Duration::from_millis(20);

/// The router: every provider endpoint plus `GET /healthz`.
pub fn router(options: Options) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/responses", post(responses))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(messages))
        .route(
            "/v1beta/models/{model_action}",
            post(gemini_route).get(gemini_model),
        )
        // google-genai with api_version="v1" (POST); OpenAI's model by id (GET).
        .route(
            "/v1/models/{model_action}",
            post(gemini_route).get(openai_model),
        )
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            azure_deployment(Api::OpenAiChat),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            azure_deployment(Api::OpenAiEmbeddings),
        )
        .route("/openai/v1/chat/completions", azure_v1(Api::OpenAiChat))
        .route("/openai/v1/responses", azure_v1(Api::OpenAiResponses))
        .route("/openai/v1/embeddings", azure_v1(Api::OpenAiEmbeddings))
        .route(
            "/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model_action}",
            post(vertex_route),
        )
        .route(
            "/v1beta1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model_action}",
            post(vertex_route),
        )
        .route("/model/{model_id}/{operation}", post(bedrock_route))
        .route("/v1/models", get(openai_models))
        .route("/v1beta/models", get(gemini_models))
        .fallback(not_found)
        // Long-context prompts run to megabytes; axum's default limit (2 MB) is no provider's.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        // Providers' edges compress whatever the client accepts (the official SDKs send
        // `Accept-Encoding: gzip, deflate`): JSON, errors and streams alike, of any size.
        // `identity` (what Tollgate asks for on metered routes) gets plain bytes.
        .layer(CompressionLayer::new().compress_when(
            |_: StatusCode, _: axum::http::Version, _: &HeaderMap, _: &axum::http::Extensions| true,
        ))
        // Outside the compression layer: an edge that ignores what the client accepts.
        .layer(axum::middleware::map_request(force_encoding))
        .with_state(Arc::new(options))
}

/// `x-mock-force-encoding: gzip|br|zstd|deflate` compresses the answer with that coding
/// whatever the request's `Accept-Encoding` says (an edge that ignores `identity`): the
/// header stands in for `Accept-Encoding` before the compression layer reads it. Another
/// value answers uncompressed.
async fn force_encoding(mut req: axum::extract::Request) -> axum::extract::Request {
    if let Some(v) = req.headers().get("x-mock-force-encoding").cloned() {
        req.headers_mut().insert(header::ACCEPT_ENCODING, v);
    }
    req
}

/// Largest request body the mock reads (what passes Envoy's buffer limit in
/// `envoy/tollgate.yaml` with room to spare).
pub const MAX_REQUEST_BYTES: usize = 32 << 20;

async fn chat(State(o): State<Arc<Options>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&o, Api::OpenAiChat, &headers, None, &body, Target::Body).await
}

async fn responses(State(o): State<Arc<Options>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(
        &o,
        Api::OpenAiResponses,
        &headers,
        None,
        &body,
        Target::Body,
    )
    .await
}

async fn embeddings(State(o): State<Arc<Options>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(
        &o,
        Api::OpenAiEmbeddings,
        &headers,
        None,
        &body,
        Target::Body,
    )
    .await
}

async fn messages(State(o): State<Arc<Options>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(
        &o,
        Api::AnthropicMessages,
        &headers,
        None,
        &body,
        Target::Body,
    )
    .await
}

async fn gemini_route(
    State(o): State<Arc<Options>>,
    Path(model_action): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = query.unwrap_or_default();
    let mut pairs = params.split('&').filter_map(|p| p.split_once('='));
    let sse = pairs.clone().any(|(k, v)| k == "alt" && v == "sse");
    let query_key = pairs.find(|(k, _)| *k == "key").map(|(_, v)| v.to_owned());
    let target = match model_action.rsplit_once(':') {
        Some((_, "generateContent")) => Target::Body,
        Some((_, "streamGenerateContent")) if sse => Target::GeminiSse,
        Some((_, "streamGenerateContent")) => Target::GeminiArray,
        _ => {
            return error(
                Api::Gemini,
                StatusCode::NOT_FOUND,
                &format!("unknown method in {model_action:?}"),
            )
        }
    };
    let model = model_action
        .rsplit_once(':')
        .map(|(m, _)| m.to_owned())
        .unwrap_or_default();
    let path = PathFacts {
        model,
        query_key,
        provider: "gemini",
    };
    handle(&o, Api::Gemini, &headers, Some(&path), &body, target).await
}

/// Vertex AI: `/{v1|v1beta1}/projects/{p}/locations/{l}/publishers/{google|anthropic}/models/
/// {model}:{method}`. Gemini's methods answer as Gemini; Anthropic's `rawPredict` and
/// `streamRawPredict` as Messages (the body has no `model`, and must name the
/// `anthropic_version`, as Vertex demands). The key is an OAuth access token, a bearer.
async fn vertex_route(
    State(o): State<Arc<Options>>,
    Path((_project, _location, publisher, model_action)): Path<(String, String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sse = query.unwrap_or_default().split('&').any(|p| p == "alt=sse");
    let (model, method) = model_action
        .rsplit_once(':')
        .map_or((model_action.as_str(), ""), |(m, a)| (m, a));
    let (api, target) = match (publisher.as_str(), method) {
        ("google", "generateContent") => (Api::Gemini, Target::Body),
        ("google", "streamGenerateContent") if sse => (Api::Gemini, Target::GeminiSse),
        ("google", "streamGenerateContent") => (Api::Gemini, Target::GeminiArray),
        ("anthropic", "rawPredict" | "streamRawPredict") => {
            let versioned = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("anthropic_version")?.as_str().map(str::to_owned));
            if versioned.is_none() {
                return error(
                    Api::AnthropicMessages,
                    StatusCode::BAD_REQUEST,
                    "anthropic_version: Field required",
                );
            }
            (Api::AnthropicMessages, Target::Body)
        }
        _ => {
            return error(
                Api::Gemini,
                StatusCode::NOT_FOUND,
                &format!("unknown method in {model_action:?}"),
            )
        }
    };
    let path = PathFacts {
        model: model.to_owned(),
        query_key: None,
        provider: "vertex_ai",
    };
    handle(&o, api, &headers, Some(&path), &body, target).await
}

/// Amazon Bedrock runtime: `/model/{modelId}/{operation}` (axum decodes boto3's `%3A`).
/// Converse serves any model; InvokeModel only Anthropic's, whose body must name an
/// `anthropic_version`. The request must be SigV4-signed (see [`check_key`]).
async fn bedrock_route(
    State(o): State<Arc<Options>>,
    Path((model_id, operation)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (api, target) = match operation.as_str() {
        "converse" => (Api::BedrockConverse, Target::Body),
        "converse-stream" => (Api::BedrockConverse, Target::EventStream),
        "invoke" => (Api::BedrockInvoke, Target::Body),
        "invoke-with-response-stream" => (Api::BedrockInvoke, Target::EventStream),
        _ => {
            return error(
                Api::BedrockConverse,
                StatusCode::NOT_FOUND,
                &format!("unknown operation {operation:?}"),
            )
        }
    };
    if api == Api::BedrockInvoke {
        if !model_id.contains("anthropic.") {
            return error(
                api,
                StatusCode::BAD_REQUEST,
                "the mock serves InvokeModel for Anthropic's models only",
            );
        }
        let version = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("anthropic_version")?.as_str().map(str::to_owned));
        if version.is_none() {
            return error(
                api,
                StatusCode::BAD_REQUEST,
                "Malformed input request: #: required key [anthropic_version] not found",
            );
        }
    }
    let path = PathFacts {
        model: model_id,
        query_key: None,
        provider: "bedrock",
    };
    handle(&o, api, &headers, Some(&path), &body, target).await
}

/// An Azure deployment route of `api` (`/openai/deployments/{deployment}/…`).
fn azure_deployment(api: Api) -> MethodRouter<Arc<Options>> {
    post(
        move |State(o): State<Arc<Options>>,
              Path(deployment): Path<String>,
              RawQuery(query): RawQuery,
              headers: HeaderMap,
              body: Bytes| async move {
            azure(&o, api, Some(deployment), query, &headers, &body).await
        },
    )
}

/// An Azure v1 route of `api` (`/openai/v1/…`, the deployment in the body's `model`).
fn azure_v1(api: Api) -> MethodRouter<Arc<Options>> {
    post(
        move |State(o): State<Arc<Options>>, headers: HeaderMap, body: Bytes| async move {
            azure(&o, api, None, None, &headers, &body).await
        },
    )
}

/// Azure OpenAI: OpenAI's bodies, a deployment (in the path, or v1's body `model`) instead of
/// a model. The answer names the model behind the deployment (`--azure-deployment NAME=MODEL`;
/// a deployment not listed serves the model of its own name), as Azure does. The deployment
/// surface requires `api-version` and answers a missing one with Azure's 404.
async fn azure(
    o: &Options,
    api: Api,
    deployment: Option<String>,
    query: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let on_path = deployment.is_some();
    let has_version = query
        .unwrap_or_default()
        .split('&')
        .any(|p| p.starts_with("api-version="));
    if on_path && !has_version {
        return error(api, StatusCode::NOT_FOUND, "Resource not found");
    }
    let deployment = deployment.or_else(|| {
        serde_json::from_slice::<Value>(body)
            .ok()?
            .get("model")?
            .as_str()
            .map(str::to_owned)
    });
    let Some(deployment) = deployment else {
        return error(api, StatusCode::BAD_REQUEST, "missing deployment (model)");
    };
    let model = o
        .azure_deployments
        .iter()
        .find(|(d, _)| *d == deployment)
        .map_or(deployment.clone(), |(_, m)| m.clone());
    let path = PathFacts {
        model,
        query_key: None,
        provider: "azure",
    };
    handle(o, api, headers, Some(&path), body, Target::Body).await
}

/// Models the lists name.
const LISTED: [&str; 3] = ["gpt-4o-mini", "gemini-2.5-flash", "claude-3-5-haiku-latest"];

/// 401 unless the request carries the key `api`'s provider expects (see [`check_key`]).
fn models_reply(
    o: &Options,
    api: Api,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Value,
) -> Response {
    let query_key = query.and_then(|q| {
        q.split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == "key")
            .map(|(_, v)| v.to_owned())
    });
    if let Err(r) = check_key(o, api, provider_of(api), headers, query_key.as_deref()) {
        return *r;
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn openai_model_json(id: &str) -> Value {
    serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "tollgate-upstream"})
}

fn gemini_model_json(m: &str) -> Value {
    serde_json::json!({"name": format!("models/{m}"), "displayName": m, "version": "mock",
                       "supportedGenerationMethods": ["generateContent"]})
}

async fn openai_models(
    State(o): State<Arc<Options>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let data: Vec<Value> = LISTED.iter().map(|m| openai_model_json(m)).collect();
    let body = serde_json::json!({"object": "list", "data": data});
    models_reply(&o, Api::OpenAiChat, &headers, q.as_deref(), body)
}

async fn openai_model(
    State(o): State<Arc<Options>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    models_reply(
        &o,
        Api::OpenAiChat,
        &headers,
        q.as_deref(),
        openai_model_json(&id),
    )
}

async fn gemini_models(
    State(o): State<Arc<Options>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let models: Vec<Value> = LISTED.iter().map(|m| gemini_model_json(m)).collect();
    models_reply(
        &o,
        Api::Gemini,
        &headers,
        q.as_deref(),
        serde_json::json!({"models": models}),
    )
}

async fn gemini_model(
    State(o): State<Arc<Options>>,
    Path(m): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    models_reply(
        &o,
        Api::Gemini,
        &headers,
        q.as_deref(),
        gemini_model_json(&m),
    )
}

async fn not_found() -> Response {
    error(
        Api::OpenAiChat,
        StatusCode::NOT_FOUND,
        "no such endpoint on the mock upstream",
    )
}

/// Where the stream flag comes from and how a stream is framed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The body's `stream` field decides (SSE if true).
    Body,
    /// Gemini `:streamGenerateContent?alt=sse`.
    GeminiSse,
    /// Gemini `:streamGenerateContent` without `alt=sse`: a streamed JSON array.
    GeminiArray,
    /// Bedrock's `converse-stream` and `invoke-with-response-stream`: an AWS event stream.
    EventStream,
}

/// What a path says besides the API: the model (Gemini's, or the one behind an Azure
/// deployment), a key in the query (Gemini), and the provider whose key it needs.
struct PathFacts {
    model: String,
    query_key: Option<String>,
    provider: &'static str,
}

/// The provider whose key `api` needs.
fn provider_of(api: Api) -> &'static str {
    match api {
        Api::OpenAiChat | Api::OpenAiResponses | Api::OpenAiEmbeddings => "openai",
        Api::AnthropicMessages => "anthropic",
        Api::Gemini => "gemini",
        Api::BedrockConverse | Api::BedrockInvoke => "bedrock",
    }
}

/// Whether `authorization` is a SigV4 signature by the access key `key_id` for Bedrock:
/// `AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/bedrock/aws4_request, SignedHeaders=…,
/// Signature=<64 hex>` (Envoy's `aws_request_signing` writes it; the mock has no secret to
/// recompute it, so it checks the shape, the key and the scope).
fn sigv4_by(authorization: &str, key_id: &str) -> bool {
    let Some(rest) = authorization.strip_prefix("AWS4-HMAC-SHA256 Credential=") else {
        return false;
    };
    let mut parts = rest.split(", ");
    let credential = parts.next().unwrap_or_default();
    let signed = parts.next().and_then(|p| p.strip_prefix("SignedHeaders="));
    let signature = parts.next().and_then(|p| p.strip_prefix("Signature="));
    let scope: Vec<&str> = credential.split('/').collect();
    scope.len() == 5
        && scope.first() == Some(&key_id)
        && scope.get(3) == Some(&"bedrock")
        && scope.get(4) == Some(&"aws4_request")
        && signed.is_some_and(|h| h.split(';').any(|h| h == "host") && h.contains("x-amz-date"))
        && signature.is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The credential checks of [`Options`]: a Tollgate virtual key (`tg-…`) never reaches the
/// provider; `expect_key` in any header; a provider key in its provider's own header. A
/// refusal is a 401 in `api`'s error shape.
fn check_key(
    options: &Options,
    api: Api,
    provider: &str,
    headers: &HeaderMap,
    query_key: Option<&str>,
) -> Result<(), Box<Response>> {
    let presented = presented_key(headers, query_key);
    let refuse = |msg: &str| Err(Box::new(error(api, StatusCode::UNAUTHORIZED, msg)));
    let checked = options.expect_key.is_some() || !options.provider_keys.is_empty();
    if checked && presented.iter().any(|k| k.starts_with("tg-")) {
        return refuse("the mock upstream received a Tollgate virtual key");
    }
    // A provider refuses a credential it cannot read; and a client's that is not text must
    // not reach here at all (the filter strips every credential header, text or not).
    let unreadable = CREDENTIAL_HEADERS
        .iter()
        .any(|h| headers.get(*h).is_some_and(|v| v.to_str().is_err()));
    if checked && unreadable {
        return refuse("the mock upstream received a credential header that is not text");
    }
    if let Some(expected) = &options.expect_key {
        if !presented.iter().any(|k| k == expected) {
            return refuse("the mock upstream did not receive the expected provider key");
        }
    }
    if let Some((_, expected)) = options.provider_keys.iter().find(|(p, _)| p == provider) {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let ok = match provider {
            "openai" => get("authorization") == Some(format!("Bearer {expected}").as_str()),
            "anthropic" => get("x-api-key") == Some(expected.as_str()),
            // Bedrock: a SigV4 signature by this access key, never a bearer.
            "bedrock" => {
                get("authorization").is_some_and(|a| sigv4_by(a, expected))
                    && get("x-amz-date").is_some()
            }
            // Vertex AI takes an OAuth access token as a bearer.
            "vertex_ai" => get("authorization") == Some(format!("Bearer {expected}").as_str()),
            // Azure takes its key in `api-key`, or an Entra token as a bearer.
            "azure" => {
                get("api-key") == Some(expected.as_str())
                    || get("authorization") == Some(format!("Bearer {expected}").as_str())
            }
            _ => {
                get("x-goog-api-key") == Some(expected.as_str())
                    || query_key == Some(expected.as_str())
            }
        };
        if !ok {
            return refuse(&format!(
                "the mock upstream did not receive the {provider} key in the {provider} header"
            ));
        }
    }
    Ok(())
}

/// The key the client presented, in whichever header its provider uses.
/// The headers clients and providers carry credentials in: the provider's side of the list,
/// kept apart from the filter's `identity::CREDENTIAL_HEADERS` (the mock does not build on the
/// code whose stripping it checks).
const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "x-amz-security-token",
];

fn presented_key(headers: &HeaderMap, query_key: Option<&str>) -> Vec<String> {
    let mut keys = Vec::new();
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(bearer) = get("authorization").and_then(|v| v.strip_prefix("Bearer ")) {
        keys.push(bearer.to_owned());
    }
    // A SigV4 signature's access key id.
    if let Some(id) = get("authorization")
        .and_then(|v| v.strip_prefix("AWS4-HMAC-SHA256 Credential="))
        .and_then(|c| c.split_once('/'))
    {
        keys.push(id.0.to_owned());
    }
    keys.extend(get("x-api-key").map(str::to_owned));
    keys.extend(get("x-goog-api-key").map(str::to_owned));
    keys.extend(get("api-key").map(str::to_owned));
    keys.extend(query_key.map(str::to_owned));
    keys
}

async fn handle(
    options: &Options,
    api: Api,
    headers: &HeaderMap,
    path: Option<&PathFacts>,
    body: &[u8],
    target: Target,
) -> Response {
    let controls = match Controls::from_headers(headers) {
        Ok(c) => c,
        Err(e) => return error(api, StatusCode::BAD_REQUEST, &e),
    };
    if let Err(r) = check_key(
        options,
        api,
        path.map_or(provider_of(api), |p| p.provider),
        headers,
        path.and_then(|g| g.query_key.as_deref()),
    ) {
        return *r;
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                api,
                StatusCode::BAD_REQUEST,
                &format!("request body is not valid JSON: {e}"),
            )
        }
    };
    let path_stream = target != Target::Body;
    let plan = match plan(
        api,
        &request,
        &controls,
        path.map(|g| g.model.as_str()),
        path_stream,
    ) {
        Ok(p) => p,
        Err(e) => return error(api, StatusCode::BAD_REQUEST, &e.0),
    };
    // Bedrock's InvokeModel answers as Anthropic, naming the model Anthropic's way.
    let plan = if api == Api::BedrockInvoke {
        Plan {
            model: bedrock::vendor_model(&plan.model),
            ..plan
        }
    } else {
        plan
    };
    let streaming = plan.stream && api != Api::OpenAiEmbeddings;
    // A stream is delayed per event; everything else once, before the response.
    if controls.delay_ms > 0 && (!streaming || controls.status.is_some()) {
        tokio::time::sleep(Duration::from_millis(controls.delay_ms)).await;
    }
    if let Some(status) = controls.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(api, status, "mock error requested by x-mock-status");
    }
    let ids = Ids::new();
    if streaming {
        let (mut events, content_type) = stream_events(&plan, &ids, target);
        if controls.garbage && content_type == EVENT_STREAM {
            // Bedrock's way to fail mid-stream: an exception message after some text.
            events.truncate(2);
            events.push(bedrock::exception(
                "modelStreamErrorException",
                "The model failed to continue the stream",
            ));
        } else if controls.garbage {
            events = vec![
                Bytes::from_static(b"data: {\"usage\": {\"prompt_tokens\": nope\n\n"),
                Bytes::from_static(b"data: [DONE]\n\n"),
            ];
        }
        if let Some(n) = pad(&controls) {
            let mut comment = Vec::with_capacity(n + 4);
            comment.extend_from_slice(b": ");
            comment.resize(n + 2, b'x');
            comment.extend_from_slice(b"\n\n");
            events.insert(0, Bytes::from(comment));
        }
        let body = event_stream(events, &controls);
        return with_type(StatusCode::OK, content_type, body);
    }
    if controls.garbage {
        let body = Body::from(r#"{"id": "garbage", "usage": {"prompt_tokens": nope"#);
        return with_type(StatusCode::OK, "application/json", body);
    }
    let json = match api {
        Api::OpenAiChat => openai::chat_json(&plan, &ids),
        Api::OpenAiResponses => openai::responses_json(&plan, &ids),
        Api::OpenAiEmbeddings => openai::embeddings_json(&plan, &request),
        Api::AnthropicMessages => anthropic::message_json(&plan, &ids),
        Api::Gemini => gemini::generate_json(&plan, &ids),
        Api::BedrockConverse => bedrock::converse_json(&plan),
        Api::BedrockInvoke => anthropic::message_json(&plan, &ids),
    };
    let json = match (pad(&controls), json.strip_prefix(b"{")) {
        (Some(n), Some(rest)) => {
            let mut padded = Vec::with_capacity(json.len() + n + 14);
            padded.extend_from_slice(br#"{"padding":""#);
            padded.resize(padded.len() + n, b'x');
            padded.extend_from_slice(b"\",");
            padded.extend_from_slice(rest);
            padded
        }
        _ => json,
    };
    let body = match controls.truncate_after {
        Some(n) if usize::try_from(n).is_ok_and(|n| n < json.len()) => {
            let n = usize::try_from(n).unwrap_or(0);
            let head = Bytes::from(json).slice(..n);
            cut_stream(vec![head], Duration::ZERO)
        }
        _ => Body::from(json),
    };
    with_type(StatusCode::OK, "application/json", body)
}

/// The `x-mock-pad-bytes` count (bounded by `MAX_PAD_BYTES` when read).
fn pad(controls: &Controls) -> Option<usize> {
    controls.pad_bytes.and_then(|n| usize::try_from(n).ok())
}

fn stream_events(plan: &Plan, ids: &Ids, target: Target) -> (Vec<Bytes>, &'static str) {
    match (plan.api, target) {
        (Api::Gemini, Target::GeminiArray) => (gemini::stream_array(plan, ids), "application/json"),
        (Api::Gemini, _) => (gemini::stream_events(plan, ids), "text/event-stream"),
        (Api::OpenAiChat | Api::OpenAiEmbeddings, _) => {
            (openai::chat_events(plan, ids), "text/event-stream")
        }
        (Api::OpenAiResponses, _) => (openai::responses_events(plan, ids), "text/event-stream"),
        (Api::AnthropicMessages, _) => (anthropic::message_events(plan, ids), "text/event-stream"),
        (Api::BedrockConverse, _) => (bedrock::converse_events(plan), EVENT_STREAM),
        (Api::BedrockInvoke, _) => (
            bedrock::invoke_events(&anthropic::message_events(plan, ids), &plan.usage),
            EVENT_STREAM,
        ),
    }
}

/// A streamed body of `events`, each its own frame; delayed per event and cut after
/// `truncate_after` events when the controls say so.
fn event_stream(events: Vec<Bytes>, controls: &Controls) -> Body {
    let delay = Duration::from_millis(controls.delay_ms);
    match controls.truncate_after {
        Some(n) if usize::try_from(n).is_ok_and(|n| n < events.len()) => {
            let n = usize::try_from(n).unwrap_or(0);
            cut_stream(events.into_iter().take(n).collect(), delay)
        }
        _ if delay.is_zero() => {
            Body::from_stream(stream::iter(events.into_iter().map(Ok::<_, Infallible>)))
        }
        _ => Body::from_stream(stream::unfold(
            events.into_iter(),
            move |mut it| async move {
                let ev = it.next()?;
                tokio::time::sleep(delay).await;
                Some((Ok::<_, Infallible>(ev), it))
            },
        )),
    }
}

/// Sends `events` (each after `delay`), then fails the body: hyper drops the connection
/// without the terminating chunk, which is what a provider crash mid-stream looks like.
fn cut_stream(events: Vec<Bytes>, delay: Duration) -> Body {
    enum Step {
        Send(std::vec::IntoIter<Bytes>),
        Fail,
    }
    Body::from_stream(stream::unfold(
        Step::Send(events.into_iter()),
        move |step| async move {
            match step {
                Step::Send(mut it) => match it.next() {
                    Some(ev) => {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        Some((Ok(ev), Step::Send(it)))
                    }
                    None => {
                        tokio::time::sleep(CUT_FLUSH_DELAY).await;
                        Some((
                            Err(io::Error::other("cut by x-mock-truncate-after")),
                            Step::Fail,
                        ))
                    }
                },
                Step::Fail => None,
            }
        },
    ))
}

/// Bedrock's stream content type.
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type == "text/event-stream" {
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    r
}

/// An error in the provider's own shape, so SDKs raise their usual exception types.
fn error(api: Api, status: StatusCode, message: &str) -> Response {
    let code = status.as_u16();
    let body = match api {
        Api::OpenAiChat | Api::OpenAiResponses | Api::OpenAiEmbeddings => {
            openai::error_json(code, message)
        }
        Api::AnthropicMessages => anthropic::error_json(code, message, &Ids::new().id("req_")),
        Api::Gemini => gemini::error_json(code, message),
        Api::BedrockConverse | Api::BedrockInvoke => {
            let kind = bedrock::error_type(code);
            return (
                status,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::HeaderName::from_static("x-amzn-errortype"), kind),
                ],
                bedrock::error_json(message),
            )
                .into_response();
        }
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
