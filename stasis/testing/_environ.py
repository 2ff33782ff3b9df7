"""
Setting environment variables for a while and putting back what was there.

The session points the SDKs' base-URL variables at the daemon, and a marked
test points them at a directive-prefix URL on top of that; both must leave
the environment exactly as they found it, a variable that was unset included.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from attrs import define, field

__all__ = ["EnvironmentPatch"]


@define
class EnvironmentPatch:
    """
    Variables set by :meth:`apply` and put back by :meth:`restore`.

    Patches nest (a test's inside the session's) as long as they are restored
    in reverse order. ``environ`` is injected for tests; ``os.environ`` by default.
    """

    environ: MutableMapping[str, str] = field(factory=lambda: os.environ)
    _saved: dict[str, str | None] = field(factory=dict, init=False)

    def apply(self, changes: Mapping[str, str]) -> None:
        for name, value in changes.items():
            if name not in self._saved:
                self._saved[name] = self.environ.get(name)
            self.environ[name] = value

    def restore(self) -> None:
        """Put every changed variable back; calling it again does nothing."""
        saved, self._saved = self._saved, {}
        for name, value in saved.items():
            if value is None:
                self.environ.pop(name, None)
            else:
                self.environ[name] = value
