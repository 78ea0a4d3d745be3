"""One exception tree for hostchaos.

Every error a user can see is a :class:`HostchaosError`. Each class carries the
process exit code and the HTTP status the API answers with, so the CLI and the
daemon never decide those on their own.
"""

from __future__ import annotations


class HostchaosError(Exception):
    """Base of every hostchaos error: a one-line message meant for an operator."""

    exit_code = 1
    http_status = 500
    label = "error"

    def to_dict(self) -> dict[str, object]:
        return {"type": self.label, "message": str(self), "exit_code": self.exit_code}


class SpecError(HostchaosError):
    """Bad user input: a value out of range, an unparseable duration, a bad id."""

    exit_code = 2
    http_status = 400
    label = "spec"


class PreconditionError(HostchaosError):
    """The host cannot do this: not root, kernel module missing, no controller."""

    exit_code = 3
    http_status = 412
    label = "precondition"


class TargetNotFoundError(HostchaosError):
    """The interface, namespace, process, container, path or fault is not there."""

    exit_code = 4
    http_status = 404
    label = "target-not-found"


class ConflictError(HostchaosError):
    """A foreign object is in the way, a fault overlaps, or the target is protected."""

    exit_code = 5
    http_status = 409
    label = "conflict"


class ApplyError(HostchaosError):
    """The kernel refused the fault; what was already done has been rolled back."""

    exit_code = 6
    http_status = 500
    label = "apply"


class RollbackError(HostchaosError):
    """The host may still carry the fault; its record is kept for a retry."""

    exit_code = 7
    http_status = 500
    label = "rollback"


class JournalError(HostchaosError):
    """The state directory is unusable, so nothing may be injected."""

    exit_code = 8
    http_status = 503
    label = "journal"
