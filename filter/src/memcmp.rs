//! `memcmp` for the module, eight bytes per step.
//!
//! Every comparison of strings and byte slices in Rust (`==`, `Ord`, `match` on a name) ends
//! in `memcmp`, and wasi-libc's is musl's byte loop: about fourteen wasm instructions per byte,
//! paid in full for equal names (price-book keys, the price memo, JSON keys, header names).
//! Defined here, the linker takes this one and never pulls libc's (whose `bcmp`, which LLVM
//! does not emit for this target, calls `memcmp` too). `unsafe`: the C signature takes
//! pointers; the bytes are read as slices of the given length, as the caller promises. Never
//! inlined: LTO copied it into its 135 callers (+12.7 KB of module).
#![allow(unsafe_code)]

/// Compares `n` bytes at `a` and `b`: negative, zero or positive as `a` sorts before, with or
/// after `b` (bytes unsigned), as C's `memcmp`.
///
/// # Safety
/// `a` and `b` must each be valid for reads of `n` bytes.
#[cfg(target_family = "wasm")]
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // C lets a caller pass null pointers with `n == 0`; a Rust slice may not have one.
    if n == 0 {
        return 0;
    }
    // SAFETY: the caller's contract (C's `memcmp`), `n` bytes at each non-null pointer.
    let (a, b) = unsafe {
        (
            core::slice::from_raw_parts(a, n),
            core::slice::from_raw_parts(b, n),
        )
    };
    compare(a, b)
}

/// The byte-wise order of two slices of one length, without calling `memcmp` (slices'
/// own comparisons would): big-endian words compare as their bytes do.
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn compare(a: &[u8], b: &[u8]) -> i32 {
    let mut xs = a.chunks_exact(8);
    let mut ys = b.chunks_exact(8);
    for (x, y) in xs.by_ref().zip(ys.by_ref()) {
        let (Ok(x), Ok(y)) = (<[u8; 8]>::try_from(x), <[u8; 8]>::try_from(y)) else {
            break;
        };
        let (x, y) = (u64::from_be_bytes(x), u64::from_be_bytes(y));
        if x != y {
            return if x < y { -1 } else { 1 };
        }
    }
    for (x, y) in xs.remainder().iter().zip(ys.remainder()) {
        if x != y {
            return i32::from(*x) - i32::from(*y);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// The sign of the answer is the slices' order, at every length and offset of a
        /// difference (bytes above 0x7F among them).
        #[test]
        fn orders_as_slices_do(
            common in prop::collection::vec(any::<u8>(), 0..40),
            x in prop::collection::vec(prop_oneof![Just(0u8), Just(0xFFu8), any::<u8>()], 0..20),
            y in prop::collection::vec(prop_oneof![Just(0u8), Just(0xFFu8), any::<u8>()], 0..20),
        ) {
            let n = x.len().min(y.len());
            let a: Vec<u8> = common.iter().chain(x.iter().take(n)).copied().collect();
            let b: Vec<u8> = common.iter().chain(y.iter().take(n)).copied().collect();
            let got = super::compare(&a, &b);
            prop_assert_eq!(got.signum(), a.cmp(&b) as i32);
        }
    }
}
