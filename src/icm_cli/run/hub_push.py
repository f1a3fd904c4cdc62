"""`icm export --push-to-hub ORG/NAME`: the exported rows as a dataset repository on the Hugging
Face Hub, through `datasets.Dataset.push_to_hub`, with the run's summary as the dataset card's text.

The card goes first, as a README.md holding only that text; `push_to_hub` then uploads the Parquet
shards and adds its own metadata (features, splits, data files) to the card's YAML header while
keeping the text, as it does for any card already there. The token is whatever huggingface_hub
finds (HF_TOKEN, `huggingface-cli login`); icm never prints or stores it. The endpoint is
huggingface_hub's (HF_ENDPOINT), which is how the tests point it at a local server.
Any failure is one line (exit 4); nothing is written locally.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Optional

from ..foundation.errors import InputError, OutputError, first_line
from ..data.sources import datasets_progress

CARD_FILE = "README.md"


@dataclass(frozen=True)
class HubTarget:
    repo_id: str  # ORG/NAME
    private: bool = False


def check_repo_id(repo_id: str) -> None:
    """ORG/NAME as the Hub names a repository, checked before anything is read."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1:
        raise InputError(f"--push-to-hub {repo_id}: name the dataset repository as ORG/NAME")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise InputError(f"--push-to-hub {repo_id}: {first_line(e)}") from None


def card_text(repo_id: str, export_line: str, summary: Optional[dict[str, Any]]) -> str:
    """The dataset card's text: what the rows are, how they were exported, and the run's summary."""
    lines = [f"# {repo_id.split('/')[-1]}", "",
             "Labels made without human labels by icm (Internal Coherence Maximization with a base language "
             "model), exported with `icm export`.", "", f"Export: {export_line}.", ""]
    if summary is None:
        lines += ["The run's summary (`LABELS.summary.json`) was not beside the labels, so none is given here.", ""]
        return "\n".join(lines)
    signal = summary.get("signal") or {}
    facts = [("model", summary.get("model")), ("config hash", summary.get("config_hash")),
             ("rows", summary.get("rows")), ("labelled by the search (core)", summary.get("core_rows")),
             ("labelled by transfer", summary.get("transfer_rows")), ("label counts", summary.get("label_counts")),
             ("signal check", f"{signal.get('verdict')}: {signal.get('reason')}" if signal else None),
             ("cores", summary.get("core_choice")), ("zero-shot rule", summary.get("zero_shot_rule"))]
    lines += ["## The run", ""]
    lines += [f"- {name}: {value if not isinstance(value, dict) else json.dumps(value)}"
              for name, value in facts if value is not None]
    lines += ["", "The run's whole summary, as `icm label` wrote it:", "", "```json",
              json.dumps(summary, indent=2, ensure_ascii=False), "```", ""]
    return "\n".join(lines)


def push(dataset: Any, target: HubTarget, card: str, commit_message: str) -> str:
    """Upload `dataset` (a datasets.Dataset) and its card; returns the repository's address."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    bars = sys.stderr.isatty()
    if not bars:
        disable_progress_bars()
    try:
        with datasets_progress(bars):
            api = HfApi()
            api.create_repo(target.repo_id, repo_type="dataset", private=target.private, exist_ok=True)
            api.upload_file(path_or_fileobj=card.encode("utf-8"), path_in_repo=CARD_FILE, repo_id=target.repo_id,
                            repo_type="dataset", commit_message="icm: dataset card")
            dataset.push_to_hub(target.repo_id, private=target.private, commit_message=commit_message)
    except Exception as e:  # the hub client's errors are many (HTTP, connection, validation): one line each
        raise OutputError(f"--push-to-hub {target.repo_id}: the push failed: {_scrubbed(first_line(e))}") from None
    finally:
        if not bars:
            enable_progress_bars()
    return f"{constants.ENDPOINT}/datasets/{target.repo_id}"


def _scrubbed(message: str) -> str:
    """Never let a token reach the terminal, whatever a client library put in its message."""
    from huggingface_hub import get_token

    token = get_token()
    return message.replace(token, "***") if token else message
