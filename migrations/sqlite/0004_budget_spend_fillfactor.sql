-- 0004 spend counters' fill factor (SQLite): nothing to change. PostgreSQL leaves room on the
-- counters' pages for in-place updates (see migrations/postgres/0004); SQLite rewrites a row in
-- place in its b-tree already and has no fill factor. Kept so that the same number is the same
-- change on both backends.
SELECT 1;
