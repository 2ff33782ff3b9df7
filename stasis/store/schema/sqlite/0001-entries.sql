-- Version 1: the entries, and the database's own facts (its schema version and
-- the HMAC secret that credential fingerprints are made with, written by
-- stasis.store._schema when it creates the database).

CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS entries (
    key           BLOB PRIMARY KEY,
    namespace     TEXT NOT NULL DEFAULT '',
    provider      TEXT NOT NULL DEFAULT '',
    model         TEXT,
    method        TEXT NOT NULL,
    path          TEXT NOT NULL,
    status        INTEGER NOT NULL,
    -- Empty since the codec packs the headers with the body; version 1 values
    -- kept them here as JSON.
    headers       BLOB NOT NULL,
    body          BLOB NOT NULL,
    -- The decoded body's length: what a listing shows, without unpacking it.
    body_size     INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens  INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    expires_at    REAL,
    last_hit_at   REAL,
    hit_count     INTEGER NOT NULL DEFAULT 0
);

-- Listings go newest first.
CREATE INDEX IF NOT EXISTS entries_created_at ON entries (created_at);
