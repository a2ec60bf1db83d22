"""The depth policy: which sub-network answers a request, from its budget and the work queued ahead of it.

Pure: no clock, no I/O, no numpy. The ingress deployment (:mod:`adn.serving.app`) feeds it the latency table
measured in a replica, the in-flight requests and the answers' measured times.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Candidate:
    """One sub-network: its skip config, batch-1 latency (ms) and how good it is (``quality``, higher is better)."""

    skip: str
    latency_ms: float
    quality: tuple[float, ...]


def rank_key(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The columns that rank sub-networks: ``acc1`` (then ``gflops``) when every row has it, else ``gflops``,
    else ``params_m``; a table without any of them ranks by the number of stages kept."""
    for keys in (("acc1", "gflops"), ("acc1", "params_m"), ("acc1",), ("gflops",), ("params_m",)):
        if rows and all(r.get(k) is not None for r in rows for k in keys):
            return keys
    return ()


class DepthPolicy:
    """Pick a skip config from a latency budget and the expected wait.

    ``rows``: the file's sub-network table (``skip`` and any of ``acc1``, ``gflops``, ``params_m``);
    ``latency_ms``: skip -> measured batch-1 latency. Candidates are the Pareto-optimal sub-networks, cheapest
    first, each better than every cheaper one; when none fits the budget, the base-net (all stages skipped).
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]], latency_ms: Mapping[str, float]) -> None:
        skips = [str(r["skip"]) for r in rows] or list(latency_ms)
        if not skips or len({len(s) for s in skips}) != 1 or not all(set(s) <= {"T", "F"} for s in skips):
            raise ValueError(f"the sub-network table holds malformed skip configs: {', '.join(skips) or 'none'}")
        if len(set(skips)) != len(skips):
            raise ValueError("the sub-network table lists a skip config twice")
        missing = [s for s in skips if s not in latency_ms]
        if missing:
            raise ValueError(f"no latency measured for {', '.join(missing)}")
        self.ranked_by = rank_key(rows)
        by_skip = {str(r["skip"]): r for r in rows}

        def quality(skip: str) -> tuple[float, ...]:
            row = by_skip.get(skip, {})
            return tuple(float(row[k]) for k in self.ranked_by) or (float(skip.count("F")),)

        self.rows = {s: Candidate(s, float(latency_ms[s]), quality(s)) for s in skips}
        ranked = sorted(self.rows.values(), key=lambda c: (c.latency_ms, tuple(-q for q in c.quality)))
        self.front: list[Candidate] = []
        for c in ranked:  # keep each sub-network that beats every cheaper one
            if not self.front or c.quality > self.front[-1].quality:
                self.front.append(c)
        self.fallback = self.rows.get("T" * len(skips[0]), self.front[0])

    @property
    def best(self) -> Candidate:
        return self.front[-1]

    @property
    def stages(self) -> int:
        return len(self.best.skip)

    def get(self, skip: str) -> Candidate:
        try:
            return self.rows[skip]
        except KeyError:
            raise ValueError(f"skip config {skip!r} is not one of {', '.join(self.rows)}") from None

    def choose(self, budget_ms: float | None, wait_ms: float = 0.0, scale: float = 1.0) -> Candidate:
        """The best candidate with ``wait_ms + scale * latency <= budget_ms``; the base-net when none fits;
        the best sub-network when there is no budget."""
        if budget_ms is None:
            return self.best
        fits = [c for c in self.front if wait_ms + scale * c.latency_ms <= budget_ms]
        return fits[-1] if fits else self.fallback


def expected_wait_ms(running_left_ms: Iterable[float], waiting_ms: Iterable[float], workers: int) -> float:
    """How long a request admitted now waits for one of ``workers`` FIFO servers.

    ``running_left_ms``: the remaining time of each request being served (at most ``workers`` count);
    ``waiting_ms``: the expected service time of each request queued ahead, in order of arrival.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    free = sorted(max(0.0, t) for t in running_left_ms)[:workers]
    free += [0.0] * (workers - len(free))
    heapq.heapify(free)
    for t in waiting_ms:
        heapq.heappush(free, heapq.heappop(free) + t)
    return free[0]


class Feedback:
    """Keeps the latency table honest under load.

    ``scale``: running geometric mean of measured / tabled inference time (the table was measured on an idle
    replica). ``overhead_ms``: what a request costs besides inference when nothing is queued -- the engine's hops
    and HTTP work -- the 10th percentile of server minus inference time over the last ``window`` answers; it is
    added to every prediction. ``headroom``: the ``quantile`` of actual / predicted server time over the last
    ``window`` answers; the policy is given ``budget / headroom``, so that about ``quantile`` of the answers come
    within budget.
    """

    def __init__(self, quantile: float = 0.95, window: int = 100, warmup: int = 10) -> None:
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        self.quantile, self.warmup = quantile, warmup
        self.scale, self.headroom, self.overhead_ms = 1.0, 1.0, 0.0
        self._count, self._log_scale = 0, 0.0
        self._misses: deque[float] = deque(maxlen=window)
        self._gaps: deque[float] = deque(maxlen=window)

    def record(self, infer_ms: float, table_ms: float, predicted_ms: float, server_ms: float) -> None:
        ratio = min(8.0, max(0.125, infer_ms / max(table_ms, 1e-6)))
        self._count += 1  # a plain mean of the log ratios over the first 20 answers, then a running one
        self._log_scale += max(0.05, 1 / self._count) * (math.log(ratio) - self._log_scale)
        self.scale = math.exp(self._log_scale)
        self._gaps.append(max(0.0, server_ms - infer_ms))
        gaps = sorted(self._gaps)
        self.overhead_ms = gaps[int(0.1 * (len(gaps) - 1))]
        if self._count <= self.warmup:  # the first predictions used a scale that had not settled
            return
        self._misses.append(min(8.0, max(0.125, server_ms / max(predicted_ms, 1e-6))))
        ordered = sorted(self._misses)
        self.headroom = max(0.25, ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))])

    def budget(self, budget_ms: float | None) -> float | None:
        return None if budget_ms is None else budget_ms / self.headroom


__all__ = ["Candidate", "DepthPolicy", "Feedback", "expected_wait_ms", "rank_key"]
