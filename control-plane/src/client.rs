//! A small REST client for the admin verbs of the CLI (`tollgate budgets|keys|spend`): JSON in,
//! JSON out, problem documents turned into one-line errors. Plain HTTP: put TLS in front of
//! the control plane (a sidecar or the ingress) when it leaves the host.

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot reach {url}: {source}")]
    Transport {
        /// The URL.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The server answered with an error (its problem document's detail).
    #[error("{status}: {detail}")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The problem's detail (or the body).
        detail: String,
    },
}

/// An admin client.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for the control plane at `base` (`http://127.0.0.1:8080`) with `token`.
    pub fn new(base: &str, token: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// Sends a request; `accept` overrides the `Accept` header. Returns the body text.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        accept: Option<&str>,
    ) -> Result<String, ClientError> {
        let url = format!("{}{path_and_query}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .header("accept", accept.unwrap_or("application/json"));
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|source| ClientError::Transport { url, source })?;
        if status.is_success() {
            return Ok(text);
        }
        let doc = serde_json::from_str::<Value>(&text).ok();
        let mut detail = doc
            .as_ref()
            .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(text);
        // A bulk call's problem lists every item at fault: one line each.
        for e in doc
            .as_ref()
            .and_then(|v| v.get("errors"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let s = |k: &str| {
                e.get(k).map_or(String::new(), |v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            };
            detail.push_str(&format!(
                "\n  {} ({}): {}",
                s("field"),
                s("status"),
                s("detail")
            ));
        }
        Err(ClientError::Api { status, detail })
    }

    /// Sends a request and parses the JSON answer (`null` for an empty one).
    pub async fn json(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let text = self.send(method, path_and_query, body, None).await?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Api {
            status: StatusCode::OK,
            detail: format!("answer is not JSON: {e}"),
        })
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass through).
pub fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
