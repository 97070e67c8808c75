"""VBoxManage's option scanner and value readers, shared by every command: a mistake is a
UsageError with VirtualBox's one line, a command line read is a Call (one control-API request)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field


class UsageError(Exception):
    """A syntax mistake: the message is the one line after `VBoxManage: error: `."""


@dataclass(frozen=True)
class Call:
    op: str
    fields: dict
    output: str = ""                 # how vboxmanage prints the answer (format.py); "" prints nothing
    options: dict = field(default_factory=dict)


Arity = int | Callable[[str], int]     # how many values follow an option (a function of the first)


def _long_form(arg: str) -> str:
    # VirtualBox 3 spelled options with one dash (-memory); both forms are still accepted.
    if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2 and not arg[1].isdigit():
        return "-" + arg
    return arg


def scan(args: list[str], spec: dict[str, Arity]) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """Split args into (option, values) pairs in order and positional arguments.
    `--opt=value` and `--opt value` are the same for one-value options."""
    options, positionals = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        name, eq, inline = _long_form(arg).partition("=")
        if name not in spec:
            raise UsageError(f"Unknown option: {arg}")
        arity = spec[name]
        values = [inline] if eq else []
        if callable(arity):
            first = values[0] if values else (args[i] if i < len(args) else "")
            arity = arity(first)
        while len(values) < arity:
            if i >= len(args):
                raise UsageError(f"Missing argument to '{name}'")
            values.append(args[i])
            i += 1
        if len(values) > arity:
            raise UsageError(f"Option '{name}' takes no value")
        options.append((name, values))
    return options, positionals


def positional_values(command: str, positionals: list[str], names: tuple[str, ...], optional: int = 0) -> list[str]:
    required = len(names) - optional
    if len(positionals) < required:
        raise UsageError(f"{command}: missing {names[len(positionals)]}")
    if len(positionals) > len(names):
        raise UsageError(f"Invalid parameter '{positionals[len(names)]}'")
    return positionals + [None] * (len(names) - len(positionals))


def on_off(option: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("on", "enable", "true"):
        return True
    if lowered in ("off", "disable", "false"):
        return False
    raise UsageError(f"Invalid {option} argument '{value}' (on or off)")


def integer(option: str, value: str, minimum: int = 0) -> int:
    try:
        number = int(value, 0)
    except ValueError:
        raise UsageError(f"Invalid {option} argument '{value}' (a number)") from None
    if number < minimum:
        raise UsageError(f"Invalid {option} argument '{value}' (at least {minimum})")
    return number


def hexadecimal(option: str, value: str) -> int:
    try:
        number = int(value, 16)
    except ValueError:
        raise UsageError(f"Invalid {option} argument '{value}' (a hexadecimal number)") from None
    if not 0 <= number <= 0xFFFFFFFF:
        raise UsageError(f"Invalid {option} argument '{value}' (32 bits)")
    return number


def one_of(option: str, value: str, choices: tuple[str, ...]) -> str:
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise UsageError(f"Invalid {option} argument '{value}' ({', '.join(choices)})")


def absolute_path(cwd: str, path: str) -> str:
    return os.path.normpath(os.path.join(cwd, os.path.expanduser(path)))


def name_value(option: str, value: str) -> tuple[str, str]:
    name, eq, rest = value.partition("=")
    if not eq or not name:
        raise UsageError(f"Invalid {option} argument '{value}' (Name=Value)")
    return name, rest
