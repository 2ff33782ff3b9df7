-- Version 6, the first on PostgreSQL: at once, the schema SQLite reached in six
-- files (schema/sqlite/0001 to 0006 say why each part is there). An empty
-- database applies this file; versions after 6 add files after it, on both
-- engines. stasis.store._schema_postgres runs it whole, in one transaction,
-- under the stasis advisory lock.
--
-- The differences from SQLite: REAL is double precision and BLOB bytea;
-- counts and sizes are bigint; the change feed is LISTEN/NOTIFY instead of a
-- change log table; and the triggers are PL/pgSQL functions.

CREATE TABLE meta (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

CREATE TABLE entries (
    key           bytea PRIMARY KEY,
    namespace     text NOT NULL DEFAULT '',
    provider      text NOT NULL DEFAULT '',
    model         text,
    method        text NOT NULL,
    path          text NOT NULL,
    status        integer NOT NULL,
    -- Empty: the codec packs the headers with the body.
    headers       bytea NOT NULL,
    body          bytea NOT NULL,
    body_size     bigint NOT NULL,
    input_tokens  bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    total_tokens  bigint NOT NULL DEFAULT 0,
    created_at    double precision NOT NULL,
    expires_at    double precision,
    last_hit_at   double precision,
    hit_count     bigint NOT NULL DEFAULT 0,
    timeline      bytea,
    request       bytea,
    shared_key    bytea,
    sample        integer NOT NULL DEFAULT 0,
    stored_size   bigint
);

-- Packed values are deflated already: kept out of line when large, but not
-- compressed a second time.
ALTER TABLE entries
    ALTER COLUMN body SET STORAGE EXTERNAL,
    ALTER COLUMN timeline SET STORAGE EXTERNAL,
    ALTER COLUMN request SET STORAGE EXTERNAL;

-- Listings go newest first, ties broken by key: the index gives that order as it is.
CREATE INDEX entries_created_at ON entries (created_at, key);

-- Pruning reads only the entries that expire.
CREATE INDEX entries_expires_at ON entries (expires_at) WHERE expires_at IS NOT NULL;

-- Eviction takes the least recently used first, by exactly this expression
-- (stasis.store._rows.LAST_USED_SQL).
CREATE INDEX entries_last_used ON entries ((COALESCE(last_hit_at, created_at)));

CREATE TABLE claims (
    key        bytea PRIMARY KEY,
    holder     text NOT NULL,
    -- Epoch seconds by the server's clock, which every daemon shares.
    expires_at double precision NOT NULL
);

-- The entries' count and total stored size, kept by the triggers below, so
-- that a bound (--max-size, --max-entries) is checked by reading one row.
CREATE TABLE totals (
    one          integer PRIMARY KEY CHECK (one = 1),
    entry_count  bigint NOT NULL,
    stored_bytes bigint NOT NULL
);

INSERT INTO totals (one, entry_count, stored_bytes) VALUES (1, 0, 0);

-- An entry's stored size: its stored_size, or for a row without one (written
-- by another tool) the same sum stasis makes (stasis.store._rows.SIZE_SQL).
CREATE FUNCTION stasis_stored_size(entry entries) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(entry.stored_size, 320 + length(entry.body) + length(entry.headers)
        + COALESCE(length(entry.timeline), 0) + COALESCE(length(entry.request), 0))
$$;

-- Keeping the totals up to date row by row would update the one totals row
-- once per entry: a transaction storing or removing thousands (an import, a
-- purge) would leave as many versions of it, each update reading past all
-- the ones before (quadratic: 20,000 entries took seconds, holding up every
-- other writer). So each row's change is added to the transaction's running
-- sums (transaction-local settings, undone with the transaction or a
-- savepoint), and the totals row is updated once, when the transaction
-- commits, by the first of the deferred triggers below (the others find
-- nothing left to add). A statement inside the transaction that reads the
-- totals sees them as they were when it began, which is what stasis reads
-- them for (eviction, before removing anything).
CREATE FUNCTION stasis_pending(name text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(NULLIF(current_setting('stasis.pending_' || name, true), ''), '0')::bigint
$$;

-- An upsert that replaces a row (INSERT ... ON CONFLICT DO UPDATE) fires the
-- update trigger, not the insert one: the count stays, the size moves by the
-- difference.
CREATE FUNCTION stasis_count_totals() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    entries bigint := 0;
    bytes bigint := 0;
BEGIN
    IF TG_OP = 'INSERT' THEN
        entries := 1;
        bytes := stasis_stored_size(NEW);
    ELSIF TG_OP = 'DELETE' THEN
        entries := -1;
        bytes := -stasis_stored_size(OLD);
    ELSE
        bytes := stasis_stored_size(NEW) - stasis_stored_size(OLD);
    END IF;
    PERFORM set_config('stasis.pending_entries', (stasis_pending('entries') + entries)::text, true);
    PERFORM set_config('stasis.pending_bytes', (stasis_pending('bytes') + bytes)::text, true);
    RETURN NULL;
END
$$;

CREATE FUNCTION stasis_apply_totals() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    entries bigint := stasis_pending('entries');
    bytes bigint := stasis_pending('bytes');
BEGIN
    IF entries <> 0 OR bytes <> 0 THEN
        UPDATE totals SET entry_count = entry_count + entries, stored_bytes = stored_bytes + bytes;
        PERFORM set_config('stasis.pending_entries', '0', true);
        PERFORM set_config('stasis.pending_bytes', '0', true);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER totals_after_insert AFTER INSERT ON entries
    FOR EACH ROW EXECUTE FUNCTION stasis_count_totals();

CREATE TRIGGER totals_after_delete AFTER DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION stasis_count_totals();

-- Counting hits (hit_count, last_hit_at) changes no size: left out, here and below.
CREATE TRIGGER totals_after_update AFTER UPDATE OF stored_size, body, headers, timeline, request
    ON entries FOR EACH ROW EXECUTE FUNCTION stasis_count_totals();

CREATE CONSTRAINT TRIGGER totals_at_commit
    AFTER INSERT OR DELETE OR UPDATE OF stored_size, body, headers, timeline, request ON entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION stasis_apply_totals();

-- The change feed: every entry stored or removed, whoever did it (another
-- daemon, a management command, a raw SQL client), is notified on the
-- channel stasis_changes as 'p:<key in hex>' (stored) or 'd:<key in hex>'
-- (removed). PostgreSQL delivers them when the transaction commits, to every
-- connection that LISTENs (stasis.store._notifications), naming the backend
-- that sent them.
CREATE FUNCTION stasis_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.key IS DISTINCT FROM NEW.key) THEN
        PERFORM pg_notify('stasis_changes', 'd:' || encode(OLD.key, 'hex'));
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('stasis_changes', 'p:' || encode(NEW.key, 'hex'));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER changes_after_insert_or_delete AFTER INSERT OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION stasis_notify_change();

-- An update notifies only when something a hit serves or a listing shows
-- changed: counting hits (hit_count, last_hit_at) happens every second on a
-- busy daemon and changes no answer, so it must not evict anything anywhere.
-- The cheap columns come first: a replacement almost always differs in
-- created_at, and the comparison stops there, before the bodies.
CREATE TRIGGER changes_after_update AFTER UPDATE ON entries
    FOR EACH ROW
    WHEN ((OLD.key, OLD.created_at, OLD.expires_at, OLD.status, OLD.namespace, OLD.provider,
           OLD.model, OLD.method, OLD.path, OLD.body_size, OLD.input_tokens, OLD.output_tokens,
           OLD.total_tokens, OLD.sample, OLD.stored_size, OLD.shared_key, OLD.headers,
           OLD.timeline, OLD.request, OLD.body)
          IS DISTINCT FROM
          (NEW.key, NEW.created_at, NEW.expires_at, NEW.status, NEW.namespace, NEW.provider,
           NEW.model, NEW.method, NEW.path, NEW.body_size, NEW.input_tokens, NEW.output_tokens,
           NEW.total_tokens, NEW.sample, NEW.stored_size, NEW.shared_key, NEW.headers,
           NEW.timeline, NEW.request, NEW.body))
    EXECUTE FUNCTION stasis_notify_change();
