"""clock: its spec, the control line libfaketime reads, and what the ELF reader refuses."""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import pytest

from hostchaos.errors import SpecError
from hostchaos.faults.clock import ClockSpec
from hostchaos.system import elf, faketime


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"offset": 5.0}, "exactly one target"),
    ({"pid": 1, "unit": "a.service", "offset": 5.0}, "exactly one target"),
    ({"pid": 0, "offset": 5.0}, "positive"),
    ({"pid": 10}, "nothing to do"),
    ({"pid": 10, "rate": 0.0}, "--rate"),
    ({"pid": 10, "rate": 5000.0}, "--rate"),
    ({"pid": 10, "offset": float("inf")}, "century"),
    ({"unit": "nginx", "offset": 1.0}, "NAME.service"),
    ({"unit": "bad name.service", "offset": 1.0}, "not valid"),
    ({"pid": 10, "offset": 1.0, "restart_on_rollback": True}, "goes with --unit"),
])
def test_bad_specs_are_refused(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        ClockSpec(**kwargs)  # type: ignore[arg-type]


def test_the_control_line_round_trips_and_names_a_rate() -> None:
    line = faketime.control_text(-90.0, 1.0)
    assert line == "-90.000000 x1.000000000"
    assert faketime.parse_control(line) == (-90.0, 1.0)
    # the library scans the whole line for m/h/d/y multipliers: the line must hold none
    assert not set("mhdy") & set(faketime.control_text(300.5, 1.01))
    assert faketime.parse_control(faketime.NEUTRAL) == (0.0, 1.0)
    assert faketime.parse_control("@2020-01-01 00:00:00") is None


def test_a_rate_is_written_so_the_clock_stays_continuous() -> None:
    started, now = 1000.0, 1600.0
    for offset, rate in [(0.0, 1.01), (300.0, 2.0), (-90.0, 0.5)]:
        written = faketime.continuous_offset(offset, rate, started, now)
        # libfaketime: fake(t) = S + X + rate*(t - S)
        fake_now = started + written + rate * (now - started)
        assert fake_now == pytest.approx(now + offset)
        assert faketime.offset_at(faketime.control_text(written, rate), started, now) == \
            pytest.approx(offset, abs=1e-5)


def test_dynamic_static_and_script_programs() -> None:
    assert elf.preload_problem(sys.executable) is None
    busybox = shutil.which("busybox")
    if busybox:
        assert "statically linked" in (elf.preload_problem(busybox) or "")


def test_a_script_is_judged_by_its_interpreter(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text(f"#!{sys.executable}\nprint(1)\n")
    assert elf.preload_problem(script) is None
    static = tmp_path / "static"
    static.write_bytes(_elf(program_header_types=[1]))
    script.write_text(f"#!{static} -x\n")
    assert "statically linked" in (elf.preload_problem(script) or "")


def test_a_32_bit_or_big_endian_elf_is_refused(tmp_path: Path) -> None:
    odd = tmp_path / "odd"
    odd.write_bytes(b"\x7fELF\x01\x01" + bytes(58))
    assert "64-bit" in (elf.preload_problem(odd) or "")


def test_not_an_executable_is_not_held_against_it(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert elf.preload_problem(text) is None
    assert elf.preload_problem(tmp_path / "missing") is None


def _elf(*, program_header_types: list[int]) -> bytes:
    """A minimal 64-bit little-endian ELF header with the given program header types."""
    phoff, phentsize = 64, 56
    header = bytearray(64)
    header[0:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<QQ", header, 0x20, phoff, 0)
    struct.pack_into("<HHHHH", header, 0x36, phentsize, len(program_header_types), 64, 0, 0)
    table = b"".join(struct.pack("<I", t) + bytes(phentsize - 4) for t in program_header_types)
    return bytes(header) + table


def test_a_host_that_is_not_x86_64_is_refused_with_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The library the package ships is x86-64 only: elsewhere clock faults are refused (3)."""
    import platform

    from hostchaos.errors import PreconditionError
    from hostchaos.system import capabilities

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(PreconditionError, match=r"x86-64 host.*aarch64"):
        faketime.library()
    found = capabilities.libfaketime()
    assert not found.ok and "aarch64" in found.detail
