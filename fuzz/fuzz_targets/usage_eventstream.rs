//! Incremental AWS event-stream usage (Bedrock's ConverseStream and
//! InvokeModelWithResponseStream), as the filter meters it: `EventStreamUsage::push` per body
//! chunk, then `finish`. Input and checks: `tollgate_fuzz::check_stream` (every split gives
//! the one-chunk outcome; memory bounded by one event). Seeds are whole framed streams
//! (`make_seeds.py`), so mutations reach the headers, payloads and checksums.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_core::usage::EventStreamUsage;
use tollgate_fuzz::{check_stream, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fuzz_target!(|data: &[u8]| check_stream::<EventStreamUsage>(data));
