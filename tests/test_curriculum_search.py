"""The greedy threshold search on stub evaluators whose accuracy is a known function of h."""
import json

import pytest

from curriculum.search import greedy_threshold_search, new_state, threshold_key


class Recorder:
    """evaluate(h) = peak-shaped accuracy; remembers every call."""

    def __init__(self, peak, width=1.0):
        self.peak, self.width, self.calls = peak, width, []

    def __call__(self, h):
        self.calls.append(h)
        return 1.0 - abs(h - self.peak) / self.width


@pytest.mark.parametrize("peak,expected_calls", [
    (0.5, [0.5, 0.4, 0.6]),
    (0.2, [0.5, 0.4, 0.6, 0.3, 0.2, 0.1]),
    (0.8, [0.5, 0.4, 0.6, 0.7, 0.8, 0.9]),
])
def test_finds_the_peak_and_never_repeats_a_threshold(peak, expected_calls):
    f = Recorder(peak)
    result = greedy_threshold_search(f)
    assert result.h_star == pytest.approx(peak)
    assert result.accuracy == pytest.approx(1.0)
    assert f.calls == pytest.approx(expected_calls)
    assert len({threshold_key(h) for h in f.calls}) == len(f.calls)
    assert [e["h"] for e in result.evaluations] == f.calls
    assert result.trace[-1]["move"] == "stop"


@pytest.mark.parametrize("peak,h_star", [(-0.5, 0.0), (1.7, 1.0)])
def test_respects_the_bounds(peak, h_star):
    f = Recorder(peak, width=10.0)
    result = greedy_threshold_search(f)
    assert result.h_star == pytest.approx(h_star)
    assert all(0.0 <= h <= 1.0 for h in f.calls)
    assert len(f.calls) == len(set(threshold_key(h) for h in f.calls))
    last = result.trace[-1]
    assert (last["hl"] if h_star == 0.0 else last["hr"]) is None  # the out-of-range neighbour was skipped


def test_grid_is_exact_with_other_steps_and_bounds():
    f = Recorder(0.05)
    result = greedy_threshold_search(f, start=0.5, delta=0.15)
    assert [threshold_key(h) for h in f.calls] == [threshold_key(h) for h in (0.5, 0.35, 0.65, 0.2, 0.05)]
    assert result.h_star == pytest.approx(0.05)  # 0.05 - 0.15 < 0 is skipped
    f = Recorder(0.9)
    result = greedy_threshold_search(f, start=0.5, delta=0.3, lower=0.2, upper=0.9)
    assert result.h_star == pytest.approx(0.8) and all(0.2 <= h <= 0.9 for h in f.calls)


def test_ties_keep_hm_and_prefer_the_higher_neighbour():
    flat_result = greedy_threshold_search(lambda h: 0.3)  # hm equals both neighbours: kept
    assert flat_result.h_star == 0.5 and len(flat_result.evaluations) == 3
    valley = {0.4: 0.6, 0.5: 0.5, 0.6: 0.6, 0.7: 0.55, 0.3: 0.55}
    result = greedy_threshold_search(lambda h: valley[round(h, 6)])
    assert result.h_star == pytest.approx(0.6)  # hl and hr tie: the higher threshold wins


def test_min_gain_keeps_hm_on_differences_within_noise():
    # seed 3 of the demo's caption step: 0.8 beat 0.5 by one validation expression in 600
    accuracies = {0.2: 127 / 600, 0.5: 129 / 600, 0.8: 130 / 600}
    assert greedy_threshold_search(lambda h: accuracies[round(h, 6)], delta=0.3).h_star == pytest.approx(0.8)
    kept = greedy_threshold_search(lambda h: accuracies[round(h, 6)], delta=0.3, min_gain=0.01)
    assert kept.h_star == 0.5 and kept.trace[-1]["move"] == "stop"
    # a gain above min_gain still moves, and the search goes on from there
    f = Recorder(0.2)
    assert greedy_threshold_search(f, min_gain=0.05).h_star == pytest.approx(0.2)
    ramp = {0.3: 0.30, 0.4: 0.26, 0.5: 0.20, 0.6: 0.10}
    moved_once = greedy_threshold_search(lambda h: ramp[round(h, 6)], min_gain=0.05)
    assert moved_once.h_star == pytest.approx(0.4)  # 0.30 is within 0.05 of 0.26: kept 0.4
    with pytest.raises(ValueError, match="min_gain"):
        greedy_threshold_search(lambda h: 0.0, min_gain=-0.1)
    with pytest.raises(ValueError, match="saved search state"):
        greedy_threshold_search(lambda h: 0.0, state=new_state(min_gain=0.01))


def test_infeasible_thresholds_rank_last():
    result = greedy_threshold_search(lambda h: None if h >= 0.5 else 1.0 - h)
    assert result.h_star == pytest.approx(0.0)
    result = greedy_threshold_search(lambda h: None)
    assert result.accuracy is None and result.h_star == 0.5
    with pytest.raises(ValueError, match="finite accuracy"):
        greedy_threshold_search(lambda h: float("nan"))


def test_resume_from_saved_state_repeats_nothing():
    saved = []

    class Killed(Exception):
        pass

    f = Recorder(0.2)

    def dying(h):
        if len(f.calls) == 3:
            raise Killed
        return f(h)

    with pytest.raises(Killed):
        greedy_threshold_search(dying, on_update=lambda s: saved.append(json.dumps(s)))
    state = json.loads(saved[-1])  # what a driver would have on disk
    g = Recorder(0.2)
    result = greedy_threshold_search(g, state=state)
    assert result.h_star == pytest.approx(0.2)
    assert set(threshold_key(h) for h in g.calls).isdisjoint(threshold_key(h) for h in f.calls)
    uninterrupted = greedy_threshold_search(Recorder(0.2))
    assert [e["h"] for e in result.evaluations] == [e["h"] for e in uninterrupted.evaluations]
    assert result.trace == uninterrupted.trace


def test_parameter_validation_and_state_mismatch():
    with pytest.raises(ValueError, match="delta"):
        greedy_threshold_search(lambda h: 0.0, delta=0.0)
    with pytest.raises(ValueError, match="outside the bounds"):
        greedy_threshold_search(lambda h: 0.0, start=0.1, lower=0.2)
    with pytest.raises(ValueError, match="saved search state"):
        greedy_threshold_search(lambda h: 0.0, delta=0.2, state=new_state(delta=0.1))


def test_parallel_evaluation_runs_a_steps_thresholds_at_once_and_changes_nothing_else():
    import threading

    first_step = threading.Barrier(3, timeout=30)  # breaks unless hm, hl and hr of the first step run together
    calls = []

    def slow(h):
        calls.append(h)
        if len(calls) <= 3:
            first_step.wait()
        return 1.0 - abs(h - 0.2)

    sequential = greedy_threshold_search(Recorder(0.2))
    states = []
    parallel = greedy_threshold_search(slow, parallel=3, on_update=lambda s: states.append(json.dumps(s)))
    assert not first_step.broken  # hm, hl and hr of the first step met at the barrier: they ran at once
    assert parallel.h_star == pytest.approx(sequential.h_star)
    assert parallel.evaluations == sequential.evaluations  # recorded in the order hm, hl, hr all the same
    assert parallel.trace == sequential.trace
    assert len(states) == len(sequential.evaluations) + 1  # persisted after each one, as without parallelism
    with pytest.raises(ValueError, match="parallel=0"):
        greedy_threshold_search(slow, parallel=0)
