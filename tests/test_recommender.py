"""recommender.py: the seed's round rule, exact against brute-force numpy, fast structures, errors, threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import in_threads

import recommender
from recommender import Recommender


def unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_top(x: np.ndarray, picks: list[int], seen: set[int], k: int) -> tuple[list[int], np.ndarray]:
    """Reference: top-k unseen rows by inner product with the exact mean of the picks, and all scores."""
    q = x[picks].astype(np.float64).mean(axis=0)
    scores = x.astype(np.float64) @ q
    order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in seen]
    return order[:k], scores


@pytest.mark.parametrize("n,per_round,similar", [(97, 10, 5), (250, 10, 3), (64, 8, 8), (50, 10, 0)])
def test_sessions_to_exhaustion_match_brute_force(n, per_round, similar):
    x = unit(n, 16, seed=n)
    rec = Recommender(x * 3.0, per_round=per_round, similar=similar, seed=1)  # unnormalised input
    np.testing.assert_allclose(np.linalg.norm(rec.unit, axis=1), 1, atol=1e-6)
    for s in range(6):
        session = rec.new_session(seed=s)
        rng = np.random.default_rng(100 + s)
        shown = session.next_round()
        assert len(shown) == per_round and len(set(shown)) == per_round
        assert session.round == 1 and session.picks == []
        seen = set(shown)
        while not session.exhausted:
            pick = int(rng.choice(shown))
            before = set(seen)
            shown = session.next_round(pick=pick)
            expected_k = min(similar, n - len(before))
            top, scores = brute_top(x, session.picks, before, expected_k)
            got = shown[: session.n_similar]
            assert session.n_similar == expected_k
            # same rows as brute force; near-ties (float32 vs float64) may swap, so compare scores
            np.testing.assert_allclose(scores[got], scores[top], atol=1e-5)
            assert not (set(shown) & before), "a product was shown twice"
            assert len(shown) == min(per_round, n - len(before))
            seen |= set(shown)
            assert session.seen == seen and session.shown == shown
        assert session.exhausted and len(seen) == n and sum(len(r) for r in session.history) == n
        again = session.next_round(pick=session.shown[0])  # never a dead end: every product may come again
        assert session.passes == 1 and len(again) == min(per_round, n) and len(set(again)) == len(again)
        assert session.shown_before() == [True] * len(again)


def test_first_round_random_then_similar_first():
    x = unit(500, 8)
    session = Recommender(x, seed=0).new_session(seed=3)
    first = session.next_round()
    assert session.n_similar == 0
    second = session.next_round(pick=first[4])
    scores = x @ x[first[4]]
    sims = [scores[i] for i in second[:5]]
    assert sims == sorted(sims, reverse=True)  # most similar first
    assert session.picks == [first[4]]


def test_mean_of_all_picks_not_running_average():
    x = unit(300, 12, seed=5)
    session = Recommender(x, seed=0).new_session(seed=0)
    shown = session.next_round()
    for _ in range(4):
        shown = session.next_round(pick=shown[-1])
    q = x[session.picks].mean(axis=0)
    unseen_before = [i for i in range(300) if i not in set().union(*session.history[:-1])]
    best = sorted(unseen_before, key=lambda i: -float(x[i] @ q))[:5]
    np.testing.assert_allclose(sorted(x[shown[:5]] @ q), sorted(x[best] @ q), atol=1e-5)


def test_random_rows_are_uniform_over_unseen():
    n, rounds = 40, 4000
    x = unit(n, 4, seed=1)
    rec = Recommender(x, per_round=10, similar=5, seed=0)
    counts = np.zeros(n)
    for s in range(rounds):
        session = rec.new_session(seed=s)
        first = session.next_round()
        counts[first] += 1
    expected = rounds * 10 / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 80, chi2  # chi-square, 39 dof: p(chi2 > 80) < 1e-4
    # the random half of round 2, given the same first round and pick: uniform over the rest
    counts = np.zeros(n)
    for s in range(rounds):
        session = rec.new_session(seed=0)
        first = session.next_round()
        session.rng = np.random.default_rng(s)
        shown = session.next_round(pick=first[0])
        counts[shown[5:]] += 1
    allowed = [i for i in range(n) if i not in set(first) | set(shown[:5])]
    assert counts.sum() == counts[allowed].sum() == rounds * 5
    exp = rounds * 5 / len(allowed)
    chi2 = float(((counts[allowed] - exp) ** 2 / exp).sum())
    assert chi2 < 70, chi2  # 24 dof: p(chi2 > 70) < 1e-5


def test_random_rows_near_exhaustion_use_exact_listing():
    x = unit(30, 4)
    session = Recommender(x, per_round=7, similar=2, seed=0).new_session(seed=1)
    shown = session.next_round()
    rounds = [shown]
    while not session.exhausted:
        shown = session.next_round(pick=shown[-1])
        rounds.append(shown)
    assert [len(r) for r in rounds] == [7, 7, 7, 7, 2]
    assert sorted(sum(rounds, [])) == list(range(30))


def test_determinism_and_independence():
    x = unit(1000, 8)
    rec = Recommender(x, seed=42)

    def play(session):
        out, shown = [], session.next_round()
        for _ in range(10):
            out.append(shown)
            shown = session.next_round(pick=shown[1])
        return out

    assert play(rec.new_session(seed=7)) == play(rec.new_session(seed=7))
    assert play(rec.new_session(seed=7)) != play(rec.new_session(seed=8))
    assert play(Recommender(x, seed=5).new_session()) == play(Recommender(x, seed=5).new_session())
    a, b = rec.new_session(seed=1), rec.new_session(seed=1)
    a.next_round()
    assert b.round == 0 and b.picks == [] and not b.seen


def test_invalid_pick_leaves_session_unchanged():
    session = Recommender(unit(100, 8), seed=0).new_session(seed=0)
    shown = session.next_round()
    not_shown = next(i for i in range(100) if i not in shown)
    with pytest.raises(ValueError, match="not one of the products"):
        session.next_round(pick=not_shown)
    assert session.round == 1 and session.picks == [] and session.shown == shown and len(session.seen) == 10
    session.next_round(pick=shown[0])
    with pytest.raises(ValueError):
        session.next_round(pick=shown[0])  # from an earlier round


@pytest.mark.parametrize("bad,word", [(0.0, "row 3"), (np.nan, "row 3"), (np.inf, "row 3")])
def test_bad_rows_raise_naming_the_row(bad, word):
    x = unit(10, 4)
    x[3] = bad
    with pytest.raises(ValueError, match=word):
        Recommender(x)


def test_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        Recommender(np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match="similar"):
        Recommender(unit(20, 4), per_round=5, similar=6)
    with pytest.raises(ValueError, match="strategy"):
        Recommender(unit(20, 4), strategy="nope")
    with pytest.raises(ValueError, match="2-D"):
        Recommender(np.ones(8, np.float32))
    bad = unit(70000, 2)
    bad[66000] = np.nan  # beyond the first chunk: the row number is still the global one
    with pytest.raises(ValueError, match="row 66000"):
        Recommender(bad)


def test_random_strategy_is_all_random():
    x = unit(200, 8)
    session = Recommender(x, strategy="random", seed=0).new_session(seed=0)
    shown = session.next_round()
    seen = set(shown)
    for _ in range(10):
        shown = session.next_round(pick=shown[0])
        assert session.n_similar == 0 and len(shown) == 10 and not seen & set(shown)
        seen |= set(shown)


def test_small_catalog_and_single_row():
    session = Recommender(unit(3, 4), per_round=10, similar=5, seed=0).new_session()
    first = session.next_round()
    assert sorted(first) == [0, 1, 2] and session.exhausted
    assert sorted(session.next_round(pick=first[0])) == [0, 1, 2] and session.picks == [first[0]]
    one = Recommender(unit(1, 4)).new_session()
    assert one.next_round() == [0] and one.exhausted and one.next_round(pick=0) == [0]


def test_catalog_held_once_and_session_memory_small():
    x = unit(5000, 32)
    rec = Recommender(x)
    assert rec.unit.base is not None and not rec.unit.flags.owndata  # a view into the FAISS index storage
    np.testing.assert_allclose(rec.unit, x, atol=1e-6)
    session = rec.new_session()
    assert session.unseen.bits.nbytes == (5000 + 7) // 8  # an N-bit bitmap, nothing of size N*d


def test_approximate_index_option():
    x = unit(4000, 16)
    rec = Recommender(x, index_factory="IVF16,Flat", nprobe=16, seed=0)  # nprobe = all lists: exact
    session = rec.new_session(seed=0)
    shown = session.next_round()
    seen = set(shown)
    for _ in range(5):
        shown = session.next_round(pick=shown[0])
        top, scores = brute_top(x, session.picks, seen, 5)
        np.testing.assert_allclose(scores[shown[:5]], scores[top], atol=1e-5)
        assert not seen & set(shown)
        seen |= set(shown)


def test_sessions_isolated_under_threads():
    x = unit(3000, 16)
    rec = Recommender(x, seed=0)
    results = {}

    def shopper(k):
        session = rec.new_session(seed=k)
        shown, rounds = session.next_round(), []
        for r in range(30):
            rounds.append(shown)
            shown = session.next_round(pick=shown[(k + r) % len(shown)])
        results[k] = rounds
        flat = sum(rounds, [])
        assert len(flat) == len(set(flat))

    errors = in_threads(shopper, 8)
    assert not errors
    for k in range(8):  # each threaded session equals the same session run alone
        session = rec.new_session(seed=k)
        shown, rounds = session.next_round(), []
        for r in range(30):
            rounds.append(shown)
            shown = session.next_round(pick=shown[(k + r) % len(shown)])
        assert rounds == results[k]


def test_no_ui_imports():
    src = Path(recommender.__file__).read_text()
    assert "gradio" not in src and "import embed" not in src


@pytest.mark.parametrize("strategy", ["mean", "random", "rocchio", "bayes"])
def test_excluded_and_withdrawn_rows_are_never_shown(strategy):
    """Rows the catalog cannot show: excluded before a session, or withdrawn from a live one mid-round."""
    x = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    rec = Recommender(x, seed=0, strategy=strategy)
    assert rec.hide([3, 5, 7, 99, 3]) == 4 and rec.hide([5]) == 0
    session = rec.new_session(seed=1)
    shown, rows = [], session.next_round()
    while True:
        if session.round in (2, 4):  # found unreadable while this round is on screen
            bad = [rows[0], next(r for r in range(100) if not session.is_seen(r))]  # one on screen, one not
            rec.hide(bad)
            rows = session.hide(bad)
            assert len(rows) == 10 and not set(bad) & set(rows) and session.history[-1] == rows
        shown += rows
        if session.exhausted:
            break
        rows = session.next_round(pick=rows[-1])
    excluded = {r for r in range(100) if rec.is_hidden(r)}
    assert len(shown) == len(set(shown)) and not excluded & set(shown)
    assert set(shown) | excluded == set(range(100))
    assert session.n_seen + session.n_hidden == 100
    again = [row for _ in range(10) for row in session.next_round(pick=session.shown[0])]  # the next pass
    assert session.passes == 1 and not excluded & set(again) and len(set(again)) == len(again)


def test_saved_session_resumes_and_tampering_is_refused():
    import json

    x = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    rec = Recommender(x, seed=0)
    session = rec.new_session(seed=2)
    rows = session.next_round()
    rows = session.next_round(pick=rows[2])
    saved = json.loads(json.dumps(session.to_dict()))  # what a browser keeps
    again = rec.restore_session(saved)
    assert (again.shown, again.picks, again.history, again.n_seen, again.n_similar) == (
        session.shown,
        session.picks,
        session.history,
        session.n_seen,
        session.n_similar,
    )
    nxt = again.next_round(pick=again.shown[0])
    assert not set(nxt) & {r for h in session.history for r in h}
    for bad, word in [
        ({**saved, "strategy": "x"}, "strategy"),
        ({**saved, "history": [[1, 1]]}, "twice"),
        ({**saved, "history": [[1, 2], [2, 3]]}, "before every product was shown"),
        ({**saved, "history": [[1, 200]]}, "outside"),
        ({**saved, "history": [[True]]}, "whole"),
        ({**saved, "history": [list(range(11))]}, "1 to 10"),
        ({**saved, "picks": [saved["history"][1][0]]}, "not a product of the round"),
        ({**saved, "pick_rounds": [3]}, "outside"),
        ("junk", "dict"),
    ]:
        with pytest.raises(ValueError, match=word):
            rec.restore_session(bad)


@pytest.mark.parametrize("strategy", ["mean", "random", "rocchio", "bayes"])
def test_never_a_dead_end_after_every_product_was_shown(strategy):
    """A 20-product shop: no product twice until all 20 have been shown, then passes of all 20 again, each
    product once a pass, 30 rounds without an empty gallery; a saved visit resumes mid-pass."""
    import json

    rec = Recommender(unit(20, 8, seed=3), per_round=10, similar=5, seed=0)
    session = rec.new_session(seed=1, strategy=strategy)
    shown = session.next_round()
    for r in range(2, 31):
        shown = session.next_round(pick=shown[0])
        assert len(shown) == 10 and len(set(shown)) == 10, (r, shown)
        in_pass = [row for rows in session.history[session.pass_start :] for row in rows]
        assert len(set(in_pass)) == len(in_pass), "a product twice within a pass"
        assert session.passes == (r - 1) // 2 and session.shown_before() == [r > 2] * 10
        if r == 17:
            saved = json.loads(json.dumps(session.to_dict()))
            again = rec.restore_session(saved, seed=5)
            assert (again.pass_start, again.passes, again.remaining) == (
                session.pass_start,
                session.passes,
                session.remaining,
            )
            assert not set(again.next_round(pick=shown[1])) & set(shown), "a restored pass repeated a product"


def test_after_exhaustion_mean_shows_the_nearest_to_the_picks_first():
    x = unit(20, 8, seed=4)
    rec = Recommender(x, per_round=10, similar=5, seed=0)
    session = rec.new_session(seed=2)
    shown = session.next_round()
    shown = session.next_round(pick=shown[3])
    again = session.next_round(pick=shown[4])
    top, _ = brute_top(x, session.picks, set(), 5)
    assert again[:5] == top and session.n_similar == 5


def test_views_are_centred_unit_rows_and_checked():
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    colour = np.random.default_rng(1).random((50, 12)).astype(np.float32) + 5
    rec = Recommender(x, views={"appearance": colour})
    v = rec.views["appearance"]
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    expected = colour - colour.mean(axis=0)
    np.testing.assert_allclose(v, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    assert Recommender(x).views == {}
    bad_rows = colour.copy()
    bad_rows[7, 3] = np.inf
    for views, word in (
        ({"appearance": colour[:49]}, "appearance.*shape"),
        ({"appearance": bad_rows}, "row 7"),
        ({"shape": np.zeros((50, 0))}, "shape"),
        ({"embedding": colour}, "taken"),
        ({"appearance": [["a"] * 12] * 50}, "numbers"),
    ):
        with pytest.raises(ValueError, match=word):
            Recommender(x, views=views)


def test_a_round_on_a_busy_server_gets_one_blas_thread(monkeypatch):
    """OpenBLAS gives a round every core on a quiet server and one thread while another round runs or right after
    one ended; the galleries are the same either way; an owner's OPENBLAS_NUM_THREADS is left as set."""
    from threadpoolctl import threadpool_info

    from common.cores import RoundThreads

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i.get("threading_layer") == "pthreads"]

    before = blas_threads()
    assert before, "numpy's OpenBLAS (pthreads) is not loaded"
    counted = RoundThreads(cores=2, adapt=True, quiet_s=0.0)
    monkeypatch.setattr(recommender, "ROUND_THREADS", counted)
    rec = Recommender(unit(3000, 32), seed=0, strategy="bayes")
    try:
        alone = rec.new_session(seed=3)
        rows_alone = [alone.next_round()]
        rows_alone.append(alone.next_round(pick=rows_alone[-1][2]))
        assert counted.threads == 2 and blas_threads() == [2] * len(before) and counted.running_now == 0
        beside, rows_beside, seen = rec.new_session(seed=3), [], []

        def shop() -> None:  # on another thread, as the server's worker threads run rounds
            rows_beside.append(beside.next_round())
            rows_beside.append(beside.next_round(pick=rows_beside[-1][2]))
            seen.append(blas_threads())

        with counted.running():  # another shopper's round, still running
            assert in_threads(lambda _: shop(), 1) == []
            assert counted.threads == 1 and seen == [[1] * len(before)] and counted.running_now == 1
        assert rows_beside == rows_alone
        soon = RoundThreads(cores=2, adapt=True, quiet_s=60.0)  # a round right after another: the server is busy
        with soon.running():
            assert soon.threads == 2
        with soon.running():
            assert soon.threads == 1
        soon.last_end -= 60.0  # a minute without a round: quiet again
        with soon.running():
            assert soon.threads == 2 and blas_threads() == [2] * len(before)
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
        owners = RoundThreads(cores=2)
        with owners.running(), owners.running():
            assert owners.threads is None and blas_threads() == [2] * len(before)
    finally:
        RoundThreads(cores=before[0], adapt=True)._set(before[0])
