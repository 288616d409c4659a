//! The alert tests' async wait (the webhook receiver is `tollgate_testkit::webhook`).

use std::future::Future;
use std::time::{Duration, Instant};

/// Waits until `f` holds, at most `secs` seconds (checked every 20 ms).
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not within {secs} s: {what}");
}
