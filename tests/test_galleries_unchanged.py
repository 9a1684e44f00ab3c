"""Behaviour-preserving steps prove it: the galleries of every strategy, on fixed seeds, equal those recorded.

    python tests/test_galleries_unchanged.py --record    # only when a change is meant to alter galleries

The recording (tests/data/galleries.json) is exact for every strategy; a refactor that changes one product of
one gallery fails here. It holds on any x86-64 CPU: `mean`, `rocchio` and `random` were recorded before the
house-keeping of issue 22 and never changed; `bayes` was recorded again (issue 30) once its choices stopped
depending on the CPU's kernels (its particles are sorted before use, its gains compared with a tie tolerance),
and `test_galleries_do_not_depend_on_the_cpu` plays them again with numpy held to its baseline kernels.

The catalog is demo-sized and synthetic
(2,000 products in 20 clusters, 64-d, with a 48-d second view for `bayes`); each hunt is a model-eyed shopper
picking the shown product nearest a target, with typed queries (a vector, then rows) and a restore midway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RECORD = Path(__file__).resolve().parent / "data" / "galleries.json"
ROUNDS = 8


def catalog() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 64))
    x = centres[rng.integers(0, 20, 2000)] + 0.5 * rng.standard_normal((2000, 64)) / 8
    return x.astype(np.float32), {"appearance": rng.random((2000, 48)).astype(np.float32)}


def hunt(rec, strategy: str, seed: int, target: int, query=None) -> list[list[int]]:
    """The galleries a model-eyed shopper hunting `target` sees; restored from its saved state at round 4."""
    session = rec.new_session(seed=seed, strategy=strategy)
    shown = session.next_round(query=query)
    galleries = [shown]
    for r in range(ROUNDS):
        if not shown or target in shown:
            break
        pick = shown[int(np.argmax(rec.unit[shown] @ rec.unit[target]))]
        if r == 3:
            session = rec.restore_session(json.loads(json.dumps(session.to_dict())), seed=seed + 100)
        shown = session.next_round(pick=pick)
        galleries.append(shown)
    return galleries


def play_all() -> dict[str, list]:
    from recommender import STRATEGIES, Recommender

    x, views = catalog()
    out: dict[str, list] = {}
    for compression in ("none", "sq8"):
        rec = Recommender(x, seed=0, views=views, compression=compression)
        for strategy in sorted(s for s in STRATEGIES if s in ("mean", "random", "rocchio", "bayes")):
            for seed in range(3):
                target = 37 * seed + 11
                key = f"{compression}/{strategy}/{seed}"
                out[key] = hunt(rec, strategy, seed, target)
                out[key + "/vector"] = hunt(rec, strategy, seed, target, query=x[target] + x[5])
                out[key + "/rows"] = hunt(rec, strategy, seed, target, query=list(range(0, 2000, 7)))
    return out


def test_galleries_equal_the_recording():
    recorded = json.loads(RECORD.read_text())
    played = play_all()
    assert played.keys() == recorded.keys()
    different = [k for k in recorded if played[k] != recorded[k]]
    assert not different, f"galleries changed: {different[:5]}"


def test_galleries_do_not_depend_on_the_cpu():
    """The same galleries with numpy's kernels for this CPU (AVX2, AVX-512) turned off: no choice hangs on how a
    CPU rounds a log or orders a partition."""
    from numpy._core import _multiarray_umath as umath

    extra = [f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f)]
    if not extra:
        pytest.skip("this CPU runs numpy's baseline kernels only: nothing to turn off")
    already = os.environ.get("NPY_DISABLE_CPU_FEATURES", "").replace(",", " ").split()  # e.g. held to AVX2
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(dict.fromkeys([*already, *extra]))}
    res = subprocess.run(
        [sys.executable, __file__, "--print"], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    held, here = json.loads(res.stdout), play_all()
    assert held == here, [k for k in held if held[k] != here[k]][:5]


if __name__ == "__main__":
    if "--record" in sys.argv:
        RECORD.write_text(json.dumps(play_all()))
        print(f"recorded {RECORD}")
    elif "--print" in sys.argv:
        print(json.dumps(play_all()))
