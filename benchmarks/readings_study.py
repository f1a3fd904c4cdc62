"""Record every reading a run could combine, so combination rules can be compared without the model.

For one data file, config and seed: search `core.count` cores as `icm label` would, then read
every row outside the cores after each core's demonstrations and zero-shot (raw label
log-probabilities, uncalibrated), and a sample of rows with their letters shuffled the same ways.
Writes one JSON file; benchmarks/readings_rules.py scores rules on it against gold.

    python benchmarks/readings_study.py DATA -c CONFIG --seed S --cores 3 [--set key=value ...] -o study.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from icm_cli.run import runner  # noqa: E402
from icm_cli.backends.loading import load_backend  # noqa: E402
from icm_cli.foundation.config import load_config  # noqa: E402
from icm_cli.foundation.overrides import parse_set  # noqa: E402
from icm_cli.data.row_index import Selection, build_index  # noqa: E402
from icm_cli.run.runner import Run, RunInput, RunState  # noqa: E402
from icm_cli.run.signal_check import scramble  # noqa: E402
from icm_cli.data.sources import open_source  # noqa: E402
from icm_cli.algorithm.tasks import TaskShape  # noqa: E402
from icm_cli.algorithm.transfer import Transfer, demonstrations  # noqa: E402

SCRAMBLED = 256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("-c", "--config", type=Path, default=ROOT / "configs" / "tweets-sentiment.yaml")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cores", type=int, default=3)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("-o", "--out", type=Path, required=True)
    args = ap.parse_args()
    with opened_run(args.data, args.config, args.sets + [f"core.count={args.cores}", f"search.seed={args.seed}"]) as run:
        backend, config, shape = run.backend, run.config, run.shape
        cores = search(run, backend)
        record = read_everything(run, backend, config, shape, cores)
        record.update(config=str(args.config), sets=args.sets, seed=args.seed, data=args.data,
                      model=backend.model_name, labels=list(shape.label_words))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record))
    print(f"wrote {args.out}: {len(record['ids'])} rows, {len(cores)} cores")


@contextlib.contextmanager
def opened_run(data: str, config_path: Path, sets: list[str]) -> Iterator[Run]:
    """A run over `data` as `icm label` would build it (no output, no checkpoint), its source open."""
    config = load_config(config_path, [parse_set(s) for s in sets])
    shape = TaskShape(config.task)
    with open_source(data, None) as source:
        index = build_index(source, Selection(), shape.check, config.task.id_field, [], kinds=False)
        yield Run(RunInput(index, shape), config, load_backend(config.backend))


def core_contexts(run: Run, cores: list[dict]) -> list[tuple[str, ...]]:
    """Each recorded core's labels as the demonstrations the transfer reads rows after."""
    return [demonstrations(run.core_prompts(c), tuple(info["labels"]), tuple(info["order"]))
            for c, info in enumerate(cores)]


def search(run: Run, backend) -> list[dict]:
    """Each core searched as icm label searches it, with its own cost."""
    cores: list[dict] = []
    real = runner.label_core

    def measured(*a, **k):
        before, start = backend.stats.tokens_computed, time.perf_counter()
        outcome = real(*a, **k)
        cores.append({"tokens": backend.stats.tokens_computed - before, "seconds": round(time.perf_counter() - start, 2)})
        return outcome

    runner.label_core = measured
    try:
        outcomes = run.search(RunState())
    finally:
        runner.label_core = real
    for info, core, outcome in zip(cores, run.plan.cores, outcomes):
        info.update(ids=list(core.ids), labels=list(outcome.labels), scores=[list(s) for s in outcome.scores],
                    evaluations=outcome.evaluations, proposals=outcome.proposals, accepted=outcome.accepted,
                    utility=outcome.utility, order=list(outcome.order))
        print(f"core: {len(core.ids)} examples, {info['evaluations']} evaluations, {info['tokens']:,} tokens, "
              f"{info['seconds']} s", flush=True)
    return cores


def read_everything(run: Run, backend, config, shape: TaskShape, cores: list[dict]) -> dict:
    contexts = core_contexts(run, cores)
    transfer = Transfer(shape, contexts, backend, config.task.label_prefix, config.task.separator, zero_shot=True)
    in_core = {i for info in cores for i in info["ids"]}
    ids = [i for i in range(run.plan.examples) if i not in in_core]
    start, before = time.perf_counter(), backend.stats.tokens_computed
    raw: list = []
    for k in range(0, len(ids), 256):
        examples = run.examples_of(ids[k:k + 256])
        raw.extend(transfer.raw(examples))
        print(f"  read {min(k + 256, len(ids))}/{len(ids)} rows", flush=True)
    seconds, tokens = time.perf_counter() - start, backend.stats.tokens_computed - before
    core_ids = sorted(in_core)
    zero_core = Transfer(shape, [], backend, config.task.label_prefix, config.task.separator).raw(run.examples_of(core_ids))
    sample = sorted(random.Random(run.config.search.seed + 7919).sample(ids, min(SCRAMBLED, len(ids))))
    rows = run.index.read(sorted({i // shape.per_row for i in sample}))
    by_row = dict(zip(sorted({i // shape.per_row for i in sample}), rows))
    mixed = []
    for i in sample:
        r = i // shape.per_row
        f = {k: scramble(v, run.config.search.seed * 1_000_003 + r) if isinstance(v, str) and k in shape.needed else v
             for k, v in by_row[r].fields.items()}
        mixed.append((-1 - i, shape.examples(r, f)[i % shape.per_row]))
    scrambled = transfer.raw(mixed)
    return {"ids": ids, "raw": raw, "read_seconds": round(seconds, 2), "read_tokens": tokens,
            "core_ids": core_ids, "core_zero_shot": [z[0] for z in zero_core], "cores": cores,
            "scrambled_ids": sample, "scrambled": scrambled,
            "row_ids": [str(r.fields.get(config.task.id_field)) for r in run.index.read(list(range(run.index.count)))]}


if __name__ == "__main__":
    main()
