"""``report.html``: one self-contained page beside a finished run's outputs (see ``build.py`` for what it shows and
how its size is bounded). Made at the end of every run and by ``lit-infer report OUTPUT_DIR``."""

from __future__ import annotations

from lit_infer.report.build import write_report
from lit_infer.report.files import REPORT_FILE

__all__ = ["REPORT_FILE", "report_at_end", "write_report"]


def report_at_end(output_dir: str) -> str:
    """The end of a run: write the report, and say in one line where it is, or why there is none.

    A finished run never fails for its report: a missing optional package or an unreadable file is one line.
    """
    if "://" in output_dir:
        return "  report: not made for a URL output folder; copy the run to a local folder and run `lit-infer report` on it"
    try:
        import jinja2  # noqa: F401
    except ImportError:
        return "  report: not made (needs jinja2): pip install 'lit_infer[report]', then `lit-infer report OUTPUT_DIR`"
    try:
        return f"  report: {write_report(output_dir)}"
    except Exception as exc:
        return f"  report: not made ({type(exc).__name__}: {exc}); `lit-infer report {output_dir}` tries again"
