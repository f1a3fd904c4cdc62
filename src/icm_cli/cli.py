"""The `icm` command line: the app, its commands (one module each in commands/), and the entry point."""

from __future__ import annotations

import typer

from .commands.common import user_errors
from .commands.compare import compare_command
from .commands.eval import eval_command
from .commands.export import export_command
from .commands.init import init_command
from .commands.label import label_command
from .commands.report import report_command
from .commands.stdout_pipe import run as run_app
from .commands.typer_app import IcmTyper, print_version

EXIT_CODES = """Exit codes: 0 done; 1 eval accuracy under --min-accuracy or gold ids labelled under
--min-coverage, or --require-signal with no signal; 2 usage or input error; 3 backend (model) error;
4 output could not be written (disk full, permission); 130 interrupted (Ctrl-C); 129/143 stopped by
SIGHUP/SIGTERM; 141 stdout closed early (e.g. | head)."""

app = IcmTyper(
    add_completion=False,
    no_args_is_help=True,
    help="Label a dataset with no human labels by Internal Coherence Maximization (ICM).\n\n" + EXIT_CODES,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


for name, command in (("label", label_command), ("eval", eval_command), ("compare", compare_command),
                      ("report", report_command), ("export", export_command), ("init", init_command)):
    app.command(name)(user_errors(command))


def main() -> None:
    run_app(app)  # a closed stdout (| head) exits 141, quietly: see stdout_pipe


if __name__ == "__main__":
    main()
