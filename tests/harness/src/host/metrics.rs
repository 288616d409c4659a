//! Metrics (spec, "Metrics":
//! <https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#metrics>).
//!
//! As Envoy's `Context::defineMetric` and friends: a metric id carries its type in its two
//! low bits; values live in the process-wide stats store by name, so two workers defining
//! the same name add to one counter. A counter only grows (`proxy_increment_metric` with a
//! delta <= 0 is `BAD_ARGUMENT`, `proxy_record_metric` adds); a gauge is set or moved; a
//! histogram records samples and cannot be read back (`BAD_ARGUMENT`).

use wasmtime::{Caller, Linker};

use super::abi::{MetricType, Status};
use super::{memory, HostError, HostState, Metric};

/// Low bits of a metric id holding its type.
const TYPE_MASK: u32 = 0x3;

/// Registers the metric imports.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    import!(linker, "proxy_define_metric" => define(kind, name_data, name_size, return_id));
    import!(linker, "proxy_increment_metric" => increment(id, delta: i64));
    import!(linker, "proxy_record_metric" => record(id, value: u64));
    import!(linker, "proxy_get_metric" => get(id, return_value));
    Ok(())
}

/// `proxy_define_metric`.
fn define(
    caller: &mut Caller<'_, HostState>,
    kind: u32,
    name_data: u32,
    name_size: u32,
    return_id: u32,
) -> Result<(), HostError> {
    let kind = MetricType::try_from(kind).map_err(|_| Status::BadArgument)?;
    let name = memory::read_string(caller, name_data, name_size)?;
    let state = caller.data_mut();
    let id = (state.next_metric << 2) | kind as u32;
    state.next_metric = state.next_metric.wrapping_add(1);
    state
        .process()
        .metrics
        .entry(name.clone())
        .or_insert_with(|| Metric {
            kind,
            value: 0,
            samples: Vec::new(),
        });
    state.metric_ids.insert(id, (name, kind));
    memory::write_u32(caller, return_id, id)?;
    Ok(())
}

/// Looks a metric id up: `NOT_FOUND` when this VM never defined it.
fn lookup(state: &HostState, id: u32) -> Result<(String, MetricType), Status> {
    let (name, kind) = state.metric_ids.get(&id).cloned().ok_or(Status::NotFound)?;
    debug_assert_eq!(id & TYPE_MASK, kind as u32);
    Ok((name, kind))
}

/// Applies `change` to the named metric and notes it in the journal.
fn update(
    state: &mut HostState,
    name: String,
    change: impl FnOnce(&mut Metric) -> Result<(), Status>,
) -> Result<(), Status> {
    {
        let mut process = state.process();
        let metric = process.metrics.get_mut(&name).ok_or(Status::NotFound)?;
        change(metric)?;
    }
    if !state.journal.metrics.contains(&name) {
        state.journal.metrics.push(name);
    }
    Ok(())
}

/// `proxy_increment_metric`.
fn increment(caller: &mut Caller<'_, HostState>, id: u32, delta: i64) -> Result<(), HostError> {
    let state = caller.data_mut();
    let (name, kind) = lookup(state, id)?;
    update(state, name, |metric| match kind {
        MetricType::Counter if delta > 0 => {
            metric.value = metric.value.saturating_add(delta.unsigned_abs());
            Ok(())
        }
        MetricType::Gauge => {
            metric.value = if delta >= 0 {
                metric.value.saturating_add(delta.unsigned_abs())
            } else {
                metric.value.saturating_sub(delta.unsigned_abs())
            };
            Ok(())
        }
        MetricType::Counter | MetricType::Histogram => Err(Status::BadArgument),
    })?;
    Ok(())
}

/// `proxy_record_metric`.
fn record(caller: &mut Caller<'_, HostState>, id: u32, value: u64) -> Result<(), HostError> {
    let state = caller.data_mut();
    let (name, kind) = lookup(state, id)?;
    update(state, name, |metric| {
        match kind {
            MetricType::Counter => metric.value = metric.value.saturating_add(value),
            MetricType::Gauge => metric.value = value,
            MetricType::Histogram => metric.samples.push(value),
        }
        Ok(())
    })?;
    Ok(())
}

/// `proxy_get_metric`.
fn get(caller: &mut Caller<'_, HostState>, id: u32, return_value: u32) -> Result<(), HostError> {
    let (name, kind) = lookup(caller.data(), id)?;
    if kind == MetricType::Histogram {
        return Err(Status::BadArgument.into());
    }
    let value = caller
        .data()
        .process()
        .metrics
        .get(&name)
        .map(|m| m.value)
        .ok_or(Status::NotFound)?;
    memory::write_u64(caller, return_value, value)?;
    Ok(())
}
