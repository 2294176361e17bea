"""Small helpers every test module may use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CliResult:
    """What one in-process run of ``lcs-train`` or ``lcs-export`` printed and returned."""

    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """The non-blank lines on stderr: a user error must be exactly one."""
        return [line for line in self.stderr.splitlines() if line.strip()]
