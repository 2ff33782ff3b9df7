"""
Replaying a recorded stream at the pace it was recorded (``X-Stasis-Replay: realtime``).

By default a hit is written as fast as the client reads; UI work on a typing
effect wants the real rhythm instead, so each event is written when its
recorded offset comes round, on the reactor's clock.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["pace"]


def pace(
    clock: IReactorTime,
    body: bytes,
    timeline: tuple[tuple[int, int], ...],
    write: Callable[[bytes], None],
    done: Callable[[], None],
) -> Callable[[], None]:
    """
    Write ``body`` event by event at the offsets in ``timeline``, then call ``done``.

    Returns a function that stops the replay (for a client that went away).
    """
    started = clock.seconds()
    pending: list[IDelayedCall] = []
    position = 0
    index = 0

    def step() -> None:
        nonlocal position, index
        pending.clear()
        now_ms = (clock.seconds() - started) * 1000
        # Write every event that is due (several may share a millisecond).
        while index < len(timeline) and timeline[index][1] <= now_ms:
            end = timeline[index][0]
            write(body[position:end])
            position = end
            index += 1
        if index < len(timeline):
            delay = max(0.0, timeline[index][1] / 1000 - (clock.seconds() - started))
            pending.append(clock.callLater(delay, step))
            return
        if position < len(body):
            write(body[position:])
        done()

    step()

    def stop() -> None:
        for call in pending:
            if call.active():
                call.cancel()
        pending.clear()

    return stop
