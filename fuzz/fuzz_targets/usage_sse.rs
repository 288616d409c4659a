//! Incremental SSE usage, as the filter meters a streamed response: `SseUsage::push` per body
//! chunk Envoy hands over, then `finish` (`http.rs`). Input and checks:
//! `tollgate_fuzz::check_stream` (every split gives the one-chunk outcome; memory bounded by
//! one event).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_core::usage::SseUsage;
use tollgate_fuzz::{check_stream, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fuzz_target!(|data: &[u8]| check_stream::<SseUsage>(data));
