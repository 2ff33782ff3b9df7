-- Version 7: each entry keeps the text a search looks in (stasis.search): its
-- model, its answer's text and its request's messages, casefolded, at most
-- 64 KiB, written by every put. A search looks for the user's text in it with
-- instr() (never LIKE, whose % and _ would be patterns), so it reads no answer
-- and parses no JSON. NULL for the entries stored before version 7 until the
-- store fills it in (AdbapiStore, when it opens, a few hundred rows a
-- transaction). No trigger logs it: it changes no answer, and the change-log
-- trigger on updates names the columns it watches.

ALTER TABLE entries ADD COLUMN search_text TEXT;

-- The entries still to be filled in, in key order, which the store reads a
-- batch at a time: empty once they are, so a store opening a database whose
-- entries all have their text reads nothing to find that out.
CREATE INDEX entries_unsearchable ON entries (key) WHERE search_text IS NULL;
