"""Floor 6 (commands): the command line, thin.

One module per command (`label`, `eval`, `compare`, `report`, `export`, `init`), each a Typer
function over a plain function a test or notebook calls; the shared options, one-line errors
and stop signals (`common`); what people see while and after a run (`progress`,
`label_report`); the Typer app with help as sentences (`typer_app`); stdout as a pipe
(`stdout_pipe`). `icm_cli/cli.py` is the entry point on this floor.

May import: every floor below.
"""
