"""The bayes strategy (bayes.py): its user model, belief update, view weights, projections and gallery labels,
measured with evaluate.py's simulated shoppers."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest

import evaluate as ev
from engine.bayes import click_probabilities, view_weights
from recommender import Recommender


@pytest.fixture(scope="module")
def clustered():
    return ev.synthetic_catalog(300, 32, 12, seed=1)


def test_bayes_beats_random_and_mean_by_a_wide_margin(clustered):
    rec = Recommender(clustered, seed=0)
    targets = np.arange(0, 300, 3)
    res = ev.evaluate(rec, ev.Experiment(["random", "mean", "bayes"], targets, progress=False)).rounds
    means = {k: ev.summary(v)["mean"] for k, v in res.items()}
    assert means["bayes"] < 0.3 * means["random"], means
    assert means["bayes"] < means["mean"], means
    assert means["bayes"] <= 5, means


def test_bayes_posterior_update_matches_the_user_model(clustered):
    rec = Recommender(clustered, seed=0)
    session = rec.new_session(seed=0, strategy="bayes", temperature=0.1, epsilon=0.2)
    first = session.next_round()
    session.next_round(pick=first[2])
    logp = session.bayes.log_beliefs[0].astype(np.float64)
    assert np.isneginf(logp[first]).all()
    expected = np.log(click_probabilities(clustered @ clustered[first].T, 0.1, 0.2)[:, 2])  # every target at once
    alive = np.setdiff1d(np.arange(300), first)
    diff = logp[alive] - expected[alive]
    np.testing.assert_allclose(diff, diff[0], atol=1e-3)  # equal up to the normalising constant


def test_parameter_grid_is_valid():
    for t, e in product((0.02, 0.1), (0.0, 0.3)):
        rec = Recommender(ev.synthetic_catalog(60, 8, 3), seed=0)
        tuned = ev.Experiment(["bayes"], np.arange(0, 60, 6), params={"temperature": t, "epsilon": e}, progress=False)
        r = ev.evaluate(rec, tuned).rounds["bayes"]
        assert np.isfinite(r).all()


def test_bayes_on_a_big_catalog_uses_a_projection(monkeypatch):
    from engine import bayes

    monkeypatch.setattr(bayes, "BAYES_EXACT_BUDGET", 1000)
    monkeypatch.setattr(bayes, "BAYES_DIM", 8)
    x = ev.synthetic_catalog(400, 32, 10, seed=3)
    rec = Recommender(x, seed=0)
    space = bayes.belief_rows(rec)
    assert space.shape == (400, 8) and space is bayes.belief_rows(rec)  # made once
    np.testing.assert_allclose(np.linalg.norm(space, axis=1), 1, atol=1e-5)
    rounds = ev.evaluate(rec, ev.Experiment(["bayes", "random"], np.arange(0, 400, 8), progress=False)).rounds
    assert ev.summary(rounds["bayes"])["mean"] < 0.5 * ev.summary(rounds["random"])["mean"]


def test_bayes_learns_which_view_the_shopper_sees_through():
    rng = np.random.default_rng(5)
    x = ev.synthetic_catalog(400, 16, 8, seed=5)
    b = ev.synthetic_catalog(400, 12, 8, seed=6)  # an unrelated way to see the same products
    rec = Recommender(x, seed=0, views={"B": b})
    eyes = rec.views["B"]  # the shopper sees exactly through view B
    targets = (3, 77, 150, 222, 391)
    rec.hide(list(targets))  # never shown, so every hunt lasts its 6 clicks (bayes finds most in 2-4)
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
    assert session.n_similar == len(shown) == 10  # a uniform belief: every product is as likely as any
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
    from engine.bayes import bayes_hypotheses

    return len(bayes_hypotheses(session.rec, session.params))
