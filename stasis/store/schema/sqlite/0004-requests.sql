-- Version 4: each entry keeps the request it answers, without its credential
-- (packed like the answer: JSON of the query and the headers that took part in
-- the key, NUL, the body; compressed), for `stasis show`, cassettes and the
-- replay-miss diagnostics; and the key it has in the shared credential scope,
-- which is the key it is exported under. Both are NULL for older entries.

ALTER TABLE entries ADD COLUMN request BLOB;

ALTER TABLE entries ADD COLUMN shared_key BLOB;
