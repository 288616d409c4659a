//! The control plane's clock: the system clock, or a fixed instant that tests move by hand
//! (budget windows and price effective dates depend on `now`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Unix seconds, from the system or set by a test. Cheap to clone; clones share the instant.
#[derive(Debug, Clone)]
pub struct Clock(Arc<AtomicI64>);

const SYSTEM: i64 = i64::MIN;

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(AtomicI64::new(SYSTEM)))
    }

    /// A clock stopped at `at` until [`Clock::set`] moves it.
    pub fn fixed(at: i64) -> Clock {
        Clock(Arc::new(AtomicI64::new(at)))
    }

    /// Moves a fixed clock (every clone sees it).
    pub fn set(&self, at: i64) {
        self.0.store(at, Ordering::SeqCst);
    }

    /// Now, Unix seconds.
    pub fn now(&self) -> i64 {
        match self.0.load(Ordering::SeqCst) {
            SYSTEM => crate::store::unix_now(),
            at => at,
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}
