"""Where the report and what it reads live in an output folder (shared by the run's recorder and the report)."""

REPORT_FILE = "report.html"
REPORT_DIR = ".lit_infer_report"
"""Inside the output folder: what the report reads besides the outputs (timings per rank, the run's start). Not the
work folder: finalize removes that before the report is made."""
RUN_INFO = "run-info.json"


def timings_name(rank: int) -> str:
    return f"timings-rank{rank}.json"
