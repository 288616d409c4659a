//! A webhook receiver on 127.0.0.1 (feature `receiver`) for the alert tests of the control
//! plane and the end-to-end tests: records every request it gets (its time, the
//! `Tollgate-Signature` and `Tollgate-Event` headers, the body), can answer 500 to the first
//! ones and answer slowly. Call [`receiver`] inside a tokio runtime; abort the handle to stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Its `Tollgate-Signature` header.
    pub signature: String,
    /// Its `Tollgate-Event` header.
    pub event: String,
    /// Its body.
    pub body: Vec<u8>,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver on 127.0.0.1: records every request, answers 500 to the first
/// `fail_first` ones and 200 after.
#[derive(Clone, Default)]
pub struct Inbox {
    /// What it got (answered 2xx).
    pub got: Arc<Mutex<Vec<Received>>>,
    /// How many requests to answer 500 first.
    pub fail_first: Arc<AtomicUsize>,
    /// Requests so far, answered or not.
    pub calls: Arc<AtomicUsize>,
    /// Milliseconds each answer takes (a slow receiver keeps deliveries in flight).
    pub delay_ms: Arc<AtomicUsize>,
}

impl Inbox {
    /// What it got so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// What it got, once that is at least `n` requests, waiting (on this thread: for blocking
    /// tests) at most `within`.
    pub fn wait_for(&self, n: usize, within: Duration) -> Option<Vec<Received>> {
        crate::eventually(within, || {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
    }
}

async fn hook(State(inbox): State<Inbox>, headers: HeaderMap, body: bytes::Bytes) -> StatusCode {
    let n = inbox.calls.fetch_add(1, Ordering::SeqCst);
    let delay = inbox.delay_ms.load(Ordering::SeqCst) as u64;
    tokio::time::sleep(Duration::from_millis(delay)).await;
    if n < inbox.fail_first.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    inbox.got.lock().unwrap().push(Received {
        at: Instant::now(),
        signature: h("tollgate-signature"),
        event: h("tollgate-event"),
        body: body.to_vec(),
    });
    StatusCode::NO_CONTENT
}

/// Serves `inbox` on `listener` until the handle is aborted.
pub fn serve(listener: tokio::net::TcpListener, inbox: Inbox) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new()
        // Any path: subscriptions put credentials in theirs.
        .fallback(hook)
        .with_state(inbox);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// A receiver on a free port: its URL, what it got, its task.
pub async fn receiver(fail_first: usize) -> (String, Inbox, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let inbox = Inbox::default();
    inbox.fail_first.store(fail_first, Ordering::SeqCst);
    let task = serve(listener, inbox.clone());
    (url, inbox, task)
}
