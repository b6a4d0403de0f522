"""``lit-infer report OUTPUT_DIR``: (re)build ``report.html`` for a finished run, ``layout: parts`` included."""

from __future__ import annotations

import argparse
import sys

from lit_infer.errors import ConfigError, run_command


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="lit-infer report",
        description="Write OUTPUT_DIR/report.html for a finished run: the run, its speed, its failures and, with "
        "labels, its accuracy, confusion, per-class scores, calibration and most confident mistakes. One file, "
        "nothing fetched from a network.",
    )
    parser.add_argument("output_dir", help="the run's output folder (holding summary.json)")
    args = parser.parse_args(argv)
    if "://" in args.output_dir:
        raise ConfigError("OUTPUT_DIR", args.output_dir, "is a URL", "Copy the run to a local folder and give that")
    try:
        import jinja2  # noqa: F401
    except ImportError:
        raise ConfigError(
            "OUTPUT_DIR", args.output_dir, "the report needs jinja2", "pip install 'lit_infer[report]'"
        ) from None
    from lit_infer.report.build import write_report

    print(f"lit-infer: report: {write_report(args.output_dir)}", file=sys.stderr)


def run(argv: list[str]) -> None:
    run_command(main, argv)
