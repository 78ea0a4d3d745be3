"""Names of files that changed in a few directories: libc inotify through ctypes.

The warden learns of new, renewed and closed faults from it, and the engine
keeps its view of the open faults (the peers every change is judged against)
current with it instead of re-reading a thousand records per rollback.

inotify reports a change from inside the system call that made it, so once
another process has released the state lock every change it made under the
lock is already queued here: read under the lock, the names are complete. A
lost event is never silent: an overflowed queue or a removed or moved
directory sets :attr:`Inotify.overflowed`, and the reader must rescan.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from pathlib import Path

_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_IN_CLOSE_WRITE, _IN_MOVED_FROM, _IN_MOVED_TO = 0x8, 0x40, 0x80
_IN_CREATE, _IN_DELETE = 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF, _IN_Q_OVERFLOW, _IN_IGNORED = 0x400, 0x800, 0x4000, 0x8000
_EVENT = struct.Struct("iIII")
# records are renamed into place; a write in place (from outside) is a close-write
_MASK = (_IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
         | _IN_DELETE_SELF | _IN_MOVE_SELF)


class Inotify:
    """One inotify instance watching ``directories`` (OSError if it cannot be made).

    ``read()`` returns the names that changed in any of them since the last
    read, without blocking; ``fd`` can be waited on with select.
    """

    def __init__(self, *directories: Path) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        for directory in directories:
            if libc.inotify_add_watch(fd, os.fsencode(directory), _MASK) < 0:
                err = ctypes.get_errno()
                os.close(fd)
                raise OSError(err, f"inotify_add_watch {directory}")
        self.fd = fd
        #: the watch is gone (directory removed or moved) or events were lost: rescan
        self.overflowed = False

    def read(self) -> set[str]:
        names: set[str] = set()
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return names
            offset = 0
            while offset + _EVENT.size <= len(data):
                _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size: offset + _EVENT.size + length]
                offset += _EVENT.size + length
                if mask & (_IN_Q_OVERFLOW | _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED):
                    self.overflowed = True
                name = raw.split(b"\0", 1)[0].decode(errors="replace")
                if name:
                    names.add(name)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
