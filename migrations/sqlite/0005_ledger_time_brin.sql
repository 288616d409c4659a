-- 0005 the ledger's time index (SQLite): nothing to change. PostgreSQL keeps it as a BRIN index
-- (see migrations/postgres/0005); SQLite has only b-trees. Kept so that the same number is the
-- same change on both backends.
SELECT 1;
