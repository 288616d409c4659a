//! When each virtual key was last used, for the keys page: `virtual_keys.last_used_at`, moved
//! by ingestion. Written at most once per [`RESOLUTION_S`] per key and control-plane process:
//! a busy key is in nearly every batch, and an `UPDATE` of its row in each would cost
//! ingestion a statement per key per batch for a value people read in minutes. The write only
//! ever moves the time forward, so replicas and late batches cannot move it back.

use std::collections::HashMap;
use std::sync::Mutex;

use tollgate_core::event::UsageEvent;

/// How stale `last_used_at` may be, seconds.
pub const RESOLUTION_S: i64 = 60;

/// Keys remembered; past this many the memory starts over (each key is then written once more).
const MAX_REMEMBERED: usize = 100_000;

/// The last use of each key this process wrote.
#[derive(Debug, Default)]
pub struct KeyUse(Mutex<HashMap<String, i64>>);

impl KeyUse {
    /// `(key id, last use)` of the keys in `events` whose row is more than [`RESOLUTION_S`]
    /// behind, sorted by id (PostgreSQL locks the rows in that order).
    pub fn due<'a>(&self, events: impl IntoIterator<Item = &'a UsageEvent>) -> Vec<(String, i64)> {
        let mut latest: HashMap<&str, i64> = HashMap::new();
        for e in events {
            if let Some(k) = e.principal.key.as_deref() {
                let t = latest.entry(k).or_insert(e.ts);
                *t = (*t).max(e.ts);
            }
        }
        let written = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut due: Vec<(String, i64)> = latest
            .into_iter()
            .filter(|(k, t)| {
                written
                    .get(*k)
                    .is_none_or(|w| *t >= w.saturating_add(RESOLUTION_S))
            })
            .map(|(k, t)| (k.to_string(), t))
            .collect();
        due.sort_unstable();
        due
    }

    /// Remembers what a committed batch wrote.
    pub fn written(&self, keys: Vec<(String, i64)>) {
        let mut written = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if written.len().saturating_add(keys.len()) > MAX_REMEMBERED {
            written.clear();
        }
        for (k, t) in keys {
            let w = written.entry(k).or_insert(t);
            *w = (*w).max(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::identity::Principal;

    fn used(key: &str, ts: i64) -> UsageEvent {
        let mut e = crate::ingest::tests::event("e", 1, ts, 1);
        e.principal = Principal {
            key: Some(key.into()),
            org: "o".into(),
            ..Principal::default()
        };
        e
    }

    #[test]
    fn a_key_is_written_once_per_resolution_and_never_backwards() {
        let uses = KeyUse::default();
        let batch = [used("b", 1_000), used("a", 1_010), used("a", 1_005)];
        let due = uses.due(&batch);
        assert_eq!(due, [("a".into(), 1_010), ("b".into(), 1_000)]);
        uses.written(due);
        assert!(uses.due(&[used("a", 1_069)]).is_empty());
        assert_eq!(uses.due(&[used("a", 1_070)]), [("a".into(), 1_070)]);
        uses.written(vec![("a".into(), 900)]);
        assert!(
            uses.due(&[used("a", 1_069)]).is_empty(),
            "kept the later time"
        );
    }
}
