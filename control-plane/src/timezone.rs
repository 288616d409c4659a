//! IANA timezones for budget windows: [`Zone`] wraps `chrono_tz::Tz` behind tollgate-core's
//! [`TimeZone`] trait, so the control plane computes windows with the real tz database and the
//! filter, which has none, reads the precomputed bounds from the snapshot.
//!
//! A newtype because neither the trait nor `Tz` is ours (Rust's orphan rule).

use chrono::{Offset, TimeZone as _};
use tollgate_core::budget::TimeZone;

/// A validated IANA timezone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(pub chrono_tz::Tz);

impl Zone {
    /// UTC.
    pub const UTC: Zone = Zone(chrono_tz::UTC);

    /// Parses an IANA name (`Europe/Paris`, `UTC`); the error says what was given.
    pub fn parse(name: &str) -> Result<Zone, String> {
        name.parse::<chrono_tz::Tz>()
            .map(Zone)
            .map_err(|_| format!("{name:?} is not an IANA timezone (e.g. UTC, Europe/Paris)"))
    }

    /// The canonical name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl TimeZone for Zone {
    fn utc_offset_at(&self, utc: i64) -> i32 {
        // Outside chrono's range (±262,000 years) no zone has data anyway: UTC.
        chrono::DateTime::from_timestamp(utc, 0).map_or(0, |dt| {
            self.0
                .offset_from_utc_datetime(&dt.naive_utc())
                .fix()
                .local_minus_utc()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tollgate_core::budget::{window, Period};

    #[test]
    fn paris_month_starts_at_local_midnight() {
        let paris = Zone::parse("Europe/Paris").unwrap();
        // 2024-03-15 12:00 UTC; March starts 2024-02-29 23:00 UTC (UTC+1), April at
        // 2024-03-31 22:00 UTC (UTC+2 after the DST change).
        let w = window(Period::Monthly, &paris, 1_710_504_000);
        assert_eq!(w.start, 1_709_247_600);
        assert_eq!(w.end, Some(1_711_922_400));
        assert!(Zone::parse("Mars/Olympus").is_err());
        assert_eq!(Zone::UTC.utc_offset_at(i64::MAX), 0);
    }
}
