//! When each virtual key was last used, for the keys page: `virtual_keys.last_used_at`, moved
//! by ingestion. Written at most once per [`RESOLUTION_S`] per key and control-plane process:
//! a busy key is in nearly every batch, and an `UPDATE` of its row in each would cost
//! ingestion a statement per key per batch for a value people read in minutes. The write only
//! ever moves the time forward, so replicas and late batches cannot move it back.

use std::collections::HashMap;

use tollgate_core::event::UsageEvent;

/// How stale `last_used_at` may be, seconds.
pub const RESOLUTION_S: i64 = 60;

/// Ids remembered; past this many the memory starts over (each id is then written once more).
const MAX_REMEMBERED: usize = 100_000;

/// The last time this process wrote for each id (a key's last use, a reporter's last sync):
/// what is due is an id whose row would move by at least the resolution.
#[derive(Debug)]
pub struct Throttle {
    resolution: i64,
    written: std::sync::Mutex<HashMap<String, i64>>,
}

impl Throttle {
    /// Writes at most once per `resolution` seconds per id.
    pub fn new(resolution: i64) -> Throttle {
        Throttle {
            resolution,
            written: std::sync::Mutex::default(),
        }
    }

    /// The `(id, time)` of `latest` whose row is at least the resolution behind, sorted by id
    /// (PostgreSQL locks rows in that order).
    pub fn due<'a>(&self, latest: impl IntoIterator<Item = (&'a str, i64)>) -> Vec<(String, i64)> {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let mut due: Vec<(String, i64)> = latest
            .into_iter()
            .filter(|(id, t)| {
                written
                    .get(*id)
                    .is_none_or(|w| *t >= w.saturating_add(self.resolution))
            })
            .map(|(id, t)| (id.to_string(), t))
            .collect();
        due.sort_unstable();
        due
    }

    /// Remembers what a committed write wrote.
    pub fn written(&self, ids: Vec<(String, i64)>) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if written.len().saturating_add(ids.len()) > MAX_REMEMBERED {
            written.clear();
        }
        for (id, t) in ids {
            let w = written.entry(id).or_insert(t);
            *w = (*w).max(t);
        }
    }
}

/// The last use of each key this process wrote.
#[derive(Debug)]
pub struct KeyUse(Throttle);

impl Default for KeyUse {
    fn default() -> Self {
        KeyUse(Throttle::new(RESOLUTION_S))
    }
}

impl KeyUse {
    /// `(key id, last use)` of the keys in `events` whose row is more than [`RESOLUTION_S`]
    /// behind, sorted by id.
    pub fn due<'a>(&self, events: impl IntoIterator<Item = &'a UsageEvent>) -> Vec<(String, i64)> {
        let mut latest: HashMap<&str, i64> = HashMap::new();
        for e in events {
            if let Some(k) = e.principal.key.as_deref() {
                let t = latest.entry(k).or_insert(e.ts);
                *t = (*t).max(e.ts);
            }
        }
        self.0.due(latest)
    }

    /// Remembers what a committed batch wrote.
    pub fn written(&self, keys: Vec<(String, i64)>) {
        self.0.written(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tollgate_core::identity::Principal;

    fn used(key: &str, ts: i64) -> UsageEvent {
        let mut e = crate::ingest::tests::event("e", 1, ts, 1);
        e.principal = Arc::new(Principal {
            key: Some(key.into()),
            org: "o".into(),
            ..Principal::default()
        });
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
