"""Unit tests for icm_cli.foundation.config: reading YAML into typed settings, and one-line errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from icm_cli.foundation.config import BackendConfig, CoreConfig, Config, SearchConfig, TaskConfig, load_config, parse_config
from icm_cli.foundation.errors import EXIT_USAGE, InputError


def write(tmp_path: Path, text: str, name: str = "icm.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_config(path)
    assert info.value.exit_code == EXIT_USAGE
    message = info.value.message
    assert "\n" not in message  # one-line errors
    assert str(path) in message  # every error names the file
    return message


# --------------------------------------------------------------------------- defaults and valid files


def test_no_file_gives_defaults():
    config = load_config(None)
    assert config == Config()
    assert config.search == SearchConfig()
    assert config.search.alpha == 30.0 and config.search.iterations == 3000 and config.search.seed == 0
    assert config.task.type == "classification"
    assert config.core == CoreConfig()
    assert config.backend == BackendConfig()


@pytest.mark.parametrize("text", ["", "# only a comment\n", "search:\n", "search: {}\ntask: null\n"])
def test_empty_file_or_sections_give_defaults(tmp_path, text):
    assert load_config(write(tmp_path, text)) == Config()


def test_values_are_read_and_typed(tmp_path):
    path = write(
        tmp_path,
        """
task:
  type: claims
  template: "Q: {question}\\nA: {answer}\\nI think this claim is"
  labels: [True, False]
  group_field: qid
  key_field: final
  calibrate: "on"
search:
  alpha: 50          # an int where a float is expected is fine
  iterations: 10
  seed: 7
  schedule: paper
  objective: sum_logprob
  t_min: 0.5
core:
  max_tokens: 2048
backend:
  model: some/model
  max_context: null
  reuse_prefixes: false
""",
    )
    config = load_config(path)
    assert config.task.type == "claims"
    assert config.task.template == "Q: {question}\nA: {answer}\nI think this claim is"
    assert config.task.labels == ("True", "False")
    assert isinstance(config.task.labels, tuple)
    assert config.task.group_field == "qid" and config.task.key_field == "final"
    assert config.task.calibrated()
    assert config.search.alpha == 50.0 and isinstance(config.search.alpha, float)
    assert config.search.iterations == 10 and config.search.seed == 7
    assert config.search.schedule == "paper" and config.search.objective == "sum_logprob"
    assert config.search.t_min == 0.5
    # untouched settings keep their defaults
    assert config.search.t0 == SearchConfig().t0
    assert config.core.max_tokens == 2048
    assert config.backend.model == "some/model" and config.backend.max_context is None
    assert config.backend.reuse_prefixes is False


def test_comparison_pair_fields(tmp_path):
    config = load_config(
        write(tmp_path, "task: {type: comparison, labels: [A, B], template: '{x} {y}', pair_fields: [x, y]}\n")
    )
    assert config.task.pair_fields == ("x", "y")


def test_calibrated_auto():
    assert TaskConfig(type="classification").calibrated()
    assert not TaskConfig(type="claims").calibrated()
    assert TaskConfig(type="claims", calibrate="on").calibrated()
    assert not TaskConfig(type="classification", calibrate="off").calibrated()


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in info.value.message and "not found" in info.value.message


def test_not_utf8(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"search: {alpha: 3}\n# \xff\xfe\n")
    with pytest.raises(InputError) as info:
        load_config(path)
    assert "bad.yaml" in info.value.message and "UTF-8" in info.value.message


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("search: {alpah: 3}\n", "search.alpha"),
        ("serch: {alpha: 3}\n", "search"),
        ("task: {templete: 'x'}\n", "task.template"),
        ("backend: {modle: x}\n", "backend.model"),
    ],
)
def test_unknown_key_suggests_closest(tmp_path, text, suggestion):
    message = error_for(tmp_path, text)
    assert "unknown key" in message
    assert f"did you mean '{suggestion}'" in message


def test_unknown_key_without_close_match(tmp_path):
    message = error_for(tmp_path, "search: {zzzzzz: 1}\n")
    assert "search.zzzzzz" in message
    assert "did you mean" not in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("task:\n  type: claims\n   labels: [a, b]\n", 3),
        ("search:\n\talpha: 3\n", 2),
        ("search:\n  alpha: 3\n\n\ncore: {max_tokens: 100\n", 6),
    ],
)
def test_yaml_syntax_error_names_file_and_line(tmp_path, text, line):
    message = error_for(tmp_path, text)
    assert "YAML syntax error" in message
    assert f"icm.yaml:{line}:" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("search: {seed: x}\n", "search.seed"),
        ("search: {seed: true}\n", "search.seed"),
        ("search: {alpha: big}\n", "search.alpha"),
        ("search: {alpha: [1]}\n", "search.alpha"),
        ("search: {iterations: 1.5}\n", "search.iterations"),
        ("search: {schedule: fast}\n", "search.schedule"),
        ("search: {objective: max}\n", "search.objective"),
        ("task: {type: ranking}\n", "task.type"),
        ("task: {template: 3}\n", "task.template"),
        ("task: {labels: positive}\n", "task.labels"),
        ("task: {labels: [[a], b]}\n", "task.labels"),
        ("backend: {reuse_prefixes: 1}\n", "backend.reuse_prefixes"),
        ("core: {max_tokens: '100'}\n", "core.max_tokens"),
    ],
)
def test_wrong_type_names_the_key(tmp_path, text, key):
    assert f"'{key}'" in error_for(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("search: {alpha: -1}\n", "search.alpha"),
        ("search: {initial_labels: 0}\n", "search.initial_labels"),
        ("search: {iterations: -5}\n", "search.iterations"),
        ("search: {t0: -0.1}\n", "search.t0"),
        ("search: {group_weight: 0.5}\n", "search.group_weight"),
        ("core: {max_tokens: 10}\n", "core.max_tokens"),
        ("backend: {max_context: 4}\n", "backend.max_context"),
        ("backend: {kv_cache_mib: -1}\n", "backend.kv_cache_mib"),
    ],
)
def test_out_of_range_names_the_key(tmp_path, text, key):
    message = error_for(tmp_path, text)
    assert f"'{key}'" in message
    assert "must be >" in message


@pytest.mark.parametrize("text", ["search: {alpha: 0}\n", "search: {iterations: 0}\n", "core: {max_tokens: 64}\n"])
def test_range_bounds_are_inclusive(tmp_path, text):
    load_config(write(tmp_path, text))


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_mapping(tmp_path, text):
    assert "mapping" in error_for(tmp_path, text)


def test_section_must_be_mapping(tmp_path):
    message = error_for(tmp_path, "search: 3\n")
    assert "'search'" in message and "mapping" in message


def test_one_label_word_rejected(tmp_path):
    message = error_for(tmp_path, "task: {labels: [yes_only]}\n")
    assert "task.labels" in message


def test_repeated_label_word_rejected(tmp_path):
    assert "task.labels" in error_for(tmp_path, "task: {labels: [a, a]}\n")


def test_stated_class_shares_are_read_as_a_mapping(tmp_path):
    config = load_config(write(tmp_path, "task: {labels: [a, b, c], class_shares: {a: 0.5, b: 0.3, c: 0.2}}\n"))
    assert config.task.class_shares == {"a": 0.5, "b": 0.3, "c": 0.2}
    assert load_config(None).task.class_shares is None


@pytest.mark.parametrize("shares, words", [
    ("{a: 0.5, b: 0.3}", ["task.class_shares", "'c'"]),  # a label without a share
    ("{a: 0.5, b: 0.3, d: 0.2}", ["task.class_shares.d", "task.labels"]),  # a word that is no label
    ("{a: 0.5, b: 0.3, c: 0.3}", ["task.class_shares", "sum to 1.1"]),
    ("{a: 1.0, b: 0.0, c: 0.0}", ["task.class_shares.a", "between 0 and 1"]),
    ("{a: 0.5, b: x, c: 0.2}", ["task.class_shares.b", "number"]),
    ("0.5", ["task.class_shares", "mapping"]),
])
def test_bad_class_shares_name_the_field(tmp_path, shares, words):
    message = error_for(tmp_path, f"task: {{labels: [a, b, c], class_shares: {shares}}}\n")
    for word in words:
        assert word in message


def test_class_shares_are_for_classification(tmp_path):
    message = error_for(tmp_path, "task: {type: claims, labels: [T, F], class_shares: {T: 0.5, F: 0.5}}\n")
    assert "task.class_shares" in message and "classification" in message


def test_claims_need_two_labels(tmp_path):
    assert "task.labels" in error_for(tmp_path, "task: {type: claims, labels: [a, b, c]}\n")


def test_comparison_without_pair_fields_rejected(tmp_path):
    message = error_for(tmp_path, "task: {type: comparison, labels: [A, B], template: '{x} {y}'}\n")
    assert "task.pair_fields" in message


def test_pair_fields_must_be_two(tmp_path):
    message = error_for(tmp_path, "task: {type: comparison, labels: [A, B], pair_fields: [x, y, z]}\n")
    assert "task.pair_fields" in message


def test_key_field_needs_group_field(tmp_path):
    message = error_for(tmp_path, "task: {type: claims, labels: [A, B], key_field: k}\n")
    assert "task.key_field" in message and "task.group_field" in message


@pytest.mark.parametrize(
    "template",
    ["x {x.attr} y", "{x[0]}", "{x.__class__}", "{0}", "{}", "{x!r}", "{x:>10}", "unclosed { brace"],
)
def test_unsafe_or_invalid_template_rejected(tmp_path, template):
    message = error_for(tmp_path, f"task: {{template: '{template}'}}\n")
    assert "task.template" in message


def test_literal_braces_allowed(tmp_path):
    config = load_config(write(tmp_path, "task: {template: '{{json}} {text}'}\n"))
    assert config.task.template == "{{json}} {text}"


def test_parse_config_uses_source_in_messages():
    with pytest.raises(InputError) as info:
        parse_config({"search": {"alpah": 1}}, "inline")
    assert info.value.message.startswith("inline:")


# --------------------------------------------------------------------------- digest


def test_digest_is_stable():
    assert Config().digest() == Config().digest()
    assert len(Config().digest()) == 12
    assert load_config(None).digest() == Config().digest()


def test_digest_independent_of_key_order_and_spelling(tmp_path):
    a = load_config(write(tmp_path, "search: {alpha: 50, seed: 3}\ncore: {max_tokens: 100}\n", "a.yaml"))
    b = load_config(write(tmp_path, "core:\n  max_tokens: 100\nsearch:\n  seed: 3\n  alpha: 50.0\n", "b.yaml"))
    assert a == b
    assert a.digest() == b.digest()


def test_digest_equals_defaults_when_file_restates_defaults(tmp_path):
    config = load_config(write(tmp_path, "search: {alpha: 30, iterations: 3000}\ntask: {labels: [positive, negative]}\n"))
    assert config.digest() == Config().digest()


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.with_seed(1),
        lambda c: dataclasses.replace(c, search=dataclasses.replace(c.search, alpha=31.0)),
        lambda c: dataclasses.replace(c, search=dataclasses.replace(c.search, schedule="paper")),
        lambda c: dataclasses.replace(c, task=dataclasses.replace(c.task, template="Text: {text}\nLabel:")),
        lambda c: dataclasses.replace(c, task=dataclasses.replace(c.task, labels=("negative", "positive"))),
        lambda c: dataclasses.replace(c, task=dataclasses.replace(c.task, label_prefix="")),
        lambda c: dataclasses.replace(c, core=CoreConfig(max_tokens=1024)),
        lambda c: dataclasses.replace(c, backend=dataclasses.replace(c.backend, model="other")),
    ],
)
def test_digest_changes_with_any_setting(change):
    base = Config()
    changed = change(base)
    assert changed != base
    assert changed.digest() != base.digest()
    assert change(Config()).digest() == changed.digest()  # and is stable for the changed config


def test_with_seed_changes_only_the_seed():
    config = Config().with_seed(42)
    assert config.search.seed == 42
    assert dataclasses.replace(config.search, seed=0) == SearchConfig()
    assert config.task == Config().task


# --------------------------------------------------------------------------- bugs (xfail)


@pytest.mark.parametrize(("word", "expected"), [("on", True), ("off", False)])
def test_calibrate_on_off_unquoted(tmp_path, word, expected):
    config = load_config(write(tmp_path, f"task:\n  calibrate: {word}\n"))
    assert config.task.calibrated() is expected


@pytest.mark.parametrize("words", [("yes", "no"), ("Yes", "No"), ("on", "off")])
def test_label_words_yes_no_kept_verbatim(tmp_path, words):
    config = load_config(write(tmp_path, f"task:\n  labels: [{words[0]}, {words[1]}]\n"))
    assert config.task.labels == words


@pytest.mark.parametrize("key", ["alpha", "t0", "t_min"])
def test_nan_rejected(tmp_path, key):
    with pytest.raises(InputError):
        load_config(write(tmp_path, f"search: {{{key}: .nan}}\n"))


def test_zero_temperature_rejected(tmp_path):
    with pytest.raises(InputError):
        load_config(write(tmp_path, "search: {t0: 0, t_min: 0}\n"))


def test_comparison_template_must_render_pair_fields(tmp_path):
    with pytest.raises(InputError):
        load_config(
            write(tmp_path, "task: {type: comparison, labels: [A, B], template: 'Q: {q}', pair_fields: [x, y]}\n")
        )


def test_the_old_batch_section_says_where_it_went(tmp_path):
    message = error_for(tmp_path, "batch:\n  max_tokens: 1024\n")
    assert "'batch.max_tokens' is now 'core.max_tokens'" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [("core: {count: 0}\n", "core.count"), ("transfer: {chunk_size: 0}\n", "transfer.chunk_size"),
     ("search: {rounds: 0}\n", "search.rounds"), ("search: {method: magic}\n", "search.method")],
)
def test_core_transfer_and_method_settings_are_checked(tmp_path, text, key):
    assert f"'{key}'" in error_for(tmp_path, text)


# --------------------------------------------------------------------------- command-line overrides


def _with(path, *sets: str, model=None, iterations=None) -> Config:
    from icm_cli.foundation.overrides import cli_overrides

    return load_config(path, cli_overrides(sets, model, iterations))


def _override_error(path, *sets: str, **shortcuts) -> str:
    with pytest.raises(InputError) as info:
        _with(path, *sets, **shortcuts)
    assert "\n" not in info.value.message
    return info.value.message


def test_set_overrides_the_file_and_is_typed_like_yaml(tmp_path):
    path = write(tmp_path, "search: {alpha: 50, iterations: 10}\ntask: {id_field: id}\n")
    config = _with(path, "search.alpha=12", "task.labels=[yes, no]", "search.final_quench=true",
                   "task.id_field=null", "backend.max_context=2048", "task.calibrate=on")
    assert config.search.alpha == 12.0 and isinstance(config.search.alpha, float)
    assert config.search.iterations == 10  # the file's value where nothing overrides it
    assert config.task.labels == ("yes", "no")  # YAML 1.2: words, not booleans
    assert config.search.final_quench is True
    assert config.task.id_field is None
    assert config.backend.max_context == 2048
    assert config.task.calibrate == "on"


def test_set_without_a_config_file_overrides_the_defaults():
    config = _with(None, "search.seed=5")
    assert config == Config().with_seed(5)


def test_text_settings_take_the_value_as_written(tmp_path):
    config = _with(None, "task.template=Review: {text}\\nVerdict:", "backend.model=1.5", "task.separator=---")
    assert config.task.template == "Review: {text}\\nVerdict:"  # a YAML mapping or escape is not meant here
    assert config.backend.model == "1.5"
    assert config.task.separator == "---"


def test_later_overrides_win_and_shortcuts_come_last():
    config = _with(None, "search.iterations=5", "search.iterations=7", "backend.model=a/b",
                   model="org/model", iterations=9)
    assert config.search.iterations == 9 and config.backend.model == "org/model"
    assert _with(None, "search.iterations=5", "search.iterations=7").search.iterations == 7


def test_unknown_key_lists_the_keys_of_its_section():
    message = _override_error(None, "backend.modle=x")
    assert message.startswith("--set backend.modle=x: unknown key 'backend.modle'; backend has type, model, dtype")
    fields = [f.name for f in dataclasses.fields(BackendConfig)]
    assert message.endswith(", ".join(fields))


def test_unknown_section_lists_the_sections():
    message = _override_error(None, "searh.alpha=1")
    assert message == "--set searh.alpha=1: unknown section 'searh'; sections are task, search, core, transfer, backend, ray, check"


@pytest.mark.parametrize(("given", "key", "words"), [
    ("search.seed=x", "search.seed", "integer"),
    ("search.alpha=.nan", "search.alpha", "finite"),
    ("search.iterations=-1", "search.iterations", ">= 0"),
    ("core.max_tokens=10", "core.max_tokens", ">= 64"),
    ("search.schedule=fast", "search.schedule", "log_flips"),
    ("backend.reuse_prefixes=yes", "backend.reuse_prefixes", "true or false"),
    ("task.labels=positive", "task.labels", "list"),
])
def test_a_bad_value_names_the_override_and_the_key(given, key, words):
    message = _override_error(None, given)
    assert message.startswith(f"--set {given}: '{key}'")
    assert words in message


def test_shortcut_values_are_checked_too():
    assert _override_error(None, iterations=-3).startswith("--iterations -3: 'search.iterations' is -3")


def test_overrides_are_checked_as_a_whole_config(tmp_path):
    path = write(tmp_path, "task: {type: claims, labels: [T, F]}\n")
    message = _override_error(path, "task.key_field=answer")
    assert message.startswith(f"{path} with --set task.key_field=answer: 'task.key_field' needs 'task.group_field'")
    assert _with(path, "task.key_field=answer", "task.group_field=q").task.key_field == "answer"


def test_an_override_replaces_a_bad_file_value(tmp_path):
    path = write(tmp_path, "search: {iterations: -5}\n")
    assert _with(path, iterations=3).search.iterations == 3


def test_config_hash_reflects_overrides(tmp_path):
    path = write(tmp_path, "search: {alpha: 50}\n")
    base = load_config(path)
    assert _with(path).digest() == base.digest()
    assert _with(path, "search.alpha=50").digest() == base.digest()  # restating a value changes nothing
    changed = {_with(path, "search.alpha=51").digest(), _with(path, model="org/x").digest(),
               _with(path, iterations=5).digest(), _with(path, "task.label_prefix=").digest()}
    assert len(changed) == 4 and base.digest() not in changed


def test_dry_run_states_the_overridden_config_hash(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from icm_cli.backends import loading
    from icm_cli.cli import app

    monkeypatch.setattr(loading, "load_backend", lambda *a, **k: pytest.fail("model loaded"))
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a"}\n{"text": "b"}\n')
    path = write(tmp_path, "search: {iterations: 10}\n")
    plain = CliRunner().invoke(app, ["label", str(data), "-c", str(path), "--dry-run"])
    set_ = CliRunner().invoke(app, ["label", str(data), "-c", str(path), "--dry-run", "--set", "search.alpha=5"])
    for result, config in ((plain, load_config(path)), (set_, _with(path, "search.alpha=5"))):
        assert result.exit_code == 0, result.output
        assert f"config {config.digest()}" in result.stdout


# --------------------------------------------------------------------------- files follow the umask


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    import os
    import stat

    from icm_cli.run.checkpoint import Checkpoint
    from icm_cli.data.output import atomic_write_text, write_rows
    from icm_cli.run.runner import RunState

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "icm.yaml", "search: {}\n")
        for name in ("labels.jsonl", "labels.csv", "labels.parquet"):
            write_rows([{"id": "1", "label": "a", "icm_source": "core"}], tmp_path / name)
        Checkpoint(tmp_path / "labels.jsonl.checkpoint", Config(), "0" * 16).save(RunState())
    finally:
        os.umask(old)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["icm.yaml", "labels.csv", "labels.jsonl", "labels.jsonl.checkpoint", "labels.parquet"]
    for p in [*tmp_path.iterdir(), tmp_path / "labels.jsonl.checkpoint" / "state.json"]:
        # a directory gets the x bits the umask leaves (0o777 & ~umask), a file the rest
        expected = (0o777 & ~umask) if p.is_dir() else mode
        assert stat.S_IMODE(p.stat().st_mode) == expected, p.name


def test_init_writes_its_config_with_the_umask(tmp_path):
    import os
    import stat

    from typer.testing import CliRunner

    from icm_cli.cli import app

    old = os.umask(0o022)
    try:
        result = CliRunner().invoke(app, ["init", "-o", str(tmp_path / "icm.yaml")])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "icm.yaml").stat().st_mode) == 0o644


# --------------------------------------------------------------------------- backend options, nested and flat


def test_each_backend_reads_its_own_options_nested_or_by_the_flat_name(tmp_path):
    nested = load_config(write(tmp_path, "backend:\n  openai: {timeout_s: 7, base_urls: ['http://a/v1']}\n"))
    flat = load_config(write(tmp_path, "backend:\n  timeout_s: 7\n  base_urls: ['http://a/v1']\n", "flat.yaml"))
    assert nested.backend.openai.timeout_s == flat.backend.openai.timeout_s == 7
    assert nested.backend.timeout_s == 7  # the flat name still reads
    assert nested.backend.openai.base_urls == flat.backend.openai.base_urls == ("http://a/v1",)


def test_a_flat_override_wins_over_the_files_nested_option(tmp_path):
    # The shipped openai config names its servers under backend.openai; `--set backend.base_urls`
    # once went silently unused beside it.
    path = write(tmp_path, "backend:\n  type: openai\n  model: m\n  openai: {base_urls: ['http://file/v1']}\n")
    assert _with(path, "backend.base_urls=[http://cli/v1]").backend.openai.base_urls == ("http://cli/v1",)
    later = _with(path, "backend.base_urls=[http://one/v1]", "backend.openai.base_urls=[http://two/v1]")
    assert later.backend.openai.base_urls == ("http://two/v1",)


def test_a_flat_and_a_nested_key_that_disagree_in_one_file_are_refused(tmp_path):
    message = error_for(tmp_path, "backend:\n  timeout_s: 5\n  openai: {timeout_s: 9}\n")
    assert "backend.timeout_s and backend.openai.timeout_s disagree" in message
    same = load_config(write(tmp_path, "backend:\n  timeout_s: 9\n  openai: {timeout_s: 9}\n", "same.yaml"))
    assert same.backend.openai.timeout_s == 9


def test_an_override_of_one_backends_option_keeps_the_files_flat_value_for_the_others(tmp_path):
    # A file's flat key holds for every backend that has the option; naming one backend on the
    # command line changes that one, and is not refused as a contradiction of the file.
    path = write(tmp_path, "backend:\n  type: openai\n  model: m\n  timeout_s: 5\n  kv_cache_mib: 512\n")
    assert _with(path, "backend.openai.timeout_s=9").backend.openai.timeout_s == 9
    config = _with(path, "backend.vllm.kv_cache_mib=1024")
    assert (config.backend.vllm.kv_cache_mib, config.backend.hf.kv_cache_mib) == (1024, 512)
    assert _with(path, "backend.kv_cache_mib=256").backend.hf.kv_cache_mib == 256
    # The file contradicting itself is still refused, whatever the command line adds.
    both = write(tmp_path, "backend:\n  kv_cache_mib: 512\n  vllm: {kv_cache_mib: 1024}\n", "both.yaml")
    with pytest.raises(InputError, match="disagree"):
        _with(both, "backend.hf.kv_cache_mib=64")


def test_the_three_class_tweets_config_is_the_two_class_one_with_neutral(tmp_path, monkeypatch):
    # The README's three-class figures are measured with it: it must differ from the shipped
    # two-class config only in its labels, and pass a dry run on tweets.
    from typer.testing import CliRunner

    from icm_cli.backends import loading
    from icm_cli.cli import app

    configs = Path(__file__).resolve().parents[1] / "configs"
    two, three = load_config(configs / "tweets-sentiment.yaml"), load_config(configs / "tweets-sentiment-3class.yaml")
    assert three.task.labels == ("negative", "neutral", "positive")
    assert dataclasses.replace(three, task=dataclasses.replace(three.task, labels=two.task.labels)) == two
    monkeypatch.setattr(loading, "load_backend", lambda *a, **k: pytest.fail("model loaded"))
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"id": "t{k}", "text": "tweet {k}"}}\n' for k in range(8)))
    result = CliRunner().invoke(app, ["label", str(data), "-c", str(configs / "tweets-sentiment-3class.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "neutral" in result.stdout
