"""pytest plugin: real faults in your tests, always taken back out.

Installed with hostchaos (entry point ``pytest11``), it gives:

- the ``hostchaos`` fixture::

      def test_api_survives_a_slow_database(hostchaos):
          hostchaos.inject("latency", iface="eth0", dst="10.0.0.5/32", ms=200, for_="30s")
          assert call_api().status == 200

  ``inject(kind, for_=..., **options)`` takes the command line's option names
  (``leave_free`` or ``"leave-free"``; lists for repeatable options) and returns
  the fault id; every fault the test injected is rolled back at teardown;

- the marker ``@pytest.mark.hostchaos(kind, for_="10s", **options)``: the fault
  is injected before the test body and rolled back after it (several markers,
  several faults).

A fault never outlives its test, even when teardown never runs
(``pytest-timeout``'s thread method ends the process with ``os._exit``, a
``kill -9``): each fault has a short lease (``--hostchaos-lease``, default 5s)
that a background thread of the test process renews, and a deadline
(``for_``, default 60s). When the process dies the renewals stop, and
hostchaos's warden rolls the fault back within one lease.

Needs root (the faults are real). Without root, tests that use the fixture or
the marker are skipped with the reason, unless ``--hostchaos-strict``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

DEFAULT_FOR = 60.0


class FaultSession:
    """Faults one test injected; renews their leases; rolls them all back at the end."""

    def __init__(self, lease: float) -> None:
        from hostchaos.backend import make_engine

        self.engine = make_engine()
        self.lease = lease
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="hostchaos lease renewer",
                                         daemon=True)
        self._renewer.start()

    def inject(self, kind: str, for_: str | float = DEFAULT_FOR, **options: Any) -> str:
        """Inject a fault of ``kind`` with the command line's options; return its id."""
        from hostchaos.faults.from_options import duration_value, spec_from_options

        spec = spec_from_options(kind, {name.replace("_", "-"): value
                                        for name, value in options.items()})
        duration = duration_value(for_, "for_") or DEFAULT_FOR
        record = self.engine.inject(spec, duration, min(self.lease, duration))
        self.ids.append(record.id)
        return str(record.id)

    def rollback(self, fault_id: str | None = None) -> None:
        """Roll back one fault now (default: every fault of this test)."""
        for each in [fault_id] if fault_id else list(self.ids):
            self.engine.rollback(each, "pytest")
            if each in self.ids:
                self.ids.remove(each)

    def _renew(self) -> None:
        from hostchaos.errors import HostchaosError

        while not self._stop.wait(self.lease / 3):
            for each in list(self.ids):
                try:
                    self.engine.extend(each)
                except HostchaosError:
                    pass  # ended already (its deadline): teardown closes the rest

    def close(self) -> None:
        self._stop.set()
        errors = []
        for each in list(self.ids):
            try:
                self.engine.rollback(each, "pytest teardown")
            except Exception as exc:  # roll back every other fault, then report
                errors.append(f"{each}: {exc}")
        self.ids.clear()
        if errors:
            raise RuntimeError("hostchaos could not roll back: " + "; ".join(errors))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hostchaos", "real faults (hostchaos)")
    group.addoption("--hostchaos-lease", default="5s", metavar="DURATION",
                    help="lease of every fault a test injects; a killed test process "
                         "leaves its faults at most this long (default 5s)")
    group.addoption("--hostchaos-strict", action="store_true",
                    help="fail, not skip, tests with faults when hostchaos cannot run them")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hostchaos(kind, for_='60s', **options): inject this "
                                       "fault around the test (rolled back after it)")


def _session(config: pytest.Config) -> FaultSession:
    from hostchaos.quantities import parse_duration

    if os.geteuid() != 0:
        reason = "hostchaos injects real faults: run the tests as root"
        if config.getoption("hostchaos_strict"):
            pytest.fail(reason)
        pytest.skip(reason)
    return FaultSession(parse_duration(config.getoption("hostchaos_lease"), what="lease"))


@pytest.fixture
def hostchaos(request: pytest.FixtureRequest) -> Iterator[FaultSession]:
    """Inject real faults from a test; each is rolled back when the test ends."""
    session = _session(request.config)
    try:
        yield session
    finally:
        session.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    markers = list(item.iter_markers(name="hostchaos"))
    if not markers:
        yield
        return
    session = _session(item.config)
    try:
        for marker in reversed(markers):  # closest to the test last, like decorators
            if not marker.args:
                raise pytest.UsageError("@pytest.mark.hostchaos needs a fault kind")
            session.inject(marker.args[0], **marker.kwargs)
        started = time.monotonic()
        item.user_properties.append(("hostchaos_faults", list(session.ids)))
        yield
        item.user_properties.append(("hostchaos_seconds", round(time.monotonic() - started, 3)))
    finally:
        session.close()
