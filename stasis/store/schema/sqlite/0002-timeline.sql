-- Version 2: a streamed answer keeps its timeline (where each event ends and
-- when it arrived), so that it can be replayed as it was recorded.

ALTER TABLE entries ADD COLUMN timeline BLOB;
