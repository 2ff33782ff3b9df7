-- Version 6: claims. When several processes share the database (workers, or
-- daemons on one file), identical concurrent misses make one upstream call:
-- the process whose claim on the key is live fetches, and the others wait for
-- its entry. A claim is renewed while its fetch lasts and lapses at
-- expires_at (POSIX seconds) when its holder stops renewing it, say because
-- it died. No trigger logs claims: a claim changes no answer.

CREATE TABLE claims (
    key        BLOB PRIMARY KEY,
    -- Which process holds it: a random name each engine makes when it starts.
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL
);
