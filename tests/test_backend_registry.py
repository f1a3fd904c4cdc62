"""The registry is where icm learns about backend types: a new one is its own module plus one
entry, and `icm label` runs it end to end without any other change."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from icm_cli.backends import registry
from icm_cli.backends.registry import BackendType, backend_type
from icm_cli.cli import app
from icm_cli.foundation.errors import InputError


def test_a_new_backend_type_is_one_module_and_one_registry_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "TYPES", dict(registry.TYPES))
    registry.register(BackendType("toy", "toy_backend:load", needs_local_model=False, local_tokenizer=False,
                                  summary="a test's toy: the last letter decides"))
    rows = [{"id": k, "text": f"word {w}"} for k, w in enumerate(["area", "tent", "idea", "bold", "radio", "lamp"] * 5)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "c.yaml").write_text('task:\n  template: "Text: {text}\\nLabel:"\n  labels: [vowel, consonant]\n'
                                     "  id_field: id\nsearch:\n  method: zero_shot\n"
                                     "backend:\n  type: toy\n  model: anything\n")
    result = CliRunner().invoke(app, ["label", str(tmp_path / "d.jsonl"), "-c", str(tmp_path / "c.yaml"), "-q"])
    assert result.exit_code == 0, result.output
    labels = [json.loads(line)["label"] for line in result.stdout.splitlines()]
    assert labels == [("vowel" if r["text"][-1] in "aeiou" else "consonant") for r in rows]


def test_every_question_about_a_type_goes_to_the_registry():
    assert backend_type("hf").needs_local_model and backend_type("hf").local_tokenizer
    assert not backend_type("openai").needs_local_model
    with pytest.raises(InputError, match="'nope' is not a backend; choose one of hf, vllm, openai"):
        backend_type("nope")
