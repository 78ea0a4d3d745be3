"""Clock-ready victims the tests start: a Python process that prints its own clocks.

The victim is started the way an operator would, ``hostchaos exec --clock-ready
-- python3 -c ...``, and prints ``time.time() time.monotonic()`` every few
milliseconds; the test reads what the process itself saw. Both clocks are read
from the victim's own calls (libfaketime fakes only the victim), and the
monotonic clock is the system-wide one, so it is also the test's time axis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hostchaos.system.faketime import remove_shared_memory
from tests.support.waiting import wait_for

# select(), not time.sleep(): Python 3.11+ sleeps until an absolute CLOCK_MONOTONIC deadline,
# which the vendored libfaketime mistranslates once the monotonic clock is faked (it hangs)
PRINTER = """
import select, sys, time
period = float(sys.argv[1])
for _ in range(int(float(sys.argv[2]) / period)):  # counted: its clocks are what we move
    print(f"{time.time():.6f} {time.monotonic():.6f}", flush=True)
    select.select([], [], [], period)
"""


@dataclass
class ClockVictim:
    """A running clock-ready printer and the file it prints to."""

    process: subprocess.Popen[bytes]
    output: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def samples(self) -> list[tuple[float, float]]:
        """(wall, monotonic) pairs the victim has printed so far."""
        out = []
        for line in self.output.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                out.append((float(parts[0]), float(parts[1])))
        return out

    def offsets(self, since: float = 0.0) -> list[tuple[float, float]]:
        """(monotonic, wall - monotonic) of each sample taken after monotonic ``since``."""
        return [(mono, wall - mono) for wall, mono in self.samples() if mono > since]

    def wait_samples_after(self, mono: float, count: int = 3, timeout: float = 10) -> None:
        wait_for(lambda: len(self.offsets(mono)) >= count, timeout, step=0.01)


@contextmanager
def clock_victim(tmp_path: Path, state_dir: Path, *, period: float = 0.01,
                 seconds: float = 120, monotonic: bool = False,
                 name: str = "victim") -> Iterator[ClockVictim]:
    """Start a clock-ready printer through `hostchaos exec`; kill it afterwards."""
    output = tmp_path / f"{name}.out"
    argv = [sys.executable, "-m", "hostchaos", "exec", "--clock-ready",
            *(["--monotonic"] if monotonic else []), "--",
            "python3", "-c", PRINTER, str(period), str(seconds)]
    env = {**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir)}
    with open(output, "wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.PIPE, env=env)
    victim = ClockVictim(process, output)
    try:
        wait_for(lambda: len(victim.samples()) >= 3 or process.poll() is not None, 30)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        yield victim
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
        if process.stderr:
            process.stderr.close()
        # the library's /dev/shm objects for this process tree (sweep would take them later)
        remove_shared_memory(process.pid)


def settle() -> float:
    """A monotonic timestamp taken after a short pause (lets a few samples pass)."""
    time.sleep(0.05)
    return time.monotonic()
