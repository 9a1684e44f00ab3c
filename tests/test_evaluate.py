"""evaluate.py's simulated shopper and the rocchio / bayes strategies."""

from __future__ import annotations

import math
import subprocess
import sys
from itertools import product

import numpy as np
import pytest
from catalogs import make_catalog
from conftest import ROOT

import evaluate as ev
from recommender import STRATEGIES, Recommender, view_weights


@pytest.fixture(scope="module")
def clustered():
    return ev.synthetic_catalog(300, 32, 12, seed=1)


def test_target_in_first_round_counts_one():
    x = ev.synthetic_catalog(10, 8, 2)
    rec = Recommender(x, per_round=10, similar=5)
    assert all(ev.hunt(rec, t, "mean", "noiseless", seed=0, max_rounds=5) == 1 for t in range(10))
    rec20 = Recommender(ev.synthetic_catalog(20, 8, 2), per_round=10, similar=5)
    first = rec20.new_session(seed=(0, 3)).next_round()  # the session hunt() starts for target 3
    assert ev.hunt(rec20, 3, "random", "noiseless", seed=0, max_rounds=5) == (1 if 3 in first else 2)


def test_cap_ends_the_search(clustered):
    rec = Recommender(clustered, seed=0)
    results = ev.evaluate(rec, ["random"], np.arange(40), max_rounds=2, progress=False)["random"]
    assert np.isinf(results).any() and set(results[np.isfinite(results)]) <= {1.0, 2.0}
    summary = ev.summary(results)
    assert summary["found"] < 100 and summary["within5"] == summary["found"]


def test_deterministic(clustered):
    rec = Recommender(clustered, seed=0)
    a = ev.evaluate(rec, ["mean", "bayes"], np.arange(0, 300, 15), user="noisy", progress=False)
    b = ev.evaluate(rec, ["mean", "bayes"], np.arange(0, 300, 15), user="noisy", progress=False)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("n,k", [(500, 10), (459, 10), (7, 3), (30, 30)])
def test_random_expectation_exact(n, k):
    brute = np.mean([math.ceil(pos / k) for pos in range(1, n + 1)])
    assert ev.random_expectation(n, k) == pytest.approx(brute)


def test_random_strategy_matches_its_expectation(clustered):
    rec = Recommender(clustered, seed=0)
    rounds = ev.evaluate(rec, ["random"], np.arange(300), progress=False)["random"]
    assert abs(rounds.mean() - ev.random_expectation(300, 10)) < 2.0  # sd of the mean ~0.5


def test_noiseless_shopper_picks_most_similar(clustered):
    shown = [5, 50, 100, 150]
    pick = ev.choose(clustered, shown, 7, "noiseless", np.random.default_rng(0))
    assert pick == shown[int(np.argmax(clustered[shown] @ clustered[7]))]


def test_noisy_shopper_follows_softmax():
    x = np.eye(3, dtype=np.float32)
    x[2] = [0.8, 0.6, 0]
    rng = np.random.default_rng(0)
    picks = [ev.choose(x, [1, 2], 0, "noisy", rng, user_temperature=0.5, user_epsilon=0.0) for _ in range(4000)]
    p2 = np.exp(0.8 / 0.5) / (np.exp(0.8 / 0.5) + 1)
    assert abs(np.mean(np.array(picks) == 2) - p2) < 0.03


def test_bayes_beats_random_and_mean_by_a_wide_margin(clustered):
    rec = Recommender(clustered, seed=0)
    targets = np.arange(0, 300, 3)
    res = ev.evaluate(rec, ["random", "mean", "bayes"], targets, progress=False)
    means = {k: ev.summary(v)["mean"] for k, v in res.items()}
    assert means["bayes"] < 0.3 * means["random"], means
    assert means["bayes"] < means["mean"], means
    assert means["bayes"] <= 5, means


def test_every_strategy_keeps_the_round_contract(clustered):
    rec = Recommender(clustered[:97], per_round=10, similar=4, seed=0)
    for name in STRATEGIES:
        session = rec.new_session(seed=1, strategy=name)
        shown, seen = session.next_round(), set()
        while shown:
            assert len(shown) == min(10, 97 - len(seen)) and not seen & set(shown)
            seen |= set(shown)
            shown = session.next_round(pick=shown[-1])
        assert len(seen) == 97 and session.exhausted, name


def test_rocchio_moves_away_from_passed_over(clustered):
    rec = Recommender(clustered, seed=0)
    session = rec.new_session(seed=2, strategy="rocchio", beta=0.5)
    first = session.next_round()
    second = session.next_round(pick=first[3])
    passed = [r for r in first if r != first[3]]
    q = clustered[[first[3]]].mean(0) - 0.5 * clustered[passed].mean(0)
    unseen = [i for i in range(300) if i not in first]
    best = sorted(unseen, key=lambda i: -float(clustered[i] @ q))[:5]
    np.testing.assert_allclose(sorted(clustered[second[:5]] @ q), sorted(clustered[best] @ q), atol=1e-5)
    plain = rec.new_session(seed=2, strategy="mean")
    plain.next_round()
    assert plain.next_round(pick=first[3])[:5] != second[:5]


def test_bayes_posterior_update_matches_the_user_model(clustered):
    rec = Recommender(clustered, seed=0)
    session = rec.new_session(seed=0, strategy="bayes", temperature=0.1, epsilon=0.2)
    first = session.next_round()
    session.next_round(pick=first[2])
    logp = session.bayes.log_beliefs[0].astype(np.float64)
    assert np.isneginf(logp[first]).all()
    s = clustered @ clustered[first].T / 0.1
    softmax = np.exp(s[:, 2]) / np.exp(s).sum(1)
    expected = np.log(0.8 * softmax + 0.2 / 10)
    alive = np.setdiff1d(np.arange(300), first)
    diff = logp[alive] - expected[alive]
    np.testing.assert_allclose(diff, diff[0], atol=1e-3)  # equal up to the normalising constant


def test_cli_synthetic_sweep_and_plot(tmp_path):
    out = tmp_path / "rounds.png"
    res = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--synthetic", "200,16,8", "--strategy",
                          "mean,random,bayes", "--targets", "40", "--sweep", "--plot", str(out), "--user", "noisy"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    for word in ("mean", "random", "bayes", "N/(2k) = 10.00", "exact 10.50", "ceil(log_k N) = 3", "sweep"):
        assert word in res.stdout
    sweep = res.stdout.split("sweep")[1].split("plot written")[0].strip().splitlines()[2:]
    assert [int(line.split()[0]) for line in sweep] == list(range(11))
    assert out.stat().st_size > 5000


def test_cli_on_a_dataset_reports_category_precision(tmp_path):
    cat = make_catalog(tmp_path / "cat", n=90)
    res = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--dataset", str(cat), "--strategy",
                          "mean,bayes", "--targets", "20"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "category precision@5" in res.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--synthetic", "50,4,2", "--strategy", "nope"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "unknown strategy" in bad.stderr


def test_parameter_grid_is_valid():
    for t, e in product((0.02, 0.1), (0.0, 0.3)):
        rec = Recommender(ev.synthetic_catalog(60, 8, 3), seed=0)
        r = ev.evaluate(rec, ["bayes"], np.arange(0, 60, 6), progress=False, temperature=t, epsilon=e)["bayes"]
        assert np.isfinite(r).all()


def test_bayes_on_a_big_catalog_uses_a_projection(monkeypatch):
    import bayes
    import recommender

    monkeypatch.setattr(bayes, "BAYES_EXACT_BUDGET", 1000)
    monkeypatch.setattr(bayes, "BAYES_DIM", 8)
    x = ev.synthetic_catalog(400, 32, 10, seed=3)
    rec = Recommender(x, seed=0)
    space = recommender.belief_rows(rec)
    assert space.shape == (400, 8) and space is recommender.belief_rows(rec)  # made once
    np.testing.assert_allclose(np.linalg.norm(space, axis=1), 1, atol=1e-5)
    rounds = ev.evaluate(rec, ["bayes", "random"], np.arange(0, 400, 8), progress=False)
    assert ev.summary(rounds["bayes"])["mean"] < 0.5 * ev.summary(rounds["random"])["mean"]


# ------------------------------------------------------------------ shoppers with their own eyes (issue 11)
def test_perceptions_differ_from_the_embedding_and_are_fixed():
    x = ev.synthetic_catalog(300, 16, 6, seed=1)
    rec = Recommender(x, seed=0)
    assert ev.perception("embedding", rec.unit) is rec.unit
    noisy = ev.perception("noise:1.0", rec.unit, seed=0)
    np.testing.assert_allclose(np.linalg.norm(noisy, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(noisy, ev.perception("noise:1.0", rec.unit, seed=0))  # per product, fixed
    cos = (noisy * rec.unit).sum(axis=1)
    assert 0.4 < cos.mean() < 0.9  # scale 1 / sqrt(d) a component: as long as the embedding row itself
    np.testing.assert_allclose(ev.perception("noise:0", rec.unit), rec.unit, atol=1e-6)
    for bad, word in (("noise:x", "number"), ("noise:-1", "0 or more"), ("smell", "choose"),
                      ("pixels", "no product pictures")):
        with pytest.raises(ValueError, match=word):
            ev.perception(bad, rec.unit)
    # a shopper who sees differently needs more rounds than one who sees through the strategy's embedding
    targets = np.arange(0, 300, 5)
    own = ev.summary(ev.evaluate(rec, ["mean"], targets, progress=False)["mean"])["mean"]
    other = ev.summary(ev.evaluate(rec, ["mean"], targets, progress=False,
                                   perceived=ev.perception("noise:2.0", rec.unit))["mean"])["mean"]
    assert other > own


def test_pixels_and_model_perceptions_on_a_real_catalog(tmp_path, tiny_model):
    import datasets

    cat = make_catalog(tmp_path / "cat", n=40)
    ds = datasets.load_from_disk(str(cat))
    x = Recommender(ds["embeddings"], seed=0).unit
    pixels = ev.perception("pixels", x, ds)
    assert pixels.shape == (40, 3 * 32 * 32)
    np.testing.assert_allclose(pixels.mean(axis=0) * 40, pixels.sum(axis=0), atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(pixels, axis=1), 1, atol=1e-5)
    model = ev.perception(f"model:{tiny_model}", x, ds)
    assert model.shape[0] == 40 and np.linalg.matrix_rank(model) > 5  # another encoder's view of the pictures
    np.testing.assert_allclose(np.linalg.norm(model, axis=1), 1, atol=1e-5)


def test_cli_reports_a_table_per_perception(tmp_path):
    cat = make_catalog(tmp_path / "cat", n=60)
    res = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--dataset", str(cat), "--strategy",
                          "mean,bayes", "--targets", "12", "--perceive", "embedding,pixels,noise:1.0",
                          "--click-fit"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert sum(line.split()[:2] == ["strategy", "mean"] for line in res.stdout.splitlines()) == 3
    assert "perceives: pixels (not the embedding" in res.stdout and "perceives: embedding\n" in res.stdout
    fits = [line for line in res.stdout.splitlines() if "user model gives the clicks" in line]
    assert len(fits) == 6 and fits[0].startswith("mean: ") and "a random click -2.30" in fits[0]
    bad = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--synthetic", "50,4,2", "--perceive",
                          "pixels"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "no product pictures" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_click_fit_tells_the_model_s_own_eyes_from_other_eyes(clustered):
    rec = Recommender(clustered, per_round=10, similar=5, seed=0)
    targets = np.random.default_rng(3).choice(rec.n, 30, replace=False)
    fits = {}
    for kind in ("embedding", "noise:2.0"):
        clicks: dict = {}
        ev.evaluate(rec, ["mean"], targets, perceived=ev.perception(kind, rec.unit, seed=1), clicks=clicks,
                    progress=False)
        log = clicks["mean"]
        assert log and all(pick in shown and target not in shown for _, shown, pick, target in log)
        fits[kind] = ev.click_fit(rec.unit, log)
        assert fits[kind]["early"]["clicks"] + fits[kind]["later"]["clicks"] == len(log)
    own, other = fits["embedding"], fits["noise:2.0"]
    assert own["early"]["top"] == 100 and own["later"]["top"] == 100  # a noiseless shopper with the model's eyes
    assert other["early"]["top"] < 90 and other["early"]["loglik"] < own["early"]["loglik"] - 0.3
    assert -math.log(10) < own["later"]["loglik"] < 0  # better than a random click, below certainty
    one = ev.click_fit(rec.unit, [(1, [0, 1], 0, 0)], temperature=1.0, epsilon=0.0)  # target 0: picks itself
    p0 = 1 / (1 + math.exp(float(rec.unit[1] @ rec.unit[0]) - 1.0))
    assert one["early"]["loglik"] == pytest.approx(math.log(p0), rel=1e-5) and math.isnan(one["later"]["loglik"])


def test_bayes_learns_which_view_the_shopper_sees_through():
    rng = np.random.default_rng(5)
    x = ev.synthetic_catalog(400, 16, 8, seed=5)
    b = ev.synthetic_catalog(400, 12, 8, seed=6)  # an unrelated way to see the same products
    rec = Recommender(x, seed=0, views={"B": b})
    eyes = rec.views["B"]  # the shopper sees exactly through view B
    targets = (3, 77, 150, 222, 391)
    rec.exclude(list(targets))  # never shown, so every hunt lasts its 6 clicks (bayes finds most in 2-4)
    weights = []
    for target in targets:
        session = rec.new_session(seed=target, strategy="bayes")
        assert len(session.rec.views) == 1 and recommender_hypotheses(session) == 4  # 2 views x 2 temperatures
        shown = session.next_round()
        for _ in range(6):
            shown = session.next_round(pick=ev.choose(eyes, shown, target, "noiseless", rng))
        weights.append(view_weights(session).get("B", 0.0))
    assert min(weights) > 0.9, weights
    # and a shopper who sees through the embedding keeps the embedding's hypotheses
    session = rec.new_session(seed=1, strategy="bayes")
    shown = session.next_round()
    for _ in range(6):
        if 200 in shown:
            break
        shown = session.next_round(pick=ev.choose(rec.unit, shown, 200, "noiseless", rng))
    assert view_weights(session)["embedding"] > 0.5


def test_bayes_stars_only_likely_targets():
    rec = Recommender(ev.synthetic_catalog(300, 16, 6, seed=2), seed=0)
    session = rec.new_session(seed=0, strategy="bayes")
    shown = session.next_round()
    assert session.n_similar <= 10
    for _ in range(3):
        shown = session.next_round(pick=shown[0])
        logp = session.bayes.log_beliefs.astype(np.float64)
        alive = np.isfinite(logp[0])
        logp[:, alive] -= np.logaddexp.reduce(logp[:, alive], axis=1, keepdims=True)  # each p_h sums to 1
        logw = session.bayes.log_weights - np.logaddexp.reduce(session.bayes.log_weights)
        belief = np.logaddexp.reduce(logp + logw[:, None], axis=0)  # the averaged belief
        top = set(np.argsort(-belief, kind="stable")[:10].tolist())
        starred = shown[: session.n_similar]
        assert set(starred) <= top and not set(shown[session.n_similar :]) & top, (starred, shown)


def recommender_hypotheses(session) -> int:
    from recommender import bayes_hypotheses

    return len(bayes_hypotheses(session.rec, session.params))
