"""Resource faults on this machine's kernel (cgroup v1 hybrid): measured effects, exact rollback.

Every victim is a process this test starts; every cgroup touched is either a
``hostchaos-*`` cgroup the fault creates or a ``hc-test-*`` cgroup (or podman
container) the test creates and removes. CPU shares are measured from
utime+stime in /proc/PID/stat; the victims run at nice -20 so other load on
this 2-CPU machine (VMs of the other tiers) cannot push an *unlimited* victim
below 90%, while a *limited* one is still held by its quota.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hostchaos.system import capabilities
from tests.support.capability import need
from tests.support.cli import hostchaos, one_line_error, open_records, records
from tests.support.victims import (
    BUSY,
    FILES,
    FORKER,
    MEMORY,
    Victim,
    cgroups_of,
    cpu_share,
    free_share,
    leftover_cgroups,
    nofile_of,
    thread_cgroups,
    victim,
)
from tests.support.waiting import wait_for

V1 = Path("/sys/fs/cgroup")


@pytest.fixture(autouse=True)
def _cgroups_v1() -> Iterator[None]:
    for name in ("cpu", "memory", "pids"):
        need(capabilities.cgroup_controller(name))
    assert leftover_cgroups() == [], "hostchaos cgroups left by an earlier run"
    yield
    assert leftover_cgroups() == []


def inject(state_dir: Path, kind: str, *args: str) -> str:
    result = hostchaos("inject", kind, *args, "--for", "10m", "--json", state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    fault_id: str = json.loads(result.stdout)["id"]
    return fault_id


def status(state_dir: Path, fault_id: str) -> dict[str, Any]:
    result = hostchaos("status", fault_id, "--json", state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    observed: dict[str, Any] = json.loads(result.stdout)["observed"]
    return observed


def rollback(state_dir: Path, fault_id: str) -> None:
    result = hostchaos("rollback", fault_id, state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    assert open_records(state_dir) == []


def busy_victim() -> Victim:
    started = Victim(BUSY)
    os.setpriority(os.PRIO_PROCESS, started.pid, -20)
    return started


@pytest.fixture
def busy() -> Iterator[Victim]:
    started = busy_victim()
    try:
        yield started
    finally:
        started.kill()


@pytest.fixture
def test_cgroup(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Make ``hc-test-<pid>-<n>`` cgroups in v1 hierarchies; remove them (emptied) at the end."""
    made: list[Path] = []

    def make(hierarchy: str) -> Path:
        path = V1 / hierarchy / f"hc-test-{os.getpid()}-{len(made)}"
        path.mkdir()
        made.append(path)
        return path

    yield make
    for path in reversed(made):
        if not path.exists():
            continue
        for tid in (path / "tasks").read_text().split():
            try:
                (path.parent / "tasks").write_text(tid)
            except OSError:
                pass
        for _ in range(50):
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.1)


# -- acceptance 1: cpu ------------------------------------------------------------------------


def test_cpu_25_percent_measured_and_rolled_back(busy: Victim, state_dir: Path) -> None:
    before_cgroups = thread_cgroups(busy.pid)
    assert len(before_cgroups) == 4  # a multi-threaded victim
    baseline = free_share(busy.pid)
    assert baseline > 90, baseline

    fault_id = inject(state_dir, "cpu", "--pid", str(busy.pid), "--limit", "25%")
    during = thread_cgroups(busy.pid)
    assert all(f"cpu:/hostchaos-{fault_id}\n" in text for text in during.values()), during
    limited = cpu_share(busy.pid)
    print(f"cpu share: baseline {baseline:.1f}%, limited {limited:.1f}%")
    assert 22 <= limited <= 28, limited

    seen = status(state_dir, fault_id)
    (group,) = seen["cgroups"]
    assert group["limits"] == {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "25000"}
    assert group["pid_inside"] and group["stats"]["nr_throttled"] > 10

    rollback(state_dir, fault_id)
    assert thread_cgroups(busy.pid) == before_cgroups
    after = free_share(busy.pid)
    print(f"cpu share after rollback: {after:.1f}%")
    assert after > 90, after


def test_threads_go_back_to_their_own_cgroups(busy: Victim, state_dir: Path,
                                             test_cgroup: Any) -> None:
    """v1 lets threads of one process sit in different cgroups: each goes back to its own."""
    elsewhere = test_cgroup("cpu")
    tids = sorted(thread_cgroups(busy.pid))
    odd = tids[-1]  # an idle thread, not the leader
    (elsewhere / "tasks").write_text(str(odd))
    before = thread_cgroups(busy.pid)
    assert f"cpu:/{elsewhere.name}\n" in before[odd]

    fault_id = inject(state_dir, "cpu", "--pid", str(busy.pid), "--limit", "50%")
    assert all(f"cpu:/hostchaos-{fault_id}\n" in t for t in thread_cgroups(busy.pid).values())
    rollback(state_dir, fault_id)
    assert thread_cgroups(busy.pid) == before


def test_cpu_above_100_percent_and_custom_period(busy: Victim, state_dir: Path) -> None:
    fault_id = inject(state_dir, "cpu", "--pid", str(busy.pid), "--limit", "150%",
                      "--period", "50ms")
    (group,) = status(state_dir, fault_id)["cgroups"]
    assert group["limits"] == {"cpu.cfs_period_us": "50000", "cpu.cfs_quota_us": "75000"}
    rollback(state_dir, fault_id)


# -- acceptance 2: memory ---------------------------------------------------------------------


def test_memory_max_holds_victim_at_limit_and_oom_kill_is_reported(state_dir: Path) -> None:
    limit = 64 << 20
    with victim(MEMORY) as hog:
        fault_id = inject(state_dir, "memory", "--pid", str(hog.pid), "--max", "64M")
        hog.send("alloc 4 512")
        reached = 0
        while (line := hog.read(timeout=60)).startswith("at "):
            reached = int(line.split()[1])
        assert hog.proc.wait(timeout=30) == -signal.SIGKILL  # the OOM killer's signal
        print(f"memory: victim reached {reached} MiB of 512 before the OOM kill")
        assert 32 <= reached <= 64, reached  # it got close to the limit, never past it

        seen = status(state_dir, fault_id)
        (group,) = seen["cgroups"]
        assert group["limits"] == {"memory.limit_in_bytes": str(limit)}
        assert group["stats"]["peak_bytes"] <= limit
        assert group["stats"]["oom_kill"] >= 1 and seen["oom_kill"] >= 1
        print(f"memory: peak {group['stats']['peak_bytes']} <= {limit}, "
              f"oom_kill {group['stats']['oom_kill']}")
        rollback(state_dir, fault_id)  # the victim is gone: not an error


def test_memory_high_needs_cgroup_v2_here(state_dir: Path) -> None:
    with victim(MEMORY) as hog:
        before = cgroups_of(hog.pid)
        result = hostchaos("inject", "memory", "--pid", str(hog.pid), "--high", "32M",
                           state_dir=state_dir)
        assert result.returncode == 3
        assert "needs cgroup v2" in one_line_error(result)
        assert cgroups_of(hog.pid) == before and records(state_dir) == []


# -- acceptance 3: pids -----------------------------------------------------------------------


def fork_until_refused(forker: Victim, most: int = 20) -> tuple[int, str]:
    ok = 0
    for _ in range(most):
        answer = forker.ask("fork")
        if not answer.startswith("ok "):
            return ok, answer
        ok += 1
    return ok, "no failure"


def test_pids_max_5_refuses_the_sixth_task(state_dir: Path) -> None:
    with victim(FORKER) as forker:
        before = cgroups_of(forker.pid)
        fault_id = inject(state_dir, "pids", "--pid", str(forker.pid), "--max", "5")
        forks, failure = fork_until_refused(forker)
        print(f"pids: {forks} forks succeeded, then {failure}")
        # the victim itself is one of the 5 tasks: 4 children, then EAGAIN
        assert (forks, failure) == (4, "err EAGAIN")
        (group,) = status(state_dir, fault_id)["cgroups"]
        assert group["stats"]["current"] == 5 and group["stats"]["fork_failures"] >= 1
        rollback(state_dir, fault_id)  # its 4 children go back with it
        assert cgroups_of(forker.pid) == before
        forks_after, failure_after = fork_until_refused(forker, most=10)
        assert forks_after == 10, failure_after
        assert forker.ask("release") == "released"


# -- acceptance 4: nofile ---------------------------------------------------------------------


def test_nofile_soft_16_then_originals_read_back(state_dir: Path) -> None:
    with victim(FILES) as opener:
        original = nofile_of(opener.pid)
        assert opener.ask("limits") == f"{original[0]} {original[1]}"
        fault_id = inject(state_dir, "nofile", "--pid", str(opener.pid), "--soft", "16")
        assert nofile_of(opener.pid) == (16, original[1])
        answer = opener.ask("fill 100")
        print(f"nofile: {answer}")
        assert answer == "full EMFILE 16"  # 16 descriptors in use: the 17th open failed
        seen = status(state_dir, fault_id)
        assert seen["processes"][0]["soft"] == 16
        rollback(state_dir, fault_id)
        assert nofile_of(opener.pid) == original
        assert opener.ask("limits") == f"{original[0]} {original[1]}"
        assert opener.ask("fill 100") == "opened 100 103"


def test_nofile_by_name_reaches_every_match(state_dir: Path) -> None:
    name = f"hcv{os.getpid() % 100000}"
    with victim(FILES, name) as first, victim(FILES, name) as second:
        originals = {v.pid: nofile_of(v.pid) for v in (first, second)}
        fault_id = inject(state_dir, "nofile", "--name", name, "--soft", "20")
        for v in (first, second):
            assert nofile_of(v.pid) == (20, originals[v.pid][1])
            assert v.ask("fill 100") == "full EMFILE 20"
        rollback(state_dir, fault_id)
        assert {v.pid: nofile_of(v.pid) for v in (first, second)} == originals


def test_nofile_hard_limit_only_where_it_can_be_raised_back(state_dir: Path) -> None:
    """Lowering a hard limit is undoable only with CAP_SYS_RESOURCE; without it, exit 3."""
    from hostchaos.system.rlimits import can_raise_hard_limits

    with victim(FILES) as opener:
        original = nofile_of(opener.pid)
        result = hostchaos("inject", "nofile", "--pid", str(opener.pid), "--soft", "20",
                           "--hard", "30", "--json", state_dir=state_dir)
        if not can_raise_hard_limits():
            assert result.returncode == 3
            assert "CAP_SYS_RESOURCE" in one_line_error(result)
            assert nofile_of(opener.pid) == original and records(state_dir) == []
            return
        assert result.returncode == 0, result.stderr
        assert nofile_of(opener.pid) == (20, 30)
        rollback(state_dir, json.loads(result.stdout)["id"])
        assert nofile_of(opener.pid) == original


# -- acceptance 7: bad input changes nothing --------------------------------------------------


def test_refusals_exit_4_or_5_with_one_line_and_change_nothing(
    busy: Victim, state_dir: Path
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    warden_holder = victim(FILES)
    me = str(busy.pid)
    cases = [
        (["cpu", "--pid", me, "--limit", "0%"], 2, "--limit must be above 0%"),
        (["cpu", "--pid", me, "--limit", "abc"], 2, "is not a percentage"),
        (["memory", "--pid", me, "--max", "1K"], 2, "below the kernel minimum"),
        (["pids", "--pid", me, "--max", "-1"], 2, "kernel's range"),
        (["cpu", "--pid", str(gone.pid), "--limit", "25%"], 4, f"process {gone.pid} not found"),
        (["nofile", "--pid", str(gone.pid), "--soft", "16"], 4, "not found"),
        (["cpu", "--pid", "1", "--limit", "25%"], 5, "PID 1 (init) is protected"),
        (["memory", "--pid", "1", "--max", "64M"], 5, "PID 1"),
        (["nofile", "--pid", "1", "--soft", "16"], 5, "PID 1"),
        (["pids", "--pid", "2", "--max", "5"], 5, "kernel thread"),
        (["cpu", "--cgroup", "/", "--limit", "25%"], 5, "root cgroup"),
        (["cpu", "--cgroup", "/hc-no-such-cgroup", "--limit", "25%"], 4, "not found"),
        (["memory", "--container", "hc-no-such-container", "--max", "64M"], 4, "not found"),
        (["pids", "--unit", "hc-no-such.service", "--max", "5"], 4, "unit"),
        (["cpu", "--pid", str(busy.pid), "--limit", f"{100 * (os.cpu_count() or 1) + 50}%"], 2,
         "CPU(s) can give"),
    ]
    before = thread_cgroups(busy.pid)
    with warden_holder as holder:
        held = inject(state_dir, "nofile", "--pid", str(holder.pid), "--soft", "64")
        warden = records(state_dir)[0]["holder"]["pid"]
        cases.append((["cpu", "--pid", str(warden), "--limit", "25%"], 5, "hostchaos process"))
        for args, code, fragment in cases:
            result = hostchaos("inject", *args, state_dir=state_dir)
            assert result.returncode == code, (args, result.stderr)
            assert fragment in one_line_error(result), (args, result.stderr)
            assert [r["id"] for r in open_records(state_dir)] == [held]
        rollback(state_dir, held)
    assert thread_cgroups(busy.pid) == before
    assert len(records(state_dir)) == 1  # no record was even written for a refusal


def test_same_kind_twice_on_one_process_is_refused(busy: Victim, state_dir: Path) -> None:
    first = inject(state_dir, "cpu", "--pid", str(busy.pid), "--limit", "50%")
    again = hostchaos("inject", "cpu", "--pid", str(busy.pid), "--limit", "30%",
                      state_dir=state_dir)
    assert again.returncode == 5 and first in one_line_error(again)
    other = inject(state_dir, "pids", "--pid", str(busy.pid), "--max", "50")  # another kind
    assert {r["id"] for r in open_records(state_dir)} == {first, other}
    rollback_all = hostchaos("rollback", "--all", state_dir=state_dir)
    assert rollback_all.returncode == 0, rollback_all.stderr


def test_dry_run_changes_nothing(busy: Victim, state_dir: Path) -> None:
    before = thread_cgroups(busy.pid)
    result = hostchaos("inject", "memory", "--pid", str(busy.pid), "--max", "64M", "--dry-run",
                       "--json", state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    assert "cap the memory of process" in json.loads(result.stdout)["plan"]
    assert thread_cgroups(busy.pid) == before and records(state_dir) == []


# -- in place: a cgroup by path -----------------------------------------------------------------


def test_cgroup_in_place_limits_and_exact_restore(busy: Victim, state_dir: Path,
                                                  test_cgroup: Any) -> None:
    cpu_dir = test_cgroup("cpu")
    (cpu_dir / "cpu.cfs_period_us").write_text("200000")  # a non-default original
    (cpu_dir / "cgroup.procs").write_text(str(busy.pid))
    original = {f: (cpu_dir / f).read_text() for f in ("cpu.cfs_period_us", "cpu.cfs_quota_us")}
    fault_id = inject(state_dir, "cpu", "--cgroup", f"/{cpu_dir.name}", "--limit", "25%")
    assert (cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "25000"
    limited = cpu_share(busy.pid)
    print(f"cpu share, cgroup in place: {limited:.1f}%")
    assert 22 <= limited <= 28, limited
    rollback(state_dir, fault_id)
    assert {f: (cpu_dir / f).read_text() for f in original} == original
    assert f"cpu:/{cpu_dir.name}\n" in cgroups_of(busy.pid)  # never moved

    mem_dir = test_cgroup("memory")
    mem_original = (mem_dir / "memory.limit_in_bytes").read_text()
    fault_id = inject(state_dir, "memory", "--cgroup", str(mem_dir), "--max", "128M")
    assert (mem_dir / "memory.limit_in_bytes").read_text().strip() == str(128 << 20)
    rollback(state_dir, fault_id)
    assert (mem_dir / "memory.limit_in_bytes").read_text() == mem_original


def test_one_cgroup_under_any_spelling_is_one_target(state_dir: Path,
                                                     test_cgroup: Any) -> None:
    """A second cpu fault on a cgroup that already carries one is refused (exit 5, naming the
    first), however either names it; the first fault's rollback restores the real original."""
    cpu_dir = test_cgroup("cpu")
    name = cpu_dir.name
    files = ["cpu.cfs_period_us", "cpu.cfs_quota_us"]
    spellings = [f"/{name}", f"/{name}/.", f"/{name}/", f"//{name}", name,
                 f"/sys/fs/cgroup/cpu/{name}", f"/sys/fs/cgroup/cpuacct/{name}",
                 f"/sys/fs/cgroup/cpu,cpuacct//{name}/./"]
    with victim(FILES) as idle, rolled_back_at_end(state_dir):
        (cpu_dir / "cgroup.procs").write_text(str(idle.pid))
        original = read_files(cpu_dir, files)
        for first in (f"/{name}/.", f"/{name}"):
            held = inject(state_dir, "cpu", "--cgroup", first, "--limit", "50%")
            limited = read_files(cpu_dir, files)
            assert limited["cpu.cfs_quota_us"].strip() == "50000"
            for again in spellings:
                result = hostchaos("inject", "cpu", "--cgroup", again, "--limit", "25%",
                                   state_dir=state_dir)
                assert result.returncode == 5, (first, again, result.stderr)
                assert f"already carries cpu fault {held}" in one_line_error(result)
                assert read_files(cpu_dir, files) == limited
                assert [r["id"] for r in open_records(state_dir)] == [held]
            rollback(state_dir, held)
            assert read_files(cpu_dir, files) == original
        assert cgroups_of(idle.pid).count(f":/{name}\n") == 1  # never moved


@contextmanager
def rolled_back_at_end(state_dir: Path) -> Iterator[None]:
    """Whatever a failed assertion left open is rolled back (its warden then exits)."""
    try:
        yield
    finally:
        if open_records(state_dir):
            hostchaos("rollback", "--all", state_dir=state_dir)


def test_in_place_target_that_vanished_is_not_an_error(state_dir: Path,
                                                       test_cgroup: Any) -> None:
    """A container that exits takes its cgroup with it: rollback then has nothing to do."""
    pids_dir = test_cgroup("pids")
    fault_id = inject(state_dir, "pids", "--cgroup", f"/{pids_dir.name}", "--max", "3")
    assert (pids_dir / "pids.max").read_text().strip() == "3"
    pids_dir.rmdir()
    rollback(state_dir, fault_id)
    (record,) = records(state_dir)
    assert record["state"] == "rolled-back"


# -- acceptance 6: kill -9 of the CLI and the warden, then sweep ------------------------------


def start_inject(state_dir: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hostchaos", "inject", *args, "--for", "60s",
                             "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir), **env})


def wait_paused(proc: subprocess.Popen[str], note: int, marker: Path, kind: str) -> None:
    """Until the CLI sits after undo note ``note`` (0: until the fault is active)."""
    if note:
        wait_for(marker.exists, timeout=60)
    else:
        assert proc.stdout is not None and proc.stdout.readline().startswith(f"hc-{kind}-")


def kill_cli_and_warden_then_sweep(state_dir: Path, proc: subprocess.Popen[str]) -> None:
    (record,) = records(state_dir)
    os.kill(record["holder"]["pid"], signal.SIGKILL)
    proc.kill()
    proc.wait()
    assert len(open_records(state_dir)) == 1  # nobody is left to roll it back...
    result = hostchaos("sweep", "--json", state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["rolled_back"]) == 1  # ...until sweep
    assert open_records(state_dir) == []


def pause_env(note: int, marker: Path) -> dict[str, str]:
    return {"HOSTCHAOS_TEST_PAUSE_AFTER_NOTE": str(note), "HOSTCHAOS_TEST_PAUSE_FILE": str(marker)}


@pytest.mark.parametrize("note", [0, 1])
def test_kill_9_then_sweep_cpu_pid(note: int, busy: Victim, state_dir: Path,
                                   tmp_path: Path) -> None:
    """note 0: killed with the fault active; 1: after the cgroup note, before mkdir/move."""
    before = thread_cgroups(busy.pid)
    marker = tmp_path / "paused"
    proc = start_inject(state_dir, ["cpu", "--pid", str(busy.pid), "--limit", "25%"],
                        pause_env(note, marker))
    wait_paused(proc, note, marker, "cpu")
    if not note:
        assert "hostchaos-hc-cpu-" in cgroups_of(busy.pid)
        assert cpu_share(busy.pid, 1.0) < 35
    kill_cli_and_warden_then_sweep(state_dir, proc)
    assert thread_cgroups(busy.pid) == before
    assert free_share(busy.pid, seconds=1.0) > 80


@pytest.mark.parametrize("note", [0, 1])
def test_kill_9_then_sweep_memory_cgroup_in_place(note: int, state_dir: Path, tmp_path: Path,
                                                  test_cgroup: Any) -> None:
    mem_dir = test_cgroup("memory")
    original = (mem_dir / "memory.limit_in_bytes").read_text()
    marker = tmp_path / "paused"
    proc = start_inject(state_dir, ["memory", "--cgroup", f"/{mem_dir.name}", "--max", "96M"],
                        pause_env(note, marker))
    wait_paused(proc, note, marker, "memory")
    if not note:
        assert (mem_dir / "memory.limit_in_bytes").read_text().strip() == str(96 << 20)
    kill_cli_and_warden_then_sweep(state_dir, proc)
    assert (mem_dir / "memory.limit_in_bytes").read_text() == original


@pytest.mark.parametrize("note", [0, 1])
def test_kill_9_then_sweep_nofile(note: int, state_dir: Path, tmp_path: Path) -> None:
    with victim(FILES) as opener:
        original = nofile_of(opener.pid)
        marker = tmp_path / "paused"
        proc = start_inject(state_dir, ["nofile", "--pid", str(opener.pid), "--soft", "16"],
                            pause_env(note, marker))
        wait_paused(proc, note, marker, "nofile")
        if not note:
            assert nofile_of(opener.pid) == (16, original[1])
        kill_cli_and_warden_then_sweep(state_dir, proc)
        assert nofile_of(opener.pid) == original


def test_the_warden_rolls_back_at_deadline_even_after_victim_exit(state_dir: Path) -> None:
    """A target that exited meanwhile is not an error: the fault just ends."""
    hog = Victim(FORKER)
    try:
        result = hostchaos("inject", "pids", "--pid", str(hog.pid), "--max", "3", "--for", "2s",
                           state_dir=state_dir)
        assert result.returncode == 0, result.stderr
        assert hog.ask("fork").startswith("ok ")
    finally:
        hog.kill()
    wait_for(lambda: open_records(state_dir) == [], timeout=15)
    (record,) = records(state_dir)
    assert record["state"] == "rolled-back" and record["end_reason"] == "deadline reached"


# -- acceptance 5: a podman container's cgroup, in place ---------------------------------------


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.support import podman

    need(capabilities.container_runtime("podman"))
    podman_before = podman.podman_cgroup_dirs()
    tag = f"localhost/hostchaos-test-busybox:{os.getpid()}"
    podman.build_image(tmp_path_factory.mktemp("image"), tag)
    try:
        yield tag
    finally:
        podman.podman("rmi", "-f", tag)
        podman.remove_podman_cgroups(podman_before)


@pytest.fixture
def spinning_container(image: str) -> Iterator[tuple[str, int]]:
    from tests.support import podman

    name = f"hc-test-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    try:
        pid = podman.run(image, name, "/bin/sh", "-c", "while :; do :; done")
        # shield the unlimited baseline from other load, as nice -20 does for bare victims
        (container_cgroup(pid, "cpu") / "cpu.shares").write_text("262144")
        yield name, pid
    finally:
        podman.remove(name)


def container_cgroup(pid: int, hierarchy: str) -> Path:
    for line in cgroups_of(pid).splitlines():
        _, names, path = line.split(":", 2)
        if hierarchy in names.split(","):
            return V1 / hierarchy / path.lstrip("/")
    raise AssertionError(f"no {hierarchy} cgroup for {pid}")


def read_files(directory: Path, names: list[str]) -> dict[str, str]:
    return {name: (directory / name).read_text() for name in names}


def test_container_cgroup_limited_in_place_and_restored(
    spinning_container: tuple[str, int], state_dir: Path
) -> None:
    name, pid = spinning_container
    cpu_dir, mem_dir = container_cgroup(pid, "cpu"), container_cgroup(pid, "memory")
    pids_dir = container_cgroup(pid, "pids")
    assert "libpod" in str(cpu_dir)
    cpu_files = ["cpu.cfs_period_us", "cpu.cfs_quota_us"]
    originals = {**read_files(cpu_dir, cpu_files),
                 "memory": (mem_dir / "memory.limit_in_bytes").read_text(),
                 "pids": (pids_dir / "pids.max").read_text()}
    membership = cgroups_of(pid)
    baseline = free_share(pid)
    assert baseline > 90, baseline

    cpu_id = inject(state_dir, "cpu", "--container", name, "--limit", "25%")
    inject(state_dir, "memory", "--container", name, "--max", "64M")
    inject(state_dir, "pids", "--container", name, "--max", "20")
    assert (cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "25000"
    assert (mem_dir / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    assert (pids_dir / "pids.max").read_text().strip() == "20"
    assert cgroups_of(pid) == membership  # in place: nothing moved, nothing created
    limited = cpu_share(pid)
    print(f"container cpu share: baseline {baseline:.1f}%, limited {limited:.1f}%")
    assert 22 <= limited <= 28, limited
    (group,) = status(state_dir, cpu_id)["cgroups"]
    assert group["original"] == {f: originals[f].strip() for f in cpu_files}
    assert group["stats"]["nr_throttled"] > 10

    result = hostchaos("rollback", "--all", state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    assert open_records(state_dir) == []
    assert {**read_files(cpu_dir, cpu_files),
            "memory": (mem_dir / "memory.limit_in_bytes").read_text(),
            "pids": (pids_dir / "pids.max").read_text()} == originals
    after = free_share(pid)
    print(f"container cpu share after rollback: {after:.1f}%")
    assert after > 90, after


def test_container_and_its_cgroup_path_are_one_target(
    spinning_container: tuple[str, int], state_dir: Path
) -> None:
    """--container and --cgroup naming the same cgroup conflict, in either order."""
    name, pid = spinning_container
    cpu_dir = container_cgroup(pid, "cpu")  # spelled through the /sys/fs/cgroup/cpu symlink
    files = ["cpu.cfs_period_us", "cpu.cfs_quota_us"]
    original = read_files(cpu_dir, files)
    with rolled_back_at_end(state_dir):
        for first, again in ((["--cgroup", f"{cpu_dir}/."], ["--container", name]),
                             (["--container", name], ["--cgroup", f"{cpu_dir}/"])):
            held = inject(state_dir, "cpu", *first, "--limit", "50%")
            result = hostchaos("inject", "cpu", *again, "--limit", "25%", state_dir=state_dir)
            assert result.returncode == 5, (first, again, result.stderr)
            assert f"already carries cpu fault {held}" in one_line_error(result)
            assert (cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "50000"
            rollback(state_dir, held)
            assert read_files(cpu_dir, files) == original


def test_container_nofile_every_process_and_restored(
    spinning_container: tuple[str, int], state_dir: Path
) -> None:
    name, pid = spinning_container
    original = nofile_of(pid)
    assert original == (1024, 1024)  # --ulimit nofile=1024:1024
    fault_id = inject(state_dir, "nofile", "--container", name, "--soft", "64")
    assert nofile_of(pid) == (64, 1024)
    rollback(state_dir, fault_id)
    assert nofile_of(pid) == original
