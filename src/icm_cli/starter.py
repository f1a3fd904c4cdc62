"""Commented starter configs for `icm init`, one per task type; each parses to a valid Config."""

from __future__ import annotations

from .errors import InputError

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
search:                        # the ICM reference defaults
  alpha: 30                    # weight of mutual predictability against inconsistencies
  initial_labels: 8            # random seed labels
  iterations: 3000             # annealing steps per batch
  fix_rounds: 10               # ConsistencyFix rounds per proposal
  t0: 10                       # initial temperature
  t_min: 0.01
  schedule: log_flips          # log_flips (reference code) | paper
  objective: mean_logodds      # mean_logodds (reference code) | sum_logprob (paper)
  seed: 0
core:
  max_tokens: 2048             # demonstration tokens of the searched core; the rest is transferred
backend:
  type: hf
  model: embedded              # embedded Gemma 3 270M on CPU; or a local path / hub name
  dtype: auto
"""


def starter_config(task_type: str) -> str:
    if task_type not in _TASKS:
        raise InputError(f"--type '{task_type}' is not a task type; choose one of {', '.join(_TASKS)}")
    return f"# icm starter config ({task_type}); check it with: icm label DATA -c THIS --dry-run\n" + _TASKS[task_type] + _COMMON
