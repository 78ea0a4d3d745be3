"""Chaos Toolkit actions (and rollbacks): inject, extend and roll back hostchaos faults."""

from __future__ import annotations

from typing import Any

__all__ = ["extend_fault", "inject_fault", "rollback_all_faults", "rollback_fault",
           "rollback_injected"]

#: faults this process (one `chaos run`) injected, for rollback_injected
_INJECTED: list[str] = []


def _engine() -> Any:
    from hostchaos.backend import make_engine

    return make_engine()


def _summary(record: Any) -> dict[str, Any]:
    from hostchaos.cli.output import record_summary

    return dict(record_summary(record))


def inject_fault(kind: str, options: dict[str, Any] | None = None, duration: str = "60s",
                 lease: str | None = None) -> dict[str, Any]:
    """Inject one fault: ``kind`` and its command-line ``options`` (names without --).

    ``duration`` is its deadline (like --for): it ends then even if the
    experiment's rollbacks never run. Returns the fault (its ``id`` among others).
    """
    from hostchaos.faults.from_options import fault_request

    request = fault_request(kind, {**(options or {}), "for": duration,
                                   **({"lease": lease} if lease else {})})
    record = _engine().inject(request.spec, request.duration, request.lease)
    _INJECTED.append(record.id)
    return _summary(record)


def extend_fault(fault_id: str, duration: str | None = None) -> dict[str, Any]:
    """Renew a fault's lease; with ``duration``, move its deadline to now + duration."""
    from hostchaos.faults.from_options import duration_value

    return _summary(_engine().extend(fault_id, duration_value(duration, "duration")))


def rollback_fault(fault_id: str) -> dict[str, Any]:
    """Roll one fault back (already ended is fine)."""
    return _summary(_engine().rollback(fault_id, "chaostoolkit"))


def rollback_injected() -> list[dict[str, Any]]:
    """Roll back every fault this experiment run injected (use it under rollbacks)."""
    out = []
    engine = _engine()
    while _INJECTED:
        out.append(_summary(engine.rollback(_INJECTED.pop(), "chaostoolkit rollback")))
    return out


def rollback_all_faults() -> dict[str, Any]:
    """Roll back every open fault on this host, whoever injected it."""
    from hostchaos.errors import RollbackError

    done, errors = _engine().rollback_all("chaostoolkit")
    if errors:
        raise RollbackError("; ".join(errors))
    return {"rolled_back": [r.id for r in done]}
