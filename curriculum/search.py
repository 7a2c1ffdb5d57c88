"""The greedy reliability-threshold search (docs/curriculum.md) of SSA and of each MSA step.

Start at hm = ``start`` (0.5); evaluate hm, hl = hm - delta and hr = hm + delta (thresholds outside
[``lower``, ``upper``] are skipped); stop when hm is at least as good as both neighbours, else move hm to the
better neighbour and repeat. With ``min_gain`` > 0 a neighbour must beat hm by more than ``min_gain`` to replace it
(differences within validation noise keep hm; 0, the default, is the paper's rule). Thresholds lie on the grid
start + k * delta, computed in exact 1e-9 units, and each is evaluated at most once (cache key: the threshold rounded
to 1e-6).

Decisions where the paper is silent:
- ties between hm and its best neighbour keep hm (stop): moving only on a strict gain (above ``min_gain``) guarantees
  termination;
- ties between hl and hr prefer hr, the higher threshold (more reliable, smaller and cheaper data);
- ``evaluate`` may return None for an infeasible threshold (e.g. too few samples selected): it ranks below every
  accuracy, so the search moves away from it; if nothing is feasible the result's accuracy is None.
Because every move strictly improves hm's accuracy, hm ends with the best accuracy of all evaluated thresholds (with
``min_gain``, within ``min_gain`` of it).

The search is a deterministic function of ``evaluate``'s answers, so it resumes by replaying against the cached
answers in ``state`` (a JSON-able dict the caller persists, e.g. from ``on_update``). Each step needs hm and both
neighbours; with ``parallel`` > 1 those not yet known are evaluated at the same time (threads; ``evaluate`` must be
thread-safe), and recorded in the order hm, hl, hr either way, so the result does not depend on ``parallel``.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from curriculum.reliability import RESOLUTION, threshold_units

Evaluate = Callable[[float], Optional[float]]


@dataclass
class SearchResult:
    """h*, its accuracy, every evaluation (in evaluation order) and one trace entry per step."""
    h_star: float
    accuracy: Optional[float]
    evaluations: List[Dict[str, Any]] = field(default_factory=list)
    trace: List[Dict[str, Any]] = field(default_factory=list)


def threshold_key(h: float) -> str:
    """Cache key of a threshold: rounded to 1e-6."""
    return f"{round(float(h), 6):.6f}"


def _score(acc: Optional[float]) -> float:
    return -math.inf if acc is None else acc


def _params(start: float, delta: float, lower: float, upper: float, min_gain: float = 0.0) -> Dict[str, float]:
    for name, value in (("start", start), ("lower", lower), ("upper", upper)):
        try:
            threshold_units(value)
        except ValueError:
            raise ValueError(f"search {name} {value!r}: must be a number in [0, 1]") from None
    if not lower <= start <= upper:
        raise ValueError(f"search start {start} is outside the bounds [{lower}, {upper}]")
    if not isinstance(delta, (int, float)) or not math.isfinite(delta) or not 1e-6 <= delta <= 1.0:
        raise ValueError(f"search delta {delta!r}: must be a number in [1e-6, 1]")
    if not isinstance(min_gain, (int, float)) or not 0.0 <= min_gain < 1.0:
        raise ValueError(f"search min_gain {min_gain!r}: must be a number in [0, 1)")
    return {"start": float(start), "delta": float(delta), "lower": float(lower), "upper": float(upper),
            "min_gain": float(min_gain)}


def new_state(start: float = 0.5, delta: float = 0.1, lower: float = 0.0, upper: float = 1.0,
              min_gain: float = 0.0) -> Dict[str, Any]:
    """An empty, JSON-able search state."""
    return {"params": _params(start, delta, lower, upper, min_gain), "evaluations": [], "trace": [], "result": None}


def greedy_threshold_search(evaluate: Evaluate, start: float = 0.5, delta: float = 0.1, lower: float = 0.0,
                            upper: float = 1.0, state: Optional[Dict[str, Any]] = None,
                            on_update: Optional[Callable[[Dict[str, Any]], None]] = None,
                            parallel: int = 1, min_gain: float = 0.0) -> SearchResult:
    """Run (or resume, given a saved ``state``) the greedy search; ``evaluate(h)`` returns the validation accuracy
    of a model trained on percent(H, h), or None when h is infeasible. ``state`` is updated in place and handed to
    ``on_update`` after every new evaluation and at the end. ``parallel``: how many evaluations of one step may
    run at the same time; ``min_gain``: how much a neighbour must beat hm by (more than) to replace it."""
    if parallel < 1:
        raise ValueError(f"parallel={parallel}: must be at least 1")
    params = _params(start, delta, lower, upper, min_gain)
    if state is None:
        state = new_state(start, delta, lower, upper, min_gain)
    elif state.get("params") != params:
        raise ValueError(f"saved search state has parameters {state.get('params')}, this search {params}")
    cache: Dict[str, Optional[float]] = {e["key"]: e["accuracy"] for e in state["evaluations"]}
    trace: List[Dict[str, Any]] = []
    start_u, delta_u = threshold_units(start), int(round(delta * RESOLUTION))
    lower_u, upper_u = threshold_units(lower), threshold_units(upper)

    def grid(k: int) -> Optional[float]:
        units = start_u + k * delta_u
        return units / RESOLUTION if lower_u <= units <= upper_u else None

    def accuracy(h: float) -> Optional[float]:
        return cache[threshold_key(h)]

    def record(h: float, acc: Optional[float]) -> None:
        if acc is not None and not (isinstance(acc, (int, float)) and math.isfinite(acc)):
            raise ValueError(f"evaluate({h}) returned {acc!r}: expected a finite accuracy or None")
        key = threshold_key(h)
        cache[key] = None if acc is None else float(acc)
        state["evaluations"].append({"key": key, "h": h, "accuracy": cache[key]})
        if on_update is not None:
            on_update(state)

    def evaluate_step(k: int) -> None:
        """Evaluate hm = grid(k) and its neighbours where not known yet (``parallel`` at a time)."""
        todo = [h for h in (grid(k), grid(k - 1), grid(k + 1)) if h is not None and threshold_key(h) not in cache]
        if parallel > 1 and len(todo) > 1:
            with ThreadPoolExecutor(min(parallel, len(todo))) as pool:
                for h, acc in zip(todo, list(pool.map(evaluate, todo))):
                    record(h, acc)
        else:
            for h in todo:
                record(h, evaluate(h))

    k = 0
    while True:
        evaluate_step(k)
        hm = grid(k)
        acc_m = accuracy(hm)
        step: Dict[str, Any] = {"hm": hm, "acc_m": acc_m}
        best_k, best_acc = None, None
        for side, nk in (("l", k - 1), ("r", k + 1)):  # hr last: on a tie between neighbours hr wins
            h = grid(nk)
            step[f"h{side}"] = h
            if h is None:
                continue
            acc = accuracy(h)
            step[f"acc_{side}"] = acc
            if best_k is None or _score(acc) >= _score(best_acc):
                best_k, best_acc = nk, acc
        if best_k is None or _score(best_acc) <= _score(acc_m) + min_gain:
            step["move"] = "stop"
            trace.append(step)
            break
        step["move"] = "left" if best_k < k else "right"
        trace.append(step)
        k = best_k
    state["trace"] = trace
    state["result"] = {"h_star": hm, "accuracy": acc_m}
    if on_update is not None:
        on_update(state)
    return SearchResult(h_star=hm, accuracy=acc_m, evaluations=list(state["evaluations"]), trace=trace)
