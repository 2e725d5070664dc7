"""Figures and the self-contained HTML report, built from the files of a run directory."""

from radardiff.report.html import write_downstream_report, write_report

__all__ = ["write_downstream_report", "write_report"]
