"""The CLI's option types: choices taken from the registries, and ``--json`` output.

A choice type lists its values in ``--help`` and offers them to shell completion, but reads
its registry only when one of those asks (or a value is parsed): the approach and model
registries import torch and Lightning, which ``inspectnet --help`` must not wait for.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import typer
from typer.core import TyperCommand, TyperOption

Source = Callable[[], Sequence[str]] | Sequence[str]


class Choices:
    """The allowed values of an option, read from ``source`` on first use.

    Args:
        source: The values, or a function that returns them (a registry).
        key: The name the error message gives the value (``approach='x' is not allowed``:
            the wording of the config check, so a flag and a YAML key read the same).
        pattern: Values outside the list that are allowed too (a regex: ``cuda:\\d+``).
        open_ended: Any value is accepted (the list is a suggestion: a timm model name);
            the help lists the values after the option's text, and completion offers them.
        checked: Refuse other values when parsing. False where the library checks them
            (the config check of ``train``): one check, one wording, for a flag, a YAML
            key and the Python API alike.
    """

    def __init__(self, source: Source, key: str, pattern: str | None = None, open_ended: bool = False,
                 extra: str | None = None, checked: bool = True) -> None:
        self._source = source
        self._values: tuple[str, ...] | None = None
        self.key = key
        self.pattern = re.compile(pattern) if pattern else None
        self.open_ended = open_ended
        self.extra = extra
        self.checked = checked

    @property
    def values(self) -> tuple[str, ...]:
        if self._values is None:
            values = self._source() if callable(self._source) else self._source
            self._values = tuple(str(v) for v in values)
        return self._values

    def label(self) -> str:
        """``<a|b|c>``, as the help shows a choice option's values (``<text>`` when open-ended)."""
        if self.open_ended:
            return "<text>"
        return "<" + "|".join([*self.values, *([self.extra] if self.extra else [])]) + ">"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed, or None when it is."""
        if value is None or self.open_ended or not self.checked or str(value) in self.values:
            return None
        if self.pattern is not None and self.pattern.fullmatch(str(value)):
            return None
        allowed = ", ".join(self.values) + (f" or {self.extra}" if self.extra else "")
        return f"{self.key}={value!r} is not allowed; choose one of {allowed}"


class _ChoiceOption(TyperOption):
    """A typer option with :class:`Choices`: shown in the help, offered to completion and
    checked when parsed (a usage error, exit status 2). Set by :func:`with_choices`."""

    choices_spec: Choices

    def display_type(self, ctx: Any) -> str:
        return self.choices_spec.label()

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        from typer._click.shell_completion import CompletionItem

        return [CompletionItem(v) for v in self.choices_spec.values if v.startswith(incomplete)]

    def process_value(self, ctx: Any, value: Any) -> Any:
        value = super().process_value(ctx, value)
        why = self.choices_spec.problem(value)
        if why is not None:
            raise typer.BadParameter(why, ctx=ctx, param=self)
        return value


def with_choices(choices: dict[str, Choices] | None = None,
                 helps: dict[str, Callable[[], str]] | None = None) -> type[TyperCommand]:
    """A command class (``@app.command(cls=...)``) whose named options take these choices,
    and whose help fills in these texts when it is shown (not when the CLI starts)."""
    choices, helps = dict(choices or {}), dict(helps or {})

    class ChoicesCommand(TyperCommand):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            for p in self.params:
                if p.name in choices and isinstance(p, TyperOption):
                    p.__class__ = _ChoiceOption
                    p.choices_spec = choices[p.name]

        def format_help(self, ctx: Any, formatter: Any) -> None:
            for p in self.params:
                if p.name in helps:
                    p.help = helps[p.name]()
                spec = choices.get(p.name)
                if spec is not None and spec.open_ended and "Registered:" not in (p.help or ""):
                    p.help = f"{p.help or ''} Registered: {', '.join(spec.values)}.".strip()
            super().format_help(ctx, formatter)

    return ChoicesCommand


# The registries, read on first use.


def approaches() -> list[str]:
    from .train.approach import list_approaches

    return list_approaches()


def approach_help() -> str:
    from .train.approach import approaches_help

    return approaches_help()


def models() -> list[str]:
    from .models import list_models

    return list_models()


def engines() -> Sequence[str]:
    from .predict.factory import ENGINES

    return ENGINES


def predict_engines() -> Sequence[str]:
    """``predict``'s engines: the predictors' (``serve``'s too) and ``ray``, batch inference
    with the station on a Ray cluster (:mod:`inspectnet.predict.ray_engine`)."""
    return (*engines(), "ray")


def model_choices() -> Choices:
    """The registered models; any timm name is accepted too (the registry says if it is not one)."""
    return Choices(models, "model", open_ended=True)


def device_choices() -> Choices:
    """Inference devices: auto, cpu, cuda and ``cuda:N``."""
    from .config import DEVICES

    return Choices(DEVICES, "device", pattern=r"cuda:\d+", extra="cuda:N")


# --json: one document on stdout for scripts; everything else on stderr.

_REAL_STDOUT: list[TextIO] = []  # the stdout of each --json command running (innermost last)


def json_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a command that has an ``as_json`` parameter: when it is set, whatever the
    command prints to stdout (tables, progress, libraries' own prints) goes to stderr, and
    :func:`emit_json` writes the one JSON document to the real stdout."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("as_json"):
            return fn(*args, **kwargs)
        _REAL_STDOUT.append(sys.stdout)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return fn(*args, **kwargs)
        finally:
            _REAL_STDOUT.pop()

    return wrapper


def json_mode() -> bool:
    """Whether a ``--json`` command is running (see :func:`json_command`)."""
    return bool(_REAL_STDOUT)


def emit_json(doc: Any) -> None:
    """Write ``doc`` as the command's JSON document (NaN and inf as null); nothing outside
    ``--json``."""
    if not _REAL_STDOUT:
        return
    from .io import finite_json

    real = _REAL_STDOUT[-1]
    real.write(json.dumps(finite_json(doc), indent=2, default=str, allow_nan=False) + "\n")
    real.flush()
