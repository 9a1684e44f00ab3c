"""What a strategy is: how it chooses a round's first products, how many slots it fills, and what it tells the shopper.

A strategy's `choose(session, n)` gets a shopper's session (recommender.py's `Session`: picks, history, unseen
bitmap, query) and how many of the round's slots it may fill; it returns a `Choice`: unseen rows, best first, and
how many of them (at the front) are look-alikes of what the shopper wants (the gallery marks them). The session
fills the rest of the round with uniform random unseen rows. recommender.py holds the registry, `STRATEGIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple


class Choice(NamedTuple):
    """A strategy's rows for a round, best first, and how many of them (at the front) are look-alikes."""

    rows: list[int]
    n_alike: int


@dataclass(frozen=True)
class Strategy:
    """One way of choosing rounds, under its name."""

    name: str
    choose: Callable[[Any, int], Choice]  # (a recommender.Session, the slots it may fill) -> Choice
    slots: str  # the slots it may fill: "similar" (the recommender's `similar`), "all" (the round) or "none"
    sentence: str  # what it does, in one plain sentence for the shopper (Settings)

    def n_slots(self, per_round: int, similar: int) -> int:
        """How many of a round's `per_round` slots it may fill, `similar` being the recommender's setting."""
        return {"similar": similar, "all": per_round, "none": 0}[self.slots]
