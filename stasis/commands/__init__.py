"""
The management commands (``stasis ls``, ``show``, ``rm``, ``purge``, ``prune``,
``stats``, ``export``, ``import``): small programs over the store's interface.

Each works through :class:`~stasis.store.Store` and nothing else (no SQL of
its own, no copy of the store's logic), so it sees and changes exactly what
the daemon does, and may run while a daemon serves the same database: every
change it makes reaches the daemon through the store's change log.
"""

from __future__ import annotations

from typing import Any

from stasis.commands._command import Command, CommandError, Console
from stasis.commands._runner import run_command
from stasis.commands.cassettes import EXPORT, IMPORT
from stasis.commands.ls import LS
from stasis.commands.prune import PRUNE
from stasis.commands.purge import PURGE
from stasis.commands.rm import RM
from stasis.commands.show import SHOW
from stasis.commands.stats import STATS

__all__ = ["COMMANDS", "Command", "CommandError", "Console", "by_name", "run_command"]

#: In the order ``stasis --help`` lists them.
COMMANDS: tuple[Command[Any], ...] = (LS, SHOW, RM, PURGE, PRUNE, STATS, EXPORT, IMPORT)


def by_name(name: str) -> Command[Any]:
    """The command called ``name``; ``KeyError`` for an unknown one."""
    for command in COMMANDS:
        if command.name == name:
            return command
    raise KeyError(name)
