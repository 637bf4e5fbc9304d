"""Prometheus metrics for a server of several worker processes, cheap to record.

Recording is a dictionary update on plain Python numbers: no lock (each worker records
from its one event loop thread), no file write, no allocation once a label set has been
seen. Every `flush_seconds` (and before a scrape) a worker writes its whole state to a file
of its own in a shared directory (`<pid>-<nonce>.json`, written then renamed, so a reader
never sees half a file); a scrape, whichever worker takes it, merges every file: counters
and histograms summed over all workers that ever ran since the directory was emptied (a
worker that exits keeps its counts, so totals never go down), gauges summed over the
workers whose file is fresh. prometheus-client's multiprocess mode does the same with an
mmap write and a lock per increment; this keeps the increments free and pays once a second.

Without a directory the registry serves its own process only (one worker, the tests).
The exposition is prometheus-client's own text format (`render`).
"""

from __future__ import annotations

import contextlib
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

Labels = tuple[str, ...]
CONTENT_TYPE = CONTENT_TYPE_LATEST
# A gauge from a worker that has not written for this long is a worker that is gone.
STALE_SECONDS = 15.0


class Counter:
    """A monotonic count per label set; `inc` from one thread only."""

    __slots__ = ("help", "labelnames", "name", "values")
    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Labels) -> None:
        self.name, self.help, self.labelnames = name, help, labelnames
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount


class Histogram:
    """Observations per label set: one count per bucket (not cumulative; the last one is
    +Inf), then their sum. `observe` from one thread only."""

    __slots__ = ("bounds", "help", "labelnames", "name", "values")
    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: Labels, bounds: Iterable[float]) -> None:
        self.name, self.help, self.labelnames = name, help, labelnames
        self.bounds = tuple(sorted(bounds))
        self.values: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        row = self.values.get(labels)
        if row is None:
            row = self.values[labels] = [0.0] * (len(self.bounds) + 2)
        row[bisect_left(self.bounds, value)] += 1.0
        row[-1] += value


class Gauge:
    """A value read when the state is written (a queue's depth): nothing to record."""

    __slots__ = ("help", "labelnames", "name", "sample")
    kind = "gauge"

    def __init__(
        self, name: str, help: str, labelnames: Labels, sample: Callable[[], dict[Labels, float]]
    ) -> None:
        self.name, self.help, self.labelnames, self.sample = name, help, labelnames, sample

    @property
    def values(self) -> dict[Labels, float]:
        try:
            return self.sample()
        except Exception:  # a gauge that cannot be read is left out, not the scrape
            return {}


AnyMetric = Counter | Histogram | Gauge
M = TypeVar("M", Counter, Histogram, Gauge)


class Registry:
    """One process's metrics, and the directory the workers of one server share."""

    def __init__(self, directory: str | Path | None = None, flush_seconds: float = 1.0) -> None:
        self.directory = Path(directory) if directory else None
        self.flush_seconds = flush_seconds
        self.metrics: dict[str, AnyMetric] = {}
        self._nonce = os.urandom(4).hex()
        # Rendered at scrape time only (a department's name, not recorded per call).
        self.extra: list[Callable[[], Iterable[Metric]]] = []

    def configure(self, directory: str | Path | None, flush_seconds: float = 1.0) -> None:
        self.directory = Path(directory) if directory else None
        self.flush_seconds = flush_seconds

    def counter(self, name: str, help: str, labelnames: Labels) -> Counter:
        return self._add(Counter(name, help, labelnames))

    def histogram(
        self, name: str, help: str, labelnames: Labels, bounds: Iterable[float]
    ) -> Histogram:
        return self._add(Histogram(name, help, labelnames, bounds))

    def gauge(
        self, name: str, help: str, labelnames: Labels, sample: Callable[[], dict[Labels, float]]
    ) -> Gauge:
        return self._add(Gauge(name, help, labelnames, sample))

    def _add(self, metric: M) -> M:
        if metric.name in self.metrics:
            raise ValueError(f"metric {metric.name} is registered twice")
        self.metrics[metric.name] = metric
        return metric

    # --- the state, written and merged -----------------------------------------------------

    def state(self) -> dict[str, list[list[Any]]]:
        """This process's values: {name: [[labels, value or bucket row], ...]}."""
        return {
            name: [[list(labels), value] for labels, value in metric.values.items()]
            for name, metric in self.metrics.items()
        }

    @property
    def _file(self) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"{os.getpid()}-{self._nonce}.json"

    def flush(self) -> None:
        """Write this process's state to its file (nothing without a directory)."""
        path = self._file
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_bytes(orjson.dumps(self.state()))
        os.replace(partial, path)

    def _states(self) -> Iterator[tuple[dict[str, list[list[Any]]], bool]]:
        """(state, its gauges count) of this process, then of every other worker's file."""
        yield self.state(), True
        own, directory = self._file, self.directory
        if directory is None or not directory.is_dir():
            return
        now = time.time()
        for path in directory.glob("*.json"):
            if path == own:
                continue
            try:
                fresh = now - path.stat().st_mtime < STALE_SECONDS
                yield orjson.loads(path.read_bytes()), fresh
            except (OSError, orjson.JSONDecodeError):
                continue  # a worker that just went away, or an unrelated file

    def merged(self) -> dict[str, dict[Labels, Any]]:
        totals: dict[str, dict[Labels, Any]] = {name: {} for name in self.metrics}
        for state, fresh in self._states():
            for name, rows in state.items():
                metric = self.metrics.get(name)
                if metric is None or (metric.kind == "gauge" and not fresh):
                    continue
                into = totals[name]
                for labels, value in rows:
                    key = tuple(labels)
                    if isinstance(value, list):
                        known = into.get(key)
                        if known is None:
                            into[key] = value
                        elif len(known) == len(value):  # else: buckets of an older release
                            into[key] = [a + b for a, b in zip(known, value, strict=True)]
                    else:
                        into[key] = into.get(key, 0.0) + value
        return totals

    def families(self) -> list[Metric]:
        families: list[Metric] = []
        for name, values in self.merged().items():
            metric = self.metrics[name]
            labelnames = list(metric.labelnames)
            family: Metric
            if isinstance(metric, Histogram):
                family = HistogramMetricFamily(name, metric.help, labels=labelnames)
                for labels, row in sorted(values.items()):
                    buckets, running = [], 0.0
                    for bound, count in zip([*metric.bounds, float("inf")], row[:-1], strict=True):
                        running += count
                        buckets.append((_le(bound), running))
                    family.add_metric(list(labels), buckets, row[-1])
            elif isinstance(metric, Counter):
                family = CounterMetricFamily(name, metric.help, labels=labelnames)
                for labels, value in sorted(values.items()):
                    family.add_metric(list(labels), value)
            else:
                family = GaugeMetricFamily(name, metric.help, labels=labelnames)
                for labels, value in sorted(values.items()):
                    family.add_metric(list(labels), value)
            families.append(family)
        for extra in self.extra:
            with contextlib.suppress(Exception):
                families.extend(extra())
        return families

    def render(self) -> bytes:
        """Every worker's metrics in Prometheus' text format (this process's live values)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(self.families()))
        return generate_latest(registry)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


# The process's registry: apps register their metrics on it at import.
REGISTRY = Registry()
