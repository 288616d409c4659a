//! Criterion benches of the money engine: cost of one request, a decision over a 4-level
//! chain. Run with `cargo bench -p tollgate-core --bench core`.
fn main() {}
