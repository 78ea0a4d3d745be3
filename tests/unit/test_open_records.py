"""The engine's view of the open faults (its peers) stays exact while others change the journal.

One engine keeps its view across calls (as the warden and the agent do);
another engine, with its own journal object, changes the journal between
the calls (as the CLI and other wardens do). After every change the kept
view must equal a fresh full read, with and without the inotify watch, and
with the watch it must not list the directory again.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.journal import Journal
from hostchaos.open_records import OpenRecordCache
from tests.support.fakes import FakeSpec, factory, fault_class


def make_engine(state_dir: Path) -> Engine:
    return Engine(Config(state_dir=state_dir), fault_factory=factory, fault_class=fault_class)


def ids(engine: Engine) -> list[str]:
    return [peer.id for peer in engine.peers()]


def fresh_ids(state_dir: Path) -> list[str]:
    return ids(make_engine(state_dir))


@pytest.mark.parametrize("watch_from", [1, 10_000], ids=["watched", "listed"])
def test_the_kept_view_equals_a_fresh_read_after_every_change(
        state_dir: Path, tmp_path: Path, watch_from: int) -> None:
    kept = make_engine(state_dir)
    kept._open_records.watch_from = watch_from
    other = make_engine(state_dir)
    other.journal.prepare()
    rng = random.Random(20261202)
    open_ids: list[str] = []
    for step in range(120):
        action = rng.choice(["inject", "inject", "rollback", "extend", "torn", "mid-move"])
        if action == "inject" or not open_ids:
            spec = FakeSpec(host_file=str(tmp_path / f"host-{step}.json"), target=f"t{step}")
            open_ids.append(other.inject(spec, duration=600).id)
        elif action == "rollback":
            other.rollback(open_ids.pop(rng.randrange(len(open_ids))))
        elif action == "extend":
            other.extend(rng.choice(open_ids), 900)
        elif action == "torn":  # damaged from outside: the last good copy still counts
            path = other.journal.path_of(rng.choice(open_ids))
            path.write_bytes(path.read_bytes()[:10])
        else:  # a crash between writing the ended record and removing the open one
            fault_id = open_ids.pop(rng.randrange(len(open_ids)))
            path = other.journal.path_of(fault_id)
            left_behind = path.read_bytes()
            record = other.journal.load(fault_id)
            record.transition("rolling-back", reason="test")
            record.transition("rolled-back")
            other.journal.save(record)
            Journal._replace(path, left_behind, False)  # as if the unlink never ran
        assert ids(kept) == fresh_ids(state_dir), (step, action)
        assert sorted(ids(kept)) == sorted(open_ids), (step, action)
    if watch_from == 1:
        assert kept._open_records.watching
        assert kept._open_records.listings == 1  # inotify did the rest
    else:
        assert not kept._open_records.watching


def test_a_lost_event_means_a_full_listing_not_a_stale_view(state_dir: Path,
                                                           tmp_path: Path) -> None:
    kept = make_engine(state_dir)
    kept._open_records.watch_from = 1
    other = make_engine(state_dir)
    first = other.inject(FakeSpec(host_file=str(tmp_path / "a.json"), target="a"), 600)
    assert ids(kept) == [first.id]
    watch = kept._open_records._watch
    assert watch is not None
    second = other.inject(FakeSpec(host_file=str(tmp_path / "b.json"), target="b"), 600)
    watch.read()  # the events are gone ...
    watch.overflowed = True  # ... and the kernel said so
    assert ids(kept) == [first.id, second.id]
    assert kept._open_records.listings == 2


def test_the_watch_is_closed_with_its_owner(state_dir: Path, tmp_path: Path) -> None:
    import gc
    import os

    engine = make_engine(state_dir)
    engine._open_records.watch_from = 1
    engine.inject(FakeSpec(host_file=str(tmp_path / "a.json")), 600)
    engine.peers()
    cache: OpenRecordCache[object] = engine._open_records  # type: ignore[assignment]
    watch = cache._watch
    assert watch is not None and os.fstat(watch.fd)
    fd = watch.fd
    del engine, cache
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)
