"""benchmarks/shares_mixtures.py on made-up records (no model): readings that tell the classes
apart give shares that follow the mixtures (slope near 1); readings that do not, a slope near 0."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "shares_mixtures.py"
sys.path.insert(0, str(ROOT / "benchmarks"))  # as tests/test_benchmarks.py imports the bench scripts

import shares_mixtures as mixtures  # noqa: E402

LABELS = ["negative", "neutral", "positive"]
TRUTH = [0] * 400 + [1] * 450 + [2] * 150


def _record(tmp_path: Path, signal: float) -> tuple[Path, Path]:
    rng = random.Random(5)
    raw = [[[signal * (k == y) + rng.gauss(0, 1) - 3 * (k == 2) for k in range(3)] for _ in range(2)] for y in TRUTH]
    record = {"labels": LABELS, "ids": list(range(len(TRUTH))), "row_ids": [f"r{i}" for i in range(len(TRUTH))],
              "raw": raw}
    study = tmp_path / f"study-{signal}.json"
    study.write_text(json.dumps(record))
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": f"r{i}", "label": LABELS[y]}) + "\n" for i, y in enumerate(TRUTH)))
    return study, gold


def _slopes(tmp_path: Path, signal: float) -> dict:
    study, gold = _record(tmp_path, signal)
    result = subprocess.run([sys.executable, str(SCRIPT), str(study), "--gold", str(gold)],
                            capture_output=True, text=True, check=True)
    assert "slope of predicted on true share" in result.stdout
    return json.loads(result.stdout.strip().splitlines()[-1])[study.name]


def test_readings_that_see_the_classes_follow_the_mixtures(tmp_path):
    slopes = _slopes(tmp_path, 8.0)
    assert slopes["zero-shot, centred"] > 0.8 and slopes["combined + EM prior"] > 0.8


def test_readings_without_signal_are_blind_to_them(tmp_path):
    slopes = _slopes(tmp_path, 0.0)
    assert all(abs(s) < 0.15 for s in slopes.values())


def test_mixtures_cover_each_class_rare_and_common():
    mixes = mixtures.mixtures(3)
    assert mixes[0] == (1 / 3, 1 / 3, 1 / 3) and len(mixes) == 7
    for y in range(3):
        assert 0.1 in [m[y] for m in mixes] and 0.6 in [m[y] for m in mixes]
    assert all(abs(sum(m) - 1) < 1e-9 for m in mixes)
