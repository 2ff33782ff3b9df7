-- Version 5: cache policy. Each entry says which of its key's answers it is
-- (X-Stasis-Samples) and what it costs in the file; expired and least recently
-- used entries can be found without a scan; and the entries' count and total
-- cost are kept up to date, so that a bound (--max-size, --max-entries) is
-- checked by reading one row.
--
-- stored_size is the entry's packed values plus a fixed overhead per row
-- (stasis.store._rows.ROW_OVERHEAD_BYTES, 320). Rows written before this
-- version (or by another tool) have none: their cost is worked out from the
-- lengths of their values, the same sum, wherever it is needed, instead of
-- rewriting every row of a large cache here. Every "320 + LENGTH(...)" below
-- is that expression (stasis.store._rows.SIZE_SQL).

ALTER TABLE entries ADD COLUMN sample INTEGER NOT NULL DEFAULT 0;

ALTER TABLE entries ADD COLUMN stored_size INTEGER;

-- Pruning reads only the entries that expire; most never do, and are not in it.
CREATE INDEX entries_expires_at ON entries (expires_at) WHERE expires_at IS NOT NULL;

-- Eviction takes the least recently used first: by last hit, else creation.
-- SQLite uses an index on an expression only for that expression exactly.
CREATE INDEX entries_last_used ON entries (COALESCE(last_hit_at, created_at));

CREATE TABLE totals (
    one          INTEGER PRIMARY KEY CHECK (one = 1),
    entry_count  INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL
);

INSERT INTO totals (one, entry_count, stored_bytes)
SELECT 1, COUNT(*), COALESCE(SUM(COALESCE(stored_size, 320 + LENGTH(body) + LENGTH(headers)
    + COALESCE(LENGTH(timeline), 0) + COALESCE(LENGTH(request), 0))), 0)
FROM entries;

-- INSERT OR REPLACE (how stasis stores) removes the row it replaces without
-- firing a delete trigger (recursive_triggers is off): that row is taken off
-- the totals here, before the insert. (A raw client's INSERT OR IGNORE or
-- upsert of an existing key leaves the totals off by that row; stasis makes
-- neither.)
CREATE TRIGGER totals_before_insert BEFORE INSERT ON entries
BEGIN
    UPDATE totals SET
        entry_count = entry_count - 1,
        stored_bytes = stored_bytes - (
            SELECT COALESCE(replaced.stored_size, 320 + LENGTH(replaced.body)
                + LENGTH(replaced.headers) + COALESCE(LENGTH(replaced.timeline), 0)
                + COALESCE(LENGTH(replaced.request), 0))
            FROM entries AS replaced WHERE replaced.key = NEW.key
        )
    WHERE EXISTS (SELECT 1 FROM entries WHERE key = NEW.key);
END;

CREATE TRIGGER totals_after_insert AFTER INSERT ON entries
BEGIN
    UPDATE totals SET
        entry_count = entry_count + 1,
        stored_bytes = stored_bytes + COALESCE(NEW.stored_size, 320 + LENGTH(NEW.body)
            + LENGTH(NEW.headers) + COALESCE(LENGTH(NEW.timeline), 0)
            + COALESCE(LENGTH(NEW.request), 0));
END;

CREATE TRIGGER totals_after_delete AFTER DELETE ON entries
BEGIN
    UPDATE totals SET
        entry_count = entry_count - 1,
        stored_bytes = stored_bytes - COALESCE(OLD.stored_size, 320 + LENGTH(OLD.body)
            + LENGTH(OLD.headers) + COALESCE(LENGTH(OLD.timeline), 0)
            + COALESCE(LENGTH(OLD.request), 0));
END;

-- Counting hits (hit_count, last_hit_at) changes no size: left out, like the
-- change log leaves it out.
CREATE TRIGGER totals_after_update AFTER UPDATE OF stored_size, body, headers, timeline, request
ON entries
BEGIN
    UPDATE totals SET
        stored_bytes = stored_bytes
            - COALESCE(OLD.stored_size, 320 + LENGTH(OLD.body) + LENGTH(OLD.headers)
                + COALESCE(LENGTH(OLD.timeline), 0) + COALESCE(LENGTH(OLD.request), 0))
            + COALESCE(NEW.stored_size, 320 + LENGTH(NEW.body) + LENGTH(NEW.headers)
                + COALESCE(LENGTH(NEW.timeline), 0) + COALESCE(LENGTH(NEW.request), 0));
END;

-- The change log's update trigger, now also for the columns an entry read by
-- a hit carries that version 3 did not have: its shared key (version 4) and
-- its sample. Counting hits is still left out.
DROP TRIGGER changes_after_update;

CREATE TRIGGER changes_after_update AFTER UPDATE OF
    key, namespace, provider, model, method, path, status, headers, body, body_size,
    input_tokens, output_tokens, total_tokens, created_at, expires_at, timeline,
    shared_key, sample
ON entries
BEGIN
    INSERT INTO changes (kind, key, at)
    SELECT 'delete', OLD.key, CAST(strftime('%s', 'now') AS INTEGER)
    WHERE OLD.key IS NOT NEW.key;
    INSERT INTO changes (kind, key, at)
    VALUES ('put', NEW.key, CAST(strftime('%s', 'now') AS INTEGER));
END;
