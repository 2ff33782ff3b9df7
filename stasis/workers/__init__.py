"""
``--workers N``: N processes serving one listening socket and one cache.

The daemon's own process becomes a supervisor
(:mod:`stasis.workers.supervisor`): it binds the socket and starts N worker
processes (:mod:`stasis.workers.worker`), each told its seat
(:mod:`stasis.workers.seat`): the settings, the socket to adopt, its slot.
They share the cache through the database (every worker's store is marked
shared, so no in-memory layer answers "absent" for a key another worker may
have stored) and the request counters through a small shared memory file
(:mod:`stasis.workers.tally`), so ``/stats`` adds up every worker. A worker
that dies is replaced (:mod:`stasis.workers.restarts`); SIGTERM drains them all.
"""
