"""Command-line plumbing shared by every script.

* ``ArgumentParser`` prints argparse errors as one line (exit code 2).
* ``add_config_arguments`` turns a config dataclass (fields made with
  ``utils.config.option``) into flags, so each default is written once.
* ``run_main`` turns a ``UserError`` into one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
import warnings
from typing import Any, Callable, TypeVar

from utils.errors import UserError

T = TypeVar("T")


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--name`` flag per dataclass field, typed from its annotation."""
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if field.name in skip:
            continue
        kind = hints[field.name]
        if typing.get_origin(kind) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))  # Optional[X] -> X
        meta = dict(field.metadata)
        if typing.get_origin(kind) is list:  # list[X] -> one or more X values
            kind, meta["nargs"] = typing.get_args(kind)[0], meta.get("nargs", "+")
        help_text = meta.pop("help", "")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        if kind is bool:
            parser.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(f"--{field.name}", type=kind, default=default, help=f"{help_text} (default: {default})", **meta)


def config_from_args(config_cls: type[T], args: argparse.Namespace, adjust: Callable[[dict], dict] | None = None) -> T:
    """The config of the parsed flags; ``adjust`` may change the values first (e.g. a preset's defaults)."""
    names = {f.name for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in vars(args).items() if k in names}
    return config_cls(**(adjust(values) if adjust else values))


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations of the flags written on the command line (not left at their defaults)."""
    defaults = {action: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS  # a flag not given then leaves no attribute
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in defaults.items():
            action.default = default


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def run_main(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run a script's ``main``; user errors become one line and exit code 2, warnings one line each."""
    warnings.formatwarning = one_line_warning
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint written is intact; rerun with --resume to continue", file=sys.stderr)
        sys.exit(130)
