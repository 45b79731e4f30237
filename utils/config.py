"""Config dataclasses whose fields carry their own help text.

Every trainable thing and every script has one config dataclass. A field made
with ``option`` states its default and what it means once; ``utils.cli`` turns
the fields into command-line flags, and the same object is stored with the
checkpoint.
"""
from __future__ import annotations

import dataclasses
from typing import Any


def option(default: Any, help: str, **argparse_kwargs: Any) -> Any:
    """A dataclass field with its command-line help (and argparse extras such as ``choices`` or ``nargs``)."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_kwargs})


def override(base: type, name: str, default: Any) -> Any:
    """Field ``name`` of the dataclass ``base`` with another default, its help text kept, for a subclass to restate."""
    inherited = base.__dataclass_fields__[name]
    return dataclasses.field(default=default, metadata=inherited.metadata)
