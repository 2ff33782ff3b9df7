"""
stasis's benchmark harness: ``python -m bench`` from the repository root.

Everything runs on loopback against processes the harness starts itself (a
fake upstream, a bare twisted.web "floor", stasis daemons) and measures them
with wrk, a real keep-alive load generator, so the numbers describe the daemon
a user runs, not an in-process shortcut. See ``bench/README.md``.
"""
