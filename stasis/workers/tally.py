"""
Request counters every worker process writes and any of them reads: what
``/stats`` adds up under ``--workers``.

The tally is a small shared memory file (memfd where the system has one,
else an unlinked temporary file, so nothing is left on disk), made by the
supervisor and handed to each worker as an inherited descriptor. It holds one
slot per worker, each a row of fixed-width 64-bit integers, one per
:class:`~stasis.cache.Counters` field, in the order the fields are declared.

Each slot has a single writer, its worker, so no lock is needed: a worker's
engine counts through :class:`SlotCounters`, whose fields are cells of the
slot (an aligned 8-byte store is atomic, so a reader never sees half a
number), and ``/stats`` in any worker reads :class:`TotalCounters`, the sum
of every slot at the moment it is asked. A count is one write to memory, not
a system call, so hits pay next to nothing for it. The supervisor keeps the
file for as long as it runs, so a worker that is restarted takes up its
slot's numbers where its predecessor left them: nothing counted is lost.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections.abc import Callable

import attrs
from attrs import define, field

from stasis.cache import Counters

__all__ = ["SLOT_CELLS", "SlotCounters", "Tally", "TotalCounters", "make_tally_file"]

#: The counted fields, in slot order.
FIELDS: tuple[str, ...] = tuple(a.name for a in attrs.fields(Counters))
#: Integers per slot: room for counters yet to be added, and 128 bytes, so that
#: two workers' slots never share a cache line.
SLOT_CELLS = 16
_CELL_BYTES = 8

if len(FIELDS) > SLOT_CELLS:  # pragma: no cover - a guard for whoever adds the 17th counter
    raise RuntimeError(f"Counters has {len(FIELDS)} fields; a tally slot holds {SLOT_CELLS}")


def _size(workers: int) -> int:
    return workers * SLOT_CELLS * _CELL_BYTES


def make_tally_file(workers: int) -> int:
    """
    A new, zeroed tally for ``workers`` slots: an open descriptor (inheritable
    by children spawned with it in their ``childFDs``) that the caller closes.
    """
    try:
        fd = os.memfd_create("stasis-tally")  # close-on-exec: childFDs hands it on
    except (AttributeError, OSError):  # not Linux
        with tempfile.TemporaryFile() as unnamed:
            fd = os.dup(unnamed.fileno())
    os.ftruncate(fd, _size(workers))
    return fd


@define(eq=False)
class Tally:
    """The shared counters of ``workers`` processes, mapped from ``fd`` (see the module)."""

    workers: int
    _map: mmap.mmap
    _cells: memoryview = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._cells = memoryview(self._map).cast("q")

    @classmethod
    def map(cls, fd: int, workers: int) -> Tally:
        """Map the tally file ``fd`` (which may be closed afterwards)."""
        if os.fstat(fd).st_size < _size(workers):
            raise ValueError(f"the tally file is too small for {workers} workers")
        return cls(workers, mmap.mmap(fd, _size(workers)))

    def slot(self, index: int) -> SlotCounters:
        """The counters worker ``index`` counts in (only that worker may write them)."""
        if not 0 <= index < self.workers:
            raise IndexError(f"no slot {index} in a tally of {self.workers}")
        start = index * SLOT_CELLS
        return SlotCounters(self._cells[start : start + SLOT_CELLS])

    def total(self) -> TotalCounters:
        """Every worker's counters added up, read afresh each time a field is read."""
        return TotalCounters(self._cells, self.workers)


def _cell(index: int) -> property:
    def get(self: SlotCounters) -> int:
        return self._cells[index]

    def set_(self: SlotCounters, value: int) -> None:
        self._cells[index] = value

    return property(get, set_)


def _sum(index: int) -> property:
    def get(self: TotalCounters) -> int:
        cells = self._cells
        return sum(cells[index + slot * SLOT_CELLS] for slot in range(self._slots))

    return property(get)


class SlotCounters(Counters):
    """
    :class:`~stasis.cache.Counters` kept in one slot of a tally: the engine
    and the housekeeping count here as they would in memory.

    Made without resetting the slot, so a restarted worker adds to what the
    worker before it counted.
    """

    __slots__ = ("_cells",)

    def __init__(self, cells: memoryview) -> None:
        self._cells = cells


class TotalCounters(Counters):
    """:class:`~stasis.cache.Counters` that are the sums of every slot (read-only)."""

    __slots__ = ("_cells", "_slots")

    def __init__(self, cells: memoryview, slots: int) -> None:
        self._cells = cells
        self._slots = slots


# The Counters fields, each replaced by a property over the tally: set here,
# after the classes, where the names (declared by Counters) are not redefined
# in a class body that a type checker would read as a new, conflicting field.
def _install(cls: type, make: Callable[[int], property]) -> None:
    for index, name in enumerate(FIELDS):
        setattr(cls, name, make(index))


_install(SlotCounters, _cell)
_install(TotalCounters, _sum)
