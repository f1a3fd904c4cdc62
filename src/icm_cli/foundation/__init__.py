"""Floor 1 (foundation): what every other floor stands on, and which knows nothing of them.

The typed configuration (`config`, one import for all of it: its sections in `config_sections`,
each backend type's options in `backend_options`, YAML and `--set` read in `config_reading` and
`overrides`, one value's type and range in `config_values`); errors with their exit codes
(`errors`); prompt templates (`prompts`); accuracy, confidence intervals and agreement
(`metrics`, `agreement`); the version (`version`).

May import: the standard library and third-party packages only; nothing else of icm_cli.
"""
