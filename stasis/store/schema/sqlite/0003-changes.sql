-- Version 3: a log of the keys whose entries changed, written by triggers, so
-- that every process with the database open (daemons, management commands)
-- learns within a second exactly which keys another process stored or removed,
-- whatever wrote them: stasis, an older stasis, or a raw SQL client.
--
-- Readers remember the last seq they read; AUTOINCREMENT keeps seqs rising even
-- after the log is trimmed empty, so a reader can tell rows it missed (trimmed
-- before it read them) from no rows at all. Rows are trimmed after about five
-- minutes by whichever daemon holds the database. No index beyond the seq:
-- rows are read and trimmed in seq order, which is also time order.

CREATE TABLE changes (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    -- 'put' (stored, new or replacing) or 'delete' (removed, by any means)
    kind TEXT NOT NULL,
    key  BLOB NOT NULL,
    -- POSIX seconds when logged: what trimming goes by
    at   INTEGER NOT NULL
);

CREATE TRIGGER changes_after_insert AFTER INSERT ON entries
BEGIN
    INSERT INTO changes (kind, key, at)
    VALUES ('put', NEW.key, CAST(strftime('%s', 'now') AS INTEGER));
END;

-- Not fired for the row an INSERT OR REPLACE replaces (recursive_triggers is
-- off): that replacement is logged once, as the insert's 'put'.
CREATE TRIGGER changes_after_delete AFTER DELETE ON entries
BEGIN
    INSERT INTO changes (kind, key, at)
    VALUES ('delete', OLD.key, CAST(strftime('%s', 'now') AS INTEGER));
END;

-- An update of anything a hit serves or a listing shows. Counting hits
-- (hit_count, last_hit_at) is left out on purpose: it happens every second on a
-- busy daemon and changes no answer, so it must not evict anything anywhere.
CREATE TRIGGER changes_after_update AFTER UPDATE OF
    key, namespace, provider, model, method, path, status, headers, body, body_size,
    input_tokens, output_tokens, total_tokens, created_at, expires_at, timeline
ON entries
BEGIN
    INSERT INTO changes (kind, key, at)
    SELECT 'delete', OLD.key, CAST(strftime('%s', 'now') AS INTEGER)
    WHERE OLD.key IS NOT NEW.key;
    INSERT INTO changes (kind, key, at)
    VALUES ('put', NEW.key, CAST(strftime('%s', 'now') AS INTEGER));
END;
