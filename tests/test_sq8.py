"""compression="sq8": the float32 answer from 8-bit codes, rows left on disk (memmap, Arrow) and read by pread."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

import recommender
from engine import bayes
from engine.rows import Bitmap, UnitRows, file_mapped
from recommender import Recommender


def rss_file_mb() -> float:
    """File-backed resident memory of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssFile")


def catalogs(n: int = 2000, d: int = 48) -> dict[str, np.ndarray]:
    """Random, clustered and adversarial catalogs (exact duplicates, near-ties one float32 step apart); n >= 1000."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((15, d)).astype(np.float32)
    adversarial = rng.standard_normal((n, d)).astype(np.float32)
    adversarial[n // 4 : n // 2] = adversarial[: n // 4]  # every row of the first quarter twice
    base = adversarial[0] / np.linalg.norm(adversarial[0])
    adversarial[n // 2 : n // 2 + 300] = base  # 300 identical rows: ties far beyond the first scan's candidates
    near = np.repeat(base[None], 200, axis=0)
    near[np.arange(200), np.arange(200) % d] = np.nextafter(near[np.arange(200), np.arange(200) % d], np.float32(9))
    adversarial[n // 2 + 300 : n // 2 + 500] = near  # rows one float32 step from them
    return {
        "random": rng.standard_normal((n, d)).astype(np.float32),
        "clustered": (centres[rng.integers(0, 15, n)] + 0.05 * rng.standard_normal((n, d))).astype(np.float32),
        "adversarial": adversarial,
    }


def run_sessions(rec: Recommender, strategy: str, sessions: int = 2) -> list[list[int]]:
    """Every gallery of `sessions` shoppers who click at random until the catalog is exhausted."""
    shown_all = []
    for s in range(sessions):
        session = rec.new_session(seed=s, strategy=strategy)
        shown, pick_rng = session.next_round(), random.Random(s)
        while True:
            shown_all.append(shown)
            if session.exhausted:
                break
            shown = session.next_round(pick=pick_rng.choice(shown))
    return shown_all


@pytest.mark.parametrize("name", ["random", "clustered", "adversarial"])
@pytest.mark.parametrize("strategy", ["mean", "rocchio"])
def test_sq8_equals_float32_over_whole_sessions(name: str, strategy: str) -> None:
    x = catalogs()[name]
    flat = Recommender(x, seed=0)
    sq8 = Recommender(x, seed=0, compression="sq8", threads=3)  # three shards, the last not a multiple of 8
    assert len(sq8.sq8_index.shards) == 3
    expected = run_sessions(flat, strategy)
    assert run_sessions(sq8, strategy) == expected
    assert len(expected) == 2 * 200  # 2000 products, 10 a round, to exhaustion
    if name == "adversarial":  # the 300 ties needed wider scans than the first: the bound did the work
        assert sq8.sq8_index.scans > sq8.sq8_index.searches


def test_float32_settles_ties_toward_the_lower_row() -> None:
    x = np.random.default_rng(1).standard_normal((500, 16)).astype(np.float32)
    x[100:400] = x[0]  # 301 identical rows
    session = Recommender(x, seed=0).new_session(seed=0)
    assert session.search(x[0], 5) == [0, 100, 101, 102, 103]


def test_bound_holds_for_every_row() -> None:
    x = catalogs()["clustered"]
    rec = Recommender(x, seed=0, compression="sq8")
    codes, bits = rec.sq8_index, Bitmap(rec.n).bits
    rng = np.random.default_rng(2)
    for _ in range(20):
        q = rec.unit[rng.choice(rec.n, rng.integers(1, 6))].mean(axis=0).astype(np.float32)
        u, lam, a0, eps = codes._query(q)
        scores, ids = codes._scan(u, rec.n, bits)
        approx = a0 + lam * scores.astype(np.float64)
        exact = rec.unit[ids].astype(np.float64) @ q.astype(np.float64)
        assert np.abs(approx - exact).max() <= eps
        assert eps < 0.05  # and the bound is tight enough to be useful


@pytest.mark.slow
def test_sq8_reads_a_memmap_without_holding_it(tmp_path) -> None:
    x = catalogs(20_000, 256)["clustered"]
    path = tmp_path / "rows.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    assert file_mapped([mm]) == [True]
    before = rss_file_mb()
    rec = Recommender(mm, seed=0, compression="sq8")
    assert rss_file_mb() - before < 5  # the 20 MB file was read in blocks, each dropped once read
    assert rec.sq8_index.nbytes == 20_000 * 256
    before = rss_file_mb()
    rec.unit[np.random.default_rng(0).choice(20_000, 5000)]  # 5 MB of rows, read with pread
    assert rss_file_mb() - before < 2
    flat = Recommender(x, seed=0)
    np.testing.assert_array_equal(rec.unit[[5, 17, 19_999]], flat.unit[[5, 17, 19_999]])  # bit for bit
    assert run_sessions(rec, "mean", 1)[:300] == run_sessions(flat, "mean", 1)[:300]


def test_float32_build_from_a_memmap_leaves_no_file_pages(tmp_path) -> None:
    x = catalogs(20_000, 256)["random"]
    np.save(tmp_path / "rows.npy", x)
    before = rss_file_mb()
    rec = Recommender(np.load(tmp_path / "rows.npy", mmap_mode="r"), seed=0)
    assert rss_file_mb() - before < 5
    np.testing.assert_allclose(np.linalg.norm(rec.unit, axis=1), 1, atol=1e-6)


def test_sq8_over_a_saved_datasets_arrow_blocks(tmp_path) -> None:
    import datasets

    from catalog.dataset import embedding_blocks

    x = catalogs(3000, 32)["clustered"]
    datasets.Dataset.from_dict({"embeddings": x.tolist()}).save_to_disk(tmp_path / "ds")
    ds = datasets.load_from_disk(tmp_path / "ds")
    blocks = embedding_blocks(ds)
    assert len(blocks) > 1 and all(file_mapped(blocks))  # zero-copy views of the mapped Arrow file
    rec = Recommender(blocks, seed=0, compression="sq8")
    assert isinstance(rec.unit, UnitRows)
    assert run_sessions(rec, "rocchio", 1) == run_sessions(Recommender(x, seed=0), "rocchio", 1)


@pytest.mark.slow
def test_bayes_on_sq8_matches_float32(monkeypatch) -> None:
    x = catalogs(1500, 96)["clustered"]
    flat, sq8 = Recommender(x, seed=0), Recommender(x, seed=0, compression="sq8")
    assert run_sessions(sq8, "bayes", 1) == run_sessions(flat, "bayes", 1)
    # the PCA projection used on big catalogs is made the same way from rows on disk
    monkeypatch.setattr(bayes, "BAYES_EXACT_BUDGET", 1000)
    flat, sq8 = Recommender(x, seed=0), Recommender(x, seed=0, compression="sq8")
    assert bayes.belief_rows(sq8).shape == (1500, bayes.BAYES_DIM)
    np.testing.assert_array_equal(bayes.belief_rows(sq8), bayes.belief_rows(flat))
    galleries = run_sessions(sq8, "bayes", 1)
    assert galleries == run_sessions(flat, "bayes", 1)
    assert len({row for shown in galleries for row in shown}) == 1500  # no repeats, all shown


def test_sq8_respects_exclusions() -> None:
    x = catalogs(1000, 32)["random"]
    rec = Recommender(x, seed=0, compression="sq8")
    near = rec.new_session(seed=0).search(x[0], 20)
    rec.hide(near[:10])
    session = rec.new_session(seed=0)
    assert not set(session.search(x[0], 10)) & set(near[:10])
    assert session.search(x[0], 10) == near[10:20]


def test_sq8_errors() -> None:
    x = catalogs(1000, 8)["random"]
    with pytest.raises(ValueError, match="unknown compression"):
        Recommender(x, compression="pq4")
    with pytest.raises(ValueError, match="cannot be combined"):
        Recommender(x, compression="sq8", index_factory="IVF4,Flat")
    x[37, 2] = np.nan
    with pytest.raises(ValueError, match="row 37"):
        Recommender(x, compression="sq8")
    assert Recommender(catalogs(1000, 8)["random"], compression="none").sq8_index is None


def test_auto_compression_from_256_mb_of_float32() -> None:
    assert recommender.choose_compression("auto", 87_382, 768) == "sq8"
    assert recommender.choose_compression("auto", 87_381, 768) is None
    assert recommender.choose_compression("auto", 2000, 1280) is None  # the demo catalog stays float32
    assert recommender.choose_compression("none", 10**7, 768) is None
    assert recommender.choose_compression("sq8", 10, 4) == "sq8"
