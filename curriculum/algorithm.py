"""The paper's self-paced curricula (docs/curriculum.md), written over the two things they need from outside:
training a model on samples and scoring samples with a model (``Runs``).

SSA (single-source self-paced adapting): a measurer trained on every pseudo label scores them; the greedy search
(``curriculum.search``) picks the threshold h* whose reliable subset percent(H, h*) trains the best model.

MSA (multi-source self-paced adapting): sources in order of difficulty, easy to hard (``curriculum.difficulty``);
one measurer per source; R_ij, source j scored by measurer i (source-specific when i = j, cross-source otherwise).
Step t searches, for each measurer i, the threshold h whose subset of source j trains the best model together with
the samples D chosen in steps 1 .. t-1; the best (i*, h*) adds percent(R_i*j, h*) to D.

How runs are launched, cached, recorded and resumed is the business of ``Runs``' implementations (the drivers
``curriculum.ssa`` and ``curriculum.msa`` over ``curriculum.runs``); nothing here touches a file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence

import numpy as np

from curriculum.reliability import select
from curriculum.search import SearchResult

Samples = List[Any]
"""Split-file sample tuples, in split order."""


@dataclass(frozen=True)
class Candidate:
    """A candidate training set: the samples chosen before step ``step``, plus the ``n_new`` samples of ``source``
    whose reliability under ``measurer`` is at least ``h``."""
    step: int
    source: str
    measurer: str
    h: float
    n_new: int


class Runs(Protocol):
    """Training and scoring, as the curricula see them."""

    def measurer(self, source: str, samples: Samples) -> str:
        """The measurer of ``source``: a model trained on all of ``samples`` (or one given); its checkpoint."""

    def score(self, measurer: str, model: str, source: str, samples: Samples) -> np.ndarray:
        """The reliability of each of ``samples`` (source ``source``) under ``model``, the measurer of
        ``measurer``."""

    def train(self, candidate: Candidate, samples: Samples) -> Optional[float]:
        """The best validation accuracy of a model trained on ``samples``, or None when they are too few to train
        on (an infeasible threshold)."""

    def search(self, evaluate: Callable[[float], Optional[float]], step: int, source: str,
               measurer: str) -> SearchResult:
        """The greedy threshold search of ``evaluate`` (``curriculum.search``), with the driver's start, step and
        ``min_gain``."""


@dataclass
class Step:
    """What one curriculum step chose: source ``source`` scored by ``measurer`` at threshold ``h_star`` adds
    ``new``; ``searches`` holds the search of every measurer tried, ``reliability`` the chosen measurer's scores."""
    step: int
    source: str
    measurer: str
    searches: Dict[str, SearchResult]
    reliability: np.ndarray
    new: Samples

    @property
    def h_star(self) -> float:
        return self.searches[self.measurer].h_star

    @property
    def accuracy(self) -> Optional[float]:
        return self.searches[self.measurer].accuracy


class NoFeasibleThreshold(Exception):
    """Step ``step`` (source ``source``): every threshold of every measurer was infeasible."""

    def __init__(self, step: int, source: str) -> None:
        super().__init__(f"step {step} ({source}): no feasible threshold")
        self.step, self.source = step, source


def ssa(samples: Samples, runs: Runs, source: str = "source") -> Step:
    """Single-source self-paced adapting of ``samples``; the step's ``new`` is percent(H, h*)."""
    model = runs.measurer(source, samples)
    reliability = runs.score(source, model, source, samples)

    def evaluate(h: float) -> Optional[float]:
        chosen = select(samples, reliability, h)
        return runs.train(Candidate(1, source, source, h, len(chosen)), chosen)

    found = runs.search(evaluate, 1, source, source)
    if found.accuracy is None:
        raise NoFeasibleThreshold(1, source)
    return Step(1, source, source, {source: found}, reliability, select(samples, reliability, found.h_star))


def msa(sources: Dict[str, Samples], order: Sequence[str], runs: Runs, source_specific_only: bool = False,
        min_gain: float = 0.0) -> Iterator[Step]:
    """Multi-source self-paced adapting of ``sources`` taken in ``order`` (easy to hard): yields each step once it
    has chosen; D is the concatenation of the steps' ``new``. ``source_specific_only``: each source is scored by
    its own measurer only; ``min_gain``: see ``best_measurer``."""
    models = {i: runs.measurer(i, sources[i]) for i in order}
    reliability = {(i, j): runs.score(i, models[i], j, sources[j])
                   for i in order for j in order if i == j or not source_specific_only}
    chosen: Samples = []  # D
    for t, j in enumerate(order, 1):
        searches: Dict[str, SearchResult] = {}
        for i in ([j] if source_specific_only else order):
            def evaluate(h: float, i: str = i) -> Optional[float]:
                new = select(sources[j], reliability[i, j], h)
                return runs.train(Candidate(t, j, i, h, len(new)), chosen + new)

            searches[i] = runs.search(evaluate, t, j, i)
        best = best_measurer(searches, j, order, min_gain)
        if searches[best].accuracy is None:
            raise NoFeasibleThreshold(t, j)
        new = select(sources[j], reliability[best, j], searches[best].h_star)
        chosen = chosen + new
        yield Step(t, j, best, searches, reliability[best, j], new)


def best_measurer(found: Dict[str, SearchResult], source: str, order: Sequence[str], min_gain: float = 0.0) -> str:
    """The measurer whose search found the best accuracy; ties prefer the source-specific measurer, then the earlier
    one in ``order``. Another measurer replaces the source-specific one only when better by more than ``min_gain``
    (as a threshold replaces hm in the search)."""
    def rank(i: str) -> tuple:
        acc = found[i].accuracy
        return (-np.inf if acc is None else acc, i == source, -list(order).index(i))
    best = max(found, key=rank)
    if best != source and source in found and found[source].accuracy is not None:
        if found[best].accuracy <= found[source].accuracy + min_gain:
            return source
    return best
