"""Log lines for journald: ``<priority>message key=value ...`` on stderr.

journald reads the ``<N>`` prefix as the syslog priority (SyslogLevelPrefix,
on by default) and stores the line; the ``key=value`` pairs after the message
(logfmt, values quoted when they hold spaces) are the structured fields, e.g.::

    <6>injected fault_id=hc-latency-3f9a1c2e kind=latency client_uid=0 client_pid=4242
    <4>request refused status=403 client_uid=65534 client_pid=5150 path=/v1/faults

Outside systemd (no ``$JOURNAL_STREAM``) the prefix is replaced by a UTC time
and the level's name.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
from typing import Any

DEBUG, INFO, NOTICE, WARNING, ERR = 7, 6, 5, 4, 3
_NAMES = {DEBUG: "debug", INFO: "info", NOTICE: "notice", WARNING: "warning", ERR: "error"}
_LOCK = threading.Lock()


def _value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'
    return text


def log(priority: int, message: str, **fields: Any) -> None:
    """Write one line (``fields`` with None values are left out)."""
    pairs = " ".join(f"{k}={_value(v)}" for k, v in fields.items() if v is not None)
    body = f"{message} {pairs}".rstrip().replace("\n", " ")
    if os.environ.get("JOURNAL_STREAM"):
        line = f"<{priority}>{body}"
    else:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        line = f"{now} {_NAMES.get(priority, 'info')} {body}"
    with _LOCK:
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
