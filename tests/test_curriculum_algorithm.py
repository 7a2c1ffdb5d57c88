"""The SSA and MSA loops of ``curriculum.algorithm`` over an in-memory ``Runs``: no files, no processes."""
import pytest

from curriculum import algorithm
from curriculum.reliability import select
from curriculum.search import greedy_threshold_search


def sample(source, k, reliability, clean):
    return (f"{source}_{k}_{'clean' if clean else 'noisy'}.jpg", reliability, [0, 0, 9, 9], "a thing", "-")


SOURCES = {name: [sample(name, k, r, clean) for k, (r, clean) in enumerate(rows)] for name, rows in {
    "easy": [(0.9, True), (0.8, True), (0.6, False), (0.3, False), (0.2, True), (0.95, True)],
    "hard": [(0.7, True), (0.4, False), (0.55, True), (0.1, False), (0.65, False), (0.85, True)]}.items()}


def accuracy(samples):
    """A model is as good as its clean samples outnumber its noisy ones."""
    return sum(1 if "clean" in s[0] else -1.5 for s in samples) / 10


class MemoryRuns:
    """Measurers score a sample by its stored reliability (its own source) or 0.9 times it (another source)."""

    def __init__(self, min_samples=1):
        self.min_samples, self.trained, self.scored = min_samples, [], []

    def measurer(self, source, samples):
        return f"model_{source}"

    def score(self, measurer, model, source, samples):
        self.scored.append((measurer, source))
        return [s[1] * (1.0 if measurer == source else 0.9) for s in samples]

    def train(self, candidate, samples):
        self.trained.append(candidate)
        return None if len(samples) < self.min_samples else accuracy(samples)

    def search(self, evaluate, step, source, measurer):
        return greedy_threshold_search(evaluate, 0.5, 0.1)


def test_ssa_keeps_the_subset_of_the_best_threshold():
    runs = MemoryRuns()
    step = algorithm.ssa(SOURCES["easy"], runs)
    r = [s[1] for s in SOURCES["easy"]]
    found = greedy_threshold_search(lambda h: accuracy(select(SOURCES["easy"], r, h)), 0.5, 0.1)
    assert (step.h_star, step.accuracy) == (found.h_star, found.accuracy)
    assert step.new == select(SOURCES["easy"], r, found.h_star)
    assert runs.scored == [("source", "source")]
    with pytest.raises(algorithm.NoFeasibleThreshold):
        algorithm.ssa(SOURCES["easy"], MemoryRuns(min_samples=100))


def test_msa_adds_each_source_easy_to_hard_with_its_best_measurer():
    runs = MemoryRuns()
    steps = list(algorithm.msa(SOURCES, ["easy", "hard"], runs))
    assert runs.scored == [("easy", "easy"), ("easy", "hard"), ("hard", "easy"), ("hard", "hard")]
    chosen = []
    for step, j in zip(steps, ["easy", "hard"]):
        assert step.source == j and set(step.searches) == {"easy", "hard"}
        best = max(step.searches.values(), key=lambda found: found.accuracy).accuracy
        assert step.accuracy == best
        assert step.new == select(SOURCES[j], step.reliability, step.h_star)
        # every candidate of the step trained on what the earlier steps chose plus its own new samples
        for c in runs.trained:
            if c.step == step.step:
                assert c.source == j and c.n_new == len(select(SOURCES[j], [
                    s[1] * (1.0 if c.measurer == j else 0.9) for s in SOURCES[j]], c.h))
        chosen += step.new
    assert steps[1].accuracy == pytest.approx(accuracy(chosen))
    only_own = list(algorithm.msa(SOURCES, ["easy", "hard"], MemoryRuns(), source_specific_only=True))
    assert [set(step.searches) for step in only_own] == [{"easy"}, {"hard"}]
