"""Rounds-to-target: simulated shoppers hunt a hidden target product; fewer rounds is better.

    python evaluate.py --synthetic 500,64,20 --strategy mean,random,rocchio,bayes --user noiseless
    python evaluate.py --dataset demo --demo-size 2000 --user noisy --plot rounds.png
    python evaluate.py --dataset out/my-shop-embeddings --sweep

Each round the shopper sees the gallery; if the target is there it is found (that round counts). Otherwise
it picks: `noiseless` picks the shown product most similar to the target; `noisy` picks with probability
proportional to exp(similarity / temperature), or (with probability --epsilon) clicks at random.

Similar by whose eyes? `--perceive` sets what the shopper compares (the strategies never see it), comma
separated for one table each: `embedding` (the catalog's own embedding: flatters every strategy), `pixels`
(the product picture itself, 32x32 RGB on white, centred on the catalog mean), `model:NAME` (another encoder's
embedding of the same pictures), `noise:S` (the embedding plus a fixed per-product Gaussian perturbation of
scale S / sqrt(d)).

A shopper may type first: `--typed category` makes it type its target's category before the first click (by
meaning when the catalog's model has a text tower, else by the full-text search of every product text, as the
app's search box does); the report then shows every strategy with and without typing.

Why a strategy struggles with some eyes: `--click-fit` prints, per strategy, the mean log-probability that
`bayes`' user model (the embedding, temperature 0.05, 5% stray clicks) gives the shopper's clicks, in rounds 1-2
and after, and how often the click went to the shown product nearest the target in the embedding.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from catalog.catalog import catalog_id
from catalog.dataset import dataset_views, embedding_matrix
from catalog.demo import category_precision_at_k
from common.cli import ArgumentParser, add_runtime_options, folder_problem, whole_number
from common.cli import run as run_cli
from common.images import appearance_vectors
from embed import ImageEncoder, embed_dataset
from engine.bayes import BAYES_DEFAULTS, click_probabilities
from engine.rows import unit_length
from recommender import STRATEGIES, Recommender

if TYPE_CHECKING:
    import datasets

    from common.huntlog import HuntLog
    from recommender import Session

# ---------------------------------------------------------------------------------------------- the shopper
PIXELS_SIZE = 32  # the `pixels` shopper sees the picture at 32 x 32


def unit_rows(x: np.ndarray, centre: bool = False) -> np.ndarray:
    """float32 rows, optionally centred on their mean, scaled to length 1 (a row of zeros stays zeros)."""
    x = np.array(x, dtype=np.float32)
    if centre:
        x -= x.mean(axis=0)
    return unit_length(x)


def perception(
    kind: str,
    unit: np.ndarray,
    ds: datasets.Dataset | None = None,
    image_column: str = "image",
    seed: int = 0,
    runtime: str = "auto",
    precision: str = "float32",
) -> np.ndarray:
    """The rows a shopper compares under perception `kind` (see the module docstring; `model:NAME` runs with
    `runtime` and `precision`); ValueError if unknown or if it needs pictures and the catalog has none."""
    if kind == "embedding":
        return unit
    if kind.startswith("noise:"):
        try:
            scale = float(kind.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--perceive {kind}: noise:S takes a number, e.g. noise:1.0") from None
        if not 0 <= scale < math.inf:
            raise ValueError(f"--perceive {kind}: the noise scale must be a finite number, 0 or more")
        noise = np.random.default_rng((seed, 7)).standard_normal(unit.shape, dtype=np.float32)
        return unit_rows(unit + noise * scale / math.sqrt(unit.shape[1]))
    if kind != "pixels" and not kind.startswith("model:"):
        raise ValueError(f"--perceive {kind!r}: choose embedding, pixels, model:NAME or noise:S")
    if ds is None or image_column not in ds.column_names:
        raise ValueError(f"--perceive {kind}: this catalog has no product pictures (a synthetic catalog has none)")
    from catalog.dataset import picture_bytes

    pictures = picture_bytes(ds, image_column)  # paths are read inside the dataset's folder, never elsewhere
    if kind == "pixels":
        blocks = [appearance_vectors(b[image_column], PIXELS_SIZE) for b in pictures.iter(batch_size=256)]
        return unit_rows(np.concatenate(blocks), centre=True)
    try:
        encoder = ImageEncoder(kind.split(":", 1)[1], runtime=runtime, precision=precision)
    except (OSError, RuntimeError, KeyError, TypeError) as exc:  # not a model, not installed, the Hub out of reach
        raise ValueError(f"--perceive {kind}: cannot load the model: {str(exc).splitlines()[0][:300]}") from None
    return unit_rows(
        embedding_matrix(embed_dataset(pictures, encoder, image_column=image_column, appearance_size=None))
    )


def choose(
    unit: np.ndarray,
    shown: list[int],
    target: int,
    user: str,
    rng: np.random.Generator,
    user_temperature: float = 0.05,
    user_epsilon: float = 0.05,
) -> int:
    """The simulated shopper's click on a gallery that does not contain the target, judged by the rows `unit`."""
    sims = unit[shown] @ unit[target]
    if user == "noiseless":
        return shown[int(np.argmax(sims))]
    if rng.random() < user_epsilon:
        return shown[int(rng.integers(len(shown)))]
    p = np.exp((sims - sims.max()) / user_temperature)
    return shown[int(rng.choice(len(shown), p=p / p.sum()))]


@dataclass
class Shopper:
    """A simulated shopper: how it clicks (`user`: noiseless, or noisy with a softmax `temperature` and a chance
    `epsilon` of a random click) and through whose eyes (`perceived` rows; None: the catalog's embedding)."""

    user: str = "noiseless"
    temperature: float = 0.05
    epsilon: float = 0.05
    perceived: np.ndarray | None = None

    def click(self, rec: Recommender, shown: list[int], target: int, rng: np.random.Generator) -> int:
        """The shown product it clicks, hunting `target` (see `choose`)."""
        eyes = rec.unit if self.perceived is None else self.perceived
        return choose(eyes, shown, target, self.user, rng, self.temperature, self.epsilon)


@dataclass
class Hunt:
    """One simulated hunt: `rounds` until the target was shown (1 = in the first gallery; None: not within the
    cap), its `session` (for the hunt log) and, when asked for, every click as (round, shown, pick, target)."""

    rounds: int | None
    session: Session
    clicks: list[tuple[int, list[int], int, int]] = field(default_factory=list)

    @property
    def found(self) -> bool:
        """Whether the target was shown within the cap."""
        return self.rounds is not None


def hunt(
    rec: Recommender,
    target: int,
    strategy: str,
    shopper: Shopper,
    seed: int,
    max_rounds: int,
    typed: np.ndarray | None = None,
    keep_clicks: bool = False,
    **params,
) -> Hunt:
    """`shopper` hunts `target` under `strategy` for at most `max_rounds` rounds; with `typed` (a query for
    `Session.next_round`) it says what it wants before the first round; `keep_clicks` records its clicks (see
    `click_fit`). `params` tune the strategy."""
    rng = np.random.default_rng((seed, target, 1))
    session = rec.new_session(seed=(seed, target), strategy=strategy, **params)
    out = Hunt(None, session)
    shown = session.next_round(query=typed)
    for r in range(1, max_rounds + 1):
        if target in shown:
            out.rounds = r
            return out
        if not shown or r == max_rounds:
            return out
        pick = shopper.click(rec, shown, target, rng)
        if keep_clicks:
            out.clicks.append((r, shown, pick, target))
        shown = session.next_round(pick=pick)
    return out


@dataclass
class LogTo:
    """Where `evaluate` writes every simulated hunt, in the app's format: the hunt log, the catalog it names, each
    row's product id, and text added to each strategy's name (to tell several perceptions apart)."""

    hunt_log: HuntLog
    catalog: dict
    product_id: Callable[[int], str]
    suffix: str = ""


def log_hunt(log_to: LogTo, found: Hunt, target: int, label: str) -> None:
    """Write a simulated hunt to the hunt log (huntlog.py): the shopper clicks the target in the round it is
    shown, as in the app's Find a product."""
    from common.huntlog import minute_now, new_hunt_id, round_entries

    session, rounds, product_id = found.session, found.rounds, log_to.product_id
    picks = dict(zip(session.pick_rounds, session.picks))
    if rounds is not None:
        picks[rounds] = target
    history = session.history[:rounds] if rounds is not None else session.history
    log_to.hunt_log.write(
        {
            "hunt": new_hunt_id(),
            "time": minute_now(),
            "catalog": log_to.catalog,
            "strategy": label + log_to.suffix,
            "strategy_from": "compare",
            "target": product_id(target),
            "rounds": round_entries(history, picks, {}, product_id),
            "found": None if rounds is None else product_id(target),
            "ended": "found" if rounds is not None else "abandoned",
        }
    )


@dataclass
class Experiment:
    """One evaluation's settings: the `strategies` compared, the `targets` hunted, the `shopper`, the `seed`, the
    cap (`max_rounds`; None: N / per-round), what each shopper types first (`typed`: target -> query, see
    `typed_queries`; each strategy then also runs as "NAME +typed"), the strategies' tuning (`params`), whether to
    keep every click (for `click_fit`), where to log the hunts (`log_to`), and a progress bar."""

    strategies: list[str]
    targets: np.ndarray
    shopper: Shopper = field(default_factory=Shopper)
    seed: int = 0
    max_rounds: int | None = None
    typed: dict | None = None
    params: dict = field(default_factory=dict)
    keep_clicks: bool = False
    log_to: LogTo | None = None
    progress: bool = True


@dataclass
class Results:
    """What `evaluate` measured per result name (a strategy, or "NAME +typed"): rounds per target (np.inf where the
    cap ended the search) and, with `keep_clicks`, every click (see `click_fit`)."""

    rounds: dict[str, np.ndarray]
    clicks: dict[str, list[tuple[int, list[int], int, int]]] = field(default_factory=dict)


def evaluate(rec: Recommender, experiment: Experiment) -> Results:
    """Every strategy of `experiment` hunts each of its targets (with and without typing, when it types)."""
    from tqdm.auto import tqdm

    ex = experiment
    cap = ex.max_rounds or math.ceil(rec.n / rec.per_round)
    out = Results({})
    for name in ex.strategies:
        for queries in (None, ex.typed) if ex.typed is not None else (None,):
            label = name if queries is None else f"{name} +typed"
            rounds, clicks = [], []
            for t in tqdm(ex.targets, desc=label, disable=not ex.progress, leave=False):
                found = hunt(
                    rec,
                    int(t),
                    name,
                    ex.shopper,
                    ex.seed,
                    cap,
                    None if queries is None else queries[int(t)],
                    ex.keep_clicks,
                    **ex.params,
                )
                rounds.append(found.rounds)
                clicks += found.clicks
                if ex.log_to is not None:
                    log_hunt(ex.log_to, found, int(t), label)
            out.rounds[label] = np.array([np.inf if r is None else r for r in rounds], dtype=float)
            if ex.keep_clicks:
                out.clicks[label] = clicks
    return out


def typed_queries(
    ds: datasets.Dataset | None,
    targets: np.ndarray,
    what: str = "category",
    cache_dir: str | None = None,
    runtime: str = "auto",
) -> tuple[dict, str]:
    """({target: the query its shopper types}, how it searches): each target's `what` column as typed words,
    by meaning with the model's text tower (run by `runtime`, in the catalog's precision) when the dataset
    records one, else by the shop's full-text search (its index kept in `cache_dir`, default: the app's cache)."""
    from catalog.catalog import DEFAULT_CACHE
    from catalog.dataset import dataset_meta, name_column
    from catalog.fulltext import TextIndex

    if ds is None or what not in ds.column_names:
        raise ValueError(f"--typed {what}: this catalog has no {what!r} column")
    column = name_column(ds, what)  # one read of the column, not a decoded row (picture included) per target
    texts = [column[int(t)] for t in targets]
    meta = dataset_meta(ds)
    if meta.get("text") and meta.get("model"):
        from embed import TextEncoder

        precision = meta.get("precision") or "float32"
        vectors = TextEncoder(meta["model"], runtime=runtime, precision=precision).embed(texts)
        return {int(t): v for t, v in zip(targets, vectors)}, "meaning"
    index = TextIndex.open(ds, Path(cache_dir or DEFAULT_CACHE) / "search")
    found = {text: index.search(text).rows for text in set(texts)}
    return {int(t): (None, found[text]) if found[text].size else None for t, text in zip(targets, texts)}, "words"


# ---------------------------------------------------------------------------------------------- the numbers
def click_fit(
    rows: np.ndarray,
    clicks: list,
    temperature: float = BAYES_DEFAULTS["temperature"],
    epsilon: float = BAYES_DEFAULTS["epsilon"],
    early: int = 2,
) -> dict[str, dict[str, float]]:
    """How well a softmax user model over `rows` (bayes' own, by default) predicts recorded clicks, for rounds
    1..`early` and after: {"early"/"later": {"clicks", "loglik" (mean log-probability of the click), "top" (share
    of clicks on the shown product most similar to the target)}}; a random click scores log(1 / shown)."""
    parts: dict[str, tuple[list, list]] = {"early": ([], []), "later": ([], [])}
    for r, shown, pick, target in clicks:
        sims = rows[shown] @ rows[target]
        i = shown.index(pick)
        ll, top = parts["early" if r <= early else "later"]
        ll.append(math.log(click_probabilities(sims, temperature, epsilon)[i]))
        top.append(int(np.argmax(sims)) == i)
    return {
        part: {
            "clicks": len(ll),
            "loglik": float(np.mean(ll)) if ll else math.nan,
            "top": float(np.mean(top) * 100) if top else math.nan,
        }
        for part, (ll, top) in parts.items()
    }


def _fit_text(part: dict[str, float]) -> str:
    """One part of `click_fit` as words for the report."""
    if not part["clicks"]:
        return "- (no clicks)"
    return f"{part['loglik']:.2f} ({part['clicks']} clicks, {part['top']:.0f}% on the shown product nearest the target)"


def random_expectation(n: int, k: int) -> float:
    """Exact expected rounds of the random baseline (k new products a round, no repeats): mean of ceil(pos/k)."""
    full, rest = divmod(n, k)
    return (k * full * (full + 1) / 2 + rest * (full + 1)) / n


def summary(rounds: np.ndarray) -> dict[str, float]:
    """Mean, median, p90 rounds and % found within 5 and 10 rounds (unfound searches count as the cap)."""
    found = np.isfinite(rounds)
    capped = np.where(found, rounds, np.nanmax(np.where(found, rounds, 0)) + 1)
    return {
        "mean": float(capped.mean()),
        "median": float(np.median(capped)),
        "p90": float(np.percentile(capped, 90)),
        "within5": float((rounds <= 5).mean() * 100),
        "within10": float((rounds <= 10).mean() * 100),
        "found": float(found.mean() * 100),
    }


def report(results: dict[str, np.ndarray], n: int, k: int) -> str:
    """The printed table, with the random baseline's expectation and the information bound beside it."""
    lines = [f"{'strategy':<14} {'mean':>6} {'median':>7} {'p90':>5} {'<=5':>6} {'<=10':>6} {'found':>6}"]
    for name, rounds in results.items():
        s = summary(rounds)
        lines.append(
            f"{name:<14} {s['mean']:6.2f} {s['median']:7.1f} {s['p90']:5.1f} {s['within5']:5.1f}% "
            f"{s['within10']:5.1f}% {s['found']:5.1f}%"
        )
    lines.append(
        f"random baseline, expected: N/(2k) = {n / (2 * k):.2f}, exact {random_expectation(n, k):.2f}; "
        f"information bound ceil(log_k N) = {math.ceil(math.log(n) / math.log(k))}"
    )
    return "\n".join(lines)


def plot(results: dict[str, np.ndarray], path: str, title: str) -> None:
    """Cumulative % of targets found vs rounds, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    top = int(max(np.nanmax(np.where(np.isfinite(r), r, 0)) for r in results.values()))
    xs = np.arange(1, top + 1)
    for name, rounds in results.items():
        ax.plot(xs, [(rounds <= x).mean() * 100 for x in xs], label=f"{name} (mean {summary(rounds)['mean']:.1f})")
    ax.set(xlabel="rounds", ylabel="% of targets found", title=title, ylim=(0, 101))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def synthetic_catalog(n: int, d: int, clusters: int, seed: int = 0, spread: float = 0.5) -> np.ndarray:
    """Unit vectors around `clusters` random centres: a stand-in for a catalog of product families."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, d)) / math.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic_bytes(n: int, d: int) -> int:
    """About the peak memory of a synthetic catalog of n products of d dimensions, made and evaluated: float64
    draws while making it, then the float32 rows, their unit copy and the index (~40 bytes per number)."""
    return 40 * n * d + 256 * n


def available_memory() -> int | None:
    """Bytes this process can still take: the system's available memory, or its cgroup's room if that is less
    (None where neither can be read)."""
    found = []
    try:
        meminfo = Path("/proc/meminfo").read_text()
        found.append(int(re.search(r"MemAvailable:\s+(\d+) kB", meminfo).group(1)) * 1024)
    except (OSError, AttributeError, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def load_embeddings(
    src: str, demo_size: int, cache_dir: str | None, runtime: str = "auto", precision: str = "float32"
) -> tuple:
    """(embeddings, categories or None, name, dataset) of 'demo' (made with `runtime`, `precision` when not
    cached) or a dataset source as app.py takes it."""

    if src == "demo":
        from catalog.demo import load_demo_catalog

        ds = load_demo_catalog(size=demo_size, cache_dir=cache_dir, runtime=runtime, precision=precision)
        name = f"demo catalog ({demo_size} Fashion-MNIST products)"
    else:
        from catalog.dataset import load_dataset_source

        ds, name = load_dataset_source(src), src
    cats = np.asarray(ds["category"]) if "category" in ds.column_names else None
    return embedding_matrix(ds), cats, name, ds


PLOT_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".eps", ".ps")


def settings_problem(args: argparse.Namespace) -> str | None:
    """Why the shopper's settings, --plot or --cache-dir cannot work, found before the run (None: they can)."""
    if not 0 < args.temperature < math.inf:
        return f"--temperature must be a number above 0, got {args.temperature}"
    if not 0 <= args.epsilon <= 1:
        return f"--epsilon is a chance, from 0 to 1, got {args.epsilon}"
    if args.cache_dir:
        problem = folder_problem(args.cache_dir, "--cache-dir")
        if problem:
            return problem
    if args.log_to:
        target = Path(args.log_to).expanduser()
        if target.is_dir():
            return f"--log-to {target} is a folder; give a file (e.g. {target / 'hunts.jsonl'})"
        problem = folder_problem(target.parent, f"--log-to {target}: the folder")
        if problem:
            return problem
    if args.plot:
        plot = Path(args.plot).expanduser()
        if plot.suffix.lower() not in PLOT_FORMATS:
            return f"--plot {plot.name}: the file name must end in one of {', '.join(PLOT_FORMATS)}"
        if not plot.parent.is_dir():
            return f"--plot {plot}: the folder {plot.parent} does not exist"
        return folder_problem(plot.parent, f"--plot {plot}: the folder")
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked before any work: a mistake is one `error:` line and exit code 2."""
    ap = ArgumentParser(prog="evaluate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", metavar="SRC", help="'demo', a Hub dataset id, or a directory from upload_ds.py")
    src.add_argument("--synthetic", metavar="N,d,clusters", help="a clustered synthetic catalog, e.g. 500,64,20")
    ap.add_argument("--strategy", default="mean,random", help=f"comma-separated, from {sorted(STRATEGIES)}")
    ap.add_argument("--user", choices=("noiseless", "noisy"), default="noiseless")
    kinds = "what the shopper compares, comma separated, a table each: embedding, pixels, model:NAME, noise:S"
    ap.add_argument("--perceive", default="embedding", metavar="KINDS", help=f"{kinds} (default embedding)")
    typed = "the shopper also types its target's category first; reports rounds with and without"
    ap.add_argument("--typed", choices=("category",), default=None, help=typed)
    fit = "also say how well bayes' user model (the embedding, temperature 0.05) predicts the clicks"
    ap.add_argument("--click-fit", action="store_true", help=fit)
    ap.add_argument("--temperature", type=float, default=0.05, help="noisy shopper's softmax temperature")
    ap.add_argument("--epsilon", type=float, default=0.05, help="noisy shopper's chance of a random click")
    ap.add_argument("--targets", type=whole_number(1), default=500, help="number of targets (all products if more)")
    ap.add_argument("--per-round", type=whole_number(1), default=10)
    ap.add_argument("--similar", type=whole_number(0), default=5)
    ap.add_argument("--max-rounds", type=whole_number(1), default=None, help="cap on rounds (default N / per-round)")
    ap.add_argument("--sweep", action="store_true", help="also sweep mean's similar/random split 0..per-round")
    ap.add_argument("--plot", metavar="PNG", help="write cumulative %% found vs rounds (of the last --perceive)")
    log_to = "also write every simulated hunt to this hunt log, in the app's format, for insights.py"
    ap.add_argument("--log-to", metavar="PATH", help=f"{log_to} (appended; perceptions told apart by strategy name)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--demo-size", type=whole_number(1, 70_000), default=2000)
    ap.add_argument("--cache-dir", default=None)
    add_runtime_options(ap, "the demo catalog's and model:NAME's")
    args = ap.parse_args(argv)
    if args.similar > args.per_round:
        ap.error(f"--similar ({args.similar}) cannot exceed --per-round ({args.per_round})")
    args.strategies = [s.strip() for s in args.strategy.split(",") if s.strip()]
    unknown = [s for s in args.strategies if s not in STRATEGIES]
    if unknown or not args.strategies:
        ap.error(f"unknown strategy {unknown or args.strategy!r}; choose from {sorted(STRATEGIES)}")
    args.perceive = [p.strip() for p in args.perceive.split(",") if p.strip()] or ["embedding"]
    if args.synthetic:
        try:
            args.synthetic = tuple(int(v) for v in args.synthetic.split(","))
        except ValueError:
            ap.error("--synthetic takes N,d,clusters, e.g. 500,64,20")
        if len(args.synthetic) != 3 or min(args.synthetic) < 1:
            ap.error("--synthetic N,d,clusters must be three whole numbers of at least 1")
        need, have = synthetic_bytes(*args.synthetic[:2]), available_memory()
        if have is not None and need > have:
            ap.error(
                f"--synthetic {args.synthetic[0]:,} products of d={args.synthetic[1]} need about {need / 2**30:,.1f} "
                f"GB of memory; {have / 2**30:,.1f} GB are available: choose a smaller N or d"
            )
    problem = settings_problem(args)
    if problem:
        ap.error(problem)
    return args


def load_catalog(args: argparse.Namespace) -> tuple[Recommender, np.ndarray | None, str, object]:
    """(recommender, categories or None, name, dataset or None) of --synthetic or --dataset; ValueError with one
    line when the catalog cannot be used."""
    cats = ds = None
    if args.synthetic:
        n, d, c = args.synthetic
        x, name = synthetic_catalog(n, d, c, seed=args.seed), f"synthetic ({n} products, d={d}, {c} clusters)"
    else:
        x, cats, name, ds = load_embeddings(args.dataset, args.demo_size, args.cache_dir, args.runtime, args.precision)
    try:
        views = dataset_views(ds) if ds is not None else None  # e.g. the catalog's colour layouts, for bayes
        rec = Recommender(x, per_round=args.per_round, similar=args.similar, seed=args.seed, views=views)
    except ValueError as exc:  # e.g. a NaN in an embedding
        raise ValueError(f"{name}: {exc}") from None
    return rec, cats, name, ds


def run(rec: Recommender, experiment: Experiment, eyes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Print a table of rounds per strategy for each perception (the shopper's `eyes`); returns the last table's
    rounds."""
    rounds: dict[str, np.ndarray] = {}
    for kind, perceived in eyes.items():
        t = time.perf_counter()
        log_to = experiment.log_to and replace(experiment.log_to, suffix=f" ({kind})" if len(eyes) > 1 else "")
        results = evaluate(
            rec, replace(experiment, shopper=replace(experiment.shopper, perceived=perceived), log_to=log_to)
        )
        rounds = results.rounds
        mismatch = "" if kind == "embedding" else " (not the embedding the strategies use)"
        print(f"\nshopper perceives: {kind}{mismatch}")
        print(report(rounds, rec.n, rec.per_round))
        for label, clicks in results.clicks.items():
            fit = click_fit(rec.unit, clicks)
            print(
                f"{label}: bayes' user model gives the clicks a log-probability of {_fit_text(fit['early'])} in "
                f"rounds 1-2 and {_fit_text(fit['later'])} later; a random click {math.log(1 / rec.per_round):.2f}"
            )
        print(f"({time.perf_counter() - t:.1f} s)")
    return rounds


def sweep(rec: Recommender, experiment: Experiment) -> None:
    """Print mean's rounds for every split of a round into similar and random products (the shopper sees through
    the embedding and types nothing)."""
    print(f"\nsweep of mean's split ({experiment.shopper.user} shopper): similar + random = {rec.per_round}")
    print(f"{'similar':>7} {'mean':>6} {'median':>7} {'p90':>5}")
    plain = replace(
        experiment,
        strategies=["mean"],
        shopper=replace(experiment.shopper, perceived=None),
        typed=None,
        keep_clicks=False,
        log_to=None,
        progress=False,
    )
    for similar in range(rec.per_round + 1):
        swept = Recommender(rec.unit, per_round=rec.per_round, similar=similar, seed=plain.seed)
        s = summary(evaluate(swept, plain).rounds["mean"])
        print(f"{similar:7d} {s['mean']:6.2f} {s['median']:7.1f} {s['p90']:5.1f}", flush=True)


def hunt_log_target(
    path: str, name: str, rec: Recommender, ds: datasets.Dataset | None, ident: str | None = None
) -> LogTo:
    """Where --log-to writes: the hunt log at `path`, naming the catalog (`ident`, as app.py names it: see
    catalog_id; else `name`) and each product by its id (#row when the catalog has no ids)."""
    from common.huntlog import HuntLog

    ids = [str(v) for v in ds["id"]] if ds is not None and "id" in getattr(ds, "column_names", []) else None
    return LogTo(
        HuntLog(path, grace_s=0, sync=True),
        {"id": ident or name, "name": name, "rows": rec.n, "model": None},
        (lambda row: ids[row]) if ids else (lambda row: f"#{row}"),
    )


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: parse, load the catalog and the shoppers' eyes, then run the tables."""
    args = parse_args(argv)
    try:
        rec, cats, name, ds = load_catalog(args)
        rng = np.random.default_rng(args.seed)
        targets = np.arange(rec.n) if args.targets >= rec.n else rng.choice(rec.n, args.targets, replace=False)
        how = {"runtime": args.runtime, "precision": args.precision}
        eyes = {kind: perception(kind, rec.unit, ds, seed=args.seed, **how) for kind in args.perceive}
        typed, typed_kind = (
            typed_queries(ds, targets, args.typed, args.cache_dir, args.runtime) if args.typed else (None, "")
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{name}: {rec.n} products, {len(targets)} targets, {args.user} shopper, {args.per_round} per round; "
        f"views for bayes: {', '.join(['embedding', *rec.views])}"
    )
    if cats is not None:
        print(f"embedding category precision@5: {category_precision_at_k(rec.unit, cats):.3f}")
    if typed is not None:
        print(f"typed: each shopper first types its target's {args.typed} (search by {typed_kind})")
    shopper = Shopper(args.user, args.temperature, args.epsilon)
    ident = None if args.synthetic else catalog_id(args.dataset)
    log_to = hunt_log_target(args.log_to, name, rec, ds, ident) if args.log_to else None
    experiment = Experiment(
        args.strategies,
        targets,
        shopper,
        args.seed,
        args.max_rounds,
        typed=typed,
        keep_clicks=args.click_fit,
        log_to=log_to,
    )
    rounds = run(rec, experiment, eyes)
    if log_to is not None:
        log_to.hunt_log.close()
        print(f"{log_to.hunt_log.written:,} hunts written to {args.log_to}")
    if args.sweep:
        sweep(rec, experiment)
    if args.plot:
        plot(rounds, args.plot, f"{name}, {args.user} shopper perceiving {args.perceive[-1]}")
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
