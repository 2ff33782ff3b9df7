"""
Where the CPU went during a load: the daemon's processes, and wrk's own.

On a two-core machine wrk shares the cores with what it measures, so a
throughput figure means little without knowing how much of the machine the
load generator took. Process times come from ``/proc/PID/stat`` (user +
system, in clock ticks); wrk's from ``getrusage(RUSAGE_CHILDREN)``, which
counts a child once the harness has waited for it, as ``run_wrk`` does.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from attrs import define, field

__all__ = [
    "CpuUse",
    "children",
    "cpu_seconds",
    "machine_busy_seconds",
    "measure",
    "waited_seconds",
]

_T = TypeVar("_T")
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds ``pid`` has used so far (0.0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    # Fields 14 and 15 of stat (utime, stime), counted after "pid (comm)".
    return (int(fields[11]) + int(fields[12])) / _TICK


def waited_seconds(pid: int) -> float:
    """
    Seconds ``pid``'s main thread (a daemon's reactor) has spent runnable but
    waiting for a core (``/proc/PID/schedstat``): time lost to other work.
    """
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (not idle, not waiting on I/O)."""
    with open("/proc/stat") as stat:
        # cpu  user nice system idle iowait irq softirq steal ...
        fields = [int(value) for value in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICK


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@define
class CpuUse:
    """CPU seconds used during one measured call, by each watched process and by wrk."""

    wall: float = 0.0
    wrk: float = 0.0
    processes: dict[int, float] = field(factory=dict)
    #: Every core's busy time, whoever used it (the kernel, other work on the machine).
    machine: float = 0.0
    #: Seconds each watched process's main thread waited, runnable, for a core.
    waited: dict[int, float] = field(factory=dict)

    @property
    def others(self) -> float:
        """CPU seconds neither the watched processes nor wrk used: other work, the kernel's own."""
        return max(0.0, self.machine - self.wrk - sum(self.processes.values()))

    def cores(self, seconds: float) -> float:
        """``seconds`` of CPU over the call's wall time: how many cores that kept busy."""
        return seconds / self.wall if self.wall else 0.0


@contextmanager
def measure(pids: list[int], clock: Callable[[], float]) -> Iterator[CpuUse]:
    """CPU used by ``pids`` and by the children the block waits for (wrk), while it runs."""
    use = CpuUse()
    before = {pid: cpu_seconds(pid) for pid in pids}
    waited_before = {pid: waited_seconds(pid) for pid in pids}
    children_before = _children_seconds()
    machine_before = machine_busy_seconds()
    started = clock()
    try:
        yield use
    finally:
        use.wall = clock() - started
        use.wrk = _children_seconds() - children_before
        use.machine = machine_busy_seconds() - machine_before
        use.processes = {pid: cpu_seconds(pid) - before[pid] for pid in pids}
        use.waited = {pid: waited_seconds(pid) - waited_before[pid] for pid in pids}
