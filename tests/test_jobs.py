"""``demo.jobs.run_jobs``: the demo's lanes. Jobs wait for what they need, the list order is the priority, no more
than ``lanes`` run at once, and a failure stops new jobs and is raised."""
import threading
from collections import defaultdict

import pytest

from demo.jobs import Job, run_jobs


class Recorder:
    """Jobs that log their start and end. Orderings come from events, not timing: a job records its start only once
    the jobs in ``starts_after`` have started, and ends only once those in ``ends_after`` have ended and those in
    ``ends_once_started`` have started."""

    def __init__(self) -> None:
        self.events = []
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.lanes = {}
        self.signals = defaultdict(threading.Event)
        self.failed_lanes = {}

    def _signal(self, kind, name):
        with self.lock:  # one Event per key even when two threads ask for it first at once
            return self.signals[(kind, name)]

    def _wait(self, kind, names):
        for name in names:
            assert self._signal(kind, name).wait(timeout=30), f"{name} never reached its {kind}"
            if kind == "end" and name in self.failed_lanes:  # a lane ends only after run_jobs has seen the failure
                self.failed_lanes[name].join(timeout=30)

    def job(self, name, needs=(), starts_after=(), ends_after=(), ends_once_started=(), fail=False):
        def run(done, lanes):
            self._wait("start", starts_after)
            with self.lock:
                self.events.append(("start", name, tuple(sorted(done))))
                self.lanes[name] = lanes
                self.running += 1
                self.most = max(self.most, self.running)
            if fail:
                self.failed_lanes[name] = threading.current_thread()
            self._signal("start", name).set()
            try:
                self._wait("end", ends_after)
                self._wait("start", ends_once_started)
                with self.lock:
                    self.running -= 1
                    self.events.append(("end", name))
                if fail:
                    raise RuntimeError(f"{name} failed")
                return f"result of {name}"
            finally:
                self._signal("end", name).set()
        return Job(name, run, needs)

    def started(self):
        return [e[1] for e in self.events if e[0] == "start"]


def test_jobs_start_after_their_needs_in_priority_order_on_the_given_lanes():
    rec = Recorder()
    jobs = [rec.job("a", ends_after=("d",)), rec.job("b", starts_after=("a",)), rec.job("c", needs=("a",)),
            rec.job("d"), rec.job("e", needs=("c", "d"))]
    results = run_jobs(jobs, lanes=2)
    assert results == {name: f"result of {name}" for name in "abcde"}
    assert list(results) == list("abcde")
    # b ends first; c still waits for a (which outlasts d), so the free lane takes d (the next ready job), then c
    assert rec.started() == ["a", "b", "d", "c", "e"]
    assert rec.most == 2
    # c starts when only e (which needs it) waits and d's lane is idle: both lanes; so does e, alone at the end
    assert rec.lanes == {"a": 1, "b": 1, "c": 2, "d": 1, "e": 2}
    for event in rec.events:  # every job saw the results of all it needs
        if event[0] == "start":
            needs = next(j.needs for j in jobs if j.name == event[1])
            assert set(needs) <= set(event[2])
    order = [e[1] for e in rec.events if e[0] == "end"]
    assert order.index("c") < order.index("e") and order.index("d") < order.index("e")


def test_one_lane_runs_the_jobs_one_at_a_time_in_dependency_order():
    rec = Recorder()
    jobs = [rec.job("late", needs=("early",)), rec.job("early")]
    run_jobs(jobs, lanes=1)
    assert rec.started() == ["early", "late"] and rec.most == 1 and rec.lanes == {"early": 1, "late": 1}


def test_a_job_shares_only_the_lanes_nobody_else_holds():
    rec = Recorder()
    jobs = [rec.job("long", ends_after=("last",)), rec.job("short", starts_after=("long",)),
            rec.job("last", needs=("short",))]
    run_jobs(jobs, lanes=3)
    # 'short' starts with the third lane idle and only 'last' (which needs it) waiting; 'long' keeps its lane
    assert rec.lanes == {"long": 1, "short": 2, "last": 2}


def test_a_job_that_all_waiting_jobs_need_gets_the_idle_lanes_and_others_do_not():
    rec = Recorder()
    jobs = [rec.job("train", ends_after=("other",)), rec.job("other", starts_after=("train",)),
            rec.job("final", needs=("train",)), rec.job("report", needs=("final",))]
    run_jobs(jobs, lanes=2)
    # 'final' starts with only 'report' (which needs it) waiting and the other lane idle: both lanes
    assert rec.lanes == {"train": 1, "other": 1, "final": 2, "report": 2}
    rec = Recorder()
    jobs = [rec.job("train", ends_after=("other",)), rec.job("other", starts_after=("train",)),
            rec.job("final", needs=("train",)), rec.job("side", needs=("train",))]
    run_jobs(jobs, lanes=2)
    assert rec.lanes["final"] == 1  # 'side' does not need it and can use the other lane


def test_a_failure_stops_new_jobs_lets_running_ones_finish_and_is_raised():
    rec = Recorder()
    jobs = [rec.job("bad", ends_once_started=("slow",), fail=True),
            rec.job("slow", starts_after=("bad",), ends_after=("bad",)), rec.job("after", needs=("slow",)),
            rec.job("child", needs=("bad",))]
    with pytest.raises(RuntimeError, match="bad failed"):
        run_jobs(jobs, lanes=2)
    assert rec.started() == ["bad", "slow"]
    assert ("end", "slow") in rec.events  # the running job was not abandoned


@pytest.mark.parametrize("jobs, message", [
    ([Job("a", lambda d, n: 1, needs=("missing",))], "needs unknown job"),
    ([Job("a", lambda d, n: 1, needs=("b",)), Job("b", lambda d, n: 1, needs=("a",))], "cycle"),
    ([Job("a", lambda d, n: 1), Job("a", lambda d, n: 2)], "unique"),
])
def test_bad_job_lists_are_refused_before_anything_runs(jobs, message):
    with pytest.raises(ValueError, match=message):
        run_jobs(jobs, lanes=2)
    with pytest.raises(ValueError, match="lanes=0"):
        run_jobs([Job("a", lambda d, n: 1)], lanes=0)
