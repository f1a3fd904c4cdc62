"""The Typer app's shell: help in the conventional shape, and `--version`.

Typer's own help (0.29) prints a type after every parameter, flags included (`--quiet <bool>`,
`--help <bool>`, `data <str>`), and writes a required argument as `{data}` in the usage line.
A flag takes no value and an argument's name already says what it is, so here flags show
nothing after them, values show one upper-case word (PATH, TEXT, INTEGER), and arguments read
as `DATA`, the way Click has always written them. Every command gets this through IcmTyper, so
the commands themselves declare parameters plainly.

Help text reads as sentences: a docstring is wrapped to fit the source, and Typer shows those
line breaks as written, so a description broke mid-sentence at whatever width the terminal had.
Here each paragraph's lines are joined before Typer sees them (blank lines still part
paragraphs), and the terminal's own width wraps them.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Optional

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from ..foundation.version import installed_version

# Click's words for the common value types, which readers of CLI help know.
_VALUE_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "bool": "BOOLEAN"}


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> Optional[str]:
        return None

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return [name if self.required else f"[{name}]"]


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> Optional[str]:
        if self.is_flag or self.count:
            return None
        if self.metavar is not None:
            return self.metavar
        shown = self.display_type(ctx)
        if shown and shown.startswith("<") and shown.endswith(">"):
            bare = shown[1:-1].removesuffix(" range")  # a range is printed after the word
            shown = _VALUE_WORDS.get(bare, bare.upper())
        return shown + ("..." if self.nargs != 1 else "")


def _conventional(param: Any) -> Any:
    # The subclasses add no state, only how the parameter is displayed, so retyping the
    # parameters Typer built is safe; Typer offers no hook to build them as these classes.
    if type(param) is TyperArgument:
        param.__class__ = _Argument
        if param.metavar is None:
            param.metavar = (param.name or "").upper()
    elif type(param) is TyperOption:
        param.__class__ = _Option
    return param


def sentences(text: Optional[str]) -> Optional[str]:
    """Help text with each paragraph's line breaks dropped: running sentences the terminal wraps."""
    if not text:
        return text
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(text))
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


class _ConventionalHelp:
    def __init__(self, *args: Any, **kwargs: Any):
        for key in ("help", "short_help", "epilog"):
            if key in kwargs:
                kwargs[key] = sentences(kwargs[key])
        super().__init__(*args, **kwargs)

    def get_params(self, ctx: Any) -> list[Any]:
        # Here, not in __init__: the --help option is made on first use.
        return [_conventional(p) for p in super().get_params(ctx)]  # type: ignore[misc]


class IcmCommand(_ConventionalHelp, TyperCommand):
    pass


class IcmGroup(_ConventionalHelp, TyperGroup):
    pass


class IcmTyper(typer.Typer):
    """typer.Typer whose group and commands print conventional help."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("cls", IcmGroup)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("cls", IcmCommand)
        return super().command(*args, **kwargs)


def print_version(value: bool) -> None:
    """Callback of an eager --version flag: print `icm VERSION` and stop."""
    if value:
        typer.echo(f"icm {installed_version()}")
        raise typer.Exit(0)
