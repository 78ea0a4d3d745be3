"""The agent's sentinel: starts a warden the moment the agent dies with faults open.

The agent enforces deadlines from a thread (its warden), so a whole second
interpreter with pyroute2 is not kept beside it. This small process keeps the
dead-man's switch independent of the agent anyway: it waits on a pipe whose
only writer is the agent. End of file means the agent is gone (kill -9
included: the kernel closes the pipe), and the sentinel then becomes
``python -m hostchaos.warden`` for the state directory, which takes the warden
lock the agent held, adopts the open faults and ends each at its original
deadline (or at once if overdue). An agent that stopped cleanly with nothing
open writes ``done`` first, and the sentinel just exits.

It runs as ``python -I -S hostchaos/sentinel.py WARDEN-ARGV...`` with the pipe
on descriptor 3: standard library only, nothing imported that it does not
use (about 9 MB resident).
"""

from __future__ import annotations

import os
import sys

PIPE_FD = 3
DONE = b"done"


def main(warden_argv: list[str]) -> int:
    while True:
        try:
            said = os.read(PIPE_FD, 16)
        except InterruptedError:
            continue
        except OSError:
            said = b""
        if said.startswith(DONE):
            return 0
        if not said:
            break
    os.close(PIPE_FD)
    os.execv(warden_argv[0], warden_argv)
    return 127  # execv does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
