//! Calendar budget windows: which `[start, end)` a `daily`, `weekly`, `monthly` or `total`
//! budget counts spend in, for any instant, in the budget's IANA timezone.
//!
//! Two halves, because the filter has no timezone database:
//! - [`window`] computes a window from a [`TimeZone`] (seconds east of UTC at an instant). The
//!   control plane calls it with the real tz database (chrono-tz behind this trait); core ships
//!   only [`FixedOffset`].
//! - [`WindowBounds`] is what the snapshot carries per budget: the current window and the next
//!   few boundaries, precomputed by the control plane with [`WindowBounds::compute`]. The filter
//!   picks the window for its `now` with [`window_at`], with no tz logic, so every Envoy flips
//!   at exactly the instant the control plane computed.
//!
//! A local day starts at the first instant whose local time is at or after local midnight:
//! the instant of midnight when it exists, the first instant of the day when a DST gap skips
//! midnight (America/Santiago, America/Havana), the first of the two midnights when a DST
//! overlap repeats it. Weeks start Monday 00:00 local (ISO 8601), months on the 1st 00:00
//! local. Tests: `cargo test -p tollgate-core --lib budget::window` and
//! `cargo test -p tollgate-core --test budget_windows` (real zones via chrono-tz).

use serde::{Deserialize, Serialize};

use super::calendar::{civil_from_days, days_from_civil, days_since_monday, SECONDS_PER_DAY};
use super::Period;

/// A timezone as the window arithmetic needs it: the UTC offset in effect at an instant.
///
/// Implement it for the real tz database where one exists (the control plane wraps
/// `chrono_tz::Tz`); core itself only has [`FixedOffset`].
pub trait TimeZone {
    /// Seconds east of UTC in effect at the UTC instant `utc` (Unix seconds). Offsets are
    /// clamped to less than a day either way, as every real zone's are.
    fn utc_offset_at(&self, utc: i64) -> i32;
}

impl<Z: TimeZone + ?Sized> TimeZone for &Z {
    fn utc_offset_at(&self, utc: i64) -> i32 {
        (**self).utc_offset_at(utc)
    }
}

/// A zone with one constant offset (UTC, or `+05:30` for a budget owner who wants no DST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FixedOffset {
    seconds_east: i32,
}

impl FixedOffset {
    /// UTC.
    pub const UTC: FixedOffset = FixedOffset { seconds_east: 0 };

    /// A zone `seconds_east` seconds east of UTC; `None` unless strictly within ±24 hours.
    pub const fn east(seconds_east: i32) -> Option<FixedOffset> {
        if seconds_east > -MAX_OFFSET_I32 - 1 && seconds_east < MAX_OFFSET_I32 + 1 {
            Some(FixedOffset { seconds_east })
        } else {
            None
        }
    }

    /// Seconds east of UTC.
    pub const fn seconds_east(&self) -> i32 {
        self.seconds_east
    }
}

impl TimeZone for FixedOffset {
    fn utc_offset_at(&self, _utc: i64) -> i32 {
        self.seconds_east
    }
}

/// The largest offset magnitude accepted, in seconds: just under a day, like chrono's
/// `FixedOffset`. Real zones stay within ±15 hours; the bound keeps the search for a local
/// midnight inside one day either side of it.
const MAX_OFFSET_I32: i32 = 86_399;
const MAX_OFFSET: i64 = MAX_OFFSET_I32 as i64;

/// One budget window `[start, end)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// First instant in the window. `i64::MIN` for a `total` budget (the beginning of time).
    pub start: i64,
    /// First instant after the window, i.e. when the budget resets; `None` when it never does
    /// (`total`, or a calendar window ending past the `i64` range).
    pub end: Option<i64>,
}

impl Window {
    /// The window of a `total` budget: all of time.
    pub const ALL_TIME: Window = Window {
        start: i64::MIN,
        end: None,
    };

    /// Whether `t` falls inside `[start, end)`.
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && self.end.is_none_or(|e| t < e)
    }
}

/// The window of `period` in zone `tz` that contains the UTC instant `now`.
///
/// Total for every `i64`: always `start <= now < end`, and for zones whose offset changes at
/// most once in any two days (every zone of the tz database) consecutive windows tile the
/// timeline: `window(start) == window(now)` and `window(end).start == end`.
pub fn window<Z: TimeZone + ?Sized>(period: Period, tz: &Z, now: i64) -> Window {
    if period == Period::Total {
        return Window::ALL_TIME;
    }
    let mut first = period_first_day(period, local_day(tz, now));
    // The local date of `now` names the right period except around a DST overlap that crosses
    // midnight backwards; a step or two fixes that. The bound keeps a pathological `TimeZone`
    // (one that changes offset every second) from looping.
    for _ in 0..8 {
        let start = day_start(tz, first);
        if now < start {
            first = period_first_day(period, first.saturating_sub(1));
            continue;
        }
        let next = next_period_first_day(period, first);
        let end = day_start(tz, next);
        if end <= now && end > start {
            first = next;
            continue;
        }
        return Window {
            start,
            end: (end > now).then_some(end),
        };
    }
    fixed_offset_window(period, tz, now)
}

/// The fallback for a zone the search cannot settle (not a real one): the window under the
/// offset in effect at `now`, which at least contains `now`.
fn fixed_offset_window<Z: TimeZone + ?Sized>(period: Period, tz: &Z, now: i64) -> Window {
    let offset = offset_at(tz, now);
    let first = period_first_day(period, local_day(tz, now));
    let next = next_period_first_day(period, first);
    let start = first
        .checked_mul(SECONDS_PER_DAY)
        .map_or(i64::MIN, |l| l.saturating_sub(offset))
        .min(now);
    let end = next
        .checked_mul(SECONDS_PER_DAY)
        .map(|l| l.saturating_sub(offset))
        .filter(|&e| e > now);
    Window { start, end }
}

fn offset_at<Z: TimeZone + ?Sized>(tz: &Z, utc: i64) -> i64 {
    i64::from(tz.utc_offset_at(utc)).clamp(-MAX_OFFSET, MAX_OFFSET)
}

/// Local seconds (local wall time counted like Unix time) at the UTC instant `utc`.
fn local_seconds<Z: TimeZone + ?Sized>(tz: &Z, utc: i64) -> i64 {
    utc.saturating_add(offset_at(tz, utc))
}

/// The local day number (days since 1970-01-01 local) at the UTC instant `utc`.
fn local_day<Z: TimeZone + ?Sized>(tz: &Z, utc: i64) -> i64 {
    local_seconds(tz, utc).div_euclid(SECONDS_PER_DAY)
}

/// The first local day of the period containing local day `day`.
fn period_first_day(period: Period, day: i64) -> i64 {
    match period {
        Period::Daily | Period::Total => day,
        Period::Weekly => day.saturating_sub(days_since_monday(day)),
        Period::Monthly => {
            let d = civil_from_days(day);
            days_from_civil(d.year, d.month, 1)
        }
    }
}

/// The first local day of the period after the one starting on local day `first`.
fn next_period_first_day(period: Period, first: i64) -> i64 {
    match period {
        Period::Daily | Period::Total => first.saturating_add(1),
        Period::Weekly => first.saturating_add(7),
        Period::Monthly => {
            let d = civil_from_days(first);
            days_from_civil(d.year, d.month.saturating_add(1), 1)
        }
    }
}

/// The UTC instant local day `day` starts: the first instant whose local time is at or after
/// that day's midnight. Saturates at the ends of the `i64` range.
fn day_start<Z: TimeZone + ?Sized>(tz: &Z, day: i64) -> i64 {
    let Some(midnight) = day.checked_mul(SECONDS_PER_DAY) else {
        return if day < 0 { i64::MIN } else { i64::MAX };
    };
    // Every instant whose local time is `midnight` lies within a day of it. With at most one
    // transition in that span, the offsets before and after it are the only candidates; the
    // offset at midnight itself covers the common no-transition case cheaply.
    let before = offset_at(tz, midnight.saturating_sub(SECONDS_PER_DAY));
    let after = offset_at(tz, midnight.saturating_add(SECONDS_PER_DAY));
    let mut first: Option<i64> = None;
    for offset in [before, after] {
        let t = midnight.saturating_sub(offset);
        // Valid when the zone really has that offset at `t`: local midnight happens at `t`.
        if offset_at(tz, t) == offset {
            first = Some(first.map_or(t, |f| f.min(t)));
        }
    }
    if let Some(t) = first {
        return t;
    }
    // Neither candidate is valid: a gap skips midnight. The day starts at the transition, the
    // first instant whose local time is past midnight, found by bisection between the two
    // candidates (local time only rises across a gap).
    let (mut lo, mut hi) = {
        let a = midnight.saturating_sub(before);
        let b = midnight.saturating_sub(after);
        (a.min(b), a.max(b))
    };
    if local_seconds(tz, lo) >= midnight {
        return lo;
    }
    // Invariant: local(lo) < midnight, and the answer is in (lo, hi].
    while hi.saturating_sub(lo) > 1 {
        let mid = lo + (hi - lo) / 2;
        if local_seconds(tz, mid) >= midnight {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The largest number of boundaries a [`WindowBounds`] may carry. A snapshot needs a handful
/// (the current window and the next two or three ends); the cap bounds what a decoder accepts.
pub const MAX_BOUNDARIES: usize = 64;

/// The windows of one budget precomputed by the control plane, carried in the snapshot so the
/// filter needs no tz database.
///
/// `boundaries` strictly increase; window `i` is `[boundaries[i], boundaries[i + 1])`.
/// A `total` budget has no boundaries (one window over all time). Invariants are checked on
/// construction and on deserialization.
///
/// ```json
/// {"period": "monthly", "boundaries": [1735689600, 1738368000, 1740787200, 1743465600]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "WindowBoundsWire")]
pub struct WindowBounds {
    period: Period,
    boundaries: Vec<i64>,
}

/// The unchecked wire form of [`WindowBounds`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowBoundsWire {
    period: Period,
    #[serde(default)]
    boundaries: Vec<i64>,
}

impl TryFrom<WindowBoundsWire> for WindowBounds {
    type Error = WindowBoundsError;

    fn try_from(w: WindowBoundsWire) -> Result<Self, Self::Error> {
        WindowBounds::new(w.period, w.boundaries)
    }
}

/// Why a [`WindowBounds`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowBoundsError {
    /// A `total` budget never resets, so it has no boundaries.
    #[error("a total budget has no window boundaries, got {0}")]
    TotalWithBoundaries(usize),
    /// A calendar budget needs at least the current window's start and end.
    #[error("a {period} budget needs at least 2 window boundaries, got {got}")]
    TooFew {
        /// The budget's period.
        period: Period,
        /// How many were given.
        got: usize,
    },
    /// More than [`MAX_BOUNDARIES`].
    #[error("at most {MAX_BOUNDARIES} window boundaries, got {0}")]
    TooMany(usize),
    /// Boundaries must strictly increase.
    #[error("window boundaries must strictly increase, got {prev} then {next}")]
    NotIncreasing {
        /// The earlier boundary.
        prev: i64,
        /// The boundary that does not come after it.
        next: i64,
    },
}

impl WindowBounds {
    /// Checked constructor: see the type's invariants.
    pub fn new(period: Period, boundaries: Vec<i64>) -> Result<Self, WindowBoundsError> {
        if period == Period::Total {
            if !boundaries.is_empty() {
                return Err(WindowBoundsError::TotalWithBoundaries(boundaries.len()));
            }
        } else if boundaries.len() < 2 {
            return Err(WindowBoundsError::TooFew {
                period,
                got: boundaries.len(),
            });
        }
        if boundaries.len() > MAX_BOUNDARIES {
            return Err(WindowBoundsError::TooMany(boundaries.len()));
        }
        if let Some(pair) = boundaries.windows(2).find(|p| p.first() >= p.get(1)) {
            let prev = pair.first().copied().unwrap_or_default();
            let next = pair.get(1).copied().unwrap_or_default();
            return Err(WindowBoundsError::NotIncreasing { prev, next });
        }
        Ok(WindowBounds { period, boundaries })
    }

    /// The bounds of a `total` budget.
    pub fn total() -> Self {
        WindowBounds {
            period: Period::Total,
            boundaries: Vec::new(),
        }
    }

    /// What the control plane puts in the snapshot: the window containing `now` plus the ends
    /// of the `ahead` windows after it (capped so the result fits [`MAX_BOUNDARIES`]), computed
    /// in `tz` with [`window`]. Two windows ahead cover a snapshot that goes stale across one
    /// reset and the next.
    pub fn compute<Z: TimeZone + ?Sized>(period: Period, tz: &Z, now: i64, ahead: usize) -> Self {
        if period == Period::Total {
            return WindowBounds::total();
        }
        let current = window(period, tz, now);
        let mut boundaries = Vec::with_capacity(ahead.saturating_add(2).min(MAX_BOUNDARIES));
        boundaries.push(current.start);
        let mut end = current.end;
        while let Some(e) = end {
            boundaries.push(e);
            if boundaries.len() >= ahead.saturating_add(2).min(MAX_BOUNDARIES) {
                break;
            }
            // `window(e)` contains `e`, so its end is strictly later: the loop advances.
            end = window(period, tz, e).end;
        }
        if boundaries.len() < 2 {
            // The current window never ends (past the `i64` range): keep the type's invariant
            // with a last boundary no instant reaches.
            boundaries.push(i64::MAX);
        }
        WindowBounds { period, boundaries }
    }

    /// The budget's period.
    pub fn period(&self) -> Period {
        self.period
    }

    /// The precomputed boundaries, strictly increasing (empty for `total`).
    pub fn boundaries(&self) -> &[i64] {
        &self.boundaries
    }

    /// The first instant these bounds no longer cover (`None` for `total`, which never runs
    /// out): the control plane must have sent a fresher snapshot by then.
    pub fn valid_until(&self) -> Option<i64> {
        self.boundaries.last().copied()
    }
}

/// The window containing `now` according to precomputed `bounds`, or `None` when `now` is
/// outside every known window (before the first boundary, or at/after the last one: the
/// snapshot is too stale to say). A `total` budget always has [`Window::ALL_TIME`].
///
/// The snapshot's spend counters belong to one window; when the window here starts later than
/// that one, the budget has reset since the snapshot and its snapshot spend counts as zero.
pub fn window_at(bounds: &WindowBounds, now: i64) -> Option<Window> {
    if bounds.period == Period::Total {
        return Some(Window::ALL_TIME);
    }
    // A handful of boundaries: a linear scan beats a binary search and cannot misbehave.
    bounds.boundaries.windows(2).find_map(|pair| match *pair {
        [start, end] if start <= now && now < end => Some(Window {
            start,
            end: Some(end),
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-03-15 12:00:00 UTC, a Friday.
    const FRI_2024_03_15_NOON: i64 = 1_710_504_000;
    const HOUR: i64 = 3_600;
    const DAY: i64 = SECONDS_PER_DAY;

    fn day(y: i64, m: u32, d: u32) -> i64 {
        days_from_civil(y, m, d) * DAY
    }

    /// A zone with one transition, for DST-shaped tests without a tz database.
    struct OneTransition {
        at: i64,
        before: i32,
        after: i32,
    }

    impl TimeZone for OneTransition {
        fn utc_offset_at(&self, utc: i64) -> i32 {
            if utc < self.at {
                self.before
            } else {
                self.after
            }
        }
    }

    #[test]
    fn utc_windows() {
        let now = FRI_2024_03_15_NOON;
        let tz = FixedOffset::UTC;
        let cases = [
            (Period::Daily, day(2024, 3, 15), day(2024, 3, 16)),
            (Period::Weekly, day(2024, 3, 11), day(2024, 3, 18)),
            (Period::Monthly, day(2024, 3, 1), day(2024, 4, 1)),
        ];
        for (period, start, end) in cases {
            assert_eq!(
                window(period, &tz, now),
                Window {
                    start,
                    end: Some(end)
                },
                "{period}"
            );
        }
        assert_eq!(window(Period::Total, &tz, now), Window::ALL_TIME);
    }

    #[test]
    fn fixed_offset_shifts_midnight() {
        // +05:30: local midnight of 2024-03-15 is 18:30 UTC on the 14th.
        let tz = FixedOffset::east(5 * 3600 + 1800).unwrap();
        let w = window(Period::Daily, &tz, FRI_2024_03_15_NOON);
        assert_eq!(w.start, day(2024, 3, 15) - 5 * HOUR - 1800);
        assert_eq!(w.end, Some(day(2024, 3, 16) - 5 * HOUR - 1800));
        // -08:00 at 03:00 UTC on the 15th is still the 14th locally.
        let tz = FixedOffset::east(-8 * 3600).unwrap();
        let w = window(Period::Daily, &tz, day(2024, 3, 15) + 3 * HOUR);
        assert_eq!(w.start, day(2024, 3, 14) + 8 * HOUR);
    }

    #[test]
    fn fixed_offset_bounds() {
        assert!(FixedOffset::east(86_399).is_some());
        assert!(FixedOffset::east(-86_399).is_some());
        assert!(FixedOffset::east(86_400).is_none());
        assert!(FixedOffset::east(i32::MIN).is_none());
    }

    #[test]
    fn gap_over_midnight_starts_the_day_at_the_transition() {
        // Santiago-like: at local 00:00 (-04) clocks jump to 01:00 (-03).
        let midnight = day(2024, 9, 8);
        let tz = OneTransition {
            at: midnight + 4 * HOUR,
            before: -4 * 3600,
            after: -3 * 3600,
        };
        let w = window(Period::Daily, &tz, midnight + 10 * HOUR);
        assert_eq!(w.start, midnight + 4 * HOUR);
        let prev = window(Period::Daily, &tz, w.start - 1);
        assert_eq!(prev.end, Some(w.start));
    }

    #[test]
    fn repeated_midnight_starts_at_the_first() {
        // Havana-like: at local 01:00 (-04) clocks go back to 00:00 (-05).
        let midnight = day(2024, 11, 3);
        let tz = OneTransition {
            at: midnight + 5 * HOUR,
            before: -4 * 3600,
            after: -5 * 3600,
        };
        let w = window(Period::Daily, &tz, midnight + 5 * HOUR + 10);
        assert_eq!(w.start, midnight + 4 * HOUR);
        assert_eq!(w.end, Some(day(2024, 11, 4) + 5 * HOUR));
    }

    #[test]
    fn overlap_crossing_midnight_backwards() {
        // At local 00:30 (+01) clocks go back to 23:30 (+00): the day starts at the first
        // midnight, and the half hour that reads "yesterday" again still belongs to today.
        let midnight = day(2024, 10, 27);
        let tz = OneTransition {
            at: midnight - HOUR + 1800,
            before: 3600,
            after: 0,
        };
        let start = midnight - HOUR;
        for now in [
            start,
            start + 1800,
            start + 2 * 1800 - 1,
            midnight + 3 * HOUR,
        ] {
            let w = window(Period::Daily, &tz, now);
            assert_eq!(w.start, start, "now {now}");
            assert_eq!(w.end, Some(day(2024, 10, 28)));
        }
        assert_eq!(window(Period::Daily, &tz, start - 1).end, Some(start));
    }

    #[test]
    fn skipped_day_is_never_a_window() {
        // Samoa, 2011-12-29 24:00 (-10) became 2011-12-31 00:00 (+14): no 30 December.
        let jump = day(2011, 12, 30) + 10 * HOUR;
        let tz = OneTransition {
            at: jump,
            before: -10 * 3600,
            after: 14 * 3600,
        };
        let before = window(Period::Daily, &tz, jump - 1);
        assert_eq!(before.end, Some(jump));
        let after = window(Period::Daily, &tz, jump);
        assert_eq!(after.start, jump);
        assert_eq!(after.end, Some(day(2012, 1, 1) - 14 * HOUR));
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let zones = [
            FixedOffset::UTC,
            FixedOffset::east(86_399).unwrap(),
            FixedOffset::east(-86_399).unwrap(),
        ];
        for tz in zones {
            for period in [Period::Daily, Period::Weekly, Period::Monthly] {
                for now in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
                    let w = window(period, &tz, now);
                    assert!(w.contains(now), "{period} {now} {w:?}");
                }
            }
        }
    }

    #[test]
    fn absurd_offsets_are_clamped() {
        struct Wild;
        impl TimeZone for Wild {
            fn utc_offset_at(&self, utc: i64) -> i32 {
                // Changes every second between extremes: no real zone does this.
                if utc % 2 == 0 {
                    i32::MAX
                } else {
                    i32::MIN
                }
            }
        }
        for now in [0, 1, 1_700_000_000, i64::MAX, i64::MIN] {
            for period in [Period::Daily, Period::Weekly, Period::Monthly] {
                assert!(window(period, &Wild, now).contains(now));
            }
        }
    }

    #[test]
    fn bounds_validation() {
        use WindowBoundsError as E;
        assert_eq!(
            WindowBounds::new(Period::Total, vec![1]),
            Err(E::TotalWithBoundaries(1))
        );
        assert_eq!(
            WindowBounds::new(Period::Daily, vec![1]),
            Err(E::TooFew {
                period: Period::Daily,
                got: 1
            })
        );
        assert_eq!(
            WindowBounds::new(Period::Daily, vec![1, 2, 2]),
            Err(E::NotIncreasing { prev: 2, next: 2 })
        );
        assert_eq!(
            WindowBounds::new(Period::Daily, (0..65).collect()),
            Err(E::TooMany(65))
        );
        assert!(WindowBounds::new(Period::Daily, vec![1, 2, 3]).is_ok());
        assert!(WindowBounds::new(Period::Total, vec![]).is_ok());
    }

    #[test]
    fn bounds_serde_round_trip_and_refusal() {
        let b = WindowBounds::compute(Period::Monthly, &FixedOffset::UTC, day(2025, 1, 10), 2);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(
            json,
            r#"{"period":"monthly","boundaries":[1735689600,1738368000,1740787200,1743465600]}"#
        );
        assert_eq!(serde_json::from_str::<WindowBounds>(&json).unwrap(), b);
        let err = serde_json::from_str::<WindowBounds>(r#"{"period":"daily","boundaries":[5,4]}"#)
            .unwrap_err();
        assert!(err.to_string().contains("strictly increase"), "{err}");
        assert!(serde_json::from_str::<WindowBounds>(r#"{"period":"total"}"#).is_ok());
        assert!(serde_json::from_str::<WindowBounds>(
            r#"{"period":"daily","boundaries":[1,2],"tz":"UTC"}"#
        )
        .is_err());
    }

    #[test]
    fn window_at_picks_the_precomputed_window() {
        let tz = FixedOffset::east(3600).unwrap();
        let now = FRI_2024_03_15_NOON;
        let b = WindowBounds::compute(Period::Daily, &tz, now, 2);
        assert_eq!(b.boundaries().len(), 4);
        assert_eq!(window_at(&b, now), Some(window(Period::Daily, &tz, now)));
        let [s, e1, e2, e3] = *b.boundaries() else {
            panic!("four boundaries")
        };
        assert_eq!(window_at(&b, e1 - 1).unwrap().end, Some(e1));
        assert_eq!(window_at(&b, e1).unwrap().start, e1);
        assert_eq!(window_at(&b, e2).unwrap().end, Some(e3));
        assert_eq!(window_at(&b, e3 - 1).unwrap().start, e2);
        assert_eq!(window_at(&b, e3), None, "past the last known boundary");
        assert_eq!(window_at(&b, s - 1), None, "before the first");
        assert_eq!(b.valid_until(), Some(e3));
        assert_eq!(
            window_at(&WindowBounds::total(), now),
            Some(Window::ALL_TIME)
        );
        assert_eq!(WindowBounds::total().valid_until(), None);
    }

    #[test]
    fn compute_caps_and_handles_the_end_of_time() {
        let b = WindowBounds::compute(Period::Daily, &FixedOffset::UTC, 0, 1_000);
        assert_eq!(b.boundaries().len(), MAX_BOUNDARIES);
        let b = WindowBounds::compute(Period::Monthly, &FixedOffset::UTC, i64::MAX - 10, 2);
        assert!(WindowBounds::new(b.period(), b.boundaries().to_vec()).is_ok());
        assert!(window_at(&b, i64::MAX - 10).is_some());
    }
}
