"""What every benchmark ends with: a two-panel PNG (drain curve, latency histogram), a JSON file
with the curve, and the summary as the last line of output."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Panel:
    label: str       # e.g. "movements committed per second"
    mean: float
    target: float
    title: str


def write_report(name: str, summary: dict[str, Any], curve: list[tuple[float, float]], latencies: list[float],
                 drain: Panel, latency: Panel, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.plot([c[0] for c in curve], [c[1] for c in curve], color="tab:blue")
    left.axhline(drain.mean, color="tab:blue", linestyle=":", label=f"mean {drain.mean:,.0f}/s")
    left.axhline(drain.target, color="tab:red", linestyle="--", label=f"target {drain.target:,.0f}/s")
    left.set(xlabel="seconds since the first commit", ylabel=drain.label, title=drain.title)
    left.set_ylim(bottom=0)
    left.legend(loc="lower right")
    right.hist(latencies, bins=40, color="tab:purple")
    p99 = summary.get("latency_p99_ms", latency.mean)
    right.axvline(p99, color="black", linestyle="--", label=f"p99 {p99:.0f} ms")
    right.axvline(latency.target, color="tab:red", linestyle=":", label=f"target {latency.target:.0f} ms")
    right.set(xlabel=latency.label, ylabel="count", title=latency.title)
    right.legend()
    fig.tight_layout()
    png = out_dir / f"{name}.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    (out_dir / f"{name}.json").write_text(json.dumps({**summary, "curve": curve}, indent=2))
    sys.stderr.write(f"plot: {png}\n")
    sys.stderr.flush()
    print(json.dumps(summary), flush=True)  # the last line of output, for scripts
    return png
