# -*- test-case-name: tests.test_fleet_group -*-
"""
A worker group's metrics as one proxy's: each worker's families as plain
JSON-able data (L{familiesToData}, what a member answers to C{metrics}),
and their sum (L{mergeFamilies}, by L{GAUGE_RULES} for gauges).

Apart from L{ldaproute.fleet.group} because it is pure data, with no
channel or service: the member writes it, worker 0's C{/metrics} reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import Metric



#: How the gauges of several workers add up, by family name; any other
#: gauge is summed (connections, operations in flight, upstream
#: connections), as are counters and histograms.
GAUGE_RULES: dict[str, Callable[[Iterable[float]], float]] = {
    "ldaproute_backend_up": max,
    "ldaproute_pool_backends_up": max,
    "ldaproute_draining": max,
    "ldaproute_config_last_reload_successful": min,
    "ldaproute_config_loaded_timestamp_seconds": min,
    "ldaproute_throttle_store_up": min,
}


def familiesToData(families: Iterable[Metric]) -> list[dict[str, Any]]:
    """Metric families as JSON-able data (what a member answers to C{metrics})."""
    out = []
    for family in families:
        out.append(
            {
                "name": family.name,
                "type": family.type,
                "help": family.documentation,
                "unit": family.unit,
                "samples": [[s.name, s.labels, s.value] for s in family.samples],
            }
        )
    return out


def mergeFamilies(workers: Iterable[list[dict[str, Any]]]) -> list[Metric]:
    """
    One set of families for the group: counters, histograms and summaries
    summed sample by sample, gauges combined by L{GAUGE_RULES} (sum unless
    named there), C{_created} samples the earliest, info the same.
    """
    order: list[str] = []
    kinds: dict[str, dict[str, Any]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]] = {}
    for families in workers:
        for family in families:
            name = family["name"]
            if name not in kinds:
                order.append(name)
                kinds[name] = family
                values[name] = {}
            samples = values[name]
            for sampleName, labels, value in family["samples"]:
                key = (sampleName, tuple(sorted(labels.items())))
                samples.setdefault(key, []).append(float(value))
    merged = []
    for name in order:
        family = kinds[name]
        metric = Metric(name, family["help"], family["type"], family["unit"])
        rule: Callable[[Iterable[float]], float] = sum
        if family["type"] == "gauge":
            rule = GAUGE_RULES.get(name, sum)
        elif family["type"] in ("info", "stateset"):
            rule = max
        for (sampleName, labels), seen in values[name].items():
            combine = min if sampleName.endswith("_created") else rule
            metric.add_sample(sampleName, dict(labels), combine(seen))
        merged.append(metric)
    return merged


class MergedFamilies:
    """What prometheus-client's encoders read: an object with C{collect()}."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


__all__ = ["GAUGE_RULES", "MergedFamilies", "familiesToData", "mergeFamilies"]
