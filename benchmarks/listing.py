"""What a source costs before its first batch: ``list_source`` timed in a fresh process per run, for each folder,
interleaved with the same call from another checkout (``--against``, e.g. a ``git worktree`` of an earlier commit).

    python -m benchmarks.listing /tmp/dp_scale/folder_1000 /tmp/dp_scale/folder_200000 --against /tmp/old_tree

``benchmarks/scale.py --source folder`` makes such folders (hard links to a few real JPEGs) and times the whole
command to its first batch; this times the listing alone, which the whole command's noise hides on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_CALL = (
    "import sys, time; from lit_infer.data.sources import list_source; "
    "t = time.perf_counter(); list_source(sys.argv[1], None); print(time.perf_counter() - t)"
)


def time_listing(tree: Path, folder: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", _CALL, folder], cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{tree}: {out.stderr[-2000:]}")
    return round(float(out.stdout), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--against", type=Path, default=None, help="another checkout, timed in turn with this one")
    parser.add_argument("--repeats", type=int, default=3)
    a = parser.parse_args()
    trees = {"this": REPO, **({"against": a.against.resolve()} if a.against else {})}
    seconds: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    for _ in range(a.repeats):
        for name, tree in trees.items():
            for folder in a.folders:
                seconds[name].setdefault(folder, []).append(time_listing(tree, folder))
    print(json.dumps(seconds, indent=1))


if __name__ == "__main__":
    main()
