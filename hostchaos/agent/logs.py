"""Log lines for journald, with structured fields.

Under systemd (``$JOURNAL_STREAM`` set) each line is sent to journald's native
socket as fields: ``MESSAGE`` (the line below), ``PRIORITY``,
``SYSLOG_IDENTIFIER=hostchaos`` and one ``HOSTCHAOS_<KEY>`` per field, so
``journalctl HOSTCHAOS_FAULT_ID=hc-latency-3f9a1c2e`` finds every line about a
fault. If that socket is not there, the line goes to stderr as
``<priority>message key=value ...``: journald reads the ``<N>`` prefix as the
syslog priority (SyslogLevelPrefix), and the logfmt pairs are still there::

    <6>injected fault_id=hc-latency-3f9a1c2e kind=latency client_uid=0 client_pid=4242
    <4>request refused status=403 client_uid=65534 client_pid=5150 path=/v1/faults

Outside systemd the prefix is replaced by a UTC time and the level's name.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import threading
from typing import Any

#: journald's native protocol socket (a module attribute so tests can point it elsewhere)
JOURNAL_SOCKET = "/run/systemd/journal/socket"
_FIELD = re.compile(r"[^A-Z0-9_]")

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
        if _to_journal(priority, body, fields):
            return
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


def _to_journal(priority: int, body: str, fields: dict[str, Any]) -> bool:
    """Send one entry over journald's native protocol; False if it is not there."""
    entry = [f"MESSAGE={body}", f"PRIORITY={priority}", "SYSLOG_IDENTIFIER=hostchaos"]
    for key, value in fields.items():
        if value is not None:
            name = "HOSTCHAOS_" + _FIELD.sub("_", key.upper())
            entry.append(f"{name}={str(value).replace(chr(10), ' ')}")
    data = ("\n".join(entry) + "\n").encode()
    try:
        import socket  # here: most commands never write to journald

        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(data, JOURNAL_SOCKET)
    except OSError:
        return False
    return True
