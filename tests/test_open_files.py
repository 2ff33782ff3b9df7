"""
The open-file limit the daemon gives itself, against a fake ``resource``
module: up to the hard limit, never down, 1024 at most under the select
reactor, and macOS's refusal of "unlimited" handled. A real daemon started
under a low limit is in tests/test_slow_clients.py.
"""

from __future__ import annotations

import pytest
from attrs import define, field

from stasis.open_files import SELECT_LIMIT, raise_open_files_limit

INFINITY = -1


@define
class FakeResource:
    soft: int
    hard: int
    #: The highest soft limit setrlimit accepts (macOS: OPEN_MAX).
    ceiling: int | None = None
    set_to: list[int] = field(factory=list)

    RLIMIT_NOFILE = 7
    RLIM_INFINITY = INFINITY

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == self.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        soft, hard = limits
        assert which == self.RLIMIT_NOFILE and hard == self.hard
        if (self.ceiling is not None and (soft == INFINITY or soft > self.ceiling)) or (
            self.hard != INFINITY and (soft == INFINITY or soft > self.hard)
        ):
            raise ValueError("not allowed to raise maximum limit")
        self.set_to.append(soft)
        self.soft = soft


class EpollReactor:
    pass


class SelectReactor:
    pass


SelectReactor.__module__ = "twisted.internet.selectreactor"


def test_the_soft_limit_goes_up_to_the_hard_one() -> None:
    fake = FakeResource(soft=256, hard=20000)
    assert raise_open_files_limit(EpollReactor(), fake) == 20000
    assert fake.set_to == [20000]


@pytest.mark.parametrize(("soft", "hard"), [(20000, 20000), (INFINITY, INFINITY)])
def test_a_limit_as_high_as_allowed_is_left_alone(soft: int, hard: int) -> None:
    fake = FakeResource(soft=soft, hard=hard)
    assert raise_open_files_limit(EpollReactor(), fake) == soft
    assert fake.set_to == []


def test_under_the_select_reactor_1024_at_most_and_never_lower() -> None:
    fake = FakeResource(soft=256, hard=20000)
    assert raise_open_files_limit(SelectReactor(), fake) == SELECT_LIMIT
    higher = FakeResource(soft=4096, hard=20000)
    assert raise_open_files_limit(SelectReactor(), higher) == 4096
    assert higher.set_to == []


def test_an_unlimited_hard_limit_that_macos_refuses_falls_back_to_open_max() -> None:
    fake = FakeResource(soft=256, hard=INFINITY, ceiling=10240)
    assert raise_open_files_limit(EpollReactor(), fake) == 10240
    assert fake.set_to == [10240]
