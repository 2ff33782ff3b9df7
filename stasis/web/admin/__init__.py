"""
The admin API under ``/_stasis/api/`` and the ``/_stasis`` corner it lives in
(docs/admin-api.md): who may use it (:mod:`.access`), how it answers
(:mod:`.answers`), its endpoints (:mod:`.api`) and the routing (:mod:`.pages`).
"""
