"""Names of cgroups: a hierarchy (v1 or v2) and a path in it. Pure data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

V1 = 1
V2 = 2


@dataclass(frozen=True)
class Hierarchy:
    """One mounted hierarchy: the v2 unified one, or a v1 one for a controller group."""

    version: int
    mount: Path
    controllers: tuple[str, ...]

    @property
    def name(self) -> str:
        return "unified" if self.version == V2 else ",".join(self.controllers)


@dataclass(frozen=True)
class CgroupRef:
    """A cgroup: its hierarchy and its path from the hierarchy's root ("/" or "/a/b")."""

    hierarchy: Hierarchy
    path: str

    @property
    def dir(self) -> Path:
        return self.hierarchy.mount / self.path.lstrip("/") if self.path != "/" else \
            self.hierarchy.mount

    @property
    def is_root(self) -> bool:
        return self.path == "/"

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def child(self, name: str) -> CgroupRef:
        return CgroupRef(self.hierarchy, f"{self.path.rstrip('/')}/{name}")

    def parent(self) -> CgroupRef | None:
        if self.is_root:
            return None
        head = self.path.rsplit("/", 1)[0]
        return CgroupRef(self.hierarchy, head or "/")

    def ancestors(self) -> list[CgroupRef]:
        """Root first, this cgroup last."""
        chain: list[CgroupRef] = []
        ref: CgroupRef | None = self
        while ref is not None:
            chain.append(ref)
            ref = ref.parent()
        return chain[::-1]

    def label(self) -> str:
        if self.hierarchy.version == V2:
            return self.path
        return f"{self.hierarchy.name}:{self.path}"

    def to_note(self) -> dict[str, Any]:
        return {"version": self.hierarchy.version, "mount": str(self.hierarchy.mount),
                "controllers": list(self.hierarchy.controllers), "path": self.path}

    @classmethod
    def from_note(cls, data: dict[str, Any]) -> CgroupRef:
        hierarchy = Hierarchy(int(data["version"]), Path(data["mount"]),
                              tuple(data["controllers"]))
        return cls(hierarchy, str(data["path"]))


def clean_path(path: str) -> str:
    """One spelling of a cgroup path: ``/a/b`` for ``a/b``, ``/a/b/``, ``//a//b``, ``/a/./b``.

    ``..`` is left alone (target specs refuse it).
    """
    return "/" + "/".join(p for p in path.split("/") if p not in ("", "."))
