"""A labelled sample for benchmarks: config, task and gold label indices (gold read here only)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from icm_cli.config import Config, load_config  # noqa: E402
from icm_cli.data import load_rows, row_ids  # noqa: E402
from icm_cli.metrics import normalize_label  # noqa: E402
from icm_cli.scoring import PromptSet  # noqa: E402
from icm_cli.tasks import Task, build_task  # noqa: E402


@dataclass(frozen=True)
class GoldSample:
    config: Config
    task: Task
    gold: tuple[int, ...]  # label index per example, in the data's order

    def prompts(self, calibrate: bool, n: int | None = None) -> PromptSet:
        c = self.config.task
        queries = tuple(e.query for e in self.task.examples[:n])
        return PromptSet(queries, self.task.label_words, c.label_prefix, c.separator, calibrate)


def load_gold_sample(data: Path, gold: Path, config_path: Path) -> GoldSample:
    config = load_config(config_path)
    dataset = load_rows(str(data))
    task = build_task(dataset, config.task)
    ids = row_ids(dataset, config.task.id_field)
    gold_rows = {str(r.fields["id"]): r.fields["label"] for r in load_rows(str(gold)).rows}
    words = [normalize_label(w) for w in task.label_words]
    return GoldSample(config, task, tuple(words.index(normalize_label(gold_rows[i])) for i in ids))
