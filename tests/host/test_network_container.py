"""Issue 3 acceptance 6: `rate` against a podman container by name, and by --pid."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.sandbox import tc_configuration
from hostchaos.system import capabilities
from tests.support.capability import need
from tests.support.cli import hostchaos, open_records
from tests.support.traffic import tcp_throughput

RATE_BITS = 8_000_000  # lo has a 64 KiB MTU: a slow rate would make one packet a big share


@pytest.fixture(scope="module")
def container() -> Iterator[tuple[str, int]]:
    from tests.support import podman

    need(capabilities.container_runtime("podman"))
    with podman.container("net", "/bin/sh", "-c", "while :; do sleep 1; done") as running:
        yield running


def qdiscs(pid: int) -> str:
    return tc_configuration(pid, "lo")


@pytest.mark.parametrize("by", ["container", "pid"])
def test_rate_limits_a_container_and_rolls_back(by: str, container: tuple[str, int],
                                                state_dir: Path) -> None:
    name, pid = container
    before = qdiscs(pid)
    free = tcp_throughput(pid, pid, "127.0.0.1", seconds=2)
    assert free > 20 * RATE_BITS
    target = ["--container", name] if by == "container" else ["--pid", str(pid)]
    result = hostchaos("inject", "rate", *target, "--iface", "lo", "--rate", "8mbit", "--json",
                       state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    fault = json.loads(result.stdout)
    assert fault["spec"]["pid"] == pid  # --container resolved to the container's init process
    limited = tcp_throughput(pid, pid, "127.0.0.1", seconds=4)
    assert 0.9 * RATE_BITS <= limited <= 1.1 * RATE_BITS, limited
    assert hostchaos("rollback", fault["id"], state_dir=state_dir).returncode == 0
    assert qdiscs(pid) == before
    assert tcp_throughput(pid, pid, "127.0.0.1", seconds=2) > 20 * RATE_BITS
    assert open_records(state_dir) == []

