"""Self-contained HTML report of a run directory (``dpsynth report RUN_DIR``)."""

from dpsynth.report.html import REPORT_FILE, build_report, write_report

__all__ = ["REPORT_FILE", "build_report", "write_report"]
