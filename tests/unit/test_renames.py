"""renames.replace: the new file in place of the old, atomically, on the filesystems at hand."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.system import renames
from hostchaos.system.inotify import Inotify
from tests.support.fs import tmpfs


@pytest.fixture(params=["tmp_path", "tmpfs"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """The test's directory on the disk of pytest's tmp_path, and on a tmpfs of its own."""
    if request.param == "tmp_path":
        yield tmp_path
        return
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with tmpfs(tmp_path / "tmpfs", size="16m") as point:
        yield point


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_an_existing_file_is_replaced_and_the_old_one_is_gone(where: Path) -> None:
    target = where / "rec.json"
    write(target, "old")
    new = write(where / ".rec.json.tmp.1.aa", "new")
    new_inode = os.stat(new).st_ino
    renames.replace(new, str(target))
    assert target.read_text() == "new" and os.stat(target).st_ino == new_inode
    assert sorted(p.name for p in where.iterdir()) == ["rec.json"]


def test_nothing_there_yet_is_a_rename(where: Path) -> None:
    new = write(where / ".rec.json.tmp.1.aa", "new")
    renames.replace(new, str(where / "rec.json"))
    assert (where / "rec.json").read_text() == "new"
    assert sorted(p.name for p in where.iterdir()) == ["rec.json"]


def test_a_planted_symlink_is_replaced_not_followed(where: Path) -> None:
    victim = where / "victim"
    victim.write_text("keep")
    (where / "rec.json").symlink_to(victim)
    renames.replace(write(where / ".tmp", "new"), str(where / "rec.json"))
    assert not (where / "rec.json").is_symlink()
    assert (where / "rec.json").read_text() == "new" and victim.read_text() == "keep"


def test_a_filesystem_that_cannot_exchange_gets_a_rename(where: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def refuse(first: str, second: str) -> int:
        calls.append(first)
        return errno.EINVAL  # what a filesystem without RENAME_EXCHANGE answers

    monkeypatch.setattr(renames, "_exchange", refuse)
    monkeypatch.setattr(renames, "_NO_EXCHANGE", set())
    target = where / "rec.json"
    write(target, "old")
    renames.replace(write(where / ".t1", "one"), str(target))
    renames.replace(write(where / ".t2", "two"), str(target))
    assert target.read_text() == "two" and len(calls) == 1  # asked once per filesystem
    assert sorted(p.name for p in where.iterdir()) == ["rec.json"]


def test_inotify_names_the_record_an_exchange_replaced(where: Path) -> None:
    """The warden and the open-record cache learn of a record's change by its name."""
    target = where / "rec.json"
    write(target, "old")
    watch = Inotify(where)
    try:
        watch.read()
        renames.replace(write(where / ".rec.json.tmp.1.aa", "new"), str(target))
        assert "rec.json" in watch.read()
    finally:
        watch.close()


def test_a_reader_always_finds_a_whole_record(where: Path) -> None:
    """2000 replacements under a reader opening the name in a loop: never missing, never
    half of one."""
    target = where / "rec.json"
    versions = [f"{n:04d}" * 300 for n in range(2000)]
    write(target, versions[0])
    seen: list[str] = []
    problems: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                seen.append(target.read_text())
            except FileNotFoundError:
                problems.append("missing")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n, text in enumerate(versions[1:], 1):
            renames.replace(write(where / f".rec.json.tmp.{n}", text), str(target))
    finally:
        done.set()
        thread.join()
    assert problems == []
    assert seen and all(text in versions for text in seen)
    assert target.read_text() == versions[-1]
    assert sorted(p.name for p in where.iterdir()) == ["rec.json"]


def test_the_filesystems_here_exchange(where: Path) -> None:
    """ext4 (tmp_path here) and tmpfs swap two names in one call: the cheap path is the one
    taken, not the fallback."""
    first, second = write(where / "a", "A"), write(where / "b", "B")
    assert renames._exchange(first, second) == 0
    assert (where / "a").read_text() == "B" and (where / "b").read_text() == "A"
