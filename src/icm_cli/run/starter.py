"""Commented starter configs for `icm init`, one per task type; each parses to a valid Config."""

from __future__ import annotations

import sys
from pathlib import Path

from ..foundation.errors import InputError
from ..data.output import atomic_write_text, check_replaceable

_TASKS = {
    "classification": """\
task:
  type: classification
  # The text the model reads before each label; {field} names a field of your rows.
  template: "Text: {text}\\nSentiment:"
  # Two or more label words; the model scores " positive" etc. right after the template.
  labels: [positive, negative]
  id_field: id                 # unique row id (remove to use row positions)
  # monitor_field: gold        # a gold field to watch live; the search never reads it
  calibrate: auto              # auto: batch calibration on, so one label for all cannot win
""",
    "claims": """\
task:
  type: claims
  # One claim per row, judged True or False.
  template: "Question: {question}\\nClaim: {answer}\\nI think this claim is"
  labels: ["True", "False"]    # true first
  id_field: id
  group_field: question_id     # rows about the same thing ...
  key_field: final_answer      # ... with different keys cannot both be True; equal keys must agree
""",
    "comparison": """\
task:
  type: comparison
  # One pair per row; the tool renders both orders and requires exactly one to be True.
  template: "Query: {question}\\nResponse 1: {a}\\nResponse 2: {b}\\nClaim: Response 1 is better than Response 2.\\nI think this claim is"
  labels: ["True", "False"]    # output True: the first field is better
  pair_fields: [a, b]
  id_field: id
""",
}

_COMMON = """\
# Sized to finish on the embedded model on a 2-core CPU, as configs/tweets-sentiment.yaml
# (measured there): a core of 1,024 demonstration tokens (about 32 tweets; fewer longer rows),
# searched by ICM from the model's zero-shot labels for 125 annealing iterations, then a
# greedy quench; every other row is labelled by transfer, one read per row.
# On a GPU or with a larger model, raise core.max_tokens toward the model's context (leave
# room for one query; e.g. 8192) and search.iterations (3000 is the ICM reference).
search:
  method: icm                  # icm | bootstrap | zero_shot
  init: zero_shot              # zero_shot: start from the model's own labels | random
  alpha: 30                    # weight of mutual predictability against inconsistencies
  initial_labels: 2            # random seed labels; used with init: random
  iterations: 125              # annealing steps on the core (3000 on a GPU)
  objective: mean_logodds      # mean_logodds (reference code) | sum_logprob (paper)
  final_quench: true           # greedy passes after the last iteration
  seed: 0
core:
  max_tokens: 1024             # demonstration tokens of the searched core (8192+ on a GPU)
backend:
  type: hf
  model: embedded              # embedded Gemma 3 270M on CPU; or a local path / hub name
  dtype: auto
"""


def starter_config(task_type: str) -> str:
    if task_type not in _TASKS:
        raise InputError(f"--type '{task_type}' is not a task type; choose one of {', '.join(_TASKS)}")
    return f"# icm starter config ({task_type}); check it with: icm label DATA -c THIS --dry-run\n" + _TASKS[task_type] + _COMMON


def write_starter(task_type: str, destination: str, force: bool) -> None:
    """Write the starter to a file, whole or not at all, or to stdout for `-` (`./-` is a file)."""
    text = starter_config(task_type)
    if destination == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    out = Path(destination)
    check_replaceable(out, force, shown=destination)
    if not out.parent.is_dir():
        raise InputError(f"{destination}: {out.parent} is not an existing directory")
    try:
        atomic_write_text(out, text)
    except OSError as e:
        raise InputError(f"{destination}: cannot write ({e.strerror or e})")
