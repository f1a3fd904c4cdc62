"""benchmarks/readings_rules.py on a small made-up record (no model): the shares it reads without
batch centring are the ones the readings say."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "readings_rules.py"
sys.path.insert(0, str(ROOT / "benchmarks"))  # as tests/test_benchmarks.py imports the bench scripts

import readings_rules as rules  # noqa: E402

LABELS = ["negative", "neutral", "positive"]
TRUTH = [0] * 40 + [1] * 45 + [2] * 15
GOLD = {f"r{i}": LABELS[y] for i, y in enumerate(TRUTH)}


def _record(tmp_path: Path) -> tuple[Path, Path]:
    rng = random.Random(3)
    raw = []
    for y in TRUTH:
        # core 0 sees the class; core 1 leans to neutral whatever the row; zero-shot to positive
        core0 = [2.0 if k == y else 0.0 for k in range(3)]
        core1 = [0.0, 5.0 + rng.random(), 0.5 * (y == 2)]
        zero = [rng.random(), rng.random(), 9.0]
        raw.append([core0, core1, zero])
    record = {"seed": 0, "labels": LABELS, "cores": [{"tokens": 10, "seconds": 1.0}] * 2,
              "ids": list(range(len(TRUTH))), "row_ids": [f"r{i}" for i in range(len(TRUTH))], "raw": raw,
              "read_tokens": 300, "read_seconds": 3.0, "scrambled_ids": [0, 10, 41, 50, 86, 90, 95, 99],
              "scrambled": [[[0.0, 0.0, 0.0]] * 3 for _ in range(8)]}
    study = tmp_path / "study.json"
    study.write_text(json.dumps(record))
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": i, "label": label}) + "\n" for i, label in GOLD.items()))
    return study, gold


def test_uncentred_shares_are_each_readings_own(tmp_path):
    study, _ = _record(tmp_path)
    shares = dict(rules.uncentred_shares(rules.Study(study, GOLD)))
    assert shares["core0 raw (uncalibrated)"] == [0.40, 0.45, 0.15]
    assert shares["core1 raw (uncalibrated)"] == [0.0, 1.0, 0.0]
    assert shares["zero raw (uncalibrated)"] == [0.0, 0.0, 1.0]
    agreed = next(k for k in shares if k.startswith("rows every reading agrees on"))
    assert abs(sum(shares[agreed]) - 1) < 1e-9 and abs(sum(shares["  their true shares"]) - 1) < 1e-9


def test_the_script_prints_them(tmp_path):
    study, gold = _record(tmp_path)
    result = subprocess.run([sys.executable, str(SCRIPT), str(study), "--gold", str(gold)],
                            capture_output=True, text=True, check=True)
    assert "shares without centring" in result.stdout
    assert "core1 raw (uncalibrated)                     0.00 1.00 0.00" in result.stdout


def test_a_reading_the_words_do_not_move_gets_no_weight(tmp_path):
    study, _ = _record(tmp_path)
    record = json.loads(study.read_text())
    rng = random.Random(5)
    # Scrambles: cores 0 and zero-shot read flat, core 1 reads each scramble as it read its row
    # (its content ratio is 1: the words do not move it).
    record["scrambled"] = [[[rng.random() * 0.1 for _ in range(3)], record["raw"][i][1], [rng.random() * 0.1, 0.0, 9.0]]
                           for i in record["scrambled_ids"]]
    study.write_text(json.dumps(record))
    s = rules.Study(study, GOLD)
    assert abs(rules.content(s, 1) - 1) < 1e-9 and rules.content(s, 0) > 1 and rules.content(s, 2) > 1
    weights = [rules.content(s, 0) - 1, rules.content(s, 2) - 1]
    assert rules.content_weighted(2)(s) == rules.mean_reading([s.core(0), s.zero], weights)
