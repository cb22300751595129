"""Building a WHERE clause from optional filters; fragments are fixed strings, values are parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Where:
    clauses: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def add(self, clause: str, **params: Any) -> None:
        self.clauses.append(clause)
        self.params.update(params)

    def when(self, value: object, clause: str, name: str) -> None:
        """Add ``clause`` (using ``%(name)s``) only when the filter was given."""
        if value is not None:
            self.add(clause, **{name: value})

    def sql(self) -> str:
        return ("WHERE " + " AND ".join(self.clauses)) if self.clauses else ""
