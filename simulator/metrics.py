"""Prometheus text metrics for `/_admin/metrics`.

Only request counts and the latency histogram are counted on the hot path (a dict increment and a
bisect); fault hits, rate-limit rejections and journal size are read from their owners when scraped.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.sandbox import Sandbox

# Seconds; the upper bounds of the latency histogram's buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = {}
        self.sums: dict[str, float] = defaultdict(float)

    def observe_request(self, site: str, status: int | None, seconds: float) -> None:
        with self._lock:
            self.requests[(site, str(status or "none"))] += 1
            counts = self.buckets.get(site)
            if counts is None:
                counts = self.buckets[site] = [0] * (len(LATENCY_BUCKETS) + 1)
            counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self.sums[site] += seconds

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.buckets.clear()
            self.sums.clear()

    def render(self, sandbox: Sandbox) -> str:
        lines = [
            "# HELP ehrsim_http_requests_total HTTP requests served, by site and status.",
            "# TYPE ehrsim_http_requests_total counter",
        ]
        with self._lock:
            for (site, status), count in sorted(self.requests.items()):
                lines.append(f'ehrsim_http_requests_total{{site="{_label(site)}",status="{status}"}} {count}')
            lines += [
                "# HELP ehrsim_http_request_duration_seconds Time to serve a request, by site.",
                "# TYPE ehrsim_http_request_duration_seconds histogram",
            ]
            for site, counts in sorted(self.buckets.items()):
                cumulative = 0
                for bound, count in zip((*LATENCY_BUCKETS, "+Inf"), counts, strict=True):
                    cumulative += count
                    lines.append(
                        f'ehrsim_http_request_duration_seconds_bucket{{site="{_label(site)}",le="{bound}"}} {cumulative}'
                    )
                lines.append(
                    f'ehrsim_http_request_duration_seconds_sum{{site="{_label(site)}"}} {self.sums[site]:.6f}'
                )
                lines.append(
                    f'ehrsim_http_request_duration_seconds_count{{site="{_label(site)}"}} {cumulative}'
                )
        lines += [
            "# HELP ehrsim_fault_hits_total Times each fault fired.",
            "# TYPE ehrsim_fault_hits_total counter",
        ]
        for fault in sandbox.faults.faults.values():
            lines.append(f'ehrsim_fault_hits_total{{fault="{_label(fault.id)}"}} {fault.hits}')
        lines += [
            "# HELP ehrsim_rate_limit_rejections_total Requests refused by each rate limit.",
            "# TYPE ehrsim_rate_limit_rejections_total counter",
        ]
        for limit in sandbox.rate_limits.limits:
            lines.append(f'ehrsim_rate_limit_rejections_total{{limit="{_label(limit.id)}"}} {limit.rejected}')
        journal = sandbox.journal
        lines += [
            "# HELP ehrsim_journal_entries Entries held in the journal's ring buffer.",
            "# TYPE ehrsim_journal_entries gauge",
            f"ehrsim_journal_entries {len(journal)}",
            "# HELP ehrsim_journal_dropped_total Entries pushed out of the ring buffer and not spilled.",
            "# TYPE ehrsim_journal_dropped_total counter",
            f"ehrsim_journal_dropped_total {journal.dropped}",
            "# HELP ehrsim_journal_spilled_total Entries pushed out of the ring buffer into the spill file.",
            "# TYPE ehrsim_journal_spilled_total counter",
            f"ehrsim_journal_spilled_total {journal.spilled}",
        ]
        return "\n".join(lines) + "\n"
