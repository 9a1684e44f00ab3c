"""What shoppers found: a report from the app's hunt log (huntlog.py), or from evaluate.py --log-to's simulated one.

    python insights.py ~/.cache/product-recommender/hunts/ --dataset SRC [--since 2026-11-01] [--plot found.png]
    python insights.py ~/.cache/product-recommender/hunts/demo.jsonl --json

One catalog at a time: --catalog ID (as the records name it), else the one given by --dataset, else the log's
only one; a log holding several catalogs and none chosen is an error that lists them.

Hunts and the share found; rounds to find (median, p90, mean with its 95% interval) per strategy, and a plot of %
found vs rounds; the products found most and those shown most but never picked (with titles from --dataset);
typed searches that matched nothing; searches per hunt; and, when hunts ran different strategies (app.py
--compare), the difference in rounds to find with its 95% interval, or how many hunts it would take to tell.
The log is streamed: memory depends on the catalog and the distinct searches, not on how long the log is.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from catalog.catalog import catalog_id
from common.cli import ArgumentParser
from common.cli import run as run_cli
from common.huntlog import MAX_WORDS_CHARS, Torn, log_files, read_records, rounds_to_find

Z95 = 1.959964  # two-sided 95% normal quantile
Z80_POWER = 0.841621  # one-sided 80% power
TOP = 20
MAX_CATALOGS = 1000  # distinct catalogs told apart in one log
PLOT_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".webp")


@dataclass
class Rounds:
    """Rounds to find as a histogram (round -> hunts): exact median, p90, mean and variance in bounded memory."""

    counts: Counter = field(default_factory=Counter)

    def add(self, rounds: int) -> None:
        """Count one hunt found in `rounds` rounds."""
        self.counts[rounds] += 1

    @property
    def n(self) -> int:
        """Hunts counted."""
        return sum(self.counts.values())

    def mean(self) -> float | None:
        """Mean rounds (None before any hunt)."""
        return sum(r * c for r, c in self.counts.items()) / self.n if self.n else None

    def variance(self) -> float | None:
        """Sample variance of the rounds (None below two hunts), for the mean's interval."""
        if self.n < 2:
            return None
        m = self.mean()
        return sum(c * (r - m) ** 2 for r, c in self.counts.items()) / (self.n - 1)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (numpy's linear interpolation between the order statistics)."""
        if not self.n:
            return None
        pos = q * (self.n - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return self._value(lo) + (pos - lo) * (self._value(hi) - self._value(lo))

    def _value(self, k: int) -> int:
        """The k-th smallest rounds (0-based) of the hunts counted."""
        seen = 0
        for r in sorted(self.counts):
            seen += self.counts[r]
            if k < seen:
                return r
        raise IndexError(k)

    def interval(self) -> tuple[float, float] | None:
        """95% interval of the mean rounds (normal approximation)."""
        v = self.variance()
        if v is None:
            return None
        half = Z95 * math.sqrt(v / self.n)
        return self.mean() - half, self.mean() + half


@dataclass
class StrategyStats:
    """One strategy's hunts: how many, found, drawn at random by --compare, and their rounds to find."""

    hunts: int = 0
    found: int = 0
    compared: int = 0  # hunts whose strategy was drawn at random (app.py --compare)
    rounds: Rounds = field(default_factory=Rounds)
    compared_rounds: Rounds = field(default_factory=Rounds)


@dataclass
class Insights:
    """Everything the report says, gathered in one pass over the log."""

    hunts: int = 0
    found: int = 0
    searches: int = 0
    torn: Torn = field(default_factory=Torn)
    strategies: dict[str, StrategyStats] = field(default_factory=dict)
    endings: Counter = field(default_factory=Counter)
    found_products: Counter = field(default_factory=Counter)
    shown: Counter = field(default_factory=Counter)
    picked: set = field(default_factory=set)
    no_match: Counter = field(default_factory=Counter)

    def add(self, record: dict) -> None:
        """Count one hunt's record (a record of the wrong shape is counted as torn)."""
        if not well_formed(record):
            self.torn.lines += 1
            return
        strategy, rounds = record["strategy"], record["rounds"]
        self.hunts += 1
        self.endings[str(record.get("ended"))] += 1
        stats = self.strategies.setdefault(strategy, StrategyStats())
        stats.hunts += 1
        compared = record.get("strategy_from") == "compare"
        stats.compared += compared
        for entry in rounds:
            if not isinstance(entry, dict):
                continue
            for product in entry.get("shown") or ():
                self.shown[product] += 1
            if entry.get("pick") is not None:
                self.picked.add(entry["pick"])
            if entry.get("words"):
                self.searches += 1
                if entry.get("matches") == 0:
                    self.no_match[entry["words"].strip().lower()[:MAX_WORDS_CHARS]] += 1
        k = rounds_to_find(record)
        if k is not None:
            self.found += 1
            stats.found += 1
            stats.rounds.add(k)
            if compared:
                stats.compared_rounds.add(k)
            self.found_products[record["found"]] += 1

    def summary(self) -> dict:
        """The figures as plain data (the --json output)."""
        return {
            "hunts": self.hunts,
            "found": self.found,
            "torn_lines": self.torn.lines,
            "share_found": self.found / self.hunts if self.hunts else None,
            "ended": dict(self.endings),
            "searches_per_hunt": self.searches / self.hunts if self.hunts else None,
            "strategies": {
                name: {
                    "hunts": s.hunts,
                    "found": s.found,
                    "mean_rounds": s.rounds.mean(),
                    "median_rounds": s.rounds.quantile(0.5),
                    "p90_rounds": s.rounds.quantile(0.9),
                    "mean_rounds_95": s.rounds.interval(),
                    "compared_hunts": s.compared,
                }
                for name, s in sorted(self.strategies.items())
            },
            "most_found": self.found_products.most_common(TOP),
            "never_picked": [[p, n] for p, n in self.shown.most_common() if p not in self.picked][:TOP],
            "no_match_searches": [[w, n] for w, n in self.no_match.most_common()],
            "comparison": self.comparison(),
        }

    def comparison(self) -> dict | None:
        """The difference in mean rounds to find between the two strategies with the most found hunts, over the
        hunts whose strategy was drawn at random when there are such (a fair comparison), else over all."""
        ranked = sorted(self.strategies.items(), key=lambda kv: -kv[1].found)[:2]
        if len(ranked) < 2:
            return None
        fair = all(s.compared_rounds.n >= 2 for _, s in ranked)
        (a, sa), (b, sb) = ranked
        ra, rb = (sa.compared_rounds, sb.compared_rounds) if fair else (sa.rounds, sb.rounds)
        return difference(a, ra, b, rb, fair)


def well_formed(record: dict) -> bool:
    """Whether a record has the shape the report reads (see huntlog.py): names are text or null, `rounds` a list of
    entries whose `shown` is a list of ids, counts are whole numbers; anything else counts as torn."""
    rounds, cut = record.get("rounds"), record.get("cut")
    if not isinstance(record.get("strategy"), str) or not isinstance(rounds, list):
        return False
    if not all(_text_or_none(record.get(key)) for key in ("found", "ended", "time", "strategy_from")):
        return False
    if cut is not None and not (isinstance(cut, dict) and all(type(n) is int for n in cut.values())):
        return False
    for entry in rounds:
        if not isinstance(entry, dict) or not _text_or_none(entry.get("pick")) or not _text_or_none(entry.get("words")):
            return False
        shown, matches = entry.get("shown"), entry.get("matches")
        if shown is not None and not (isinstance(shown, list) and all(isinstance(p, str) for p in shown)):
            return False
        if matches is not None and type(matches) is not int:
            return False
    return True


def _text_or_none(value: object) -> bool:
    return value is None or isinstance(value, str)


def difference(a: str, ra: Rounds, b: str, rb: Rounds, fair: bool) -> dict:
    """Mean rounds of `a` minus those of `b`, its 95% interval, and whether the log can tell them apart (else the
    hunts per strategy it would take, at 80% power, for a difference of the size seen)."""
    out = {"a": a, "b": b, "randomized": fair, "n_a": ra.n, "n_b": rb.n}
    if ra.n < 2 or rb.n < 2:
        return {**out, "difference": None, "interval": None, "tells": False, "hunts_needed": None}
    d = ra.mean() - rb.mean()
    se = math.sqrt(ra.variance() / ra.n + rb.variance() / rb.n)
    low, high = d - Z95 * se, d + Z95 * se
    tells = low > 0 or high < 0
    needed = None
    if not tells and d != 0:
        needed = math.ceil((Z95 + Z80_POWER) ** 2 * (ra.variance() + rb.variance()) / d**2)
    return {**out, "difference": d, "interval": [low, high], "tells": tells, "hunts_needed": needed}


def record_catalog(record: dict) -> str:
    """The catalog a record names: its id (see catalog.catalog_id), else its name (records from before ids)."""
    info = record.get("catalog")
    if not isinstance(info, dict):
        return "(none)"
    for key in ("id", "name"):
        if isinstance(info.get(key), str) and info[key]:
            return info[key]
    return "(none)"


class CatalogError(ValueError):
    """The log holds no hunts of the catalog asked for, or several catalogs and none was asked for."""


def gather(paths: list[str], since: str | None = None, progress: bool = True, catalog: str | None = None) -> Insights:
    """One pass over the logs (a progress bar by bytes read), counting the hunts of one catalog: `catalog`, else
    the only one the logs hold (CatalogError when they hold several, or none of `catalog`'s)."""
    from tqdm.auto import tqdm

    files = log_files(paths)
    insights = Insights()
    seen: Counter = Counter()  # catalog -> hunts (bounded: a log of a thousand catalogs is told as such)
    total = sum(f.stat().st_size for f in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="reading hunts", disable=not progress) as bar:
        for f in files:
            for record in read_records([f], insights.torn):
                name = record_catalog(record)
                if name in seen or len(seen) < MAX_CATALOGS:
                    seen[name] += 1
                chosen = catalog or next(iter(seen), None)
                if name == chosen and (since is None or str(record.get("time", "")) >= since):
                    insights.add(record)
            bar.update(f.stat().st_size)
    held = ", ".join(f"{name} ({n:,} hunts)" for name, n in seen.most_common())
    if catalog is not None and catalog not in seen and seen:
        raise CatalogError(f"the log holds no hunts of catalog {catalog!r}; it holds: {held}")
    if catalog is None and len(seen) > 1:
        raise CatalogError(f"the log holds {len(seen):,} catalogs; choose one with --catalog: {held}")
    return insights


def titles(src: str | None, ids: set[str]) -> dict[str, str]:
    """The titles of `ids` in the dataset `src` (its `title` column, else nothing)."""
    if not src or not ids:
        return {}
    if src == "demo":
        from catalog.demo import load_demo_catalog

        ds = load_demo_catalog()
    else:
        from catalog.dataset import load_dataset_source

        ds = load_dataset_source(src)
    if "id" not in ds.column_names or "title" not in ds.column_names:
        return {}
    table = ds.select_columns(["id", "title"]).data
    out = {}
    for chunk_ids, chunk_titles in zip(table.column("id").chunks, table.column("title").chunks):
        for ident, title in zip(chunk_ids.to_pylist(), chunk_titles.to_pylist()):
            if ident in ids and title:
                out[ident] = title
    return out


def report(insights: Insights, names: dict[str, str]) -> str:
    """The printed report."""
    s = insights.summary()
    if not s["hunts"]:
        return f"no hunts in the log ({s['torn_lines']} torn lines)"
    lines = [
        f"{s['hunts']:,} hunts, {s['found']:,} found ({s['share_found']:.0%}); ended: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(s["ended"].items()))
        + f"; {s['searches_per_hunt']:.2f} searches per hunt; {s['torn_lines']} torn lines skipped",
        "",
        f"{'strategy':<10} {'hunts':>7} {'found':>7} {'median':>7} {'p90':>6} {'mean rounds (95%)':>24}",
    ]
    for name, st in s["strategies"].items():
        ci = st["mean_rounds_95"]
        mean = (
            "-"
            if st["mean_rounds"] is None
            else f"{st['mean_rounds']:.2f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")
        )
        median = "-" if st["median_rounds"] is None else f"{st['median_rounds']:.1f}"
        p90 = "-" if st["p90_rounds"] is None else f"{st['p90_rounds']:.1f}"
        lines.append(f"{name:<10} {st['hunts']:>7,} {st['found'] / st['hunts']:>7.0%} {median:>7} {p90:>6} {mean:>24}")
    c = s["comparison"]
    if c:
        lines.append("")
        over = (
            "hunts drawn at random (--compare)"
            if c["randomized"]
            else "all hunts (not drawn at random: not a fair test)"
        )
        if c["difference"] is None:
            lines.append(f"{c['a']} vs {c['b']}: too few found hunts to compare ({c['n_a']} and {c['n_b']})")
        else:
            lo, hi = c["interval"]
            verdict = (
                f"{c['a'] if c['difference'] < 0 else c['b']} finds in fewer rounds"
                if c["tells"]
                else "the log is too small to tell"
                + (
                    f": about {c['hunts_needed']:,} found hunts per strategy would show a difference this size"
                    if c["hunts_needed"]
                    else ""
                )
            )
            lines.append(
                f"{c['a']} - {c['b']}: {c['difference']:+.2f} rounds (95%: {lo:+.2f} to {hi:+.2f}), over "
                f"{over}; {verdict}"
            )
    for title, rows in (("most found", s["most_found"]), ("shown most, never picked", s["never_picked"])):
        lines += ["", f"{title}:"] + [f"  {n:>6,}  {p}" + (f"  {names[p]}" if p in names else "") for p, n in rows]
    lines += ["", "typed searches that matched nothing:"]
    lines += [f"  {n:>6,}  {w}" for w, n in s["no_match_searches"][:50]] or ["  (none)"]
    return "\n".join(lines)


def plot(insights: Insights, path: str) -> None:
    """% of hunts found within k rounds, per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    top = max((max(s.rounds.counts, default=0) for s in insights.strategies.values()), default=0)
    xs = list(range(1, max(top, 1) + 1))
    for name, s in sorted(insights.strategies.items()):
        done, ys = 0, []
        for x in xs:
            done += s.rounds.counts.get(x, 0)
            ys.append(100 * done / s.hunts)
        ax.plot(xs, ys, label=f"{name} ({s.hunts:,} hunts)")
    ax.set(xlabel="rounds", ylabel="% of hunts found", title="Hunts found within k rounds", ylim=(0, 101))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def since_text(text: str) -> str:
    """--since as the records write time (YYYY-MM-DDTHH:MMZ), from a date or a date and time."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-01 or 2026-11-01T09:30") from None
    return when.strftime("%Y-%m-%dT%H:%MZ")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked before any log is read: a mistake is one `error:` line and exit code 2."""
    ap = ArgumentParser(prog="insights.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+", metavar="LOG", help="hunt log files, or folders of them (rotated ones too)")
    ap.add_argument(
        "--dataset", metavar="SRC", help="the catalog (as for app.py, or 'demo'): its hunts, and product titles"
    )
    ap.add_argument(
        "--catalog",
        metavar="ID",
        help="report this catalog's hunts, as the records name it (default: the one --dataset gives, else the "
        "log's only one)",
    )
    ap.add_argument("--since", type=since_text, metavar="DATE", help="only hunts from this UTC date (and time) on")
    ap.add_argument("--plot", metavar="PNG", help="write %% of hunts found vs rounds, per strategy")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object instead")
    args = ap.parse_args(argv)
    for p in args.logs:
        if not Path(p).exists():
            ap.error(f"hunt log {p} does not exist")
        if not Path(p).is_dir() and not Path(p).is_file():  # /dev/zero would never end, a FIFO never start
            ap.error(f"hunt log {p} is not a regular file or a folder (a FIFO, a device or a socket is never read)")
    if args.plot:
        plot_to = Path(args.plot).expanduser()
        if plot_to.is_dir():
            ap.error(f"--plot {args.plot} is a folder; give a file such as {plot_to / 'found.png'}")
        if plot_to.suffix.lower() not in PLOT_FORMATS:
            ap.error(f"--plot {args.plot}: give a file ending in one of {', '.join(PLOT_FORMATS)}")
        if not plot_to.resolve().parent.is_dir():
            ap.error(f"--plot {args.plot}: its folder does not exist")
    return args


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: read the logs, print the report (or JSON), write the plot; returns the exit code."""
    args = parse_args(argv)
    catalog = args.catalog or (catalog_id(args.dataset) if args.dataset else None)
    try:
        insights = gather(args.logs, args.since, progress=not args.json, catalog=catalog)
    except (CatalogError, ValueError, OSError) as exc:  # several catalogs; a log swapped for a FIFO since the check
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(insights.summary(), ensure_ascii=False))
    else:
        s = insights.summary()
        wanted = {p for p, _ in s["most_found"]} | {p for p, _ in s["never_picked"]}
        try:
            names = titles(args.dataset, wanted)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(report(insights, names))
    if args.plot:
        plot(insights, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
