//! Incremental SSE usage, as the filter meters a streamed response: `SseUsage::push` per body
//! chunk Envoy hands over, then `finish` (`http.rs`).
//!
//! Input: `[format selector][max_event_bytes: u16 LE][split count][split offsets: u16 LE each]`
//! then the stream. The same bytes are fed whole (`from_sse`) and cut at the chosen offsets.
//! Checks: no panic; every split gives exactly the outcome of one chunk (usage, completeness,
//! event and error counts); memory stays bounded by one event — the heap never grows by more
//! than `max_event_bytes` plus a small constant, however long the stream, because an oversized
//! event is reported (`oversized_events`, `EventTooLarge`) instead of buffered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_core::usage::{from_sse, SseUsage};
use tollgate_fuzz::{check_usage, format_of, peak_above, start_measure, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Heap the reader may use beyond one event's data: the struct's small buffers (the 32-byte
/// tail of an oversized event), an error message, serde scratch space.
const SLACK: usize = 4096;

struct Input<'a> {
    format_selector: u8,
    max_event_bytes: usize,
    splits: Vec<usize>,
    stream: &'a [u8],
}

fn parse(data: &[u8]) -> Option<Input<'_>> {
    let (&[selector, lo, hi, count], rest) = data.split_first_chunk::<4>()?;
    let count = usize::from(count % 16);
    let (offsets, stream) = rest.split_at_checked(2 * count)?;
    let mut splits: Vec<usize> = offsets
        .chunks_exact(2)
        .map(|p| usize::from(u16::from_le_bytes([p[0], p[1]])) % (stream.len() + 1))
        .collect();
    splits.sort_unstable();
    Some(Input {
        format_selector: selector,
        // At least 16 bytes, so tiny limits (every event oversized) are reachable too.
        max_event_bytes: 16 + usize::from(u16::from_le_bytes([lo, hi])),
        splits,
        stream,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = parse(data) else {
        return;
    };
    let format = format_of(input.format_selector);
    let whole = from_sse(format, input.stream, input.max_event_bytes);
    if let Some(u) = &whole.usage {
        check_usage(u);
    }
    let baseline = start_measure();
    let mut sse = SseUsage::new(format, input.max_event_bytes);
    let mut at = 0;
    for &cut in input.splits.iter().chain([&input.stream.len()]) {
        sse.push(&input.stream[at..cut]);
        at = cut;
    }
    let chunked = sse.finish();
    let peak = peak_above(baseline);
    assert_eq!(
        chunked, whole,
        "chunk splits {:?} change the outcome",
        input.splits
    );
    assert!(
        peak <= input.max_event_bytes + SLACK,
        "reader held {peak} bytes for max_event_bytes {} (stream {} bytes)",
        input.max_event_bytes,
        input.stream.len()
    );
});
