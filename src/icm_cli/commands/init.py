"""`icm init`: a commented starter config for a task type (the texts are in icm_cli/starter.py)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .common import ForceOpt


def init_command(
    task_type: Annotated[str, typer.Option("--type", help="classification | claims | comparison")] = "classification",
    out: Annotated[str, typer.Option("-o", "--out", metavar="PATH", help="Where to write the starter config; - for "
                                                                         "stdout.")] = "icm.yaml",
    force: ForceOpt = False,
) -> None:
    """Write a commented starter config for a task type, sized for the embedded CPU model."""
    from ..run.starter import write_starter

    write_starter(task_type, out, force)
    if out != "-":
        print(f"wrote {out}: edit the template and labels, then run icm label DATA -c {out} --dry-run", file=sys.stderr)
