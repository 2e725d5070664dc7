"""Figures and the self-contained HTML report, built from the files of a run directory."""

from radardiff.report.html import write_report

__all__ = ["write_report"]
