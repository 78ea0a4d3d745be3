"""The open records as last read, kept current without reading them all again.

Every change the engine makes is judged against every other open fault (its
*peers*: which slots are taken, who else uses a root qdisc or an IFB). A
warden ending a thousand faults one by one would read the whole journal a
thousand times. :class:`OpenRecordCache` reads it once and then only what
changed:

- below :data:`WATCH_FROM` open records it lists the faults directory and
  compares each file's identity (inode, size, times; a replaced record is a
  new inode) with the one it read, and re-reads only the changed ones;
- from :data:`WATCH_FROM` on it also holds an inotify watch on the faults and
  ended directories, made *before* the listing it trusts, and from then on
  looks only at the names inotify reports. Read under the state lock, those
  are complete (see :mod:`hostchaos.system.inotify`). A lost event (queue
  overflow, a directory removed or moved) or a watch that cannot be made
  means a full listing again, never a stale answer.

The watch is closed when the cache is (or when its owner is collected).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from hostchaos.errors import JournalError
from hostchaos.journal import Journal
from hostchaos.records import FaultRecord

if TYPE_CHECKING:
    from hostchaos.system.inotify import Inotify

#: open records from which a watch replaces the listing
WATCH_FROM = 64

T = TypeVar("T")
_Key = tuple[int, int, int, int]


class OpenRecordCache(Generic[T]):
    """What ``derive`` makes of each open record of ``journal``, oldest first.

    ``derive`` is called once per version of a record (None: leave it out);
    :meth:`current` returns the derived values of the records open now.
    """

    def __init__(self, journal: Journal, derive: Callable[[FaultRecord], T | None], *,
                 watch_from: int = WATCH_FROM) -> None:
        self.journal = journal
        self.derive = derive
        self.watch_from = watch_from
        self._entries: dict[str, tuple[_Key, float, T | None]] = {}
        self._watch: Inotify | None = None
        self._finalizer: Callable[[], object] | None = None
        #: full listings done (for tests and benchmarks)
        self.listings = 0

    @property
    def watching(self) -> bool:
        return self._watch is not None

    def current(self, *, leaving: str | None = None) -> list[T]:
        """The open records' derived values; ``leaving``: the id of one about to close (a
        rollback's own fault), left out without being read again."""
        skip = f"{leaving}.json" if leaving else None
        if self._watch is not None:
            names = self._watch.read()
            if not self._watch.overflowed:
                for name in names:
                    if name.endswith(".json") and not name.startswith(".") and name != skip:
                        self._look_at(name)
                if skip is not None:
                    self._entries.pop(skip, None)
                return self._values()
            self.close()
        self._list(skip)
        return self._values()

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # closes the watch, once
            self._finalizer = None
        self._watch = None

    # -- inside -------------------------------------------------------------------------
    def _values(self) -> list[T]:
        ordered = sorted((entry for entry in self._entries.values() if entry[2] is not None),
                         key=lambda entry: entry[1])
        return [value for _, _, value in ordered if value is not None]

    def _list(self, skip: str | None = None) -> None:
        self.listings += 1
        names = self.journal.open_names()
        if len(names) >= self.watch_from and self._watch is None:
            self._start_watch()
            names = self.journal.open_names()  # what changed meanwhile is now seen twice
        kept: dict[str, tuple[_Key, float, T | None]] = {}
        for name in names:
            if name == skip:
                continue
            entry = self._read(name, self._entries.get(name))
            if entry is not None:
                kept[name] = entry
        self._entries = kept

    def _look_at(self, name: str) -> None:
        """Bring one name up to date: open, ended, gone, or changed."""
        if os.path.lexists(self.journal.ended_dir / name):
            self._entries.pop(name, None)
            return
        entry = self._read(name, self._entries.get(name))
        if entry is None:
            self._entries.pop(name, None)
        else:
            self._entries[name] = entry

    def _read(self, name: str, known: tuple[_Key, float, T | None] | None
              ) -> tuple[_Key, float, T | None] | None:
        path = self.journal.faults_dir / name
        try:
            info = os.stat(path, follow_symlinks=False)
        except OSError:
            return None
        key = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if known is not None and known[0] == key:
            return known
        try:
            record = self.journal.read_path(path)
        except (FileNotFoundError, JournalError):  # unreadable: reported by sweep and list
            return None
        if not record.is_open:
            return None
        return key, record.created_at, self.derive(record)

    def _start_watch(self) -> None:
        from hostchaos.system.inotify import Inotify  # ctypes: only once a journal is big

        try:
            watch = Inotify(Path(self.journal.faults_dir), Path(self.journal.ended_dir))
        except OSError:  # no inotify instance left, or no ended directory yet: list instead
            return
        self._watch = watch
        self._finalizer = weakref.finalize(self, watch.close)
