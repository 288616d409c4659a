//! The sync service's decisions, without I/O: when to poll the snapshot, which usage batch
//! to post, what to retry and when, and which local spend a new snapshot acknowledges.
//!
//! One sync service runs per Envoy (a singleton `envoy.bootstrap.wasm` service). Workers put
//! a [`QueuedUsage`] per metered request on the shared queue; the service numbers them
//! (`reporter`, `seq`), posts them in batches to `POST /v1/usage` (idempotent by event id, so
//! a batch is retried unchanged until it is stored), and when a snapshot reports
//! `reporters[reporter] >= seq` for a posted batch it hands back that batch's
//! [`BudgetCharge`]s so the glue removes them from the local unsynced spend — the snapshot's
//! spend now includes them, so nothing is counted twice or dropped.
//!
//! **Reporter identity.** Before its first usage post the service enrolls
//! (`POST /v1/reporters` with the data-plane token, [`SyncCall::Enroll`]): the control plane
//! mints the reporter id and a secret (wasm has no random source; the control plane has). The
//! secret lives only here, in memory; each usage batch carries it in its body (never a header:
//! Envoy logs headers), snapshot polls name the reporter, and the control plane refuses events
//! of any other reporter and shows each reporter only its own acknowledgement. Events are numbered when they first go into a batch, so events queued
//! while the control plane is away (enrollment retried with the usage backoff) simply wait.
//! A 401/403 to a usage post made with the secret means the control plane no longer knows this
//! reporter (a replaced database): the service enrolls again and renumbers every event not yet
//! stored under the new id. Nothing is lost (no pending event was stored: a stored batch left
//! the pending queue on its 2xx) and nothing is counted twice (the old reporter's events are
//! unknown to that database). Batches stored under the old id and not yet acknowledged keep
//! their local spend: an overcount, the safe side.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::cost::CostBreakdown;
use crate::event::{Charge, Denied, UnchargedReason, UsageBatch, UsageEvent};
use crate::identity::Principal;
use crate::local_spend::BudgetCharge;
use crate::pricing::{SearchContext, ServiceTier};
use crate::provider::{ApiFormat, APIS};
use crate::shared_codec::{CodecError, Reader, Writer};
use crate::usage::Usage;

// Envoy shared data and queue names: the contract between `tollgate_sync.wasm`, which writes
// them, and `tollgate_filter.wasm` on every worker, which reads them (one `vm_id`).

/// Shared-data key of the snapshot's price book (JSON), written by the sync service.
pub const PRICES_KEY: &str = "tollgate.snapshot.prices";
/// Shared-data key of the snapshot's budget definitions (JSON).
pub const BUDGETS_KEY: &str = "tollgate.snapshot.budgets";
/// Shared-data key of the budgets' spend (binary, `sections::Held::spend_bytes`).
pub const SPEND_KEY: &str = "tollgate.snapshot.spend";
/// Prefix of the shared-data key of each key bucket (JSON), e.g. `tollgate.keys.ab1`.
pub const KEYS_PREFIX: &str = "tollgate.keys.";
/// Shared-data key of the snapshot's [`Manifest`](crate::snapshot::sections::Manifest) (version, build time, section stamps):
/// small, so workers poll it instead of the sections. Written after the sections.
pub const VERSION_KEY: &str = "tollgate.snapshot.version";
/// Shared-data key the sync service writes, with an empty value, right after each manifest:
/// its CAS moves with every publish, so a worker learns whether anything was published since
/// it last looked without being handed any bytes (in Envoy a host call that returns bytes
/// costs an allocation call back into the VM, ≈ 1 µs; BENCHMARKS.md, issue 17). Workers read
/// the manifest only when it moved, or when it is absent (a sync service that predates it).
pub const PUBLISHED_KEY: &str = "tollgate.snapshot.published";
/// Shared-data key of when the control plane last answered a snapshot poll (200 or 304), Unix
/// seconds: staleness is measured from here, since a 304 keeps an old `generated_at`.
pub const FRESH_KEY: &str = "tollgate.snapshot.fresh_at";
/// Name of the usage queue the sync service registers.
pub const QUEUE_NAME: &str = "tollgate.usage";

/// What a worker enqueues for one metered request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuedUsage {
    /// The event; `id`, `reporter` and `seq` are filled in by the sync service.
    pub event: UsageEvent,
    /// Local spend added for it, per budget and window.
    pub charges: Vec<BudgetCharge>,
}

/// The answer to `POST /v1/reporters`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct Enrollment {
    /// The reporter id the control plane minted.
    pub reporter: String,
    /// The reporter secret: proves a usage batch comes from this reporter.
    pub secret: String,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("reporter", &self.reporter)
            .field("secret", &"***")
            .finish()
    }
}

/// Version byte of the queue item encoding (3: audio, image and web-search counts, the
/// service tier and search context, and their cost buckets; 4: the soft-warned budgets and
/// denial records).
const QUEUE_FORMAT: u8 = 4;
const TIERS: [ServiceTier; 3] = [
    ServiceTier::Standard,
    ServiceTier::Priority,
    ServiceTier::Flex,
];
const CONTEXTS: [SearchContext; 3] = [
    SearchContext::Low,
    SearchContext::Medium,
    SearchContext::High,
];

const CHARGES: [Charge; 3] = [Charge::Actual, Charge::Estimate, Charge::Zero];
const REASONS: [UnchargedReason; 11] = UnchargedReason::ALL;

/// An API's tag byte: its position in the provider table ([`APIS`], which only grows at
/// its end).
fn api_tag(api: ApiFormat) -> u8 {
    APIS.iter()
        .position(|a| a.format() == api)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX)
}

/// The API a tag byte names.
fn api_untag(r: &mut Reader<'_>) -> Result<ApiFormat, CodecError> {
    let at_tag = r.u8()?;
    APIS.get(usize::from(at_tag))
        .map(|a| a.format())
        .ok_or(CodecError::Invalid(0))
}

/// Index of `v` in `all` as a tag byte.
fn tag<T: PartialEq>(all: &[T], v: &T) -> u8 {
    all.iter()
        .position(|x| x == v)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX)
}

/// The value a tag byte names.
fn untag<T: Copy>(all: &[T], r: &mut Reader<'_>) -> Result<T, CodecError> {
    let at_tag = r.u8()?;
    all.get(usize::from(at_tag))
        .copied()
        .ok_or(CodecError::Invalid(0))
}

/// A value of the queue record, written and read by one definition: the record's encoder and
/// decoder are derived from it (`wire_struct!` lists a struct's fields once, in wire order), so
/// the two cannot drift apart.
trait Wire: Sized {
    /// The fewest bytes a value takes (for a list's length check).
    const MIN_BYTES: usize = 1;
    fn put(&self, w: &mut Writer);
    fn take(r: &mut Reader<'_>) -> Result<Self, CodecError>;
}

/// [`Wire`] for a type through one writer and one reader expression.
macro_rules! wire_value {
    ($ty:ty, |$v:ident, $w:ident| $put:expr, |$r:ident| $take:expr) => {
        impl Wire for $ty {
            fn put(&self, $w: &mut Writer) {
                let $v = self;
                $put
            }
            fn take($r: &mut Reader<'_>) -> Result<Self, CodecError> {
                $take
            }
        }
    };
}

wire_value!(i64, |v, w| w.i64(*v), |r| r.i64());
wire_value!(u64, |v, w| w.u64(*v), |r| r.u64());
wire_value!(Decimal, |v, w| w.dec(*v), |r| r.dec());
/// [`Wire`] for an owned string type: a length-prefixed string.
macro_rules! wire_string {
    ($($ty:ty),*) => {$(
        impl Wire for $ty {
            /// Its length.
            const MIN_BYTES: usize = 4;
            fn put(&self, w: &mut Writer) {
                w.str(self);
            }
            fn take(r: &mut Reader<'_>) -> Result<Self, CodecError> {
                Ok(<$ty>::from(r.str()?))
            }
        }
    )*};
}
// A charge's budget id is shared with the worker's snapshot (`snapshot::BudgetNames`).
wire_string!(String, Arc<str>);
wire_value!(Option<String>, |v, w| w.opt_str(v.as_deref()), |r| Ok(r
    .opt_str()?
    .map(str::to_string)));
wire_value!(bool, |v, w| w.u8(u8::from(*v)), |r| Ok(r.u8()? != 0));
wire_value!(u16, |v, w| w.u64(u64::from(*v)), |r| u16::try_from(
    r.u64()?
)
.map_err(|_| CodecError::Invalid(0)));
wire_value!(ApiFormat, |v, w| w.u8(api_tag(*v)), |r| api_untag(r));
wire_value!(ServiceTier, |v, w| w.u8(tag(&TIERS, v)), |r| untag(
    &TIERS, r
));
wire_value!(SearchContext, |v, w| w.u8(tag(&CONTEXTS, v)), |r| untag(
    &CONTEXTS, r
));
wire_value!(Charge, |v, w| w.u8(tag(&CHARGES, v)), |r| untag(
    &CHARGES, r
));
wire_value!(
    Option<UnchargedReason>,
    |v, w| w.u8(v.map_or(0, |x| tag(&REASONS, &x).saturating_add(1))),
    |r| match r.u8()? {
        0 => Ok(None),
        n => REASONS
            .get(usize::from(n - 1))
            .map(|x| Some(*x))
            .ok_or(CodecError::Invalid(0)),
    }
);

/// A list: its length, then each item. An item of type `T` takes at least `T::MIN_BYTES`, so a
/// length beyond what is left is corrupt (and allocates nothing).
impl<T: Wire> Wire for Vec<T> {
    fn put(&self, w: &mut Writer) {
        w.u64(self.len() as u64);
        for item in self {
            item.put(w);
        }
    }
    fn take(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.u64()?;
        if n > (r.remaining() / T::MIN_BYTES) as u64 {
            return Err(CodecError::Invalid(0));
        }
        (0..n).map(|_| T::take(r)).collect()
    }
}

/// A shared value (an event's principal, shared with its request): the value itself.
impl<T: Wire> Wire for Arc<T> {
    const MIN_BYTES: usize = T::MIN_BYTES;
    fn put(&self, w: &mut Writer) {
        T::put(self, w);
    }
    fn take(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        T::take(r).map(Arc::new)
    }
}

/// [`Wire`] for a struct from the list of its fields in wire order (the fields after `rest`
/// are not carried and take the given value when read). A field added to the struct and not
/// listed does not compile.
macro_rules! wire_struct {
    ($ty:ident { $($field:ident),* $(,)? } $(rest { $($dfield:ident: $dval:expr),* })? $(min $min:expr)?) => {
        impl Wire for $ty {
            $(const MIN_BYTES: usize = $min;)?
            fn put(&self, w: &mut Writer) {
                $( self.$field.put(w); )*
            }
            fn take(r: &mut Reader<'_>) -> Result<Self, CodecError> {
                // A struct expression's fields are evaluated in the order written.
                Ok($ty {
                    $( $field: Wire::take(r)?, )*
                    $($( $dfield: $dval, )*)?
                })
            }
        }
    };
}

wire_struct!(Principal {
    org,
    project,
    user,
    key
});
// In the order of `Usage::named_counts` and `CostBreakdown::named_buckets`.
wire_struct!(Usage {
    input_uncached,
    cache_read,
    cache_write_5m,
    cache_write_1h,
    output,
    reasoning,
    input_audio,
    input_image,
    output_audio,
    output_image,
    web_searches,
    service_tier,
    search_context,
});
wire_struct!(CostBreakdown {
    input,
    cache_read,
    cache_write_5m,
    cache_write_1h,
    output,
    reasoning,
    input_audio,
    input_image,
    output_audio,
    output_image,
    web_search,
    total,
});
// The budget id's length, the window (8) and the amount (16).
wire_struct!(BudgetCharge {
    budget,
    window,
    amount
} min 28);
// `id`, `reporter` and `seq` are the sync service's to fill in.
wire_struct!(UsageEvent {
    ts, principal, model, api, usage, cost, price_version, charge, uncharged, status, stream,
    requested_model, soft_warned, denied,
} rest { id: String::new(), reporter: String::new(), seq: 0 });
wire_struct!(Denied {
    budget,
    requests,
    first_ts
});
wire_value!(
    Option<Denied>,
    |v, w| match v {
        None => w.u8(0),
        Some(d) => {
            w.u8(1);
            d.put(w);
        }
    },
    |r| match r.u8()? {
        0 => Ok(None),
        1 => Denied::take(r).map(Some),
        _ => Err(CodecError::Invalid(0)),
    }
);
wire_struct!(QueuedUsage { event, charges });

impl QueuedUsage {
    /// One record's bytes. A queue item is one or more records back to back (workers batch
    /// them: every enqueue wakes Envoy's main thread, so one per request would cost more than
    /// the request's own metering).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        self.encode_into(&mut w);
        w.0
    }

    /// Appends one record to `w`: the format byte, then the fields in the order
    /// [`wire_struct!`] lists them.
    pub fn encode_into(&self, w: &mut Writer) {
        w.u8(QUEUE_FORMAT);
        self.put(w);
    }

    /// Reads a single-record queue item; `id`, `reporter` and `seq` are left for the sync
    /// service to fill.
    pub fn decode(bytes: &[u8]) -> Result<QueuedUsage, CodecError> {
        let mut r = Reader::new(bytes);
        let item = QueuedUsage::read(&mut r)?;
        r.finish()?;
        Ok(item)
    }

    /// Reads every record of a queue item, in order. A corrupt record ends the item (the
    /// records after it cannot be found), so the error comes with what was read before it.
    pub fn decode_all(bytes: &[u8]) -> (Vec<QueuedUsage>, Option<CodecError>) {
        let mut r = Reader::new(bytes);
        let mut items = Vec::new();
        while !r.is_done() {
            match QueuedUsage::read(&mut r) {
                Ok(item) => items.push(item),
                Err(e) => return (items, Some(e)),
            }
        }
        (items, None)
    }

    fn read(r: &mut Reader<'_>) -> Result<QueuedUsage, CodecError> {
        if r.u8()? != QUEUE_FORMAT {
            return Err(CodecError::Invalid(0));
        }
        QueuedUsage::take(r)
    }
}

/// A batch posted and stored, waiting for a snapshot to acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Posted {
    max_seq: u64,
    charges: Vec<BudgetCharge>,
}

/// A call the glue should make now. Snapshot and usage calls carry the reporter secret
/// ([`SyncState::credential`]) once enrolled, the data-plane token before; enrollment always
/// carries the data-plane token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncCall {
    /// `POST` this JSON body (`{"node": …}`) to the enrollment path.
    Enroll {
        /// Request body.
        body: Vec<u8>,
    },
    /// `GET` the snapshot, with `If-None-Match` when an ETag is known.
    FetchSnapshot {
        /// ETag of the snapshot held.
        if_none_match: Option<String>,
    },
    /// `POST` this JSON [`UsageBatch`].
    PostUsage {
        /// Request body.
        body: Vec<u8>,
        /// Events in it.
        events: usize,
    },
}

/// Counters the glue exports as metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// Events dropped because the pending queue was full.
    pub overflow: u64,
    /// Events the control plane refused as invalid (dropped, counted).
    pub rejected: u64,
    /// Failed snapshot, usage or enrollment calls.
    pub failures: u64,
    /// Enrollments after the control plane stopped knowing this reporter.
    pub reenrolled: u64,
    /// Events waiting to be posted.
    pub pending: usize,
}

/// The sync service state.
#[derive(Debug)]
pub struct SyncState {
    node: String,
    /// The enrolled reporter id and its secret; `None` until enrolled.
    identity: Option<Enrollment>,
    /// Bumped at every enrollment: an answer to a call made with an older secret is ignored.
    generation: u32,
    enroll_in_flight: bool,
    enroll_retry_at_ms: u64,
    enroll_failures: u32,
    /// Secrets refused since a batch was last stored: the second and later wait before
    /// enrolling again (a control plane that refuses every fresh secret is not asked each tick).
    refused_in_a_row: u32,
    next_seq: u64,
    max_pending: usize,
    batch_max: usize,
    pending: VecDeque<UsageEvent>,
    pending_charges: VecDeque<Vec<BudgetCharge>>,
    posting: Option<usize>,
    posted: Vec<Posted>,
    snapshot_in_flight: bool,
    etag: Option<String>,
    retry_at_ms: u64,
    consecutive_failures: u32,
    stats: SyncStats,
}

/// Longest wait between retries of a failed post.
const MAX_BACKOFF_MS: u64 = 30_000;

impl SyncState {
    /// A service on Envoy node `node` (which starts the reporter id the control plane mints),
    /// not enrolled yet.
    pub fn new(node: String, max_pending: usize, batch_max: usize) -> SyncState {
        SyncState {
            node,
            identity: None,
            generation: 0,
            enroll_in_flight: false,
            enroll_retry_at_ms: 0,
            enroll_failures: 0,
            refused_in_a_row: 0,
            next_seq: 1,
            max_pending: max_pending.max(1),
            batch_max: batch_max.max(1),
            pending: VecDeque::new(),
            pending_charges: VecDeque::new(),
            posting: None,
            posted: Vec::new(),
            snapshot_in_flight: false,
            etag: None,
            retry_at_ms: 0,
            consecutive_failures: 0,
            stats: SyncStats::default(),
        }
    }

    /// The reporter id, once enrolled.
    pub fn reporter(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.reporter.as_str())
    }

    /// The reporter secret once enrolled (it goes in each usage batch's body, see
    /// [`UsageBatch::reporter_secret`]) and the generation it belongs to (hand it back to
    /// [`SyncState::credential_refused`] when a usage post is refused).
    pub fn credential(&self) -> (Option<&str>, u32) {
        (
            self.identity.as_ref().map(|i| i.secret.as_str()),
            self.generation,
        )
    }

    /// The enrollment call answered with `status` (0: transport failure) and `body`.
    pub fn enroll_answered(
        &mut self,
        status: u32,
        body: &[u8],
        now_ms: u64,
    ) -> Result<&str, String> {
        self.enroll_in_flight = false;
        let parsed = if (200..300).contains(&status) {
            serde_json::from_slice::<Enrollment>(body)
                .map_err(|e| format!("enrollment answer unreadable: {e}"))
                .and_then(|e| {
                    if e.reporter.is_empty() || e.reporter.len() > 200 || e.secret.is_empty() {
                        Err("enrollment answer has an empty or overlong field".to_string())
                    } else {
                        Ok(e)
                    }
                })
        } else {
            Err(format!("enrollment answered {status}"))
        };
        match parsed {
            Ok(e) => {
                self.identity = Some(e);
                self.generation = self.generation.wrapping_add(1);
                self.enroll_failures = 0;
                self.control_plane_answered();
                Ok(self.reporter().unwrap_or_default())
            }
            Err(why) => {
                self.stats.failures = self.stats.failures.saturating_add(1);
                self.enroll_failures = self.enroll_failures.saturating_add(1);
                self.enroll_retry_at_ms = now_ms.saturating_add(backoff_ms(self.enroll_failures));
                Err(why)
            }
        }
    }

    /// A call made with the reporter secret of `generation` was answered 401 or 403: the
    /// control plane does not know this reporter (any more). Forget it, enroll again, and
    /// renumber every pending event under the new id (none of them was stored; see the
    /// module doc). An answer to a call made with an older secret changes nothing. The first
    /// refusal since a batch was stored enrolls again at once (a replaced database); each
    /// further one waits the retry backoff first.
    pub fn credential_refused(&mut self, generation: u32, now_ms: u64) {
        if self.identity.is_none() || generation != self.generation {
            return;
        }
        self.identity = None;
        self.stats.reenrolled = self.stats.reenrolled.saturating_add(1);
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
        if self.refused_in_a_row > 1 {
            self.enroll_retry_at_ms =
                now_ms.saturating_add(backoff_ms(self.refused_in_a_row.saturating_sub(1)));
        }
        self.posting = None;
        self.next_seq = 1;
        for e in &mut self.pending {
            e.reporter.clear();
            e.id.clear();
            e.seq = 0;
        }
    }

    /// Counters.
    pub fn stats(&self) -> SyncStats {
        SyncStats {
            pending: self.pending.len(),
            ..self.stats
        }
    }

    /// Takes one item off the shared queue: numbers it and keeps it for the next batch. When
    /// full, the oldest unposted event is dropped and counted (its spend stays counted
    /// locally: an overcount is the safe side).
    pub fn push(&mut self, item: QueuedUsage) {
        let mut event = item.event;
        // Numbered when it first goes into a batch (`post`).
        event.reporter.clear();
        event.id.clear();
        event.seq = 0;
        self.pending.push_back(event);
        self.pending_charges.push_back(item.charges);
        let in_post = self.posting.unwrap_or(0);
        while self.pending.len() > self.max_pending && self.pending.len() > in_post {
            // Never drop events that are part of the batch being posted.
            if let Some(i) = (in_post < self.pending.len()).then_some(in_post) {
                self.pending.remove(i);
                self.pending_charges.remove(i);
                self.stats.overflow = self.stats.overflow.saturating_add(1);
            }
        }
    }

    /// The calls to make on a timer tick at `now_ms`.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<SyncCall> {
        let mut calls = Vec::new();
        if self.identity.is_none() && !self.enroll_in_flight && now_ms >= self.enroll_retry_at_ms {
            self.enroll_in_flight = true;
            // `{"node": …}` without building a `serde_json::Value` (module size).
            let mut body = b"{\"node\":".to_vec();
            body.extend_from_slice(&serde_json::to_vec(&self.node).unwrap_or_default());
            body.push(b'}');
            calls.push(SyncCall::Enroll { body });
        }
        if !self.snapshot_in_flight {
            self.snapshot_in_flight = true;
            calls.push(SyncCall::FetchSnapshot {
                if_none_match: self.etag.clone(),
            });
        }
        if let Some(post) = self.post(now_ms) {
            calls.push(post);
        }
        calls
    }

    /// After a batch was stored: the next one right away when a full batch is already waiting,
    /// so one Envoy's usage keeps up with more than `batch_max` events per sync interval
    /// (otherwise the pending queue grows until it overflows). Less than a full batch waits
    /// for the next tick.
    pub fn next_full_batch(&mut self, now_ms: u64) -> Option<SyncCall> {
        if self.pending.len() < self.batch_max {
            return None;
        }
        self.post(now_ms)
    }

    /// The next usage batch, unless one is in flight, nothing is pending or a retry waits.
    fn post(&mut self, now_ms: u64) -> Option<SyncCall> {
        if self.posting.is_some() || self.pending.is_empty() || now_ms < self.retry_at_ms {
            return None;
        }
        let identity = self.identity.as_ref()?;
        let (reporter, secret) = (identity.reporter.clone(), identity.secret.clone());
        let n = self.pending.len().min(self.batch_max);
        // Number the events going out for the first time; a retried batch keeps its ids.
        for e in self.pending.iter_mut().take(n) {
            if e.reporter.is_empty() {
                e.reporter.clone_from(&reporter);
                e.seq = self.next_seq;
                e.id = format!("{reporter}-{}", self.next_seq);
                self.next_seq = self.next_seq.saturating_add(1);
            }
        }
        let batch = UsageBatch {
            events: self.pending.iter().take(n).cloned().collect(),
            reporter_secret: Some(secret),
        };
        let body = serde_json::to_vec(&batch).ok()?;
        self.posting = Some(n);
        Some(SyncCall::PostUsage { body, events: n })
    }

    /// The snapshot call failed (transport error or 5xx): try again next tick.
    pub fn snapshot_failed(&mut self) {
        self.snapshot_in_flight = false;
        self.stats.failures = self.stats.failures.saturating_add(1);
    }

    /// The snapshot did not change (304).
    pub fn snapshot_unchanged(&mut self) {
        self.snapshot_in_flight = false;
        self.control_plane_answered();
    }

    /// The control plane is reachable again: a usage post waiting out a backoff goes now.
    fn control_plane_answered(&mut self) {
        self.retry_at_ms = 0;
        self.consecutive_failures = 0;
    }

    /// A new snapshot was stored (after the glue decoded and published it): returns the local
    /// spend it acknowledges for this reporter, summed per budget and window.
    pub fn snapshot_stored(
        &mut self,
        etag: Option<String>,
        reporters: &BTreeMap<String, u64>,
    ) -> Vec<BudgetCharge> {
        self.snapshot_in_flight = false;
        self.control_plane_answered();
        self.etag = etag;
        let Some(me) = self.reporter() else {
            return Vec::new();
        };
        let acked = reporters.get(me).copied().unwrap_or(0);
        let (done, waiting): (Vec<Posted>, Vec<Posted>) = std::mem::take(&mut self.posted)
            .into_iter()
            .partition(|p| p.max_seq <= acked);
        self.posted = waiting;
        sum_charges(done.into_iter().flat_map(|p| p.charges))
    }

    /// The usage post answered with `status` (0 for a transport failure) at `now_ms`.
    pub fn usage_answered(&mut self, status: u32, now_ms: u64) {
        let Some(n) = self.posting.take() else {
            return;
        };
        if matches!(status, 401 | 403) {
            // Not stored: the glue calls `credential_refused`, which renumbers the batch.
            self.stats.failures = self.stats.failures.saturating_add(1);
            return;
        }
        let stored = (200..300).contains(&status);
        // A batch the control plane finds invalid will never be stored: drop it (counted)
        // rather than block every later event behind it.
        let rejected = matches!(status, 400 | 422);
        if stored || rejected {
            let events: Vec<UsageEvent> = self.pending.drain(..n.min(self.pending.len())).collect();
            let charges: Vec<BudgetCharge> = self
                .pending_charges
                .drain(..n.min(self.pending_charges.len()))
                .flatten()
                .collect();
            self.consecutive_failures = 0;
            if stored {
                self.refused_in_a_row = 0;
                let max_seq = events.iter().map(|e| e.seq).max().unwrap_or(0);
                self.posted.push(Posted {
                    max_seq,
                    charges: sum_charges(charges),
                });
            } else {
                self.stats.rejected = self.stats.rejected.saturating_add(events.len() as u64);
            }
            return;
        }
        self.stats.failures = self.stats.failures.saturating_add(1);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.retry_at_ms = now_ms.saturating_add(backoff_ms(self.consecutive_failures));
    }
}

/// The wait before the next attempt after `failures` consecutive failures.
fn backoff_ms(failures: u32) -> u64 {
    250u64
        .saturating_mul(1u64 << failures.min(16))
        .min(MAX_BACKOFF_MS)
}

/// Sums charges per (budget, window).
fn sum_charges(charges: impl IntoIterator<Item = BudgetCharge>) -> Vec<BudgetCharge> {
    let mut sums: BTreeMap<(Arc<str>, i64), Decimal> = BTreeMap::new();
    for c in charges {
        let e = sums.entry((c.budget, c.window)).or_default();
        *e = e.checked_add(c.amount).unwrap_or(Decimal::MAX);
    }
    sums.into_iter()
        .map(|((budget, window), amount)| BudgetCharge {
            budget,
            window,
            amount,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::CostBreakdown;
    use crate::event::Charge;
    use crate::identity::Principal;
    use crate::provider::ApiFormat;
    use crate::usage::Usage;

    /// The codec fuzz target's committed seed (`fuzz/make_seeds.py`, after its selector byte)
    /// is a queue record of the current format, so the fuzzer starts from valid input.
    #[test]
    fn the_committed_fuzz_seed_is_a_current_queue_record() {
        let seed = include_bytes!("../../../fuzz/seeds/codec/queue-item");
        let item = QueuedUsage::decode(seed.get(1..).unwrap_or_default()).unwrap();
        let u = item.event.usage;
        assert_eq!((u.input_audio, u.output_audio, u.web_searches), (40, 20, 2));
        assert_eq!(u.service_tier, ServiceTier::Priority);
        assert_eq!(u.search_context, SearchContext::High);
        assert_eq!(item.event.cost.web_search, Decimal::new(6, 2));
        assert_eq!(
            item.event.requested_model.as_deref(),
            Some("gpt-4o-2024-08-06")
        );
        assert_eq!(item.event.soft_warned, ["bk"]);
        assert_eq!(item.event.denied, None);
        assert_eq!(item.charges.len(), 2);
        assert_eq!(QueuedUsage::decode(&item.encode()).unwrap(), item);
    }

    fn item(cost: i64) -> QueuedUsage {
        let amount = Decimal::new(cost, 2);
        QueuedUsage {
            event: UsageEvent {
                id: String::new(),
                reporter: String::new(),
                seq: 0,
                ts: 1,
                principal: Arc::new(Principal {
                    org: "o".into(),
                    ..Principal::default()
                }),
                model: "m".into(),
                api: ApiFormat::OpenAiChat,
                usage: Usage::default(),
                cost: CostBreakdown {
                    total: amount,
                    ..CostBreakdown::default()
                },
                price_version: 1,
                charge: Charge::Estimate,
                uncharged: None,
                status: 200,
                stream: false,
                requested_model: None,
                soft_warned: Vec::new(),
                denied: None,
            },
            charges: vec![BudgetCharge {
                budget: "b".into(),
                window: 0,
                amount,
            }],
        }
    }

    /// A state enrolled as reporter `r`.
    fn enrolled(max_pending: usize, batch_max: usize) -> SyncState {
        let mut s = SyncState::new("node".into(), max_pending, batch_max);
        s.enroll_answered(201, br#"{"reporter": "r", "secret": "tgr-s"}"#, 0)
            .unwrap();
        s
    }

    fn enroll_call(calls: &[SyncCall]) -> Option<serde_json::Value> {
        calls.iter().find_map(|c| match c {
            SyncCall::Enroll { body } => serde_json::from_slice(body).ok(),
            _ => None,
        })
    }

    #[test]
    fn enrolls_before_the_first_post_and_retries_with_backoff() {
        let mut s = SyncState::new("envoy-1".into(), 100, 10);
        s.push(item(1));
        s.push(item(2));
        let calls = s.on_tick(0);
        assert_eq!(
            enroll_call(&calls),
            Some(serde_json::json!({"node": "envoy-1"}))
        );
        assert!(calls.contains(&SyncCall::FetchSnapshot {
            if_none_match: None
        }));
        assert_eq!(post_events(&calls), None, "no post before enrollment");
        assert_eq!(s.credential(), (None, 0), "the data-plane token until then");
        // The control plane is down: retried with backoff, events kept.
        assert!(s.enroll_answered(0, b"", 0).is_err());
        s.snapshot_failed();
        assert_eq!(enroll_call(&s.on_tick(100)), None, "backing off");
        assert!(
            s.enroll_answered(503, b"", 600).is_err(),
            "an answer without a call in flight is still handled"
        );
        let calls = s.on_tick(60_000);
        assert!(enroll_call(&calls).is_some());
        assert!(
            s.enroll_answered(201, br#"{"reporter": "r"}"#, 60_000)
                .is_err(),
            "no secret: not enrolled"
        );
        let calls = s.on_tick(120_000);
        assert!(enroll_call(&calls).is_some());
        assert_eq!(
            s.enroll_answered(
                201,
                br#"{"reporter": "envoy-1-x", "secret": "tgr-s"}"#,
                120_000
            ),
            Ok("envoy-1-x")
        );
        assert_eq!(s.credential(), (Some("tgr-s"), 1));
        assert!(
            !format!("{s:?}").contains("tgr-s"),
            "the secret never prints"
        );
        let batch = post_body(&s.on_tick(120_001)).unwrap();
        assert_eq!(
            ids(&batch),
            ["envoy-1-x-1", "envoy-1-x-2"],
            "numbered when first posted, under the minted id"
        );
        assert!(batch.events.iter().all(|e| e.reporter == "envoy-1-x"));
    }

    #[test]
    fn a_refused_secret_re_enrolls_and_renumbers_what_was_not_stored() {
        let mut s = enrolled(100, 2);
        for c in 1..=3 {
            s.push(item(c));
        }
        let (_, old_generation) = s.credential();
        assert_eq!(post_events(&s.on_tick(0)), Some(2));
        s.usage_answered(200, 1); // r-1, r-2 stored, waiting for a snapshot
        s.snapshot_unchanged();
        let batch = post_body(&s.on_tick(2)).unwrap();
        assert_eq!(batch.events[0].id, "r-3");
        // The control plane no longer knows `r` (a replaced database).
        s.usage_answered(403, 3);
        s.credential_refused(old_generation, 3);
        assert_eq!(s.reporter(), None);
        assert_eq!(s.stats().reenrolled, 1);
        assert_eq!(s.stats().pending, 1, "nothing lost");
        let calls = s.on_tick(4);
        assert!(enroll_call(&calls).is_some());
        assert_eq!(post_events(&calls), None);
        s.enroll_answered(201, br#"{"reporter": "q", "secret": "tgr-t"}"#, 5)
            .unwrap();
        // A late refusal of a call made with the old secret changes nothing.
        s.credential_refused(old_generation, 5);
        assert_eq!(s.reporter(), Some("q"));
        s.push(item(4));
        s.snapshot_unchanged();
        let batch = post_body(&s.on_tick(6)).unwrap();
        assert_eq!(
            ids(&batch),
            ["q-1", "q-2"],
            "the unstored event and the new one, renumbered under the new id"
        );
        // An acknowledgement of the old reporter is not this one's.
        let acked = s.snapshot_stored(None, &BTreeMap::from([("r".to_string(), 2)]));
        assert!(
            acked.is_empty(),
            "kept locally: an overcount, the safe side"
        );
    }

    #[test]
    fn fresh_secrets_refused_in_a_row_back_off_before_enrolling_again() {
        let mut s = enrolled(100, 10);
        s.push(item(1));
        let mut now = 0;
        let mut enrollments = Vec::new();
        // Every fresh secret refused (a control plane that cannot find what it just
        // enrolled): over a minute of 250 ms ticks, enrollment is asked a few times, not 240.
        while now <= 60_000 {
            let calls = s.on_tick(now);
            if enroll_call(&calls).is_some() {
                enrollments.push(now);
                s.enroll_answered(201, br#"{"reporter": "r", "secret": "tgr-s"}"#, now)
                    .unwrap();
            } else if post_events(&calls).is_some() {
                let (_, generation) = s.credential();
                s.usage_answered(403, now);
                s.credential_refused(generation, now);
            }
            now += 250;
        }
        assert!(
            (4..=12).contains(&enrollments.len()),
            "enrolled at {enrollments:?}"
        );
        let waits: Vec<u64> = enrollments.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            waits.windows(2).all(|w| w[0] <= w[1]),
            "waits grow: {waits:?}"
        );
        assert!(
            waits.iter().all(|w| *w <= MAX_BACKOFF_MS + 1_000),
            "{waits:?}"
        );
        assert_eq!(s.stats().pending, 1, "nothing lost");
        // Once a batch is stored, the next refusal enrolls again at once.
        let calls = s.on_tick(now + 60_000);
        let calls = if enroll_call(&calls).is_some() {
            s.enroll_answered(
                201,
                br#"{"reporter": "r", "secret": "tgr-s"}"#,
                now + 60_000,
            )
            .unwrap();
            s.on_tick(now + 60_250)
        } else {
            calls
        };
        assert_eq!(post_events(&calls), Some(1));
        s.usage_answered(200, now + 60_300);
        s.push(item(2));
        s.snapshot_unchanged();
        let calls = s.on_tick(now + 60_500);
        assert_eq!(post_events(&calls), Some(1));
        let (_, generation) = s.credential();
        s.usage_answered(403, now + 60_600);
        s.credential_refused(generation, now + 60_600);
        assert!(enroll_call(&s.on_tick(now + 60_750)).is_some());
    }

    fn post_events(calls: &[SyncCall]) -> Option<usize> {
        calls.iter().find_map(|c| match c {
            SyncCall::PostUsage { events, .. } => Some(*events),
            _ => None,
        })
    }

    fn post_body(calls: &[SyncCall]) -> Option<UsageBatch> {
        calls.iter().find_map(|c| match c {
            SyncCall::PostUsage { body, .. } => serde_json::from_slice(body).ok(),
            _ => None,
        })
    }

    /// The event ids of a posted batch, in order.
    fn ids(batch: &UsageBatch) -> Vec<&str> {
        batch.events.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn queue_items_round_trip_and_refuse_corruption() {
        let mut q = item(7);
        Arc::make_mut(&mut q.event.principal).user = Some("ü".into());
        q.event.uncharged = Some(UnchargedReason::TooLarge);
        q.event.usage.reasoning = 3;
        q.event.requested_model = Some("gemini-2.0-flash-lite".into());
        let bytes = q.encode();
        assert_eq!(QueuedUsage::decode(&bytes).unwrap(), q);
        for cut in 0..bytes.len() {
            assert!(
                QueuedUsage::decode(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(QueuedUsage::decode(&bad).is_err(), "unknown version");
        bad[0] = QUEUE_FORMAT - 1;
        assert_eq!(
            QueuedUsage::decode(&bad),
            Err(CodecError::Invalid(0)),
            "a record of the previous format is refused, not misread"
        );
        for garbage in [&[QUEUE_FORMAT, 0xff, 0xff, 0xff][..], &[QUEUE_FORMAT; 64]] {
            assert!(QueuedUsage::decode(garbage).is_err());
        }
    }

    /// Money keeps its scale through the queue (`0.0700` stays four places, not `0.07`), and
    /// every count and cost bucket keeps its own slot.
    #[test]
    fn queue_records_keep_every_field_and_decimal_scale_exactly() {
        let mut q = item(7);
        q.event.principal = Arc::new(Principal {
            key: Some("k".into()),
            user: Some("u".into()),
            project: Some("p".into()),
            org: "o".into(),
        });
        q.event.api = ApiFormat::AzureOpenAiResponses;
        // Every count and bucket distinct, set by name (the JSON shape), so a swapped slot shows.
        let mut usage = serde_json::Map::new();
        for (i, (name, _)) in Usage::default().named_counts().into_iter().enumerate() {
            usage.insert(name.into(), (i as u64 + 1).into());
        }
        usage.insert("web_searches".into(), u64::MAX.into());
        usage.insert("service_tier".into(), "flex".into());
        usage.insert("search_context".into(), "low".into());
        q.event.usage = serde_json::from_value(usage.into()).unwrap();
        // Bucket i is 0.0700…: 700 + i at scale 4 + i.
        let mut cost = serde_json::Map::new();
        for (i, (name, _)) in CostBreakdown::default()
            .named_buckets()
            .into_iter()
            .enumerate()
        {
            let scaled = Decimal::new(700 + i as i64, 4 + i as u32);
            cost.insert(name.into(), scaled.to_string().into());
        }
        cost.insert("total".into(), "-0.12340".into());
        q.event.cost = serde_json::from_value(cost.into()).unwrap();
        q.event.price_version = u64::MAX;
        q.event.charge = Charge::Zero;
        q.event.uncharged = Some(UnchargedReason::ALL[10]);
        q.event.status = u16::MAX;
        q.event.stream = true;
        q.event.ts = i64::MIN;
        q.event.soft_warned = vec!["b1".into(), String::new(), "b3".into()];
        q.event.denied = Some(Denied {
            budget: "b9".into(),
            requests: u64::MAX,
            first_ts: i64::MIN + 1,
        });
        q.charges.push(BudgetCharge {
            budget: "b2".into(),
            window: -1,
            amount: Decimal::MAX,
        });
        let back = QueuedUsage::decode(&q.encode()).unwrap();
        assert_eq!(back, q);
        let counts = back.event.usage.named_counts().map(|(_, v)| v);
        assert_eq!(counts, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, u64::MAX]);
        let scales = back.event.cost.named_buckets().map(|(_, v)| v.scale());
        assert_eq!(scales, [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        assert_eq!(back.event.cost.total.to_string(), "-0.12340");
    }

    #[test]
    fn a_queue_item_carries_several_records_and_keeps_those_before_corruption() {
        let records = [item(1), item(2), item(3)];
        let mut w = Writer::default();
        for r in &records {
            r.encode_into(&mut w);
        }
        assert_eq!(QueuedUsage::decode_all(&w.0), (records.to_vec(), None));
        assert!(
            QueuedUsage::decode(&w.0).is_err(),
            "one record, not three, is expected"
        );
        let first_len = records[0].encode().len();
        let mut bad = w.0.clone();
        bad[first_len] = 9; // the second record's version byte
        let (kept, error) = QueuedUsage::decode_all(&bad);
        assert_eq!(kept, records[..1].to_vec());
        assert!(error.is_some());
        assert_eq!(QueuedUsage::decode_all(&[]), (Vec::new(), None));
    }

    #[test]
    fn numbers_posts_and_acks() {
        let mut s = enrolled(100, 2);
        for c in [1, 2, 3] {
            s.push(item(c));
        }
        let calls = s.on_tick(0);
        assert_eq!(
            calls[0],
            SyncCall::FetchSnapshot {
                if_none_match: None
            }
        );
        let SyncCall::PostUsage { body, events: 2 } = &calls[1] else {
            panic!("{calls:?}")
        };
        let batch: UsageBatch = serde_json::from_slice(body).unwrap();
        assert_eq!(ids(&batch), ["r-1", "r-2"]);
        assert_eq!(
            post_events(&s.on_tick(1)),
            None,
            "one post in flight at a time"
        );
        s.usage_answered(200, 2);
        // A snapshot that has not seen seq 2 yet acknowledges nothing.
        let reporters = BTreeMap::from([("r".to_string(), 1)]);
        assert!(s
            .snapshot_stored(Some("\"5\"".into()), &reporters)
            .is_empty());
        let reporters = BTreeMap::from([("r".to_string(), 2)]);
        let acked = s.snapshot_stored(Some("\"6\"".into()), &reporters);
        assert_eq!(
            acked,
            vec![BudgetCharge {
                budget: "b".into(),
                window: 0,
                amount: Decimal::new(3, 2)
            }]
        );
        let calls = s.on_tick(3);
        assert_eq!(
            calls[0],
            SyncCall::FetchSnapshot {
                if_none_match: Some("\"6\"".into())
            }
        );
        assert_eq!(post_events(&calls), Some(1), "the third event goes next");
    }

    #[test]
    fn a_waiting_full_batch_is_posted_without_waiting_for_a_tick() {
        // Batches of 2: with 5 pending, a stored batch is followed at once by the next full
        // one; the last, partial one waits for the tick.
        let mut s = enrolled(100, 2);
        for c in 1..=5 {
            s.push(item(c));
        }
        assert_eq!(post_events(&s.on_tick(0)), Some(2));
        assert_eq!(s.next_full_batch(1), None, "one post in flight at a time");
        s.usage_answered(200, 1);
        let next = s.next_full_batch(1).map(|c| vec![c]).unwrap_or_default();
        assert_eq!(post_events(&next), Some(2));
        s.usage_answered(200, 2);
        assert_eq!(
            s.next_full_batch(2),
            None,
            "one event left: the tick posts it"
        );
        assert_eq!(post_events(&s.on_tick(1_000)), Some(1));
        // A failed post backs off: no immediate retry.
        for c in 6..=9 {
            s.push(item(c));
        }
        s.usage_answered(0, 1_001);
        assert_eq!(s.next_full_batch(1_001), None);
    }

    #[test]
    fn failures_retry_the_same_batch_with_backoff() {
        let mut s = enrolled(100, 10);
        s.push(item(1));
        let first = s.on_tick(0);
        s.usage_answered(0, 0);
        s.snapshot_failed();
        assert_eq!(post_events(&s.on_tick(100)), None, "backing off");
        let again = s.on_tick(10_000);
        assert!(post_body(&first).is_some());
        assert_eq!(
            post_body(&first),
            post_body(&again),
            "same ids: the control plane deduplicates"
        );
        assert_eq!(s.stats().failures, 2);
        // A snapshot answer means the control plane is back: no more waiting.
        s.usage_answered(0, 10_000);
        assert_eq!(post_events(&s.on_tick(10_001)), None, "backing off again");
        s.snapshot_unchanged();
        assert_eq!(post_events(&s.on_tick(10_002)), Some(1), "retried at once");
        s.usage_answered(422, 10_003);
        assert_eq!(s.stats().rejected, 1);
        assert_eq!(s.stats().pending, 0);
    }

    #[test]
    fn overflow_drops_the_oldest_unposted_and_counts() {
        let mut s = enrolled(3, 2);
        s.push(item(1));
        s.push(item(2));
        let _ = s.on_tick(0); // events 1 and 2 being posted
        for c in 3..8 {
            s.push(item(c));
        }
        assert_eq!(s.stats().pending, 3);
        assert_eq!(s.stats().overflow, 4);
        s.usage_answered(200, 1);
        let batch = post_body(&s.on_tick(2)).unwrap();
        assert_eq!(
            batch
                .events
                .iter()
                .map(|e| (e.seq, e.cost.total))
                .collect::<Vec<_>>(),
            [(3, Decimal::new(7, 2))],
            "the cap counts the batch in flight: only the newest survived, numbered next \
             (dropped events never got a number, so no gap)"
        );
    }
}
