"""The dashboard's SVG charts (one point per sample, markers inside the frame, labels escaped)
and its chain view (which version each channel runs, in every phase)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from coalmine.controller.schemas import ReleaseRead, TargetingSpec
from coalmine.core.model import Phase
from coalmine.web.ui.svg import Marker, Series, line_chart, step_chart
from coalmine.web.ui.views import chain

_TIMES = st.lists(st.floats(0, 1e9), min_size=1, max_size=30, unique=True).map(sorted)


@given(_TIMES, st.text(max_size=20))
def test_a_step_chart_has_a_point_per_sample_within_its_frame(
    times: list[float], label: str
) -> None:
    svg = step_chart(
        "exposure",
        [(t, 50.0) for t in times],
        y_max=100,
        markers=[Marker(times[0], label, "pause")],
    )
    assert f'data-points="{len(times)}"' in svg
    assert svg.count('<circle class="point"') == len(times)
    for x, y in re.findall(r'cx="([-\d.]+)" cy="([-\d.]+)"', svg):
        assert 0 <= float(x) <= 640
        assert 0 <= float(y) <= 180
    assert "<script" not in step_chart("t", [(0, 1)], y_max=1, markers=[Marker(0, "<script>", "x")])


def test_a_line_chart_escapes_series_names_and_says_when_it_is_empty() -> None:
    svg = line_chart("<b>p99</b>", [Series("<i>canary</i>", ((0, 1), (1, 2)), "canary")])
    assert "<b>" not in svg
    assert "<i>" not in svg
    assert "&lt;i&gt;canary&lt;/i&gt;" in svg
    assert 'data-points="2"' in svg
    assert "no data" in line_chart("p99", [])
    assert "no data" in step_chart("exposure", [], y_max=100)


_VERSIONS = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["v1", "v2", "v3"]), min_size=1
)


@given(
    _VERSIONS,
    _VERSIONS,
    st.sampled_from([str(p) for p in Phase]),
)
def test_the_chain_says_what_each_channel_runs_in_every_phase(
    baseline: dict[str, str], candidate: dict[str, str], phase: str
) -> None:
    rel = ReleaseRead(
        id="r-1",
        app="shop",
        phase=phase,
        route_mode="user",
        exposure=1000,
        step=0,
        steps=[],
        strategy="AllAtOnce",
        baseline=baseline,
        candidate=candidate,
        changed=sorted(f for f in candidate if baseline.get(f) != candidate[f]),
        targeting=TargetingSpec(),
        hooks={},
        analysis={},
        next_action_at=None,
        reason=None,
        created_by="t",
        created_at=0.0,
        updated_at=0.0,
        finished_at=None,
        row_version=1,
    )
    got = chain(rel)
    assert set(got) == set(baseline) | set(candidate)
    for fn, (stable, canary) in got.items():
        old = baseline.get(fn) or candidate[fn]
        new = candidate.get(fn) or old
        if phase in ("rolling_back", "rolled_back", "failed"):
            assert (stable, canary) == (old, old)  # a rollback sends the canary back too
        elif phase == "promoted":
            assert (stable, canary) == (new, new)
        else:
            assert (stable, canary) == (old, new)
