"""The audit log: one JSON line per change to faults, appended to ``$STATE/audit.log``.

Each line says when, what (``inject``, ``extend``, ``rollback``,
``rollback-all``), which fault and kind, who asked (the client's uid and pid,
from SO_PEERCRED for API clients, the process itself for an in-process CLI)
and the result (``ok`` or the error's type, with its message). The file is
opened O_APPEND (one ``write`` per line, so concurrent writers never
interleave), 0600, never through a symlink. Writing it never stands between a
fault and its rollback: a full or read-only state directory is reported on
stderr and the change goes on.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

FILE_NAME = "audit.log"


class AuditLog:
    """Appends audit lines to ``state_dir/audit.log``."""

    def __init__(self, state_dir: Path, *, warn: bool = True) -> None:
        self.path = state_dir / FILE_NAME
        #: say on stderr when a line cannot be written (the in-process CLI stays silent)
        self.warn = warn

    def write(self, action: str, *, uid: int | None, pid: int | None, result: str = "ok",
              fault_id: str | None = None, kind: str | None = None,
              message: str | None = None, **extra: Any) -> dict[str, Any]:
        line: dict[str, Any] = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "action": action, "fault_id": fault_id, "kind": kind,
            "client_uid": uid, "client_pid": pid, "result": result,
        }
        if message:
            line["message"] = message
        line.update(extra)
        data = (json.dumps(line, sort_keys=True, default=str) + "\n").encode()
        if not self.path.parent.is_dir():
            return line  # no state directory: nothing was ever injected here
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            if self.warn:
                print(f"hostchaos: warning: cannot append to audit log {self.path}: "
                      f"{exc.strerror}", file=sys.stderr)
        return line
