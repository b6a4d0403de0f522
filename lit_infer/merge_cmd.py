"""``lit-infer merge OUTPUT_DIR``: turn the parts of a ``layout: parts`` run into the one ordered file."""

from __future__ import annotations

import argparse
import json
import os
import sys

from lit_infer.data.storage import Storage, is_url, protocol
from lit_infer.errors import ConfigError, run_command
from lit_infer.output.merge import merge_parts
from lit_infer.output.ownership import check_filename


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="lit-infer merge",
        description="Merge the part files of a finished `writer.layout: parts` run into one file ordered like the "
        "input (predictions.<format>, errors.jsonl, and <column>.npy for npy), as `layout: single` writes it.",
    )
    parser.add_argument("output_dir", help="the run's output folder or URL (holding _manifest.json and _SUCCESS)")
    parser.add_argument("--dest", default=None, help="local folder for the merged file (default: OUTPUT_DIR itself)")
    parser.add_argument("--filename", default="predictions", help="base name of the merged file")
    parser.add_argument(
        "--storage_options", default=None, help="JSON fsspec options for a URL, e.g. '{\"anon\": true}'"
    )
    args = parser.parse_args(argv)
    check_filename(args.filename, "csv")
    remote = is_url(args.output_dir) and protocol(args.output_dir) != "file"
    if not remote and not os.path.isdir(args.output_dir.removeprefix("file://")):
        what = "is a file, not a folder" if os.path.exists(args.output_dir) else "is missing (no such folder)"
        raise ConfigError(
            "OUTPUT_DIR", args.output_dir, what, "Give the writer.output_dir of a finished `writer.layout: parts` run"
        )
    dest = args.dest
    if dest is None:
        if remote:
            raise ConfigError("--dest", None, "OUTPUT_DIR is a URL", "Give a local folder for the merged file")
        dest = args.output_dir
    try:
        options = json.loads(args.storage_options) if args.storage_options else None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            "--storage_options", args.storage_options, f"not JSON ({exc})", "Give a JSON object"
        ) from None
    files = merge_parts(Storage(args.output_dir, options, key="OUTPUT_DIR"), dest, args.filename)
    print(f"lit-infer: merged into {files['table']}", file=sys.stderr)


def run(argv: list[str]) -> None:
    run_command(main, argv)
