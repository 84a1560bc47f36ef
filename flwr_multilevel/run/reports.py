"""Round reports as JSON lines: how a deployed hub hands its rounds to deploy's combined view.

A deployed hub appends one line per round to ``reports.jsonl`` in its folder;
:func:`read_reports` reads the complete lines back, and
:func:`merge_reports` makes one round of the whole federation out of the
hubs' reports of that round, as the simulation reports it.
"""

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flwr.app import MetricRecord

from flwr_multilevel.strategies.report import RoundReport

REPORTS = "reports.jsonl"


def report_to_json(report: RoundReport) -> dict[str, Any]:
    """Return a round report as plain JSON data.

    Examples
    --------
    >>> data = report_to_json(RoundReport(2, gossip=True, steps={3: 4}, missing=[5]))
    >>> data["steps"], data["missing"], data["gossip"]
    ({'3': 4}, [5], True)
    """
    return {
        "server_round": report.server_round,
        "gossip": report.gossip,
        "steps": {str(w): int(s) for w, s in report.steps.items()},
        "dropped": list(report.dropped),
        "missing": [int(w) for w in report.missing],
        "hub_metrics": {
            str(d): None if m is None else {k: v for k, v in m.items()}
            for d, m in report.hub_metrics.items()
        },
        "failed_hubs": {str(d): why for d, why in report.failed_hubs.items()},
        "skipped_peers": {str(d): list(p) for d, p in report.skipped_peers.items()},
        "slots": report.slots,
        "bytes_down": report.bytes_down,
        "bytes_up": report.bytes_up,
        "bytes_hubs": report.bytes_hubs,
        "seconds": report.seconds,
    }


def report_from_json(data: dict[str, Any]) -> RoundReport:
    """Return the round report of :func:`report_to_json` data.

    Examples
    --------
    >>> back = report_from_json(report_to_json(RoundReport(2, gossip=False, steps={3: 4})))
    >>> back.server_round, back.steps
    (2, {3: 4})
    """
    return RoundReport(
        int(data["server_round"]),
        gossip=bool(data["gossip"]),
        steps={int(w): int(s) for w, s in data["steps"].items()},
        dropped=[str(x) for x in data["dropped"]],
        missing=[int(w) for w in data["missing"]],
        hub_metrics={
            int(d): None if m is None else MetricRecord(m) for d, m in data["hub_metrics"].items()
        },
        failed_hubs={int(d): str(why) for d, why in data["failed_hubs"].items()},
        skipped_peers={int(d): [int(p) for p in ps] for d, ps in data["skipped_peers"].items()},
        slots=int(data["slots"]),
        bytes_down=int(data["bytes_down"]),
        bytes_up=int(data["bytes_up"]),
        bytes_hubs=int(data["bytes_hubs"]),
        seconds=float(data["seconds"]),
    )


def append_report(folder: Path, report: RoundReport) -> None:
    """Append a round's report to ``folder/reports.jsonl`` as one line, flushed."""
    line = json.dumps(report_to_json(report)) + "\n"
    fd = os.open(folder / REPORTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_reports(folder: Path) -> dict[int, RoundReport]:
    """Return the complete reports in ``folder/reports.jsonl`` by round (a half line waits)."""
    path = folder / REPORTS
    if not path.is_file():
        return {}
    reports = {}
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            report = report_from_json(json.loads(line))
            reports[report.server_round] = report
    return reports


def merge_reports(reports: Sequence[RoundReport]) -> RoundReport:
    """Return one round of the whole federation from its hubs' reports of that round.

    Steps, dropped and missing workers, hub metrics, failures and skipped
    neighbours are united; bytes add up; the round lasts as long as its
    slowest hub (slots and seconds: the largest).

    Examples
    --------
    >>> a = RoundReport(1, gossip=True, steps={0: 2}, bytes_hubs=10, slots=4, seconds=1.0)
    >>> b = RoundReport(1, gossip=True, steps={1: 3}, bytes_hubs=5, slots=4, seconds=2.0)
    >>> m = merge_reports([a, b])
    >>> m.steps, m.bytes_hubs, m.slots, m.seconds
    ({0: 2, 1: 3}, 15, 4, 2.0)
    """
    first = reports[0]
    merged = RoundReport(first.server_round, gossip=first.gossip)
    for report in reports:
        merged.steps.update(report.steps)
        merged.dropped.extend(report.dropped)
        merged.missing.extend(report.missing)
        merged.hub_metrics.update(report.hub_metrics)
        merged.failed_hubs.update(report.failed_hubs)
        merged.skipped_peers.update(report.skipped_peers)
        merged.slots = max(merged.slots, report.slots)
        merged.bytes_down += report.bytes_down
        merged.bytes_up += report.bytes_up
        merged.bytes_hubs += report.bytes_hubs
        merged.seconds = max(merged.seconds, report.seconds)
    return merged
