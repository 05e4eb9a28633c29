"""The services' pure parts: seed data, knobs, query building, token parsing, percentiles."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services import seed
from services.accesspoint import bearer, load_tokens
from services.knobs import Knobs
from services.loadgen import percentile
from services.playlistview import reserve_s
from services.search import fts_query


def test_seed_is_deterministic_and_consistent() -> None:
    """Same seed, same rows; playlists only name tracks that exist; ids are unique."""
    a = list(seed.tracks(3000, seed=7))
    assert a == list(seed.tracks(3000, seed=7))
    assert a != list(seed.tracks(3000, seed=8))
    assert len({t.id for t in a}) == 3000
    ids = {t.id for t in a}
    pls = list(seed.playlists(300, 3000, seed=7))
    assert pls == list(seed.playlists(300, 3000, seed=7))
    assert all(set(p.track_ids) <= ids and 5 <= len(p.track_ids) <= 80 for p in pls)
    assert all(95_000 <= t.duration_ms <= 420_000 for t in a)


def test_popularity_is_skewed() -> None:
    """A few playlists take most picks (Zipf-like), and every pick is in range."""
    pop = seed.Popularity(1000)
    rng = random.Random(1)
    picks = Counter(pop.pick(rng) for _ in range(20_000))
    assert all(1 <= p <= 1000 for p in picks)
    top10 = sum(n for _, n in picks.most_common(10))
    assert top10 > 20_000 * 0.25


def test_knobs_validate_updates() -> None:
    """Partial updates apply; unknown keys and bad values are refused and change nothing."""
    k = Knobs()
    k.update({"latency_ms": 20, "fail_status": "aborted"})
    assert (k.latency_ms, k.fail_status) == (20.0, "ABORTED")
    for bad in ({"nope": 1}, {"fail_ratio": 2}, {"fail_status": "OK"}, {"latency_ms": -1}):
        with pytest.raises(ValueError):
            k.update(bad)
    assert (k.latency_ms, k.fail_ratio, k.fail_status) == (20.0, 0.0, "ABORTED")
    k.update({"methods": ["GetTracks"]})
    assert k.applies_to("/music.metadata.v1.Metadata/GetTracks")
    assert not k.applies_to("/music.metadata.v1.Metadata/Import")
    assert not Knobs().applies_to("/grpc.health.v1.Health/Check")


@given(st.text(max_size=40))
def test_fts_query_is_always_quoted(text: str) -> None:
    """Any user text becomes only quoted prefix terms (no FTS syntax injection), or None."""
    q = fts_query(text)
    if q is None:
        return
    for term in q.split(" "):
        assert term.startswith('"') and term.endswith('"*') and '"' not in term[1:-2]


def test_tokens_and_bearer(tmp_path: Path) -> None:
    """The token file maps token to user; only `Bearer <token>` is accepted."""
    path = tmp_path / "t"
    path.write_text("# comment\nabc alice\n\nxyz\n  def bob # trailing\n")
    assert load_tokens(str(path)) == {"abc": "alice", "xyz": "xyz", "def": "bob"}
    assert bearer([("authorization", "Bearer abc")]) == "abc"
    assert bearer([("authorization", "bearer  abc ")]) == "abc"
    assert bearer([("authorization", "Basic abc")]) is None
    assert bearer([("x", "Bearer abc")]) is None
    assert bearer(None) is None


def test_percentile_and_reserve() -> None:
    """Nearest-rank percentiles; the view's reserve is small and never the whole budget."""
    values = [float(i) for i in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99)) == (50.0, 99.0)
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0], 0.99) == 3.0
    assert reserve_s(1.0) == 0.05 and reserve_s(0.1) == pytest.approx(0.01)


async def test_mesh_view_totals_survive_a_sidecar_restart() -> None:
    """A restarted sidecar's counters start at 0 again: the run's totals keep its earlier counts."""
    import contextlib

    from services.demo_plan import make_plan
    from services.demo_view import MeshView

    inst = make_plan(iter(range(20000, 20200))).instances[0]
    view = MeshView([inst])
    texts = iter(
        f'sidecar_requests_total{{direction="inbound",upstream="app",method="m",code="OK"}} {n}\n'
        for n in (40.0, 55.0, 7.0)  # the third poll: after a restart
    )

    class Reply:
        async def text(self) -> str:
            return next(texts)

    class Http:
        def get(self, url: str) -> contextlib.AbstractAsyncContextManager[Reply]:
            @contextlib.asynccontextmanager
            async def reply():  # type: ignore[no-untyped-def]
                yield Reply()

            return reply()  # type: ignore[no-any-return]

    for _ in range(3):
        await view._poll_one(Http(), inst)
    assert view.totals()[0]["requests"] == 55 + 7
