"""The bayes click cache (engine/bayes.py ClickCache): bounded by count and bytes, and never a state. A restore
folds its last picks in to the very same belief and galleries with the cache warm, cold or off, and two sessions
restored from one visit never share anything they change."""

from __future__ import annotations

import numpy as np
import pytest

import evaluate as ev
from engine.bayes import ClickCache
from recommender import Recommender


@pytest.fixture(scope="module")
def rec():
    x = ev.synthetic_catalog(400, 32, 12, seed=3)
    look = np.random.default_rng(4).normal(size=(400, 8)).astype(np.float32)
    return Recommender(x, seed=0, strategy="bayes", views={"appearance": look})


def played(rec: Recommender, rounds: int, seed: int = 0, **params) -> dict:
    """A visit's session after `rounds` picks (more than the 8 a restore weighs again)."""
    rng, session = np.random.default_rng(seed), rec.new_session(seed=seed, **params)
    session.next_round()
    for _ in range(rounds):
        session.next_round(pick=session.shown[int(rng.integers(len(session.shown)))])
    return session.to_dict()


def continued(rec: Recommender, saved: dict, picks: list[int], **params) -> tuple[list[list[int]], object]:
    """The galleries a session restored from `saved` (seed 7) shows for the pick positions `picks`, and its belief."""
    session = rec.restore_session(saved, seed=7, **params)
    galleries = [session.next_round(pick=session.shown[i]) for i in picks]
    return galleries, session.bayes


def test_the_cache_is_bounded_by_count_and_by_bytes_least_recently_used_first():
    arrays = [(np.full(100, i, dtype=np.float32),) for i in range(6)]  # 400 bytes each
    cache = ClickCache(max_entries=3, max_bytes=10_000)
    for i in range(3):
        cache.put(("k", i), arrays[i])
    assert cache.get(("k", 0)) is arrays[0]  # now the most recently used
    cache.put(("k", 3), arrays[3])
    assert len(cache) == 3 and cache.get(("k", 1)) is None and cache.get(("k", 0)) is not None
    cache = ClickCache(max_entries=100, max_bytes=1000)
    for i in range(4):
        cache.put(("k", i), arrays[i])
    assert len(cache) == 2 and cache.nbytes == 800 and cache.get(("k", 0)) is None
    cache.put(("big",), (np.zeros(1000, dtype=np.float32),))  # more than the whole budget: not kept
    assert cache.get(("big",)) is None and cache.nbytes == 800
    with pytest.raises(ValueError):  # what a session reads from the cache, it cannot change
        cache.get(("k", 3))[0][0] = 1.0


@pytest.mark.parametrize("params", [{}, {"temperature": 0.02, "epsilon": 0.0}])
def test_a_hit_and_a_miss_give_the_same_galleries_and_belief_bit_for_bit(rec, params):
    saved = played(rec, 11, **params)
    clicks = rec.belief_spaces.clicks
    clicks.clear()
    cold, cold_belief = continued(rec, saved, [1, 4, 0], **params)  # every click computed
    hits, misses = clicks.hits, clicks.misses
    warm, warm_belief = continued(rec, saved, [1, 4, 0], **params)  # every click from the cache
    assert clicks.misses == misses and clicks.hits >= hits + 8
    rec.belief_spaces.clicks = ClickCache(max_entries=0)  # no cache at all
    try:
        off, off_belief = continued(rec, saved, [1, 4, 0], **params)
    finally:
        rec.belief_spaces.clicks = clicks
    assert cold == warm == off
    for belief in (warm_belief, off_belief):
        assert np.array_equal(belief.log_beliefs, cold_belief.log_beliefs)
        assert np.array_equal(belief.log_weights, cold_belief.log_weights)


def test_two_sessions_restored_from_one_visit_never_share_what_they_change(rec):
    saved = played(rec, 9, seed=1)
    rec.belief_spaces.clicks.clear()
    alone = [continued(rec, saved, picks)[0] for picks in ([2, 2, 2], [5, 0, 9])]
    a, b = rec.restore_session(saved, seed=7), rec.restore_session(saved, seed=7)
    together: list[list[list[int]]] = [[], []]
    for i, j in zip([2, 2, 2], [5, 0, 9]):  # interleaved: each round of one between the other's
        together[0].append(a.next_round(pick=a.shown[i]))
        together[1].append(b.next_round(pick=b.shown[j]))
    assert together == alone
    assert a.bayes.log_beliefs is not b.bayes.log_beliefs and a.unseen is not b.unseen
