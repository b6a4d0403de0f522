"""Start, resume or refuse: what an output folder already holds decides what this run must still predict.

Rank 0 alone decides (:func:`decide`), so every rank acts on one answer; the answer is a plain dict that a
collective can broadcast.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from lit_infer.atomic import read_json, remove_stale_temps, write_json
from lit_infer.errors import RunError
from lit_infer.lifecycle.fingerprint import differences, refusal
from lit_infer.output.disk import read_record
from lit_infer.output.ownership import check_work_dir, remove_recorded, remove_work_files
from lit_infer.output.shards import done_indices, list_shards

RUN_FILE = "run.json"
"""In the work folder: the fingerprint and attempt count of the unfinished run."""
SUMMARY_FILE = "summary.json"
"""In the output folder: written last by a finished run, with the files it wrote and its fingerprint."""


def decide(output_dir: str, work_dir: str, fingerprint: dict[str, Any], num_items: int, overwrite: bool) -> dict:
    """Rank 0 alone: prepare the folders and say what is done.

    Returns:
        ``{"done": indices already committed, "attempt": this attempt's number, "complete": bool}``, or
        ``{"error": message}`` when the folder holds a different run.
    """
    run_file = os.path.join(work_dir, RUN_FILE)
    summary_file = os.path.join(output_dir, SUMMARY_FILE)
    check_work_dir(work_dir, output_dir)
    if overwrite:
        remove_previous(output_dir, work_dir)
    os.makedirs(output_dir, exist_ok=True)  # work_dir may lie elsewhere
    os.makedirs(work_dir, exist_ok=True)
    for directory in (output_dir, work_dir):
        remove_stale_temps(directory)
    previous = read_json(run_file) if os.path.exists(run_file) else None
    if previous is None and os.path.exists(summary_file):
        previous = read_record(summary_file).get("run")
    if previous is not None and previous.get("fingerprint") != fingerprint:
        return {"error": refusal(output_dir, differences(previous.get("fingerprint") or {}, fingerprint))}
    if previous is not None and previous.get("complete") and os.path.exists(summary_file):
        return {"done": np.arange(num_items), "attempt": 0, "complete": True}
    shards = list_shards(work_dir)
    attempt = max((p.attempt for p in shards), default=0) + 1
    write_json(run_file, {"fingerprint": fingerprint, "complete": False, "attempts": attempt})
    return {"done": done_indices(shards), "attempt": attempt, "complete": False}


def remove_previous(output_dir: str, work_dir: str) -> None:
    """Only what an earlier run wrote (recorded in its summary, and still the same files; see
    ``lit_infer/output/ownership.py``): the folder may hold the user's own files. A summary naming anything else is
    refused before anything goes. A damaged summary records nothing: it alone goes."""
    summary_file = os.path.join(output_dir, SUMMARY_FILE)
    if os.path.exists(summary_file):
        try:
            summary = read_record(summary_file)
        except RunError:
            summary = {}
        remove_recorded(output_dir, summary, summary_file)
        os.remove(summary_file)
    remove_work_files(work_dir)
