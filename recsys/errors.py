"""Errors a user is meant to read: each names the file or table, the row(s) and the rule broken."""

from __future__ import annotations


class DataValidationError(Exception):
    """Input data broke a rule of the validation gate. Raised after the full report is written.

    Attributes:
        table: "items" or "interactions" (or "input" for problems found before a table exists).
        source: the file or data-set member the table came from.
        failures: one human-readable line per failed rule, offending rows included.
        report_dir: where the full result (JSON and HTML data docs) was written, if anywhere.
    """

    def __init__(self, table: str, source: str, failures: list[str], report_dir: str | None = None):
        self.table = table
        self.source = source
        self.failures = list(failures)
        self.report_dir = report_dir
        lines = [f"Validation failed for table '{table}' (source: {source}): {len(failures)} rule(s) broken"]
        lines += [f"  - {f}" for f in failures]
        if report_dir:
            lines.append(f"  full result (JSON + HTML data docs): {report_dir}")
        super().__init__("\n".join(lines))


class InputError(ValueError):
    """A run's input is unusable in a way a retry cannot fix (a bad setting, a path outside the allowed
    folders, a file that is not a regular file). Airflow tasks fail on it without retrying."""
