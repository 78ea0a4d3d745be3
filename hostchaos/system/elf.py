"""What an executable is, read from its ELF headers: why LD_PRELOAD would not reach it.

An LD_PRELOAD library (libfaketime) only reaches a program that the dynamic
loader starts (it has a PT_INTERP program header), that is not started
"secure" (setuid, setgid or file capabilities: the loader then ignores
LD_PRELOAD paths), and that reads the clock through libc (Go programs call
the vDSO themselves). Scripts are judged by their ``#!`` interpreter.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path
from typing import BinaryIO

_PT_INTERP = 3
_GO_SECTIONS = (b".go.buildinfo", b".note.go.buildid", b".gopclntab")
_AT_SECURE = 23


def preload_problem(path: str | Path, *, depth: int = 0) -> str | None:
    """Why a library preloaded into ``path`` would not take, or None if it would.

    A file that is neither ELF nor a ``#!`` script (or cannot be read) gives
    None: nothing is known against it.
    """
    try:
        info = os.stat(path)
        with open(path, "rb") as handle:
            head = handle.read(64)
            if head.startswith(b"#!") and depth < 4:
                handle.seek(0)
                line = handle.readline(256)[2:].split()
                return preload_problem(line[0].decode(), depth=depth + 1) if line else None
            if not head.startswith(b"\x7fELF"):
                return None
            if info.st_mode & (stat.S_ISUID | stat.S_ISGID):
                return f"{path} is setuid/setgid: the dynamic loader ignores LD_PRELOAD for it"
            return _elf_problem(handle, head, str(path))
    except OSError:
        return None


def _elf_problem(handle: BinaryIO, head: bytes, name: str) -> str | None:
    if head[4] != 2 or head[5] != 1:  # ELFCLASS64, little-endian
        return f"{name} is not a 64-bit little-endian ELF program (libfaketime here is x86-64)"
    (e_phoff, e_shoff) = struct.unpack_from("<QQ", head, 0x20)
    (e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from("<HHHHH",
                                                                                 head, 0x36)
    handle.seek(e_phoff)
    table = handle.read(e_phentsize * e_phnum)
    types = [struct.unpack_from("<I", table, i * e_phentsize)[0] for i in range(e_phnum)]
    if _PT_INTERP not in types:
        return f"{name} is statically linked: no dynamic loader runs that could preload a library"
    if _section_names(handle, e_shoff, e_shentsize, e_shnum, e_shstrndx) & set(_GO_SECTIONS):
        return f"{name} is a Go program: it reads the clock without libc, so libfaketime " \
               "cannot change it"
    return None


def _section_names(handle: BinaryIO, shoff: int, shentsize: int, shnum: int,
                   shstrndx: int) -> set[bytes]:
    if not shoff or not shnum or shstrndx >= shnum or shnum > 65535:
        return set()
    handle.seek(shoff)
    table = handle.read(shentsize * shnum)
    if len(table) < shentsize * shnum:
        return set()
    # Elf64_Shdr: sh_name (I), sh_type (I), sh_flags (Q), sh_addr (Q), sh_offset (Q), sh_size (Q)
    names_offset, names_size = struct.unpack_from("<QQ", table, shstrndx * shentsize + 24)
    if names_size > 1 << 20:
        return set()
    handle.seek(names_offset)
    strings = handle.read(names_size)
    out = set()
    for i in range(shnum):
        start = struct.unpack_from("<I", table, i * shentsize)[0]
        end = strings.find(b"\0", start)
        out.add(strings[start:end if end >= 0 else None])
    return out


def process_problem(pid: int) -> str | None:
    """Why a library preloaded into running process ``pid`` would not take, or None."""
    if _secure_exec(pid):
        return (f"process {pid} was started secure (setuid, setgid or file capabilities): "
                "the dynamic loader ignored LD_PRELOAD for it")
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    problem = preload_problem(f"/proc/{pid}/exe")
    return problem.replace(f"/proc/{pid}/exe", exe) if problem else None


def _secure_exec(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/auxv").read_bytes()
    except OSError:
        return False
    for i in range(0, len(raw) - 15, 16):
        key, value = struct.unpack_from("<QQ", raw, i)
        if key == _AT_SECURE:
            return bool(value != 0)
    return False
