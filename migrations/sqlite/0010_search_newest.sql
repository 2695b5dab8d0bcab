-- Search ranks only the newest matches of a query (src/store/search.rs; on PostgreSQL this
-- migration adds what that needs). FTS5 already returns matches newest first (by rowid) and
-- stops at a limit: nothing to change here.
SELECT 1;
