"""``python -m stasis``: the ``stasis`` command, where its script is not on PATH."""

from stasis.cli import main

main()
