"""``python -m stasis.workers``: one worker process (see :mod:`stasis.workers.worker`)."""

from stasis.workers.worker import main

main()
