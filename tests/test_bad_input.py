"""Bad input never produces a traceback: `icm` exits 2 with one line naming the file.

Every case checks the same contract (see `assert_usage_error`):
- exit code 2 (usage or input error);
- exactly one line on stderr, starting `icm: error:`, naming the file (and the line and field
  where they apply);
- no "Traceback" on stdout or stderr, and no exception escaping the command;
- nothing written: no OUT, no OUT.summary.json, no checkpoint, nothing on stdout.

Most cases run in-process through typer's CliRunner (fast). A few run the real console entry
point in a subprocess to prove no traceback reaches a terminal. No test here loads a model: an
autouse fixture makes any attempt to load one fail loudly.

Known bugs are kept as strict xfails whose reason starts with "BUG:".
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from icm_cli.backends import loading
from icm_cli.cli import app
from icm_cli.foundation.config import BackendConfig

ROOT = Path(__file__).resolve().parents[1]

CLASSIFY_YAML = """\
task:
  type: classification
  template: "Tweet: {text}\\nSentiment:"
  labels: [positive, negative]
  id_field: id
search:
  iterations: 5
"""

CLAIMS_YAML = """\
task:
  type: claims
  template: "Question: {question}\\nClaim: {choice}\\nI think this claim is"
  labels: ["True", "False"]
  id_field: id
  group_field: consistency_id
search:
  iterations: 5
"""

GOOD_ROWS = '{"id": 1, "text": "great day"}\n{"id": 2, "text": "awful day"}\n{"id": 3, "text": "fine"}\n'


# --------------------------------------------------------------------------------------------
# helpers


class ModelLoadAttempted(Exception):
    """Raised by the guard when a test would load a model (input errors must come first)."""


@pytest.fixture(autouse=True)
def _no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise ModelLoadAttempted("test guard: icm tried to load a model; the input error must surface before that")

    monkeypatch.setattr(loading, "load_backend", refuse)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A temporary cwd holding the two configs, so messages name short relative paths."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "classify.yaml").write_text(CLASSIFY_YAML)
    (tmp_path / "claims.yaml").write_text(CLAIMS_YAML)
    return tmp_path


def invoke(*args: str, env: dict | None = None, stdin: str | bytes | None = None):
    return CliRunner().invoke(app, list(args), env=env, input=stdin)


def _written(out: Path) -> list[Path]:
    """Files the run could have produced beside OUT."""
    candidates = [
        out,
        out.with_name(out.name + ".summary.json"),
        out.with_name(out.name + ".checkpoint"),
        out.with_name(out.name + ".checkpoint.json"),
        out.with_name(out.name + ".lock"),
    ]
    stray_tmp = list(out.parent.glob(f".{out.name}.*.tmp")) if out.parent.exists() else []
    return [p for p in candidates if p.exists()] + stray_tmp


def assert_usage_error(result, *must_contain: str, out: Path | None = None, allow_existing: tuple[Path, ...] = (),
                       code: int = 2):
    """The shared contract for one bad-input case run in-process (exit 3 where the engine is at fault)."""
    stdout, stderr = result.stdout, result.stderr
    assert "Traceback" not in stdout and "Traceback" not in stderr, (stdout, stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"exception escaped the command: {result.exception!r}\nstderr: {stderr}"
    )
    assert result.exit_code == code, f"exit {result.exit_code}, stderr: {stderr!r}, stdout: {stdout[-500:]!r}"
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}: {stderr!r}"
    line = lines[0]
    assert line.startswith("icm: error: "), line
    for part in must_contain:
        assert part in line, f"{part!r} not in {line!r}"
    assert stdout == "", f"nothing may reach stdout on an input error, got {stdout[:500]!r}"
    if out is not None:
        produced = [p for p in _written(out) if p not in allow_existing]
        assert produced == [], f"files written despite the error: {produced}"
    return line


def write(path: Path, content: bytes | str) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


# --------------------------------------------------------------------------------------------
# data file problems (JSONL)

BIG_LINE = b'{"id": 2, "text": "' + b"a" * (4 * 1024 * 1024 + 100) + b'"}'

# (id, config, data bytes, substrings the one error line must hold)
DATA_CASES = [
    ("invalid-json-trailing-comma", "classify.yaml", b'{"id": 1, "text": "a"}\n{"id": 2, "text": "b",}\n', ["data.jsonl:2", "JSON"]),
    ("invalid-json-single-quotes", "classify.yaml", b'{"id": 1, "text": "a"}\n\n{"id": 3, \'text\': "c"}\n', ["data.jsonl:3", "JSON"]),
    ("invalid-json-truncated", "classify.yaml", b'{"id": 1, "text": "a"}\n{"id": 2, "text": "b"\n', ["data.jsonl:2", "JSON"]),
    ("invalid-json-trailing-garbage", "classify.yaml", b'{"id": 1, "text": "a"} x\n', ["data.jsonl:1", "JSON"]),
    ("invalid-json-bare-word", "classify.yaml", b'{"id": 1, "text": "a"}\nhello\n', ["data.jsonl:2", "JSON"]),
    ("invalid-json-deep-nesting", "classify.yaml", b'{"id": 1, "text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", ["data.jsonl:1", "JSON"]),
    ("row-is-array", "classify.yaml", b'{"id": 1, "text": "a"}\n[1, 2]\n', ["data.jsonl:2", "object"]),
    ("row-is-string", "classify.yaml", b'"just text"\n', ["data.jsonl:1", "object"]),
    ("row-is-number", "classify.yaml", b'{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\n42\n', ["data.jsonl:3", "object"]),
    ("row-is-null", "classify.yaml", b'null\n', ["data.jsonl:1", "object"]),
    ("row-is-bool", "classify.yaml", b'{"id": 1, "text": "a"}\ntrue\n', ["data.jsonl:2", "object"]),
    ("template-field-missing-on-one-row", "classify.yaml", b'{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\n{"id": 3, "body": "c"}\n', ["data.jsonl:3", "'text'", "this row has 'id', 'body'"]),
    ("template-field-is-list", "classify.yaml", b'{"id": 1, "text": "a"}\n{"id": 2, "text": ["b", "c"]}\n', ["data.jsonl:2", "'text'"]),
    ("template-field-is-null", "classify.yaml", b'{"id": 1, "text": null}\n{"id": 2, "text": "b"}\n', ["data.jsonl:1", "'text'"]),
    ("template-field-is-object", "classify.yaml", b'{"id": 1, "text": "a"}\n{"id": 2, "text": {"x": 1}}\n', ["data.jsonl:2", "'text'"]),
    ("template-field-is-bool", "classify.yaml", b'{"id": 1, "text": "a"}\n{"id": 2, "text": false}\n', ["data.jsonl:2", "'text'"]),
    ("template-field-no-row-has", "classify.yaml", b'{"id": 1, "body": "a"}\n{"id": 2, "body": "b"}\n', ["data.jsonl", "'text'", "the rows have 'id', 'body'"]),
    ("empty-file", "classify.yaml", b"", ["data.jsonl"]),
    ("only-blank-lines", "classify.yaml", b"\n   \n\t\n\r\n\n", ["data.jsonl"]),
    ("non-utf8-bytes", "classify.yaml", b'{"id": 1, "text": "a"}\n{"id": 2, "text": "caf\xe9"}\n', ["data.jsonl:2", "UTF-8"]),
    ("non-utf8-latin1-file", "classify.yaml", b'\xff\xfe{\x00"\x00', ["data.jsonl:1", "UTF-8"]),
    ("line-over-4-MiB", "classify.yaml", b'{"id": 1, "text": "a"}\n' + BIG_LINE + b"\n", ["data.jsonl:2", "limit"]),
    ("output-field-already-present", "classify.yaml", b'{"id": 1, "text": "a"}\n{"id": 2, "text": "b", "label": "x"}\n', ["data.jsonl:2", "'label'"]),
    ("group-field-missing-on-some-rows", "claims.yaml",
     (b'{"id": 1, "question": "q1", "choice": "a", "consistency_id": "g1"}\n'
      b'{"id": 2, "question": "q1", "choice": "b", "consistency_id": "g1"}\n'
      b'{"id": 3, "question": "q2", "choice": "c"}\n'),
     ["data.jsonl:3", "'consistency_id'"]),
    ("group-field-null", "claims.yaml",
     b'{"id": 1, "question": "q1", "choice": "a", "consistency_id": null}\n',
     ["data.jsonl:1", "'consistency_id'"]),
    ("claims-template-field-missing", "claims.yaml",
     (b'{"id": 1, "question": "q1", "choice": "a", "consistency_id": "g1"}\n'
      b'{"id": 2, "question": "q1", "consistency_id": "g1"}\n'),
     ["data.jsonl:2", "'choice'"]),
]

DUPLICATE_ID_BUG = (
    "BUG: data.row_ids() is never called (cli.label/tasks.build_task/runner never check "
    "task.id_field), so duplicate or missing ids are accepted and the run goes on to load the model"
)

DATA_CASES_BUGGY = [
    pytest.param("duplicate-ids", "classify.yaml",
                 b'{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\n{"id": 1, "text": "c"}\n',
                 ["data.jsonl:3", "duplicate", "'1'"], id="duplicate-ids"),
    pytest.param("id-field-missing", "classify.yaml",
                 b'{"id": 1, "text": "a"}\n{"text": "b"}\n',
                 ["data.jsonl:2", "'id'"], id="id-field-missing"),
    pytest.param("lone-surrogate-escape", "classify.yaml",
                 b'{"id": 1, "text": "a"}\n{"id": 2, "text": "bad \\ud800 half"}\n',
                 ["data.jsonl:2", "'text'"],
                 id="lone-surrogate-escape"),
    pytest.param("integer-over-4300-digits", "classify.yaml",
                 b'{"id": 1, "text": "a", "n": ' + b"1" * 5000 + b"}\n",
                 ["data.jsonl:1"],
                 id="integer-over-4300-digits"),
]


@pytest.mark.parametrize("mode", ["out", "dry-run"])
@pytest.mark.parametrize(
    "case, config, content, expected",
    [pytest.param(*c, id=c[0]) for c in DATA_CASES] + DATA_CASES_BUGGY,
)
def test_bad_data_file(workdir, case, config, content, expected, mode):
    data = write(workdir / "data.jsonl", content)
    out = workdir / "out.jsonl"
    extra = ["-o", str(out.name)] if mode == "out" else ["--dry-run"]
    result = invoke("label", data.name, "-c", config, *extra)
    assert_usage_error(result, *expected, out=out)


def test_bad_data_on_stdin_names_stdin(workdir):
    result = invoke("label", "-", "-c", "classify.yaml", stdin=b'{"id": 1, "text": "a"}\n[1]\n')
    assert_usage_error(result, "<stdin>:2", "object")


def test_data_file_not_found(workdir):
    result = invoke("label", "nope.jsonl", "-c", "classify.yaml", "-o", "out.jsonl")
    assert_usage_error(result, "nope.jsonl", "not found", out=workdir / "out.jsonl")


def test_data_path_is_a_directory(workdir):
    (workdir / "dir.jsonl").mkdir()
    result = invoke("label", "dir.jsonl", "-c", "classify.yaml", "-o", "out.jsonl")
    assert_usage_error(result, "dir.jsonl", out=workdir / "out.jsonl")


# --------------------------------------------------------------------------------------------
# config problems

# (id, config text, substrings the one error line must hold)
CONFIG_CASES = [
    ("yaml-unclosed-flow-list", 'task:\n  template: "x {text}"\n  labels: [positive, negative\nsearch:\n  seed: 1\n', ["bad.yaml:4", "YAML"]),
    ("yaml-bad-indent", 'task:\n  template: "x {text}"\n    labels: [a, b]\n', ["bad.yaml:3", "YAML"]),
    ("yaml-tab", 'task:\n  template: "x {text}"\n\tlabels: [a, b]\n', ["bad.yaml:3", "YAML"]),
    ("unknown-key-in-section", "search:\n  alpah: 3\n", ["bad.yaml", "'search.alpah'", "did you mean", "'search.alpha'"]),
    ("unknown-section", "serch:\n  alpha: 3\n", ["bad.yaml", "'serch'", "did you mean", "'search'"]),
    ("unknown-task-key", 'task:\n  templat: "x {text}"\n', ["bad.yaml", "'task.templat'", "did you mean", "'task.template'"]),
    ("seed-wrong-type", 'search:\n  seed: "x"\n', ["bad.yaml", "'search.seed'", "integer"]),
    ("seed-float", "search:\n  seed: 1.5\n", ["bad.yaml", "'search.seed'"]),
    ("alpha-negative", "search:\n  alpha: -1\n", ["bad.yaml", "'search.alpha'"]),
    ("alpha-not-a-number", "search:\n  alpha: lots\n", ["bad.yaml", "'search.alpha'"]),
    ("alpha-nan", "search:\n  alpha: .nan\n", ["bad.yaml", "'search.alpha'"]),
    ("iterations-negative", "search:\n  iterations: -5\n", ["bad.yaml", "'search.iterations'"]),
    ("max-tokens-too-small", "core:\n  max_tokens: 3\n", ["bad.yaml", "'core.max_tokens'"]),
    ("labels-one-word", 'task:\n  template: "x {text}"\n  labels: [positive]\n', ["bad.yaml", "'task.labels'"]),
    ("labels-empty", 'task:\n  template: "x {text}"\n  labels: []\n', ["bad.yaml", "'task.labels'"]),
    ("labels-repeated", 'task:\n  template: "x {text}"\n  labels: [a, a]\n', ["bad.yaml", "'task.labels'"]),
    ("labels-not-a-list", 'task:\n  template: "x {text}"\n  labels: positive\n', ["bad.yaml", "'task.labels'"]),
    ("task-type-unknown", "task:\n  type: regression\n", ["bad.yaml", "'task.type'"]),
    ("template-attribute-access", 'task:\n  template: "x {text.__class__}"\n', ["bad.yaml", "'task.template'"]),
    ("template-unbalanced-brace", 'task:\n  template: "x {text"\n', ["bad.yaml", "'task.template'"]),
    ("section-not-a-mapping", "search: 3\n", ["bad.yaml", "'search'"]),
    ("config-not-a-mapping", "- task\n- search\n", ["bad.yaml"]),
    ("key-field-without-group", 'task:\n  type: claims\n  template: "x {text}"\n  labels: ["True", "False"]\n  key_field: answer\n', ["bad.yaml", "'task.key_field'"]),
    ("comparison-without-pair-fields", 'task:\n  type: comparison\n  template: "x {text}"\n  labels: ["True", "False"]\n', ["bad.yaml", "'task.pair_fields'"]),
    ("backend-dtype-unknown", "backend:\n  dtype: float8\n", ["bad.yaml", "'backend.dtype'"]),
]


@pytest.mark.parametrize("mode", ["out", "dry-run"])
@pytest.mark.parametrize("case, text, expected", [pytest.param(*c, id=c[0]) for c in CONFIG_CASES])
def test_bad_config(workdir, case, text, expected, mode):
    write(workdir / "data.jsonl", GOOD_ROWS)
    write(workdir / "bad.yaml", text)
    out = workdir / "out.jsonl"
    extra = ["-o", out.name] if mode == "out" else ["--dry-run"]
    result = invoke("label", "data.jsonl", "-c", "bad.yaml", *extra)
    assert_usage_error(result, *expected, out=out)


def test_config_not_found(workdir):
    write(workdir / "data.jsonl", GOOD_ROWS)
    result = invoke("label", "data.jsonl", "-c", "missing.yaml", "-o", "out.jsonl")
    assert_usage_error(result, "missing.yaml", "not found", out=workdir / "out.jsonl")


def test_config_not_utf8(workdir):
    write(workdir / "data.jsonl", GOOD_ROWS)
    write(workdir / "bad.yaml", b"task:\n  template: \"caf\xe9 {text}\"\n")
    result = invoke("label", "data.jsonl", "-c", "bad.yaml", "-o", "out.jsonl")
    assert_usage_error(result, "bad.yaml", "UTF-8", out=workdir / "out.jsonl")


def test_seed_option_not_an_integer(workdir):
    """A bad CLI option is click's own usage error: exit 2, no traceback, nothing written."""
    write(workdir / "data.jsonl", GOOD_ROWS)
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "out.jsonl", "--seed", "x")
    assert result.exit_code == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert "--seed" in result.stderr
    assert _written(workdir / "out.jsonl") == []


# --------------------------------------------------------------------------------------------
# a model that cannot be found

_REAL_LOAD_BACKEND = loading.load_backend  # captured before any test patches it

BAD_MODEL_YAML = """\
task:
  template: "Tweet: {text}\\nSentiment:"
  id_field: id
backend:
  model: /nonexistent/model-dir
"""


@pytest.fixture
def no_weights(monkeypatch):
    """Use the real loader, but make any attempt to read weights fail the test."""
    import transformers

    monkeypatch.setattr(loading, "load_backend", _REAL_LOAD_BACKEND)

    def refuse(*args, **kwargs):
        raise ModelLoadAttempted("test guard: weights were about to be loaded for a model that does not exist")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    from icm_cli.backends import hf

    monkeypatch.setattr(hf, "embedded_model_dir", refuse)


@pytest.mark.parametrize("mode", ["out", "dry-run"])
def test_model_not_found_is_a_usage_error(workdir, no_weights, mode):
    write(workdir / "data.jsonl", GOOD_ROWS)
    write(workdir / "model.yaml", BAD_MODEL_YAML)
    out = workdir / "out.jsonl"
    extra = ["-o", out.name] if mode == "out" else ["--dry-run"]
    # --quiet: the one line on stderr is then the error (see the subprocess test below for
    # the run without it).
    result = invoke("label", "data.jsonl", "-c", "model.yaml", "--quiet", *extra)
    assert_usage_error(result, "backend.model", "/nonexistent/model-dir", out=out)


@pytest.mark.parametrize("mode", ["out", "dry-run"])
def test_model_not_found_names_the_config_file(workdir, no_weights, mode):
    write(workdir / "data.jsonl", GOOD_ROWS)
    write(workdir / "model.yaml", BAD_MODEL_YAML)
    out = workdir / "out.jsonl"
    extra = ["-o", out.name] if mode == "out" else ["--dry-run"]
    result = invoke("label", "data.jsonl", "-c", "model.yaml", "--quiet", *extra)
    assert_usage_error(result, "model.yaml", "backend.model", "/nonexistent/model-dir", out=out)


_IMPORT_PROBE = """\
import json, sys
from icm_cli.cli import app
report = sys.argv[1]
try:
    app(sys.argv[2:])
except SystemExit as e:
    code = e.code
with open(report, "w") as f:
    json.dump({"code": code, "heavy": sorted(m for m in ("torch", "transformers") if m in sys.modules)}, f)
sys.exit(code)
"""


def test_model_not_found_fails_before_any_heavy_loading(tmp_path):
    write(tmp_path / "data.jsonl", GOOD_ROWS)
    write(tmp_path / "model.yaml", BAD_MODEL_YAML)
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, str(report), "label", "data.jsonl", "-c", "model.yaml", "-o", "out.jsonl"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert _written(tmp_path / "out.jsonl") == []
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("icm: error: "), proc.stderr
    assert json.loads(report.read_text())["heavy"] == [], "torch/transformers imported before the model path was checked"


# --------------------------------------------------------------------------------------------
# OUT, --force and --resume


@pytest.mark.parametrize("spelling", ["same", "dot-slash", "absolute", "via-parent", "symlink"])
def test_out_equal_to_input_is_refused(workdir, spelling):
    data = write(workdir / "data.jsonl", GOOD_ROWS)
    (workdir / "sub").mkdir()
    if spelling == "symlink":
        (workdir / "link.jsonl").symlink_to(data)
    out_arg = {
        "same": "data.jsonl",
        "dot-slash": "./data.jsonl",
        "absolute": str(data),
        "via-parent": "sub/../data.jsonl",
        "symlink": "link.jsonl",
    }[spelling]
    for extra in ([], ["--force"]):
        result = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", out_arg, *extra)
        assert_usage_error(result, Path(out_arg).name, "input", out=workdir / out_arg, allow_existing=(workdir / out_arg,))
        assert data.read_text() == GOOD_ROWS


def test_existing_out_without_force_is_refused(workdir):
    write(workdir / "data.jsonl", GOOD_ROWS)
    out = write(workdir / "out.jsonl", "precious\n")
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "out.jsonl")
    assert_usage_error(result, "out.jsonl", "--force", out=out, allow_existing=(out,))
    assert out.read_text() == "precious\n"


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
@pytest.mark.parametrize("kind,reason", [
    ("directory", "is a directory"),
    ("fifo", "not a regular file"),
    ("link-to-a-file", "symbolic link"),
    ("dangling-link", "symbolic link"),
])
def test_out_that_is_not_a_regular_file_is_refused_even_with_force(workdir, kind, reason, force):
    # --force replaces a file icm wrote; anything else is the user's, refused before any model loads
    write(workdir / "data.jsonl", GOOD_ROWS)
    out = workdir / "out.jsonl"
    if kind == "directory":
        out.mkdir()
        write(out / "mine.txt", "precious\n")
    elif kind == "fifo":
        os.mkfifo(out)
    elif kind == "link-to-a-file":
        out.symlink_to(write(workdir / "precious.jsonl", "precious\n"))
    else:
        out.symlink_to(workdir / "nowhere.jsonl")
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "out.jsonl", *force)
    line = assert_usage_error(result, "out.jsonl", reason, out=out, allow_existing=(out,))
    assert "pass --force" not in line
    assert out.is_symlink() == ("link" in kind) and out.is_dir() == (kind == "directory")
    assert out.is_fifo() == (kind == "fifo")


def test_summary_path_that_is_a_directory_is_refused_before_the_model_loads(workdir):
    write(workdir / "data.jsonl", GOOD_ROWS)
    (workdir / "out.jsonl.summary.json").mkdir()
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "out.jsonl", "--force")
    assert_usage_error(result, "out.jsonl.summary.json", "is a directory")
    assert (workdir / "out.jsonl.summary.json").is_dir() and not (workdir / "out.jsonl").exists()


def test_out_in_missing_directory_is_refused(workdir):
    write(workdir / "data.jsonl", GOOD_ROWS)
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "nodir/out.jsonl")
    assert_usage_error(result, "nodir", out=workdir / "nodir" / "out.jsonl")


def test_resume_without_checkpoint_is_refused(workdir):
    write(workdir / "data.jsonl", GOOD_ROWS)
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "out.jsonl", "--resume")
    assert_usage_error(result, "out.jsonl", "checkpoint", out=workdir / "out.jsonl")


def test_resume_without_out_is_refused(workdir):
    write(workdir / "data.jsonl", GOOD_ROWS)
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "--resume")
    assert_usage_error(result, "--resume", "-o")


CLAIMS_ROWS = ('{"id": 1, "question": "q1", "choice": "a", "answer": "x", "consistency_id": "g1"}\n'
               '{"id": 2, "question": "q1", "choice": "b", "answer": "y", "consistency_id": "g1"}\n')


@pytest.mark.parametrize(("config", "rows", "args", "says"), [
    ("classify.yaml", GOOD_ROWS, [], ["--engine ray needs -o OUT_DIR"]),
    ("classify.yaml", GOOD_ROWS, ["-o", "shards", "--limit", "2"], ["--limit and --sample run locally"]),
    ("classify.yaml", GOOD_ROWS, ["-o", "shards", "--resume"], ["without --resume"]),
    ("no-id.yaml", GOOD_ROWS, ["-o", "shards"], ["--engine ray", "set task.id_field"]),
    ("keyed-claims.yaml", CLAIMS_ROWS, ["-o", "shards"], ["task.group_field + task.key_field", "drop --engine ray"]),
], ids=["no-out", "limit", "resume", "no-id-field", "keyed-claims"])
def test_what_the_ray_engine_cannot_do_is_refused_before_anything_is_written(workdir, config, rows, args, says):
    (workdir / "no-id.yaml").write_text(CLASSIFY_YAML.replace("  id_field: id\n", ""))
    (workdir / "keyed-claims.yaml").write_text(CLAIMS_YAML.replace("  group_field: consistency_id\n",
                                                                   "  group_field: consistency_id\n  key_field: answer\n"))
    write(workdir / "data.jsonl", rows)
    result = invoke("label", "data.jsonl", "-c", config, "--engine", "ray", *args)
    assert_usage_error(result, *says)
    assert not (workdir / "shards").exists()


def test_the_ray_engine_without_ray_installed_is_refused_before_the_search(workdir, monkeypatch):
    # A None entry in sys.modules is how Python spells "not installed" for import and find_spec.
    monkeypatch.setitem(sys.modules, "ray", None)
    write(workdir / "data.jsonl", GOOD_ROWS)
    for dry_run in ([], ["--dry-run"]):
        assert_usage_error(invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "shards", "--engine", "ray",
                                  *dry_run), "--engine ray needs Ray: pip install 'icm-cli[ray]'")
    assert not (workdir / "shards").exists()


@pytest.mark.parametrize(("overrides", "says"), [
    (["ray.cpus=2", "ray.actors=2"], "2 actor(s) x 1 CPU plus 1 for reading the rows need 3 CPUs, the cluster has 2"),
    (["ray.cpus=1"], "1 actor(s) x 1 CPU plus 1 for reading the rows need 2 CPUs, the cluster has 1"),
    (["ray.cpus=8", "ray.gpus_per_actor=1"], "1 actor(s) x 1 GPU need 1 GPU, the cluster has 0"),
], ids=["actors", "one-cpu", "gpu"])
def test_a_local_cluster_too_small_for_the_actor_pool_is_refused_before_the_search(workdir, monkeypatch,
                                                                                   overrides, says):
    from icm_cli.run.ray_cluster import local_gpus

    if "gpu" in says.lower() and local_gpus():
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    write(workdir / "data.jsonl", GOOD_ROWS)
    sets = [a for o in overrides for a in ("--set", o)]
    for dry_run in ([], ["--dry-run"]):
        assert_usage_error(invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "shards", "--engine", "ray",
                                  *sets, *dry_run),
                           f"--engine ray on a local cluster (RAY_ADDRESS unset): {says}, so Ray would wait for ever")
    assert not (workdir / "shards").exists()


def test_a_ray_cluster_that_cannot_be_joined_is_one_line_before_the_search(workdir, monkeypatch):
    # RAY_ADDRESS=auto joins the cluster `ray start` left running here; with none, Ray refuses at once.
    if Path(tempfile.gettempdir(), "ray", "ray_current_cluster").exists():
        pytest.skip("a Ray cluster runs on this machine")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    write(workdir / "data.jsonl", GOOD_ROWS)
    assert_usage_error(invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "shards", "--engine", "ray"),
                       "--engine ray could not join the Ray cluster at RAY_ADDRESS=auto: Could not find any running "
                       "Ray instance", code=3)
    assert not (workdir / "shards").exists()


def test_a_ray_address_nothing_answers_at_is_one_line_at_once_not_after_rays_twenty_tries(workdir, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    write(workdir / "data.jsonl", GOOD_ROWS)
    for dry_run in ([], ["--dry-run"]):
        assert_usage_error(invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "shards", "--engine", "ray",
                                  *dry_run),
                           f"--engine ray could not join the Ray cluster at RAY_ADDRESS=127.0.0.1:{port}: nothing "
                           f"answers at 127.0.0.1:{port} (Connection refused)", code=3)
    assert not (workdir / "shards").exists()


def test_input_the_ray_engine_cannot_read_is_refused_naming_it(workdir):
    write(workdir / "data.txt", GOOD_ROWS)
    assert_usage_error(invoke("label", "data.txt", "-c", "classify.yaml", "-o", "shards", "--engine", "ray"),
                       "data.txt: --engine ray reads .jsonl, .csv or .parquet files")
    (workdir / "mixed").mkdir()
    write(workdir / "mixed" / "a.jsonl", GOOD_ROWS)
    write(workdir / "mixed" / "b.csv", "id,text\n4,ok\n")
    assert_usage_error(invoke("label", "mixed", "-c", "classify.yaml", "-o", "shards", "--engine", "ray"),
                       "mixed: --engine ray reads a directory", "of one kind (found csv, jsonl)")
    assert not (workdir / "shards").exists()


def test_an_out_dir_the_ray_engine_cannot_write_is_refused_and_left_as_it_was(workdir):
    from icm_cli.run.ray_shards import SUMMARY

    write(workdir / "data.jsonl", GOOD_ROWS)

    def refused(out: str, *says: str) -> None:
        assert_usage_error(invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", out, "--engine", "ray"),
                           out, *says)

    refused("shards.jsonl", "name a directory (no extension)")
    assert not (workdir / "shards.jsonl").exists()
    write(workdir / "afile", "mine\n")
    refused("afile", "is not a directory")
    assert (workdir / "afile").read_text() == "mine\n"
    (workdir / "theirs").mkdir()
    write(workdir / "theirs" / "notes.txt", "keep\n")
    refused("theirs", "holds 'notes.txt', which icm did not write")
    assert [p.name for p in (workdir / "theirs").iterdir()] == ["notes.txt"]
    (workdir / "done").mkdir()
    write(workdir / "done" / "part-00000.jsonl", '{"id": 1}\n')
    write(workdir / "done" / SUMMARY, "{}")
    refused("done", "holds a finished run; pass --force")
    assert sorted(p.name for p in (workdir / "done").iterdir()) == sorted(["part-00000.jsonl", SUMMARY])
    # --force replaces it when the run starts, not in a dry run.
    dry = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "done", "--engine", "ray", "--force", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert sorted(p.name for p in (workdir / "done").iterdir()) == sorted(["part-00000.jsonl", SUMMARY])


def test_an_unfinished_ray_out_dir_the_input_no_longer_matches_says_how_to_start_over(workdir, monkeypatch):
    """The checkpoint of a run whose input changed is refused before any model loads, naming the
    way out; a dry run with --force leaves the shards (--force clears them only for a real run:
    tests/test_ray_engine.py)."""
    from icm_cli.run.checkpoint import STATE, VERSION
    from icm_cli.run.ray_shards import CHECKPOINT

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    write(workdir / "data.jsonl", GOOD_ROWS)
    (workdir / "shards" / CHECKPOINT).mkdir(parents=True)
    state = write(workdir / "shards" / CHECKPOINT / STATE, json.dumps({"version": VERSION, "data_hash": "0" * 16}))
    shard = write(workdir / "shards" / "part-00000.jsonl", '{"id": "r1", "label": "positive"}\n')
    assert_usage_error(invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "shards", "--engine", "ray"),
                       "the input data changed since the checkpoint; refusing to resume; pass --force to start "
                       "over (it removes the shards written)")
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "shards", "--engine", "ray", "--force",
                    "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert state.exists() and shard.exists()


@pytest.mark.parametrize(("args", "says"), [
    (["--engine", "cluster"], ["--engine is 'cluster', must be local or ray"]),
    (["--require-signal", "--no-check"], ["--require-signal needs the signal check"]),
    (["--fixed", "-"], ["--fixed - and DATA - both read stdin"]),
], ids=["engine", "require-signal", "fixed-stdin"])
def test_label_options_that_cannot_go_together_are_refused(workdir, args, says):
    result = invoke("label", "-", "-c", "classify.yaml", *args, stdin=GOOD_ROWS)
    assert_usage_error(result, *says)


def test_leftover_checkpoint_without_resume_or_force_is_refused(workdir):
    write(workdir / "data.jsonl", GOOD_ROWS)
    (workdir / "out.jsonl.checkpoint").mkdir()
    state = write(workdir / "out.jsonl.checkpoint" / "state.json", "{}")
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "out.jsonl")
    line = assert_usage_error(result, "out.jsonl.checkpoint", "--resume", out=workdir / "out.jsonl",
                              allow_existing=(state.parent,))
    # The one line names the command that continues the run.
    assert "continue it with: icm label data.jsonl --config classify.yaml --out out.jsonl --resume" in line
    assert state.read_text() == "{}"


def test_checkpoint_of_an_earlier_icm_is_named_whole_and_removed_by_force(workdir):
    write(workdir / "data.jsonl", GOOD_ROWS)
    old = [write(workdir / "out.jsonl.checkpoint.json", "{}"), write(workdir / "out.jsonl.checkpoint.chunks.jsonl", "")]
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "out.jsonl")
    assert_usage_error(result, "out.jsonl.checkpoint.json and out.jsonl.checkpoint.chunks.jsonl", "--force",
                       out=workdir / "out.jsonl", allow_existing=tuple(old))
    with pytest.raises(ModelLoadAttempted):  # past the checkpoint: both files gone, the run starts
        CliRunner().invoke(app, ["label", "data.jsonl", "-c", "classify.yaml", "-o", "out.jsonl", "--force"],
                           catch_exceptions=False)
    assert not any(p.exists() for p in old)


@pytest.mark.parametrize("content", [
    "not json",
    '{"version": 999}',
    '{"version": 1, "data_hash": "0000"}',
    pytest.param("[1, 2]"),
])
def test_resume_from_unusable_checkpoint_is_refused(workdir, content):
    write(workdir / "data.jsonl", GOOD_ROWS)
    (workdir / "out.jsonl.checkpoint").mkdir()
    state = write(workdir / "out.jsonl.checkpoint" / "state.json", content)
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "out.jsonl", "--resume")
    assert_usage_error(result, "out.jsonl.checkpoint", out=workdir / "out.jsonl", allow_existing=(state.parent,))


# --------------------------------------------------------------------------------------------
# icm eval

GOLD = '{"id": 1, "label": "positive"}\n{"id": 2, "label": "negative"}\n'

# (id, labels file, gold file, substrings)
EVAL_CASES = [
    ("no-matching-ids", '{"id": 7, "label": "positive"}\n{"id": 8, "label": "negative"}\n', GOLD, ["gold.jsonl", "'id'"]),
    ("gold-invalid-json", GOLD, '{"id": 1, "label": "positive"}\n{"id": 2, label}\n', ["gold.jsonl:2", "JSON"]),
    ("gold-not-object", GOLD, '{"id": 1, "label": "positive"}\n[2]\n', ["gold.jsonl:2", "object"]),
    ("gold-missing-label", GOLD, '{"id": 1, "label": "positive"}\n{"id": 2}\n', ["gold.jsonl:2", "'label'"]),
    ("gold-duplicate-id", GOLD, GOLD + '{"id": 2, "label": "positive"}\n', ["gold.jsonl:3", "duplicate"]),
    ("gold-empty", GOLD, "", ["gold.jsonl"]),
    ("gold-not-utf8", GOLD, b'{"id": 1, "label": "caf\xe9"}\n', ["gold.jsonl", "UTF-8"]),
    ("gold-id-is-list", GOLD, '{"id": [1], "label": "positive"}\n', ["gold.jsonl:1", "'id'"]),
    ("labels-missing-id", '{"label": "positive"}\n', GOLD, ["labels.jsonl:1", "'id'"]),
]


@pytest.mark.parametrize("case, labels, gold, expected", [pytest.param(*c, id=c[0]) for c in EVAL_CASES] + [
    pytest.param("gold-integer-over-4300-digits", GOLD, b'{"id": 1, "label": "positive", "n": ' + b"1" * 5000 + b"}\n",
                 ["gold.jsonl:1"], id="gold-integer-over-4300-digits"),
])
def test_bad_eval_input(workdir, case, labels, gold, expected):
    write(workdir / "labels.jsonl", labels)
    write(workdir / "gold.jsonl", gold)
    result = invoke("eval", "labels.jsonl", "--gold", "gold.jsonl")
    assert_usage_error(result, *expected)


def test_eval_gold_not_found(workdir):
    write(workdir / "labels.jsonl", GOLD)
    result = invoke("eval", "labels.jsonl", "--gold", "nope.jsonl")
    assert_usage_error(result, "nope.jsonl", "not found")


# --------------------------------------------------------------------------------------------
# the real console entry point: nothing reaches a terminal as a traceback

SUBPROCESS_CASES = [
    ("invalid-json", ["label", "data.jsonl", "-c", "classify.yaml", "-o", "out.jsonl"], b'{"id": 1, "text": "a"}\n{oops\n', ["data.jsonl:2"]),
    ("non-utf8", ["label", "data.jsonl", "-c", "classify.yaml", "-o", "out.jsonl"], b'{"id": 1, "text": "\xff"}\n', ["data.jsonl:1"]),
    ("missing-field", ["label", "data.jsonl", "-c", "classify.yaml", "-o", "out.jsonl"], b'{"id": 1, "text": "a"}\n{"id": 2}\n', ["data.jsonl:2", "'text'"]),
    ("unknown-config-key", ["label", "data.jsonl", "-c", "typo.yaml", "-o", "out.jsonl"], GOOD_ROWS.encode(), ["typo.yaml", "did you mean"]),
    ("empty-stdin", ["label", "-", "-c", "classify.yaml"], None, ["<stdin>"]),
    ("eval-no-common-ids", ["eval", "data.jsonl", "--gold", "gold.jsonl"], b'{"id": 9, "label": "positive"}\n', ["gold.jsonl"]),
]


@pytest.mark.parametrize("case, args, data, expected", [pytest.param(*c, id=c[0]) for c in SUBPROCESS_CASES])
def test_console_script_prints_one_line_no_traceback(tmp_path, case, args, data, expected):
    write(tmp_path / "classify.yaml", CLASSIFY_YAML)
    write(tmp_path / "typo.yaml", "search:\n  iteratons: 3\n")
    write(tmp_path / "gold.jsonl", GOLD)
    if data is not None:
        write(tmp_path / "data.jsonl", data)
    proc = subprocess.run(
        [sys.executable, "-m", "icm_cli.cli", *args], input=b"", capture_output=True, cwd=tmp_path, timeout=300, check=False,
    )
    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    assert "Traceback" not in stdout + stderr, stderr
    assert proc.returncode == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("icm: error: "), stderr
    for part in expected:
        assert part in lines[0]
    assert stdout == ""
    assert _written(tmp_path / "out.jsonl") == []


# --------------------------------------------------------------------------------------------
# property tests: arbitrary input never produces a traceback

PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def tokenizer_once(monkeypatch):
    """Load the dry-run tokenizer once for all examples rather than once per example."""
    from icm_cli.backends import tokens

    monkeypatch.setattr(tokens, "token_counter", functools.lru_cache(maxsize=None)(tokens.token_counter))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30) | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# A row the config accepts: `text` a string or number, other fields anything.
good_row = st.fixed_dictionaries(
    {"text": st.text(max_size=60) | st.integers() | st.floats()},
    optional={"id": json_values, "note": json_values, "x": json_values},
)
# Rows that may be bad: `text` of any JSON type, sometimes a field the output would overwrite.
rowish = st.builds(
    lambda text, extra: {**extra, "text": text},
    json_values,
    st.dictionaries(st.sampled_from(["id", "note", "label", "confidence", "x"]), json_values, max_size=3),
)
# Mostly valid files (so --dry-run runs through), with arbitrary JSON mixed in.
documents = st.lists(st.one_of(good_row, good_row, good_row, rowish, json_values), min_size=0, max_size=6)


def _run_label_on(data: bytes):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        write(root / "classify.yaml", CLASSIFY_YAML)
        write(root / "data.jsonl", data)
        out = root / "out.jsonl"
        result = invoke("label", str(root / "data.jsonl"), "-c", str(root / "classify.yaml"), "--dry-run", "-o", str(out))
        written = _written(out)
    return result, written


def _assert_clean(result, written):
    stdout, stderr = result.stdout, result.stderr
    assert "Traceback" not in stdout and "Traceback" not in stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2), (result.exit_code, stderr)
    assert written == [], "--dry-run must write nothing"
    if result.exit_code == 2:
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("icm: error: "), stderr
        assert "data.jsonl" in lines[0], lines[0]


@PROPERTY_SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_never_traceback(tokenizer_once, data):
    _assert_clean(*_run_label_on(data))


@PROPERTY_SETTINGS
@given(documents, st.booleans(), st.sampled_from(["\n", "\n\n", "\r\n"]))
def test_random_json_documents_never_traceback(tokenizer_once, docs, ascii_only, newline):
    data = newline.join(json.dumps(d, ensure_ascii=ascii_only) for d in docs).encode("utf-8")
    _assert_clean(*_run_label_on(data))


# --------------------------------------------------------------------------------------------
# secrets

PLANTED = "sk-planted-secret-123"


def _backend_fields() -> set[str]:
    """The backend section's keys, the flat names of each backend's own options included."""
    from icm_cli.foundation.config import FLAT_BACKEND_KEYS

    return {f.name for f in dataclasses.fields(BackendConfig)} | set(FLAT_BACKEND_KEYS)


def _backend_types() -> tuple:
    from icm_cli.backends.registry import TYPES

    return tuple(TYPES)


class _EchoingAuthServer:
    """A local HTTP server that refuses every request with 401 and echoes the Authorization
    header back in its error message, as careless proxies and some APIs do."""

    def __init__(self):
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _refuse(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                auth = self.headers.get("Authorization", "")
                seen.append(auth)
                body = json.dumps({"error": {"message": f"Incorrect API key provided: {auth}"}}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _refuse

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.skipif("api_key_env" not in _backend_fields(),
                    reason="BackendConfig has no api_key_env field: no key is read from the environment")
def test_planted_api_key_never_leaks(workdir, monkeypatch):
    """The key named by backend.api_key_env appears in no output, message or written file,
    even when the server echoes it back in its error."""
    monkeypatch.setattr(loading, "load_backend", _REAL_LOAD_BACKEND)  # this test needs the real backend
    monkeypatch.setenv("ICM_TEST_KEY", PLANTED)
    write(workdir / "data.jsonl", GOOD_ROWS)
    outputs: list[str] = []
    with _EchoingAuthServer() as server:
        if "openai" in _backend_types() and "base_urls" in _backend_fields():
            backend = (
                "backend:\n  type: openai\n  model: some-model\n  api_key_env: ICM_TEST_KEY\n"
                f"  base_urls: [\"{server.url}\"]\n  retries: 0\n  timeout_s: 10\n"
            )
        else:
            backend = "backend:\n  api_key_env: ICM_TEST_KEY\n  model: /nonexistent/model-dir\n"
        write(workdir / "key.yaml", CLASSIFY_YAML + backend)

        dry = invoke("label", "data.jsonl", "-c", "key.yaml", "--dry-run")
        assert "Traceback" not in dry.stdout + dry.stderr
        assert dry.exit_code == 0, dry.stderr
        outputs += [dry.stdout, dry.stderr]

        failing = invoke("label", "data.jsonl", "-c", "key.yaml", "-o", "out.jsonl")
        assert failing.exception is None or isinstance(failing.exception, SystemExit), repr(failing.exception)
        assert failing.exit_code in (2, 3), failing.stderr
        outputs += [failing.stdout, failing.stderr, repr(failing.exception)]

        proc = subprocess.run(
            [sys.executable, "-m", "icm_cli.cli", "label", "data.jsonl", "-c", "key.yaml", "-o", "out2.jsonl"],
            capture_output=True, text=True, cwd=workdir, timeout=300, check=False,
        )
        assert proc.returncode in (2, 3), proc.stderr
        outputs += [proc.stdout, proc.stderr]

    if server.seen:  # the openai backend ran: the key did reach the server, so the scrubbing was exercised
        assert f"Bearer {PLANTED}" in server.seen
    for text in outputs:
        assert "Traceback" not in text
        assert PLANTED not in text, text
    for path in workdir.rglob("*"):
        if path.is_file():
            assert PLANTED.encode() not in path.read_bytes(), f"key written to {path}"


# --------------------------------------------------------------------------------------------
# output format, --set and friends, dataset inputs


@pytest.mark.parametrize("name", ["out.txt", "out", "out.xlsx"])
@pytest.mark.parametrize("mode", ["out", "dry-run"])
def test_unknown_output_extension(workdir, name, mode):
    write(workdir / "data.jsonl", GOOD_ROWS)
    extra = ["--dry-run"] if mode == "dry-run" else []
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", name, *extra)
    assert_usage_error(result, name, ".jsonl, .json, .csv or .parquet", out=workdir / name)


# (id, arguments, substrings the one error line must hold)
SET_CASES = [
    ("no-equals", ["--set", "search.iterations"], ["--set search.iterations", "section.key=value"]),
    ("no-section", ["--set", "iterations=5"], ["--set iterations=5", "section.key=value"]),
    ("unknown-section", ["--set", "serch.alpha=3"], ["--set serch.alpha=3", "'serch'", "task, search, core, transfer, backend"]),
    ("unknown-key", ["--set", "search.alpah=3"], ["--set search.alpah=3", "'search.alpah'", "search has method, init, rounds, alpha"]),
    ("too-deep", ["--set", "search.alpha.x=3"], ["--set search.alpha.x=3", "section.key=value"]),
    ("wrong-type", ["--set", "search.iterations=many"], ["--set search.iterations=many", "'search.iterations'", "integer"]),
    ("out-of-range", ["--set", "search.alpha=-1"], ["--set search.alpha=-1", "'search.alpha'", ">= 0"]),
    ("literal", ["--set", "backend.dtype=float8"], ["--set backend.dtype=float8", "'backend.dtype'", "bfloat16"]),
    ("list-of-one", ["--set", "task.labels=[good]"], ["--set task.labels=[good]", "'task.labels'", "at least two"]),
    ("iterations-shortcut", ["--iterations", "-4"], ["--iterations -4", "'search.iterations'"]),
    ("cross-field", ["--set", "task.type=comparison"], ["classify.yaml with --set task.type=comparison", "'task.pair_fields'"]),
    ("model-shortcut", ["--model", "/nonexistent/model-dir"], ["--model", "'backend.model'", "/nonexistent/model-dir"]),
]


@pytest.mark.parametrize("mode", ["out", "dry-run"])
@pytest.mark.parametrize("case, args, expected", [pytest.param(*c, id=c[0]) for c in SET_CASES])
def test_bad_override(workdir, case, args, expected, mode):
    write(workdir / "data.jsonl", GOOD_ROWS)
    out = workdir / "out.jsonl"
    extra = ["-o", out.name] if mode == "out" else ["--dry-run"]
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "--quiet", *args, *extra)
    assert_usage_error(result, *expected, out=out)


def test_compare_takes_overrides(workdir, monkeypatch):
    """`icm compare -c` reads --set/--model/--iterations like `icm label`: a bad one is the
    one-line error, a good one reaches the backend's config."""
    write(workdir / "data.jsonl", GOOD_ROWS)
    write(workdir / "gold.jsonl", GOLD)
    bad = invoke("compare", "data.jsonl", "--gold", "gold.jsonl", "-c", "classify.yaml", "-q",
                 "--set", "search.alpah=3")
    assert_usage_error(bad, "--set search.alpah=3", "search has")
    seen = []

    def record(config, *args, **kwargs):
        seen.append(config)
        raise ModelLoadAttempted("recorded")

    monkeypatch.setattr(loading, "load_backend", record)
    invoke("compare", "data.jsonl", "--gold", "gold.jsonl", "-c", "classify.yaml", "-q",
           "--model", "org/other-model", "--set", "backend.dtype=float32")
    assert [(c.model, c.dtype) for c in seen] == [("org/other-model", "float32")]


def test_no_config_warns_in_one_line_unless_quiet(workdir):
    write(workdir / "data.jsonl", GOOD_ROWS)
    loud = invoke("label", "data.jsonl", "--dry-run")
    assert loud.exit_code == 0, loud.stderr
    lines = loud.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("icm: warning: no -c CONFIG given"), loud.stderr
    assert "built-in defaults" in lines[0]
    assert invoke("label", "data.jsonl", "--dry-run", "-q").stderr == ""
    assert invoke("label", "data.jsonl", "-c", "classify.yaml", "--dry-run").stderr == ""


def test_split_on_a_plain_file_is_refused(workdir):
    write(workdir / "data.jsonl", GOOD_ROWS)
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "--split", "test", "-o", "out.jsonl")
    assert_usage_error(result, "--split test", "data.jsonl", out=workdir / "out.jsonl")


@pytest.mark.parametrize("args, expected", [
    (["--limit", "0"], "--limit"),
    (["--sample", "-1"], "--sample"),
])
def test_bad_limit_or_sample(workdir, args, expected):
    write(workdir / "data.jsonl", GOOD_ROWS)
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "out.jsonl", *args)
    assert result.exit_code == 2 and expected in result.stderr and "greater than or equal to 1" in " ".join(result.stderr.replace("│", " ").split())
    assert "Traceback" not in result.stdout + result.stderr
    assert _written(workdir / "out.jsonl") == []


def test_limit_with_sample_is_refused(workdir):
    write(workdir / "data.jsonl", GOOD_ROWS)
    result = invoke("label", "data.jsonl", "-c", "classify.yaml", "-o", "out.jsonl", "--limit", "2", "--sample", "2")
    assert_usage_error(result, "--limit and --sample", out=workdir / "out.jsonl")


def test_csv_row_errors_name_the_file_line(workdir):
    write(workdir / "data.csv", "id,text\n1,a\n1,b\n")
    result = invoke("label", "data.csv", "-c", "classify.yaml", "-o", "out.jsonl")
    assert_usage_error(result, "data.csv:3", "duplicate id '1'", "first on line 2", out=workdir / "out.jsonl")


def test_empty_saved_dataset_is_refused(workdir):
    # (datasets itself fails to read back an empty save: either way, one line naming it)
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"id": [], "text": []}).save_to_disk("saved")
    result = invoke("label", "saved", "-c", "classify.yaml", "-o", "out.jsonl")
    assert_usage_error(result, "icm: error: saved: cannot read the saved dataset (", out=workdir / "out.jsonl")


def test_directory_with_no_data_is_refused(workdir):
    (workdir / "empty").mkdir()
    result = invoke("label", "empty", "-c", "classify.yaml", "-o", "out.jsonl")
    assert_usage_error(result, "icm: error: empty: cannot load the dataset", out=workdir / "out.jsonl")
