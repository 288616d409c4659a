//! `tollgate-load`: what a filter worker decodes rarely, in a crate of its own built for size
//! (`opt-level = "z"`, the workspace's `Cargo.toml`): its configuration, once, and a snapshot,
//! when the sync service publishes one.
//!
//! Why a crate: a crate's opt-level applies to the code generated *in* it, and serde's
//! decoders are generic, so they are generated where they are called. The decoders in
//! `tollgate-core` that these functions call are `#[inline]`: their code, serde's with it, is
//! generated here, at "z", instead of in the filter crate or in core, both built for speed
//! (the request path). That is what lets the filter crate be built at opt-level 2 inside the
//! module's 600 KB budget (BENCHMARKS.md, issue 17). `#[inline(never)]` keeps the link-time
//! optimizer from pulling these cold bodies back into their callers.

use tollgate_core::config::{Config, ConfigError, Env};
use tollgate_core::snapshot::sections::Manifest;
use tollgate_core::snapshot::{SnapshotError, SnapshotIndex};

/// The plugin configuration, parsed and validated ([`Config::parse_with_env`]).
#[inline(never)]
pub fn configuration(bytes: &[u8], env: Env<'_>) -> Result<Config, ConfigError> {
    Config::parse_with_env(bytes, env)
}

/// The snapshot a manifest describes, each section read through `read` unless `previous`
/// holds it already ([`SnapshotIndex::from_sections`]).
#[inline(never)]
pub fn snapshot(
    manifest: Manifest,
    previous: Option<&SnapshotIndex>,
    read: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
) -> Result<SnapshotIndex, SnapshotError> {
    SnapshotIndex::from_sections(manifest, previous, read)
}

/// The published manifest ([`Manifest::decode`]).
#[inline(never)]
pub fn manifest(bytes: &[u8]) -> Option<Manifest> {
    Manifest::decode(bytes)
}
