"""`bayes`: a belief over which product the shopper wants, and galleries chosen to narrow it fastest.

PicHunter-style: each click is evidence about the target under a user model (which view of the catalog the
shopper judges by, how sharply, how often a click strays); the session keeps a belief per model and weighs the
models by how well they predicted this shopper's clicks. A gallery is the set of products whose click tells the
most about the target. Typed words add their evidence (see `_query_evidence`). No UI imports here; the engine
(`recommender.py`) registers `strategy_bayes` under "bayes" and holds the shared `BeliefSpaces`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import faiss
import numpy as np

from engine.rows import CHUNK_BYTES, CHUNK_ROWS, UnitRows, unit_length
from engine.strategy import Choice


@dataclass
class BayesState:
    """What a `bayes` session remembers between rounds (`session.bayes`)."""

    hypotheses: list[tuple[str, float, float]]  # the user models (view, temperature, epsilon) it weighs
    log_beliefs: np.ndarray  # (H, N) float32: log p_h(t) under each hypothesis, largest 0; -inf: not the target
    log_weights: np.ndarray  # (H,): log weight of each hypothesis, from how well it predicted the clicks
    rounds_used: int = 0  # rounds of the session's history folded into the beliefs
    hidden: int | None = None  # the session's n_hidden when hidden rows were last ruled out
    query_serial: int | None = None  # which query `query_evidence` is of
    query_evidence: np.ndarray | None = None  # (N,) float32 log-likelihood of the query, made once per query


class Recommender(Protocol):
    """What bayes reads of recommender.py's `Recommender` (named here so the engine never imports recommender.py)."""

    n: int
    per_round: int
    unit: np.ndarray | UnitRows  # (N, d) unit rows
    views: dict[str, np.ndarray]  # other views of the catalog, (N, d_v) unit rows each
    belief_spaces: BeliefSpaces


class Session(Protocol):
    """What bayes reads of recommender.py's `Session`, and `bayes`, the one field it keeps there."""

    rec: Recommender
    rng: np.random.Generator
    params: dict  # the session's tuning, e.g. temperature
    history: list[list[int]]
    n_hidden: int
    query_vector: np.ndarray | None
    query_rows: np.ndarray | None
    query_serial: int
    revived: np.ndarray  # matches shown before, back for the round of a new search (see Session._revive)
    pass_start: int  # the round the current pass began: rows shown before it may be shown again
    weigh_picks_from: int  # picks of earlier rounds are not weighed (a restore's, ruled out as seen rows only)
    bayes: BayesState | None

    @property
    def remaining(self) -> int: ...

    def unseen_mask(self) -> np.ndarray: ...

    def pick_in_round(self, round_no: int) -> int | None: ...


BAYES_DEFAULTS = {"temperature": 0.05, "epsilon": 0.05, "particles": 512, "candidates": 96}
BAYES_EXACT_BUDGET = 100_000_000  # N * d up to which the belief uses the full embeddings (e.g. 130k x 768)
BAYES_DIM = 64  # beyond it, a PCA projection of this many dimensions keeps a round O(N * 64)
BAYES_PCA_SAMPLE = 30_000  # rows the projection is fitted on (64 of 768 dimensions need no more)
BAYES_TEMPERATURES = (0.05, 0.1)  # how sharply a shopper may judge: one hypothesis per view and temperature
BAYES_GRID_MAX_N = 250_000  # up to here each view is tried at every temperature; beyond, at the first only
BAYES_EMBEDDING_PRIOR = 0.8  # prior weight of "the shopper sees as the embedding does", against the other views
# Galleries are designed for a shopper at least this soft: products far enough apart that eyes other than the
# model's tell them apart too (the belief update keeps each hypothesis' own temperature). Tuned on the demo:
# design at 0.15 took pixels/embedding/efficientnet-lite2 shoppers from 4.93/4.38/6.52 to 4.49/3.81/5.59 rounds.
BAYES_DESIGN_TEMPERATURE = 0.15
BAYES_QUERY_TEMPERATURE = 0.02  # a query vector q weighs target t by exp(<t, q> / T) (CLIP's own scale is 0.01)
GAIN_TIE = 1e-9  # relative: gains this close are a tie (a CPU's rounding moves them by about 1e-15)
BAYES_WORDS_TRUST = 0.9  # a word query moves this share of the belief onto its matches (names can mislead)
CLICK_CACHE_ENTRIES = 4096  # clicks whose likelihoods a recommender keeps (see ClickCache), and at most
CLICK_CACHE_BYTES = 64 * 2**20  # this many bytes of them: 80 KB a click at 10k products and two hypotheses


class BeliefSpaces:
    """The rows `bayes` compares in each view, made once per view on first use and shared by every session.

    Small catalogs compare the unit rows themselves; beyond BAYES_EXACT_BUDGET (N * d) they are projected by PCA
    to BAYES_DIM dimensions (unit length again), and a query vector is projected the same way. Rows that stay on
    disk (compression "sq8") are read once, a block at a time, into the projection.
    """

    def __init__(self, rec: Recommender) -> None:
        self._rec = rec
        self._lock = threading.Lock()  # one thread builds a view's projection; the others wait for it
        self._rows: dict[str, np.ndarray] = {}
        self._pca: dict[str, faiss.PCAMatrix | None] = {}  # the PCA that made each projection (None: none needed)
        self.clicks = ClickCache()  # what each click said about every target, shared by the sessions

    def rows(self, view: str = "embedding") -> np.ndarray:
        """Unit rows the belief update compares in `view`."""
        rec = self._rec
        rows = rec.unit if view == "embedding" else rec.views[view]
        dim = rows.shape[1]
        small = rec.n * dim <= BAYES_EXACT_BUDGET or dim <= BAYES_DIM
        if small and isinstance(rows, np.ndarray):
            return rows
        with self._lock:
            if view not in self._rows:
                self._rows[view], self._pca[view] = _project(rows, rec.n, dim if small else min(dim, BAYES_DIM))
        return self._rows[view]

    def project(self, query: np.ndarray, view: str = "embedding") -> np.ndarray:
        """A (1, d) query vector in the space of `rows(view)`: projected and unit length again where they are."""
        self.rows(view)
        pca = self._pca.get(view)
        if pca is None:
            return query
        q = pca.apply_py(query)
        return q / max(float(np.linalg.norm(q)), 1e-12)


def _project(rows, n: int, out_dim: int) -> tuple[np.ndarray, faiss.PCAMatrix | None]:
    """`rows` (n, d) as float32 (n, out_dim): copied, or PCA-projected and unit length when out_dim < d."""
    dim = rows.shape[1]
    pca = None
    if out_dim < dim:
        pca = faiss.PCAMatrix(dim, out_dim)
        sample = np.random.default_rng(0).choice(n, min(n, BAYES_PCA_SAMPLE), replace=False)
        pca.train(np.ascontiguousarray(rows[np.sort(sample)]))
    proj = np.empty((n, out_dim), dtype=np.float32)
    step = min(CHUNK_ROWS, CHUNK_BYTES // (4 * dim))
    for start in range(0, n, step):
        block = np.ascontiguousarray(rows[start : start + step])
        if pca is not None:
            block = pca.apply_py(block)
            unit_length(block, out=block)
        proj[start : start + len(block)] = block
    return proj, pca


class ClickCache:
    """A bounded LRU cache of what a click says about every target: (view, gallery, pick, user models) -> one
    read-only (N,) array per model, the exact arrays `_click_evidence` computes. Not state: a miss computes them
    again, bit for bit, so a session restored from a visit in any process folds its last picks in to the same
    belief; a hit only spares the work (a restore re-weighs up to MAX_REPLAYED_PICKS picks every call).
    Bounded by `max_entries` and by `max_bytes`, the least recently used dropped first."""

    def __init__(self, max_entries: int = CLICK_CACHE_ENTRIES, max_bytes: int = CLICK_CACHE_BYTES) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.nbytes, self.hits, self.misses = 0, 0, 0
        self._entries: OrderedDict[tuple, tuple[np.ndarray, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple) -> tuple[np.ndarray, ...] | None:
        """The arrays kept under `key` (now the most recently used), or None."""
        with self._lock:
            arrays = self._entries.get(key)
            if arrays is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return arrays

    def put(self, key: tuple, arrays: tuple[np.ndarray, ...]) -> None:
        """Keep `arrays` (made read-only) under `key`, dropping the least recently used beyond the bounds."""
        size = sum(a.nbytes for a in arrays)
        if size > self.max_bytes or self.max_entries <= 0:
            return
        for a in arrays:
            a.flags.writeable = False
        with self._lock:
            old = self._entries.pop(key, None)
            self.nbytes += size - (0 if old is None else sum(a.nbytes for a in old))
            self._entries[key] = arrays
            while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
                _, gone = self._entries.popitem(last=False)
                self.nbytes -= sum(a.nbytes for a in gone)

    def clear(self) -> None:
        """Drop every entry (as a new process would start)."""
        with self._lock:
            self._entries.clear()
            self.nbytes = 0


def belief_rows(rec: Recommender, view: str = "embedding") -> np.ndarray:
    """Unit rows the belief update compares in `view` (see BeliefSpaces)."""
    return rec.belief_spaces.rows(view)


def _query_evidence(session: Session, belief: np.ndarray | None = None) -> np.ndarray | None:
    """What the session's query adds to `bayes`' log-belief: (<t, q> - 1) / BAYES_QUERY_TEMPERATURE per row t for
    a vector (in the embedding's belief space), plus one log-factor on the word matches for rows that gives them
    BAYES_WORDS_TRUST of the belief when the words were typed (`belief`, the log-belief then; None: uniform over
    the unseen rows). None without a query. Made once per query (N float32 kept in the session's BayesState)."""
    st = _state(session)
    if session.query_vector is None and session.query_rows is None:
        return None
    if st.query_serial != session.query_serial:
        rec = session.rec
        evidence = np.zeros(rec.n, dtype=np.float32)
        if session.query_vector is not None:
            space = belief_rows(rec, "embedding")
            q = rec.belief_spaces.project(session.query_vector.reshape(1, -1))
            evidence = space @ q.ravel().astype(np.float32)
            evidence -= 1.0
            evidence *= np.float32(1.0 / BAYES_QUERY_TEMPERATURE)
        if session.query_rows is not None:
            if belief is None:
                belief = np.where(session.unseen_mask(), np.float32(0), np.float32(-np.inf))
            evidence[session.query_rows] += np.float32(_words_factor(belief + evidence, session.query_rows))
        st.query_serial, st.query_evidence = session.query_serial, evidence
    return st.query_evidence


def _words_factor(logp: np.ndarray, rows: np.ndarray) -> float:
    """The log-factor on `rows` (word matches) that gives them BAYES_WORDS_TRUST of the belief `logp`: 0 when they
    hold that share already, or when they or the other rows are all ruled out. Against the belief, not a uniform
    one: after a few picks the belief is sharp, and a factor made for a uniform one would leave a match the shopper
    typed by name far below the look-alikes of their picks."""
    finite = np.isfinite(logp)
    is_match = np.zeros(logp.size, dtype=bool)
    is_match[rows] = True
    matches, others = logp[finite & is_match].astype(np.float64), logp[finite & ~is_match].astype(np.float64)
    if not matches.size or not others.size:
        return 0.0

    def log_mass(a: np.ndarray) -> float:
        return float(a.max() + np.log(np.exp(a - a.max()).sum()))

    trust = np.log(BAYES_WORDS_TRUST / (1 - BAYES_WORDS_TRUST))
    return max(0.0, trust + log_mass(others) - log_mass(matches))


def _state(session: Session) -> BayesState:
    """The session's BayesState, made on first use: a zero log-belief per hypothesis, weights from the priors.

    Rounds before a restore's `weigh_picks_from` are not folded in one by one: the unseen mask rules their rows
    out at once (see `strategy_bayes`)."""
    if session.bayes is None:
        rec, hypotheses = session.rec, bayes_hypotheses(session.rec, session.params)
        session.bayes = BayesState(
            hypotheses,
            np.zeros((len(hypotheses), rec.n), dtype=np.float32),
            np.log([_prior(h, hypotheses) for h in hypotheses]),
            rounds_used=max(0, session.weigh_picks_from - 1),
        )
    return session.bayes


def click_probabilities(sims: np.ndarray, temperature: float, epsilon: float) -> np.ndarray:
    """The user model: P(the shopper clicks each shown product | the target), from the shown products'
    similarities to the target (last axis): (1 - epsilon) softmax(sims / temperature) + epsilon / |shown|.

    `strategy_bayes` applies this model to every possible target at once (in float32, in place); evaluate.py's
    `click_fit` and the tests use this function."""
    sims = np.asarray(sims, dtype=np.float64)
    p = np.exp((sims - sims.max(axis=-1, keepdims=True)) / temperature)
    return (1 - epsilon) * p / p.sum(axis=-1, keepdims=True) + epsilon / sims.shape[-1]


def bayes_hypotheses(rec: Recommender, params: dict) -> list[tuple[str, float, float]]:
    """The (view, temperature, epsilon) user models a `bayes` session weighs: one, when the session fixes its
    temperature and epsilon; else every view x BAYES_TEMPERATURES at BAYES_DEFAULTS' epsilon (beyond
    BAYES_GRID_MAX_N products, every view at the first temperature, so a round at 1M stays near one view's cost)."""
    if "temperature" in params or "epsilon" in params:
        return [
            (
                "embedding",
                params.get("temperature", BAYES_DEFAULTS["temperature"]),
                params.get("epsilon", BAYES_DEFAULTS["epsilon"]),
            )
        ]
    views = ["embedding", *rec.views]
    temperatures = BAYES_TEMPERATURES if rec.n <= BAYES_GRID_MAX_N else BAYES_TEMPERATURES[:1]
    return [(v, t, BAYES_DEFAULTS["epsilon"]) for v in views for t in temperatures]


def _prior(h: tuple[str, float, float], hypotheses: list[tuple[str, float, float]]) -> float:
    """Prior weight of a hypothesis: BAYES_EMBEDDING_PRIOR shared by the embedding's, the rest by the views'."""
    views = {v for v, _, _ in hypotheses}
    mine = sum(1 for v, _, _ in hypotheses if v == h[0])
    if len(views) == 1:
        return 1 / mine
    share = BAYES_EMBEDDING_PRIOR if h[0] == "embedding" else (1 - BAYES_EMBEDDING_PRIOR) / (len(views) - 1)
    return share / mine


def view_weights(session: Session) -> dict[str, float]:
    """How much a `bayes` session's belief follows each view now: {view: weight}, summing to 1 ({} before
    its first round)."""
    st = session.bayes
    if st is None:
        return {}
    w = np.exp(st.log_weights - st.log_weights.max())
    w /= w.sum()
    out: dict[str, float] = {}
    for (view, _, _), wi in zip(st.hypotheses, w):
        out[view] = out.get(view, 0.0) + float(wi)
    return out


def strategy_bayes(session: Session, n: int) -> Choice:
    """PicHunter-style search: a posterior over which product the shopper wants, and galleries that split it.

    User model h = (view, temperature T, stray-click rate eps): the shopper picks d from gallery D wanting t with
    P(d | t, D, h) = (1 - eps) exp(<d, t>_view / T) / sum_{e in D} exp(<e, t>_view / T) + eps / |D|, so one stray
    click cannot rule the true target out. Nobody knows how a shopper sees, so the session keeps a belief
    log p_h(t) under each hypothesis h (see `bayes_hypotheses`: each view of the catalog at a few temperatures)
    and a weight on h from how well it predicted this shopper's clicks so far (Bayesian model averaging);
    the gallery is chosen from the averaged belief, times the query's likelihood (see `_query_evidence`) when the
    shopper typed something. Rows already shown get probability 0 (the shopper would
    have found them). Gallery: the rows that maximise the expected information of the click about the target
    under the most likely hypothesis, its temperature raised to BAYES_DESIGN_TEMPERATURE (see `_design_gallery`).
    A round is O(H * N * d) for the update (d <=
    BAYES_DIM on big catalogs: PCA projections) and O(N) for the draw; a session holds H * N float32.
    The look-alikes (the gallery's likely targets, see below) come first.
    """
    if n <= 0:
        return Choice([], 0)
    rec, st = session.rec, _state(session)
    if st.hidden != session.n_hidden:  # rows seen or hidden (for everyone or this session): never the target
        st.log_beliefs[:, ~session.unseen_mask()] = -np.inf
        st.hidden = session.n_hidden
    _fold_in_rounds(session, st)
    view, temperature, epsilon = st.hypotheses[int(np.argmax(st.log_weights))]
    belief = _mixed_belief(st.log_beliefs, st.log_weights, rec.n)
    if session.revived.size:  # matches shown before, back for a new search's round: as likely as the likeliest
        belief = belief.copy()
        belief[session.revived] = belief[np.isfinite(belief)].max(initial=0.0)
    evidence = _query_evidence(session, belief)
    if evidence is not None:  # what the shopper typed: evidence beside the clicks (not a click: no weight change)
        belief = belief + evidence
    rows = rec.unit if view == "embedding" else rec.views[view]
    design = max(temperature, session.params.get("design_temperature", BAYES_DESIGN_TEMPERATURE))
    gallery = _design_gallery(
        session,
        belief,
        n,
        session.params.get("particles", BAYES_DEFAULTS["particles"]),
        session.params.get("candidates", BAYES_DEFAULTS["candidates"]),
        design,
        epsilon,
        rows,
    )
    # honest labels: a gallery row is a likely target only if the belief ranks it among its top `per_round`;
    # the rest are there to split the belief (explore). Likely ones first.
    k = min(rec.per_round, int(np.isfinite(belief).sum()))
    kth = np.partition(belief, -k)[-k] if k else np.inf
    likely = [row for row in gallery if belief[row] >= kth]
    return Choice(likely + [row for row in gallery if belief[row] < kth], len(likely))


def _fold_in_rounds(session: Session, st: BayesState) -> None:
    """Fold every round not used yet into each hypothesis' belief: the shown rows are out, and the pick (if any)
    weighs the rest by its click likelihood; each hypothesis' weight by how well it predicted the pick."""
    rec, hyps, hyp_logp, logw = session.rec, st.hypotheses, st.log_beliefs, st.log_weights
    while st.rounds_used < len(session.history):
        shown = session.history[st.rounds_used]
        st.rounds_used += 1
        pick = session.pick_in_round(st.rounds_used)
        if st.rounds_used > session.pass_start:  # shown in this pass: not the target (rows of earlier passes may be)
            hyp_logp[:, shown] = -np.inf
        if pick is None or st.rounds_used < session.weigh_picks_from:
            continue
        for view in dict.fromkeys(v for v, _, _ in hyps):
            mine = [h for h, (v, _, _) in enumerate(hyps) if v == view]
            models = tuple(hyps[h][1:] for h in mine)
            key = (view, tuple(shown), shown.index(pick), models)
            kept = rec.belief_spaces.clicks.get(key)
            if kept is None:
                kept = _click_evidence(belief_rows(rec, view), shown, shown.index(pick), models)
                rec.belief_spaces.clicks.put(key, kept)
            for h, (_, epsilon), kept_h in zip(mine, models, kept):
                lik, loglik = (kept_h, np.log(kept_h)) if epsilon else (np.exp(kept_h), kept_h)
                logp = hyp_logp[h]
                if len(hyps) > 1:  # how well h predicted this click: P_h(pick) = E_{p_h}[lik]
                    p = np.exp(logp - logp.max())
                    logw[h] += float(np.log(np.dot(p, lik) / p.sum()))
                logp += loglik
                logp -= logp.max()  # keep the numbers in range (-inf rows stay -inf)
        logw -= logw.max()


def _click_evidence(
    space: np.ndarray, shown: list[int], i_pick: int, models: tuple[tuple[float, float], ...]
) -> tuple[np.ndarray, ...]:
    """What picking shown[i_pick] says about every target under each (temperature, epsilon) model of one view:
    the click likelihood (N,) where epsilon > 0, its log where epsilon is 0 (what `_fold_in_rounds` keeps: the
    other is one elementwise exp or log of it, the same as computed together)."""
    sims = space[shown] @ space.T  # (|D|, N): one pass over the catalog per view
    sims -= 1.0  # <= 0 (unit rows): exp(sims / T) cannot overflow, nor vanish (>= e^-67) for T >= 0.03
    work = np.empty_like(sims)
    out = []
    for temperature, epsilon in models:
        inv_t = np.float32(1.0 / temperature)
        scaled = sims if temperature >= 0.03 else sims - sims.max(axis=0)  # sharper: best row at 0
        np.multiply(scaled, inv_t, out=work)
        np.exp(work, out=work)
        # log of the softmax click probability, for every possible target
        loglik = scaled[i_pick] * inv_t - np.log(work.sum(axis=0))
        if epsilon:
            out.append(np.exp(loglik) * np.float32(1.0 - epsilon) + np.float32(epsilon / len(shown)))
        else:
            out.append(loglik)
    return tuple(out)


def _mixed_belief(hyp_logp: np.ndarray, logw: np.ndarray, n: int) -> np.ndarray:
    """log of sum_h w_h p_h(t), each p_h normalised over the rows still possible (the belief itself when there
    is one hypothesis); rows no hypothesis allows (shown, hidden) are -inf."""
    if len(hyp_logp) == 1:
        return hyp_logp[0]
    w = np.exp(logw - logw.max())
    w /= w.sum()
    mixed = np.zeros(n, dtype=np.float32)
    for h in np.flatnonzero(w > 1e-4):
        p = np.exp(hyp_logp[h])  # each belief's largest value is 0 (kept so above): no overflow
        mixed += p * np.float32(w[h] / max(float(p.sum(dtype=np.float64)), 1e-300))
    with np.errstate(divide="ignore"):
        return np.log(mixed)


def _first_best(gain: np.ndarray) -> int:
    """The first position whose gain is within GAIN_TIE of the best: gains that differ only by a CPU's rounding
    (numpy's logs and exps have AVX-512 kernels of their own) choose the same row on every machine."""
    best = float(gain.max())
    return int(np.flatnonzero(gain >= best - GAIN_TIE * max(abs(best), 1.0))[0])


def _design_gallery(
    session: Session,
    logp: np.ndarray,
    n: int,
    particles: int,
    candidates: int,
    temperature: float,
    epsilon: float,
    rows=None,
) -> list[int]:
    """Greedily pick `n` rows maximising the expected information of the click about the target.

    The belief is represented by `particles` rows (all unseen rows when fewer, else drawn in proportion to it);
    gallery rows are chosen among the `candidates` most probable particles. The click's outcome is "target
    shown" or which shown row the shopper picks under the same noisy softmax model as the belief update; the
    greedy step adds the row that maximises H(outcome) - E_target[H(outcome | target)].
    """
    if session.remaining <= particles:
        parts = np.flatnonzero(np.isfinite(logp))
    else:  # Gumbel top-k: `particles` rows drawn without replacement in proportion to the belief
        with np.errstate(divide="ignore"):  # a uniform draw of exactly 0 gives a key of -inf: never drawn
            keys = logp - np.log(-np.log(session.rng.random(logp.shape, dtype=np.float32)))  # + Gumbel(0, 1)
        # sorted: argpartition's order of the kept rows depends on the CPU's sorting kernel (AVX-512 or not)
        parts = np.sort(np.argpartition(-keys, particles)[:particles])
        parts = parts[np.isfinite(logp[parts])]
    if parts.size == 0:
        return []
    parts = parts[session.rng.permutation(parts.size)]  # random tie-breaking among equal beliefs
    w = np.exp(logp[parts] - logp[parts].max()).astype(np.float64)
    w /= w.sum()
    cand = np.argsort(-w, kind="stable")[: max(candidates, n)]  # positions in `parts`
    x = (session.rec.unit if rows is None else rows)[parts]
    e = np.exp((x[cand] @ x.T - 1.0) / temperature).astype(np.float64)  # (C, M): exp(sim / T), scaled
    c_count, m = e.shape
    chosen: list[int] = []  # positions in `cand`
    z = np.zeros(m)  # sum over chosen rows of exp(sim / T), per particle
    in_s = np.zeros(m, dtype=bool)  # particles already in the gallery
    found = 0.0
    for k in range(min(n, c_count)):
        zc = z[None, :] + e  # (C, M): normaliser with candidate c added
        v = np.where(in_s, 0.0, w)[None, :].repeat(c_count, 0)
        v[np.arange(c_count), cand] = 0.0  # candidate c itself would be found, not picked
        share = (1 - epsilon) / zc
        uniform = epsilon / (k + 1)
        q_old = share[:, :, None] * e[chosen].T[None, :, :] + uniform  # (C, M, k): P(pick chosen s | j)
        q_new = share * e + uniform  # (C, M): P(pick c | j)
        p_old = np.einsum("cm,cms->cs", v, q_old)
        p_new = (v * q_new).sum(axis=1)
        p_found = found + w[cand]
        outcome = np.concatenate([p_found[:, None], p_old, p_new[:, None]], axis=1)
        h_outcome = -(outcome * np.log(np.clip(outcome, 1e-300, None))).sum(axis=1)
        h_cond = -(v * (q_new * np.log(q_new) + (q_old * np.log(q_old)).sum(axis=2))).sum(axis=1)
        gain = h_outcome - h_cond
        gain[chosen] = -np.inf
        c = _first_best(gain)
        chosen.append(c)
        in_s[cand[c]] = True
        found += w[cand[c]]
        z += e[c]
    chosen.sort(key=lambda c: -w[cand[c]])  # most probable first
    return [int(parts[cand[c]]) for c in chosen]
