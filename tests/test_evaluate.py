"""evaluate.py's simulated shopper and the rocchio strategy (bayes: test_bayes.py)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from catalogs import make_catalog
from conftest import ROOT

import evaluate as ev
from recommender import STRATEGIES, Recommender


@pytest.fixture(scope="module")
def clustered():
    return ev.synthetic_catalog(300, 32, 12, seed=1)


def test_target_in_first_round_counts_one():
    x = ev.synthetic_catalog(10, 8, 2)
    rec = Recommender(x, per_round=10, similar=5)
    assert all(ev.hunt(rec, t, "mean", ev.Shopper(), seed=0, max_rounds=5).rounds == 1 for t in range(10))
    rec20 = Recommender(ev.synthetic_catalog(20, 8, 2), per_round=10, similar=5)
    first = rec20.new_session(seed=(0, 3)).next_round()  # the session hunt() starts for target 3
    found = ev.hunt(rec20, 3, "random", ev.Shopper(), seed=0, max_rounds=5)
    assert found.found and found.rounds == (1 if 3 in first else 2) and found.session.history[0] == first


def test_cap_ends_the_search(clustered):
    rec = Recommender(clustered, seed=0)
    results = ev.evaluate(rec, ev.Experiment(["random"], np.arange(40), max_rounds=2, progress=False)).rounds["random"]
    assert np.isinf(results).any() and set(results[np.isfinite(results)]) <= {1.0, 2.0}
    summary = ev.summary(results)
    assert summary["found"] < 100 and summary["within5"] == summary["found"]


def test_deterministic(clustered):
    rec = Recommender(clustered, seed=0)
    experiment = ev.Experiment(["mean", "bayes"], np.arange(0, 300, 15), ev.Shopper("noisy"), progress=False)
    a, b = ev.evaluate(rec, experiment).rounds, ev.evaluate(rec, experiment).rounds
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("n,k", [(500, 10), (459, 10), (7, 3), (30, 30)])
def test_random_expectation_exact(n, k):
    brute = np.mean([math.ceil(pos / k) for pos in range(1, n + 1)])
    assert ev.random_expectation(n, k) == pytest.approx(brute)


def test_random_strategy_matches_its_expectation(clustered):
    rec = Recommender(clustered, seed=0)
    rounds = ev.evaluate(rec, ev.Experiment(["random"], np.arange(300), progress=False)).rounds["random"]
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


def test_every_strategy_keeps_the_round_contract(clustered):
    rec = Recommender(clustered[:97], per_round=10, similar=4, seed=0)
    for name in STRATEGIES:
        session = rec.new_session(seed=1, strategy=name)
        shown, seen = session.next_round(), set()
        while True:
            assert len(shown) == min(10, 97 - len(seen)) and not seen & set(shown)
            seen |= set(shown)
            if session.exhausted:
                break
            shown = session.next_round(pick=shown[-1])
        assert len(seen) == 97, name


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


def test_cli_synthetic_sweep_and_plot(tmp_path):
    out = tmp_path / "rounds.png"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "evaluate.py"),
            "--synthetic",
            "200,16,8",
            "--strategy",
            "mean,random,bayes",
            "--targets",
            "40",
            "--sweep",
            "--plot",
            str(out),
            "--user",
            "noisy",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    for word in ("mean", "random", "bayes", "N/(2k) = 10.00", "exact 10.50", "ceil(log_k N) = 3", "sweep"):
        assert word in res.stdout
    sweep = res.stdout.split("sweep")[1].split("plot written")[0].strip().splitlines()[2:]
    assert [int(line.split()[0]) for line in sweep] == list(range(11))
    assert out.stat().st_size > 5000


def test_cli_on_a_dataset_reports_category_precision(tmp_path):
    cat = make_catalog(tmp_path / "cat", n=90)
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "evaluate.py"),
            "--dataset",
            str(cat),
            "--strategy",
            "mean,bayes",
            "--targets",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    assert "category precision@5" in res.stdout
    bad = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "--synthetic", "50,4,2", "--strategy", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "unknown strategy" in bad.stderr


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
    for bad, word in (
        ("noise:x", "number"),
        ("noise:-1", "0 or more"),
        ("smell", "choose"),
        ("pixels", "no product pictures"),
    ):
        with pytest.raises(ValueError, match=word):
            ev.perception(bad, rec.unit)
    # a shopper who sees differently needs more rounds than one who sees through the strategy's embedding
    targets = np.arange(0, 300, 5)
    own = ev.summary(ev.evaluate(rec, ev.Experiment(["mean"], targets, progress=False)).rounds["mean"])["mean"]
    eyes = ev.Shopper(perceived=ev.perception("noise:2.0", rec.unit))
    other = ev.summary(ev.evaluate(rec, ev.Experiment(["mean"], targets, eyes, progress=False)).rounds["mean"])["mean"]
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
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "evaluate.py"),
            "--dataset",
            str(cat),
            "--strategy",
            "mean,bayes",
            "--targets",
            "12",
            "--perceive",
            "embedding,pixels,noise:1.0",
            "--click-fit",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    assert sum(line.split()[:2] == ["strategy", "mean"] for line in res.stdout.splitlines()) == 3
    assert "perceives: pixels (not the embedding" in res.stdout and "perceives: embedding\n" in res.stdout
    fits = [line for line in res.stdout.splitlines() if "user model gives the clicks" in line]
    assert len(fits) == 6 and fits[0].startswith("mean: ") and "a random click -2.30" in fits[0]
    bad = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "--synthetic", "50,4,2", "--perceive", "pixels"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "no product pictures" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_click_fit_tells_the_model_s_own_eyes_from_other_eyes(clustered):
    rec = Recommender(clustered, per_round=10, similar=5, seed=0)
    targets = np.random.default_rng(3).choice(rec.n, 30, replace=False)
    fits = {}
    for kind in ("embedding", "noise:2.0"):
        eyes = ev.Shopper(perceived=ev.perception(kind, rec.unit, seed=1))
        log = ev.evaluate(rec, ev.Experiment(["mean"], targets, eyes, keep_clicks=True, progress=False)).clicks["mean"]
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
