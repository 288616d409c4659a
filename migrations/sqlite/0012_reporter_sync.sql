-- 0012 when each reporter last synced (sqlite). Same change as migrations/postgres/0012.
-- Why: the fleet_stale alert means "an Envoy stopped syncing", but reporters.last_seen moves
-- only when a usage batch arrives, so an idle Envoy that keeps polling its snapshot looked
-- stale after a quiet spell, and one that could no longer fetch snapshots but still posted
-- usage did not. A snapshot poll that names a reporter now moves last_synced_at (at most
-- every 30 s per reporter and replica; see store/reporters.rs), and the stale check reads the
-- later of the two.
ALTER TABLE reporters ADD COLUMN last_synced_at INTEGER;
