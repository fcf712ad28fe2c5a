"""How the benchmarks print: one table per benchmark (``metric / value / target``), plus small formatters."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class Table:
    title: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, metric: str, value: object, target: str = "") -> None:
        self.rows.append((metric, str(value), target))

    def render(self) -> str:
        header = ("metric", "value", "target")
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(3)]
        line = "  ".join("-" * w for w in widths)
        out = [f"== {self.title}", "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
        out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in self.rows]
        return "\n".join(out)


def ops_text(ops: Mapping[str, int], per: int = 1) -> str:
    if not ops:
        return "-"
    return ", ".join(f"{name} {count / per:g}" for name, count in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]
