"""Options and helpers shared by the commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from hostchaos.errors import SpecError

F = TypeVar("F", bound=Callable[..., Any])


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A duration such as 30s, 5m, 1h, 1h30m or plain seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        from hostchaos.quantities import parse_duration

        try:
            return parse_duration(str(value), what=param.opts[0] if param else "duration")
        except SpecError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print machine-readable JSON on stdout.")(func)


