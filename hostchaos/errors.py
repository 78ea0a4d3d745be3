"""One exception tree for hostchaos.

Every error a user can see is a :class:`HostchaosError`. Each class carries the
process exit code and the HTTP status the API answers with, so the command
line and the API never decide those on their own. Messages are one line that
names the object and, where there is one, the fix.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (the fast path)

if TYPE_CHECKING:
    from typing import Any


def one_line(message: str) -> str:
    """``message`` with its non-printable characters escaped (a user's text inside it may
    hold a line break or a carriage return), so an error is always exactly one line."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class HostchaosError(Exception):
    """Base of every hostchaos error: a one-line message meant for an operator."""

    exit_code = 1
    http_status = 500
    label = "error"

    def __init_subclass__(cls, *, exit_code: int | None = None, http_status: int | None = None,
                          label: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.exit_code = exit_code if exit_code is not None else cls.exit_code
        cls.http_status = http_status if http_status is not None else cls.http_status
        cls.label = label or cls.label

    def to_dict(self) -> dict[str, object]:
        return {"type": self.label, "message": one_line(str(self)), "exit_code": self.exit_code}


class SpecError(HostchaosError, exit_code=2, http_status=400, label="spec"):
    """Bad user input: a value out of range, an unparseable duration, a bad id."""


class PreconditionError(HostchaosError, exit_code=3, http_status=412, label="precondition"):
    """The host cannot do this: not root, kernel module missing, no controller."""


class TargetNotFoundError(HostchaosError, exit_code=4, http_status=404,
                          label="target-not-found"):
    """The interface, namespace, process, container, path or fault is not there."""


class ConflictError(HostchaosError, exit_code=5, http_status=409, label="conflict"):
    """A foreign object is in the way, a fault overlaps, or the target is protected."""


class ApplyError(HostchaosError, exit_code=6, http_status=500, label="apply"):
    """The kernel refused the fault; what was already done has been rolled back."""


class RollbackError(HostchaosError, exit_code=7, http_status=500, label="rollback"):
    """The host may still carry the fault; its record is kept for a retry."""


class JournalError(HostchaosError, exit_code=8, http_status=503, label="journal"):
    """The state directory is unusable, so nothing may be injected."""
