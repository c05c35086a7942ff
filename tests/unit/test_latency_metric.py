"""The head-to-broadcast latency histogram (issue 8 §3): registered on every daemon's registry with
the buckets a 1–12 s block time needs, and rendered on /metrics with its observations."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from keeper.metrics import Metrics

NAME = "keeper_head_to_broadcast_seconds"


def samples(m: Metrics) -> dict[tuple[str, str], float]:
    """(sample name, le) → value for the histogram, parsed from the exposition text as a scraper would."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        if family.name == NAME:
            for s in family.samples:
                out[(s.name, s.labels.get("le", ""))] = s.value
    return out


def test_head_to_broadcast_histogram_renders_with_its_observations():
    m = Metrics()
    for seconds in (0.003, 0.012, 0.04, 0.04, 0.7, 7.0):
        m.head_to_broadcast.observe(seconds)
    text = m.render().decode()
    assert f"# TYPE {NAME} histogram" in text
    assert "New head seen → last raw transaction of that head accepted by the node" in text
    got = samples(m)
    cumulative = {
        "0.005": 1, "0.01": 1, "0.025": 2, "0.05": 4, "0.1": 4, "0.25": 4, "0.5": 4, "1.0": 5, "2.5": 5, "5.0": 5, "+Inf": 6,
    }  # fmt: skip
    assert {le: got[(f"{NAME}_bucket", le)] for le in cumulative} == cumulative
    assert got[(f"{NAME}_count", "")] == 6
    assert abs(got[(f"{NAME}_sum", "")] - 7.795) < 1e-9


def test_each_daemon_has_its_own_latency_histogram():
    a, b = Metrics(), Metrics()
    a.head_to_broadcast.observe(0.02)
    assert samples(a)[(f"{NAME}_count", "")] == 1 and samples(b)[(f"{NAME}_count", "")] == 0
