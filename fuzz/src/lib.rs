//! What the fuzz targets share: how an input byte picks a provider format, the invariants
//! every decoded usage and price must keep, and a counting allocator for the SSE memory bound.
//!
//! The targets (`fuzz_targets/*.rs`) call tollgate-core's public entry points the way the
//! filter (`filter/src/http.rs`, `root.rs`, `service.rs`) and the control plane call them.
//! Run them with `bash scripts/fuzz.sh [SECONDS_PER_TARGET]`; see `fuzz/README.md`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rust_decimal::Decimal;
use tollgate_core::cost::{cost, CostBreakdown};
use tollgate_core::pricing::{
    EffectiveRates, ModelPrice, Rates, SearchContext, ServiceTier, ThresholdTier,
};
use tollgate_core::provider::{ApiFormat, APIS};
use tollgate_core::usage::{Usage, MAX_TOKENS};

/// The format a selector byte names: every API the filter meters (`provider::APIS`), by
/// `byte % APIS.len()`.
pub fn format_of(selector: u8) -> ApiFormat {
    APIS[usize::from(selector) % APIS.len()].format()
}

/// The selector byte of `format` (for writing seeds).
pub fn selector_of(format: ApiFormat) -> u8 {
    APIS.iter().position(|a| a.format() == format).unwrap_or(0) as u8
}

/// Splits an input into its first byte (a selector) and the rest.
pub fn split_selector(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(s, rest)| (*s, rest))
}

/// A price with every kind of rate and a long-context tier, so each usage bucket is priced.
pub fn sample_price() -> ModelPrice {
    let per_token = |micro: i64| Decimal::new(micro, 6) / Decimal::from(1_000_000);
    ModelPrice {
        rates: Rates {
            input: per_token(2_500_000),
            output: per_token(10_000_000),
            cache_read: Some(per_token(1_250_000)),
            cache_write_5m: Some(per_token(3_125_000)),
            cache_write_1h: Some(per_token(5_000_000)),
            reasoning: Some(per_token(12_000_000)),
        },
        tiers: vec![ThresholdTier {
            above_prompt_tokens: 200_000,
            inclusive: false,
            input: per_token(5_000_000),
            output: Some(per_token(15_000_000)),
            cache_read: None,
            cache_write_5m: None,
            cache_write_1h: None,
        }],
        ..ModelPrice::default()
    }
}

/// What a usage read from any response must satisfy: reasoning is part of output, and no
/// bucket exceeds what a few fields of at most `MAX_TOKENS` can add up to.
pub fn check_usage(u: &Usage) {
    assert!(u.reasoning <= u.output, "reasoning above output: {u:?}");
    for v in [
        u.input_uncached,
        u.cache_read,
        u.cache_write_5m,
        u.cache_write_1h,
        u.output,
    ] {
        assert!(v <= 2 * MAX_TOKENS, "token count out of range: {u:?}");
    }
}

fn non_negative(d: Decimal) -> bool {
    !d.is_sign_negative() || d.is_zero()
}

/// Prices `u` with `price` and checks the breakdown: no bucket negative, `total` the exact sum.
/// An overflow error is allowed (absurd usage × rate); a panic or a wrong sum is not.
pub fn check_cost(price: &ModelPrice, u: &Usage) -> Option<CostBreakdown> {
    let c = cost(price, u).ok()?;
    let buckets = c.buckets();
    for b in buckets.iter().chain([&c.total]) {
        assert!(non_negative(*b), "negative cost {c:?} for {u:?}");
    }
    let sum = buckets
        .iter()
        .try_fold(Decimal::ZERO, |a, b| a.checked_add(*b));
    assert_eq!(sum, Some(c.total), "total is not the sum of the buckets");
    Some(c)
}

/// Every rate of `r` is at least zero.
pub fn check_rates(r: &EffectiveRates) {
    assert!(
        r.all().into_iter().all(non_negative),
        "negative rate in {r:?}"
    );
}

/// Prompt sizes where a price can change: zero, every tier threshold and range bound and
/// their neighbours, and the extremes.
pub fn prompt_sizes(price: &ModelPrice) -> Vec<u64> {
    let mut sizes = vec![0, 1, u64::MAX];
    let edges = price
        .tiers
        .iter()
        .map(|t| t.above_prompt_tokens)
        .chain(price.ranges.iter().flat_map(|r| [r.from, r.to]));
    for e in edges {
        sizes.extend([e.saturating_sub(1), e, e.saturating_add(1)]);
    }
    sizes
}

/// The invariants of a price the filter bills with: no negative rate at any prompt size, and
/// `max_rates` (what worst-case estimates use) never below the rate that actually bills.
pub fn check_price(price: &ModelPrice) {
    let max = price.max_rates();
    check_rates(&max);
    for p in prompt_sizes(price) {
        let r = price.rates_for(p);
        check_rates(&r);
        let pairs = r.all().into_iter().zip(max.all());
        for (rate, ceiling) in pairs {
            assert!(
                rate <= ceiling,
                "rate at {p} prompt tokens above max_rates: {r:?} vs {max:?}"
            );
        }
    }
}

/// Usages that reach every bucket of a price, at sizes around its tier edges, in every
/// service tier the price has.
pub fn sample_usages(price: &ModelPrice) -> Vec<Usage> {
    let tiers = std::iter::once(ServiceTier::Standard).chain(price.service_tiers.keys().copied());
    tiers
        .flat_map(|tier| {
            prompt_sizes(price).into_iter().map(move |p| {
                let p = p.min(MAX_TOKENS);
                Usage {
                    input_uncached: p / 2,
                    cache_read: p / 4,
                    cache_write_5m: p / 8,
                    cache_write_1h: p - p / 2 - p / 4 - p / 8,
                    output: 1_000,
                    reasoning: 400,
                    input_audio: p / 8,
                    input_image: p / 16,
                    output_audio: 200,
                    output_image: 100,
                    web_searches: 3,
                    search_context: SearchContext::High,
                    service_tier: tier,
                }
            })
        })
        .collect()
}

/// A global allocator that counts live bytes and their peak, to check a memory bound from the
/// outside (the SSE reader must keep at most one event, whatever the stream's length).
pub struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// The only unsafe code of the crate: forwarding to the system allocator is what a counting
// allocator is; libFuzzer's own (C++) allocations do not pass through it.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grow(new_size);
        }
        p
    }
}

fn grow(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

/// Starts a measurement: the peak is reset to the bytes live now, which are returned.
pub fn start_measure() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

/// Most bytes live at once since [`start_measure`] returned `baseline`, above it.
pub fn peak_above(baseline: usize) -> usize {
    PEAK.load(Ordering::Relaxed).saturating_sub(baseline)
}

/// A reader of a streamed answer as the filter feeds it: chunk by chunk, then `finish`.
pub trait StreamReader {
    fn start(format: ApiFormat, max_event_bytes: usize) -> Self;
    fn feed(&mut self, chunk: &[u8]);
    fn end(self) -> tollgate_core::usage::StreamOutcome;
}

/// Both framings' readers have the same three calls.
macro_rules! stream_reader {
    ($($reader:ty),*) => {$(
        impl StreamReader for $reader {
            fn start(format: ApiFormat, max_event_bytes: usize) -> Self {
                Self::new(format, max_event_bytes)
            }
            fn feed(&mut self, chunk: &[u8]) {
                self.push(chunk);
            }
            fn end(self) -> tollgate_core::usage::StreamOutcome {
                self.finish()
            }
        }
    )*};
}

stream_reader!(
    tollgate_core::usage::SseUsage,
    tollgate_core::usage::EventStreamUsage
);

/// Heap a stream reader may use beyond one event's data: its small buffers (the 32-byte tail
/// of an oversized SSE event, an event stream's headers, at most 1 KiB), an error message,
/// serde scratch space.
const STREAM_SLACK: usize = 4096;

/// The stream targets' input: `[format selector][max_event_bytes: u16 LE][split count]
/// [split offsets: u16 LE each]` then the stream. Fed whole, and cut at the offsets: every
/// split must give exactly the outcome of one chunk (usage, completeness, event and error
/// counts), and the heap must never grow past one event (`max_event_bytes`) plus a small
/// constant however long the stream, because an oversized event is reported
/// (`oversized_events`, `EventTooLarge`) instead of buffered.
pub fn check_stream<R: StreamReader>(data: &[u8]) {
    let Some((&[selector, lo, hi, count], rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let count = usize::from(count % 16);
    let Some((offsets, stream)) = rest.split_at_checked(2 * count) else {
        return;
    };
    let mut splits: Vec<usize> = offsets
        .chunks_exact(2)
        .map(|p| usize::from(u16::from_le_bytes([p[0], p[1]])) % (stream.len() + 1))
        .collect();
    splits.sort_unstable();
    // At least 16 bytes, so tiny limits (every event oversized) are reachable too.
    let max_event_bytes = 16 + usize::from(u16::from_le_bytes([lo, hi]));
    let format = format_of(selector);
    let mut one = R::start(format, max_event_bytes);
    one.feed(stream);
    let whole = one.end();
    if let Some(u) = &whole.usage {
        check_usage(u);
    }
    let baseline = start_measure();
    let mut reader = R::start(format, max_event_bytes);
    let mut at = 0;
    for &cut in splits.iter().chain([&stream.len()]) {
        reader.feed(&stream[at..cut]);
        at = cut;
    }
    let chunked = reader.end();
    let peak = peak_above(baseline);
    assert_eq!(chunked, whole, "chunk splits {splits:?} change the outcome");
    assert!(
        peak <= max_event_bytes + STREAM_SLACK,
        "reader held {peak} bytes for max_event_bytes {max_event_bytes} (stream {} bytes)",
        stream.len()
    );
}
