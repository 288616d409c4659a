//! Clusters a plugin may reach with `proxy_http_call`, and what answers them.
//!
//! Envoy only lets a plugin call a *named cluster* it knows (`BAD_ARGUMENT` otherwise, see
//! the `proxy_http_call` section of the ABI spec,
//! <https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#proxy_http_call>).
//! A test names its clusters on the [`Host`](crate::Host) and says who answers each:
//!
//! - [`Upstream::script`]: a closure sees the [`HttpCall`] and returns a [`Reply`];
//! - [`Upstream::by_path`]: a fixed table of responses keyed by `:path`;
//! - [`Upstream::http`]: a real HTTP/1.1 server on loopback, called with the small blocking
//!   client at the bottom of this module.
//!
//! Replies reach the guest's `proxy_on_http_call_response` after the callback that made the
//! call has returned, as Envoy's asynchronous client does. [`Reply::Hold`] keeps the call
//! pending until the test answers it with [`Host::answer`](crate::Host::answer).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::headers::Headers;
use crate::VmId;

/// One `proxy_http_call` a plugin made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    /// The VM that made the call.
    pub vm: VmId,
    /// The context that was effective when the call was made (root or stream).
    pub context_id: u32,
    /// The token returned to the guest; `proxy_on_http_call_response` carries it back.
    pub token: u32,
    /// The cluster name the guest asked for.
    pub cluster: String,
    /// Request headers, pseudo-headers included.
    pub headers: Headers,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: Headers,
    /// Timeout the guest asked for, in milliseconds (0 = none).
    pub timeout_ms: u32,
    /// Virtual wall-clock time of the call, in nanoseconds since the Unix epoch.
    pub at_nanos: u64,
}

impl HttpCall {
    /// `:method`.
    pub fn method(&self) -> &str {
        self.headers.get(":method").unwrap_or_default()
    }

    /// `:path`, query string included.
    pub fn path(&self) -> &str {
        self.headers.get(":path").unwrap_or_default()
    }

    /// `:path` without its query string.
    pub fn path_without_query(&self) -> &str {
        let path = self.path();
        path.split_once('?').map_or(path, |(before, _)| before)
    }

    /// The first value of a request header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The body as UTF-8 (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A response to an [`HttpCall`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// HTTP status; sent to the guest as the `:status` pseudo-header.
    pub status: u16,
    /// Response headers (without `:status`).
    pub headers: Headers,
    /// Response body.
    pub body: Vec<u8>,
    /// Response trailers.
    pub trailers: Headers,
}

impl HttpResponse {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Headers::new(),
            body: Vec::new(),
            trailers: Headers::new(),
        }
    }

    /// A JSON response: `content-type: application/json` and `body`.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status)
            .header("content-type", "application/json")
            .body(body)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.add(name, value);
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Adds a trailer.
    pub fn trailer(mut self, name: &str, value: impl Into<String>) -> Self {
        self.trailers.add(name, value);
        self
    }

    /// The headers the guest sees: `:status` first, then the rest.
    pub(crate) fn wire_headers(&self) -> Headers {
        self.headers.with_status_first(self.status)
    }
}

/// How a cluster answers one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Deliver this response.
    Respond(HttpResponse),
    /// The call fails (reset, timeout): the guest gets `proxy_on_http_call_response` with
    /// zero headers, as Envoy's `onHttpCallFailure` does.
    Fail,
    /// Keep the call pending until [`Host::answer`](crate::Host::answer).
    Hold,
}

impl From<HttpResponse> for Reply {
    fn from(response: HttpResponse) -> Self {
        Reply::Respond(response)
    }
}

/// The closure type behind [`Upstream::script`].
pub type Responder = Box<dyn FnMut(&HttpCall) -> Reply + Send>;

/// What answers the calls made to one cluster.
pub enum Upstream {
    /// In-process answers.
    Script(Responder),
    /// A real HTTP/1.1 server on a loopback address.
    Http(SocketAddr),
}

impl Upstream {
    /// Answers every call with the closure's [`Reply`].
    pub fn script(responder: impl FnMut(&HttpCall) -> Reply + Send + 'static) -> Self {
        Upstream::Script(Box::new(responder))
    }

    /// Answers by `:path` (query string ignored) from a fixed table; other paths get 404.
    pub fn by_path<P: Into<String>>(routes: impl IntoIterator<Item = (P, HttpResponse)>) -> Self {
        let table: BTreeMap<String, HttpResponse> = routes
            .into_iter()
            .map(|(path, response)| (path.into(), response))
            .collect();
        Upstream::script(move |call| match table.get(call.path_without_query()) {
            Some(response) => Reply::Respond(response.clone()),
            None => Reply::Respond(HttpResponse::new(404)),
        })
    }

    /// Calls a real HTTP/1.1 server. Only loopback addresses are accepted: the harness
    /// is test tooling and never talks to the network.
    pub fn http(addr: SocketAddr) -> Result<Self> {
        if !addr.ip().is_loopback() {
            bail!("upstream {addr} is not a loopback address; the harness only calls loopback servers");
        }
        Ok(Upstream::Http(addr))
    }

    /// Produces the reply for one call.
    pub(crate) fn reply(&mut self, call: &HttpCall) -> Reply {
        match self {
            Upstream::Script(responder) => responder(call),
            Upstream::Http(addr) => {
                // Envoy treats timeout 0 as "no timeout"; a test must not hang, so cap it.
                let timeout = match call.timeout_ms {
                    0 => Duration::from_secs(30),
                    ms => Duration::from_millis(u64::from(ms)),
                };
                match send_http1(*addr, call, timeout) {
                    Ok(response) => Reply::Respond(response),
                    Err(_) => Reply::Fail,
                }
            }
        }
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Script(_) => f.write_str("Upstream::Script(..)"),
            Upstream::Http(addr) => write!(f, "Upstream::Http({addr})"),
        }
    }
}

/// Sends `call` as one HTTP/1.1 request over a fresh connection and reads the response.
///
/// Deliberately small: `connection: close`, a `content-length` body, and a response
/// framed by `content-length`, `transfer-encoding: chunked` or the end of the connection.
pub fn send_http1(addr: SocketAddr, call: &HttpCall, timeout: Duration) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: {}\r\n",
        call.method(),
        call.path(),
        call.header(":authority").unwrap_or("localhost")
    );
    for (name, value) in call.headers.iter() {
        if name.starts_with(':')
            || name == "host"
            || name == "content-length"
            || name == "connection"
        {
            continue;
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        call.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    stream.write_all(&call.body)?;
    stream.flush()?;

    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;

    let mut response = HttpResponse::new(status);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            response.headers.add(name.trim(), value.trim());
        }
    }

    let chunked = response
        .headers
        .get("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
    if chunked {
        response.body = read_chunked(&mut reader)?;
        response.headers.remove("transfer-encoding");
    } else if let Some(length) = response.headers.get("content-length") {
        let length: usize = length.parse().context("bad content-length")?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        response.body = body;
    } else {
        reader.read_to_end(&mut response.body)?;
    }
    Ok(response)
}

/// Reads a `transfer-encoding: chunked` body (trailers after the last chunk are dropped).
fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_hex = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {size_line:?}"))?;
        if size == 0 {
            // Skip trailers up to the blank line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        if let Some(chunk) = body.get_mut(start..) {
            reader.read_exact(chunk)?;
        }
        let mut crlf = String::new();
        reader.read_line(&mut crlf)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn chunked_bodies_are_joined() {
        let mut wire = Cursor::new(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec());
        assert_eq!(read_chunked(&mut wire).unwrap(), b"hello world");
    }

    #[test]
    fn non_loopback_upstreams_are_refused() {
        assert!(Upstream::http("10.0.0.1:80".parse().unwrap()).is_err());
        assert!(Upstream::http("127.0.0.1:80".parse().unwrap()).is_ok());
    }
}
