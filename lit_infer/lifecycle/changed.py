"""Inputs rewritten between two attempts of a run, found before the second one reads anything.

Each unit names what it read as a worker starts it (:mod:`lit_infer.data.identity`): its stage and its part's
commit record keep that version. A resume asks each unit it would keep for its version now:

- a committed unit whose inputs changed refuses the resume, in one line naming the file written last: its rows came
  from other bytes, and redoing it would replace rows a reader may already hold;
- an unfinished unit whose inputs changed is redone whole (its stages dropped), never continued;
- a finished ``single`` run (its parts merged and gone) is checked by one digest over every unit's version, which
  its summary keeps.

Units not read yet are read as they are now: nothing of them was written.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lit_infer.data.identity import Version, versions_digest
from lit_infer.data.storage import is_url, protocol
from lit_infer.data.units import Unit
from lit_infer.output.parts import staged_versions

VersionOf = Callable[[Unit], Version]


def changed_since_committed(
    unit_of: Callable[[int], Unit | None], done: dict[int, dict[str, Any]], version_of: VersionOf | None
) -> str | None:
    """The first committed unit (``done``: its commit record by ordinal; ``unit_of``: the unit of an ordinal as the
    source holds it now, ``None`` past its end) whose inputs are not what they were when it was read (rewritten,
    gone, or a folder's page now holding other files), in one line; ``None`` if every one is as it was."""
    if version_of is None:
        return None
    recorded = [(o, r["version"]) for o, r in sorted(done.items()) if r.get("version")]
    units = [unit_of(o) for o, _ in recorded]
    for (ordinal, _), unit in zip(recorded, units, strict=True):
        if unit is None:  # the source ends before it now: files were removed
            return (
                f"data.source: unit {ordinal}, committed by an earlier attempt, is past the source's end now (inputs "
                "were removed). Restore them to resume, or start fresh with --writer.overwrite=true."
            )
    kept = [u for u in units if u is not None]
    for unit, (_, then), now in zip(kept, recorded, _versions(version_of, kept), strict=True):
        if now.tag != then:
            return _refusal(unit, now, "since an earlier attempt predicted it")
    return None


def changed_since_finished(
    units: list[Unit], recorded: str | None, version_of: VersionOf | None, output_dir: str
) -> str | None:
    """A finished run rerun: ``None`` if every unit reads what it read (``recorded``: the summary's digest), else one
    line naming the file written last."""
    if version_of is None or recorded is None:
        return None
    versions = _versions(version_of, units)
    if versions_digest(v.tag for v in versions) == recorded:
        return None
    newest = max(versions, key=lambda v: v.modified)
    unit = next(u for u, v in zip(units, versions, strict=True) if v is newest)
    return _refusal(unit, newest, f"since the run in writer.output_dir={output_dir!r} finished")


def changed_since_staged(unit: Unit | None, stages: list[str], version_of: VersionOf | None) -> bool:
    """Whether an unfinished unit's stages read other inputs than the unit holds now (or did not record them)."""
    if unit is None or version_of is None:
        return False
    try:
        staged = staged_versions(stages)
    except FileNotFoundError:  # another rank on the same folder found the same and removed them first
        return True
    return staged != {version_of(unit).tag}


def _versions(version_of: VersionOf, units: list[Unit]) -> list[Version]:
    with ThreadPoolExecutor(8) as pool:  # a stat or a HEAD per input: waits, not work
        return list(pool.map(version_of, units))


def _refusal(unit: Unit, now: Version, when: str) -> str:
    if unit.kind in ("tar", "parquet"):
        what = f"the shard {unit.location!r} changed {when} (size and modification time or ETag: now {now.tag})"
    else:
        remote = is_url(now.newest) and protocol(now.newest) != "file"
        how = (
            "content" if now.tag.startswith("content:") else "size and ETag" if remote else "size and modification time"
        )
        what = f"the inputs of {unit.id} changed {when} ({how}; the one written last: {now.newest!r})"
    return f"data.source: {what}. Restore them to resume, or start fresh with --writer.overwrite=true."
