"""The metrics mechanism: recording, several workers' files merged, the exposition parsed back."""

from __future__ import annotations

import os
import time

from prometheus_client.parser import text_string_to_metric_families

from meshsite.lib.metrics import Registry


def worker(directory) -> Registry:
    registry = Registry(directory)
    registry.counter("calls", "Calls.", ("outcome",))
    registry.histogram("latency_seconds", "Latency.", ("outcome",), (0.1, 1.0))
    depth = {"value": 0.0}
    registry.gauge("queue_depth", "Queue.", (), lambda: {(): depth["value"]})
    registry.depth = depth  # type: ignore[attr-defined]
    return registry


def samples(text: bytes) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_one_process_without_a_directory_serves_its_own_values():
    registry = worker(None)
    registry.metrics["calls"].inc(("ok",))
    registry.metrics["calls"].inc(("ok",), 2)
    registry.metrics["latency_seconds"].observe(("ok",), 0.1)  # on a bound: that bucket
    registry.metrics["latency_seconds"].observe(("ok",), 5)
    registry.flush()  # nothing to write to
    found = samples(registry.render())
    assert found[("calls_total", (("outcome", "ok"),))] == 3
    assert found[("latency_seconds_bucket", (("le", "0.1"), ("outcome", "ok")))] == 1
    assert found[("latency_seconds_bucket", (("le", "1.0"), ("outcome", "ok")))] == 1
    assert found[("latency_seconds_bucket", (("le", "+Inf"), ("outcome", "ok")))] == 2
    assert found[("latency_seconds_count", (("outcome", "ok"),))] == 2
    assert found[("latency_seconds_sum", (("outcome", "ok"),))] == 5.1


def test_a_scrape_merges_every_workers_file_and_only_fresh_gauges(tmp_path):
    first, second, gone = worker(tmp_path), worker(tmp_path), worker(tmp_path)
    for registry, calls in ((first, 2), (second, 3), (gone, 4)):
        for _ in range(calls):
            registry.metrics["calls"].inc(("ok",))
            registry.metrics["latency_seconds"].observe(("ok",), 0.5)
    first.metrics["calls"].inc(("upstream_error",))
    first.depth["value"], second.depth["value"], gone.depth["value"] = 1.0, 2.0, 40.0  # type: ignore[attr-defined]
    # Three workers wrote their files (pids and nonces differ); one exited long ago.
    for registry in (second, gone):
        registry.flush()
    second_file = next(p for p in tmp_path.glob("*.json") if second._nonce in p.name)
    gone_file = next(p for p in tmp_path.glob("*.json") if gone._nonce in p.name)
    old = time.time() - 60
    os.utime(gone_file, (old, old))
    assert second_file.exists()

    found = samples(first.render())
    assert found[("calls_total", (("outcome", "ok"),))] == 9  # the exited worker's count stays
    assert found[("calls_total", (("outcome", "upstream_error"),))] == 1
    assert found[("latency_seconds_count", (("outcome", "ok"),))] == 9
    assert found[("latency_seconds_bucket", (("le", "0.1"), ("outcome", "ok")))] == 0
    assert found[("latency_seconds_bucket", (("le", "1.0"), ("outcome", "ok")))] == 9
    assert found[("queue_depth", ())] == 3.0  # not the stale 40


def test_a_file_being_replaced_or_foreign_is_skipped(tmp_path):
    registry = worker(tmp_path)
    (tmp_path / "broken.json").write_bytes(b"{not json")
    (tmp_path / "other.json").write_bytes(b'{"unknown_metric": [[["x"], 1.0]]}')
    registry.metrics["calls"].inc(("ok",))
    assert samples(registry.render())[("calls_total", (("outcome", "ok"),))] == 1
