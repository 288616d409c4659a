//! A request to replay, with the upstream response it will get.
//!
//! ```
//! use tollgate_harness::Request;
//! let request = Request::post("/v1/chat/completions")
//!     .header("authorization", "Bearer tg-test")
//!     .header("content-type", "application/json")
//!     .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
//!     .response_status(200)
//!     .response_header("content-type", "application/json")
//!     .response_body(r#"{"usage":{"prompt_tokens":3,"completion_tokens":5}}"#);
//! # let _ = request;
//! ```
//!
//! Body chunks arrive one callback each, the last with `end_of_stream`; trailers, if set,
//! come after the body (whose last chunk is then not the end of stream). The upstream
//! response is only used if the request reaches the upstream.

use std::collections::BTreeMap;

use crate::headers::Headers;

/// The response the upstream gives if the request reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers (without `:status`).
    pub headers: Headers,
    /// Body chunks, one `proxy_on_response_body` each.
    pub body: Vec<Vec<u8>>,
    /// Trailers.
    pub trailers: Option<Headers>,
}

impl Default for UpstreamResponse {
    fn default() -> Self {
        Self {
            status: 200,
            headers: Headers::new(),
            body: Vec::new(),
            trailers: None,
        }
    }
}

impl UpstreamResponse {
    /// The headers as Envoy hands them to the filter: `:status` first.
    pub(crate) fn wire_headers(&self) -> Headers {
        self.headers.with_status_first(self.status)
    }
}

/// A downstream request and the upstream's response to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub(crate) headers: Headers,
    pub(crate) body: Vec<Vec<u8>>,
    pub(crate) trailers: Option<Headers>,
    pub(crate) response: UpstreamResponse,
    pub(crate) properties: BTreeMap<String, Vec<u8>>,
}

impl Request {
    /// A request with `:method`, `:path`, `:scheme` (`http`) and `:authority` (`localhost`).
    pub fn new(method: &str, path: &str) -> Self {
        let mut headers = Headers::new();
        headers.add(":authority", "localhost");
        headers.add(":path", path);
        headers.add(":method", method);
        headers.add(":scheme", "http");
        Self {
            headers,
            body: Vec::new(),
            trailers: None,
            response: UpstreamResponse::default(),
            properties: BTreeMap::new(),
        }
    }

    /// `GET path`.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// `POST path`.
    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }

    /// Adds a request header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.add(name, value);
        self
    }

    /// Replaces `:authority`.
    pub fn authority(mut self, authority: &str) -> Self {
        self.headers.replace(":authority", authority);
        self
    }

    /// Sets the body as one chunk.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = vec![body.into()];
        self
    }

    /// Appends a body chunk (one `proxy_on_request_body` each).
    pub fn body_chunk(mut self, chunk: impl Into<Vec<u8>>) -> Self {
        self.body.push(chunk.into());
        self
    }

    /// Adds a request trailer.
    pub fn trailer(mut self, name: &str, value: impl Into<String>) -> Self {
        self.trailers
            .get_or_insert_with(Headers::new)
            .add(name, value);
        self
    }

    /// A property the filter can read for this request (dotted name, e.g. `route_name`).
    pub fn property(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties.insert(name.to_owned(), value.into());
        self
    }

    /// The upstream response status (default 200).
    pub fn response_status(mut self, status: u16) -> Self {
        self.response.status = status;
        self
    }

    /// Adds an upstream response header.
    pub fn response_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.response.headers.add(name, value);
        self
    }

    /// Sets the upstream response body the way Envoy delivers a buffered one: the data,
    /// then an empty chunk with `end_of_stream` (two `proxy_on_response_body` calls).
    pub fn response_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.response.body = vec![body.into(), Vec::new()];
        self
    }

    /// Appends an upstream response body chunk (streaming); the last chunk is the end of
    /// stream.
    pub fn response_chunk(mut self, chunk: impl Into<Vec<u8>>) -> Self {
        self.response.body.push(chunk.into());
        self
    }

    /// Adds an upstream response trailer.
    pub fn response_trailer(mut self, name: &str, value: impl Into<String>) -> Self {
        self.response
            .trailers
            .get_or_insert_with(Headers::new)
            .add(name, value);
        self
    }

    /// The request headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The request body chunks.
    pub fn body_chunks(&self) -> &[Vec<u8>] {
        &self.body
    }

    /// The upstream response.
    pub fn response(&self) -> &UpstreamResponse {
        &self.response
    }
}
