"""The options of the commands that start runs or serve a model, generated from
:class:`RunSpec`'s field metadata (:class:`bench.schema.spec.Flag`), and the spec fields read
back from parsed options.

A field's default is its option's default, so each default is declared once, in the spec;
a command's own defaults and fixed values are in the same metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from typing import Any

from bench.run import registry
from bench.schema.spec import (
    ALL_GPUS,
    FLAG,
    SCENARIO_DEFAULT_DURATION_S,
    Flag,
    RunSpec,
)

Field = dataclasses.Field[Any]


def dataset(text: str) -> str | None:
    """``synthetic`` (None) or a dataset path."""
    return None if text == "synthetic" else text


def gpu_count(text: str) -> int | str:
    """``all`` or a positive number of GPUs (ranks)."""
    if text == ALL_GPUS:
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a GPU count: {text!r} (a number or all)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--gpus must be 1 or more, not {value}")
    return value


def latency_ms(text: str) -> float:
    """``15ms``, ``15`` (milliseconds), ``0.015s`` or ``1500us`` as milliseconds."""
    value = text.strip().lower()
    for suffix, scale in (("ms", 1.0), ("us", 1e-3), ("s", 1e3)):
        if value.endswith(suffix):
            number, factor = value[: -len(suffix)], scale
            break
    else:
        number, factor = value, 1.0
    try:
        value_ms = float(number) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a latency: {text!r} (e.g. 15ms)") from None
    if value_ms < 0:
        raise argparse.ArgumentTypeError(f"a latency is 0 or more, not {text!r}")
    return value_ms


#: The parsers and the registry's lists that a :class:`Flag` names.
PARSERS: dict[str, Callable[[str], Any]] = {
    "dataset": dataset,
    "gpu_count": gpu_count,
    "latency_ms": latency_ms,
}
CHOICES: dict[str, Callable[[], tuple[str, ...]]] = {
    "workloads": registry.workload_names,
    "backends": registry.backend_names,
    "served_workloads": registry.served_workload_names,
}


@functools.cache
def spec_flags() -> tuple[tuple[Field, Flag], ...]:
    """Every spec field with its flag, in the spec's order."""
    return tuple((f, f.metadata[FLAG]) for f in dataclasses.fields(RunSpec) if FLAG in f.metadata)


def default(f: Field, flag: Flag, command: str) -> Any:
    """The value a command gives the field when its option is not given."""
    if command in flag.defaults:
        return flag.defaults[command]
    return None if f.default is dataclasses.MISSING else f.default


def add_spec_flags(
    parser: argparse.ArgumentParser, command: str, *, overrides: bool = False
) -> None:
    """Add the options of ``command``'s spec fields to ``parser``, grouped as declared.
    With ``overrides`` (``bench suite``) an option has no default: it overrides the runs'
    own values only where given."""
    hints = typing.get_type_hints(RunSpec)
    groups: dict[str | None, Any] = {None: parser}
    exclusive: dict[str, Any] = {}
    for f, flag in spec_flags():
        if command not in flag.commands:
            continue
        flag = flag.for_command(command)
        if flag.group not in groups:
            groups[flag.group] = parser.add_argument_group(flag.group)
        container = groups[flag.group]
        if flag.exclusive is not None:
            if flag.exclusive not in exclusive:
                exclusive[flag.exclusive] = container.add_mutually_exclusive_group()
            container = exclusive[flag.exclusive]
        value = None if overrides else default(f, flag, command)
        options: dict[str, Any] = {"dest": f.name, "help": _help(flag.help, value)}
        # exclusive options stay None unless given: the other one may have been
        options["default"] = None if flag.exclusive else value
        name = flag.name or "--" + f.name.replace("_", "-")
        kind = _value_type(hints[f.name])
        if kind is bool:
            options["action"] = "store_true"
        else:
            options["type"] = PARSERS[flag.parse] if flag.parse else kind
            choices = flag.choices
            options["choices"] = CHOICES[choices]() if isinstance(choices, str) else choices
            default_metavar = name.removeprefix("--").replace("-", "_").upper()
            options["metavar"] = flag.metavar or (None if choices else default_metavar)
        if not overrides and (command in flag.required or f.default is dataclasses.MISSING):
            options["required"] = True
        container.add_argument(name, **options)


def spec_fields(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The spec fields ``command``'s parsed options give: each option's value, the values
    the command fixes, and the measured window: the option given (``--iters`` or
    ``--duration``), else the command's default, else a scenario's default duration."""
    fields: dict[str, Any] = {}
    sets: dict[str, list[tuple[Field, Flag]]] = {}
    for f, flag in spec_flags():
        if command in flag.commands:
            fields[f.name] = getattr(args, f.name)
            if flag.exclusive is not None:
                sets.setdefault(flag.exclusive, []).append((f, flag))
        elif command in flag.defaults:
            fields[f.name] = flag.defaults[command]
    chosen = {}  # per exclusive set: whether the user or the command chose its value
    for name, members in sets.items():
        given = {f.name for f, _ in members if fields[f.name] is not None}
        for f, flag in members:
            if f.name not in given:
                fields[f.name] = None if given else default(f, flag, command)
        chosen[name] = bool(given) or any(command in flag.defaults for _, flag in members)
    if not chosen.get("window", True) and fields.get("scenario", "loop") != "loop":
        fields.update(iters=None, duration_s=SCENARIO_DEFAULT_DURATION_S)
    return fields


def given_flags(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The spec fields whose options were given (``bench suite``'s overrides)."""
    return {
        f.name: value
        for f, flag in spec_flags()
        if command in flag.commands and (value := getattr(args, f.name)) is not None
    }


def _value_type(hint: Any) -> Any:
    """``int`` of ``int | None``: the type an option's text becomes."""
    if isinstance(hint, types.UnionType):
        kinds = [k for k in typing.get_args(hint) if k is not type(None)]
        return kinds[0] if len(kinds) == 1 else str
    return hint


def _help(text: str, value: Any) -> str:
    """The help text with the default shown, escaped for argparse's %-formatting."""
    if value is not None and value is not False:
        shown = f"{value:g}" if isinstance(value, float) else value
        text = f"{text} (default {shown})"
    return text.replace("%", "%%")
