"""Running interdependent jobs on a fixed number of lanes (threads), each job as soon as what it needs is done.

The demo uses it to keep both CPU lanes busy: every job starts a process of its own, so a lane is a thread that
waits on that process.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Job:
    """``run(done, lanes)`` once every job named in ``needs`` has finished; ``done`` maps their names to their
    results, ``lanes`` is how many lanes' worth of resources the job may use (more than 1 only when the other lanes
    are idle and every job not yet started waits for this one: nothing is left for them to do meanwhile)."""

    name: str
    run: Callable[[Mapping[str, Any], int], Any]
    needs: Tuple[str, ...] = ()


def run_jobs(jobs: Sequence[Job], lanes: int) -> Dict[str, Any]:
    """Run ``jobs`` on ``lanes`` threads and return their results by name. A free lane takes the first job, in
    list order, whose needs are all done (so the list order is the priority). After a failure no new job starts;
    the running ones finish and the first error is raised. A job that every job not yet started waits for gets
    the lanes left idle."""
    if lanes < 1:
        raise ValueError(f"lanes={lanes}: must be at least 1")
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique, got {names}")
    for job in jobs:
        unknown = [n for n in job.needs if n not in names]
        if unknown:
            raise ValueError(f"job {job.name!r} needs unknown job(s) {unknown}; jobs: {names}")
    dependents = _dependents(jobs)

    results: Dict[str, Any] = {}
    started: set = set()
    running = [0]
    errors: List[BaseException] = []
    cond = threading.Condition()

    def next_job() -> Optional[Tuple[Job, int]]:
        with cond:
            while not errors and len(started) < len(jobs):
                for job in jobs:
                    if job.name not in started and all(n in results for n in job.needs):
                        started.add(job.name)
                        running[0] += 1
                        waiting = set(names) - started
                        share = lanes - running[0] + 1 if waiting <= dependents[job.name] else 1
                        return job, share
                cond.wait()
            return None

    def lane() -> None:
        while True:
            picked = next_job()
            if picked is None:
                return
            job, share = picked
            with cond:
                done = dict(results)
            try:
                value = job.run(done, share)
            except BaseException as error:  # re-raised in the caller's thread
                with cond:
                    errors.append(error)
                    running[0] -= 1
                    cond.notify_all()
                return
            with cond:
                results[job.name] = value
                running[0] -= 1
                cond.notify_all()

    threads = [threading.Thread(target=lane, name=f"lane-{i}", daemon=True) for i in range(min(lanes, len(jobs)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return {name: results[name] for name in names}


def _dependents(jobs: Sequence[Job]) -> Dict[str, set]:
    """For every job, the jobs that need it directly or through others; refuses a cycle."""
    needs = {job.name: set(job.needs) for job in jobs}
    order: List[str] = []
    while len(order) < len(needs):
        ready = [n for n, deps in needs.items() if n not in order and deps <= set(order)]
        if not ready:
            raise ValueError("jobs need each other in a cycle: " + ", ".join(sorted(set(needs) - set(order))))
        order += ready
    dependents: Dict[str, set] = {name: set() for name in needs}
    for name in reversed(order):  # dependents come later in the order, so theirs are complete by now
        for dep in needs[name]:
            dependents[dep] |= {name} | dependents[name]
    return dependents
