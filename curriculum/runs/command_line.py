"""The command line shared by the SSA and MSA drivers: their common flags and checks, the options recorded in the
state file, run lengths (epochs or step budgets per run role) and the launchers built from the flags."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from curriculum.runs.launchers import DEFAULT_SCORE_SCRIPT, DEFAULT_TRAIN_SCRIPT, ScoreLauncher, TrainLauncher
from curriculum.runs.processes import INPROCESS
from datasets.cache import DataCache
from datasets.records import load_split_file, parse_records
from utils.errors import InputError, UsageError
from utils.args import SCRIPT_DEFAULTS, given_flags

PUBLISHED_EPOCHS = 110
"""Epochs of the published unsupervised recipe: the default for measurers, candidates and the final run."""

CONTROLLED_FLAGS = ("dataset", "data_root", "split_root", "output_dir", "epochs", "resume", "eval_set",
                    "eval_model", "eval")
"""Flags the drivers set per run; passing them through is refused."""


def split_argv(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Driver arguments and the training arguments after the first ``--``."""
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, []


def check_passthrough(args: Sequence[str], what: str) -> None:
    """Refuse pass-through arguments that set a flag the driver controls."""
    clash = sorted(given_flags(args) & set(CONTROLLED_FLAGS))
    if clash:
        hint = " (use --candidate_epochs / --final_epochs / --measurer_epochs)" if "epochs" in clash else ""
        raise UsageError(f"{what}: {', '.join('--' + c for c in clash)} is set by the driver for every run and "
                         f"cannot be passed through{hint}")


def train_split_of(train_args: Sequence[str]) -> str:
    """The split the training script trains on: 'train' with ``--sup_type full``, else 'train_pseudo'."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--sup_type", default="un")
    known, _ = p.parse_known_args(list(train_args))
    return "train" if known.sup_type == "full" else "train_pseudo"


def default_min_samples(train_args: Sequence[str], launcher: str) -> int:
    """One full batch per process (training drops the last incomplete batch): the training ``--batch_size``
    (the train script's default without one) times the launcher's ``--nproc_per_node`` (1 without)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--batch_size", type=int, default=SCRIPT_DEFAULTS["train"]["batch_size"])
    batch = p.parse_known_args(list(train_args))[0].batch_size
    q = argparse.ArgumentParser(add_help=False)
    q.add_argument("--nproc_per_node", "--nproc-per-node", default="1")
    nproc = q.parse_known_args(shlex.split(launcher))[0].nproc_per_node
    return batch * (int(nproc) if nproc.isdigit() else 1)


RUN_ROLES = ("measurer", "candidate", "final")
"""The kinds of training run a driver makes; each has its own --ROLE_epochs and, under --update_budget, steps."""


def budget_epochs(n_samples: int, epochs: int, update_budget: Optional[int], samples_per_step: int) -> int:
    """Epochs of a run on ``n_samples``: ``epochs``, or with an ``update_budget`` the fewest epochs that hold that many
    optimizer steps (``n_samples // samples_per_step`` per epoch: training drops the last incomplete batch; the last
    epoch is cut short by the training script's ``--max_steps``), so runs on fewer samples get as many updates as
    runs on more."""
    if not update_budget:
        return epochs
    return -(-update_budget // max(1, n_samples // samples_per_step))


def run_length(args: argparse.Namespace, role: str, n_samples: int) -> Tuple[int, Optional[int]]:
    """``(epochs, max_steps)`` of a driver's training run of ``role`` (one of RUN_ROLES) on ``n_samples``:
    ``--ROLE_epochs`` and no step limit, or under ``--update_budget`` the role's step budget (``--candidate_budget``,
    ``--measurer_budget``, the final run's ``--update_budget``) and the fewest epochs holding it."""
    if role not in RUN_ROLES:
        raise ValueError(f"run role {role!r}: expected one of {', '.join(RUN_ROLES)}")
    steps = getattr(args, f"{role}_budget")
    return budget_epochs(n_samples, getattr(args, f"{role}_epochs"), steps, args.samples_per_step), steps


def final_is_best_candidate(args: argparse.Namespace) -> bool:
    """Whether the final model is the best candidate itself (same epochs and step budget), not one more run."""
    return args.final_epochs == args.candidate_epochs and args.final_budget == args.candidate_budget


def skips_final(args: argparse.Namespace) -> bool:
    """Whether this call stops before the final run (``--search_only``, and the final model is not simply the best
    candidate)."""
    return args.search_only and not final_is_best_candidate(args)


def load_source(path: str, dataset: str, what: str) -> List[Any]:
    """A source split of a driver (``what`` names it in errors), every sample one that training can use: a sample
    training would skip is one scoring refuses, so the driver refuses the source before its first run rather than
    train a measurer in vain. One-line ``InputError`` for a missing, unreadable, empty or bad source."""
    if not os.path.isfile(path):
        raise InputError(f"{what}: {path}: no such file")
    samples = load_split_file(path, same_layout=True)
    if not samples:
        raise InputError(f"{what}: {path} is empty")
    _, bad = parse_records(samples, dataset)
    if bad:
        raise InputError(f"{what}: {path}: {len(bad)} of {len(samples)} samples cannot be trained on or scored, "
                         f"e.g. {bad[0]} (python -m datasets.check lists them): remove them from the source")
    return samples


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="dataset name (split files {split_root}/{dataset}/...)")
    p.add_argument("--data_root", required=True, help="image folders, passed to every run")
    p.add_argument("--split_root", required=True,
                   help="original split files; validation and test splits are linked from here")
    p.add_argument("--work_dir", required=True, help="where the state file, runs and outputs go")
    p.add_argument("--delta", type=float, default=0.1, help="greedy search step (default 0.1)")
    p.add_argument("--start", type=float, default=0.5, help="greedy search start threshold hm (default 0.5)")
    p.add_argument("--min_gain", type=float, default=0.0,
                   help="a neighbour replaces hm only when its validation accuracy (a fraction) is higher by more "
                        "than this, so differences within validation noise keep hm (default 0: the paper's rule, "
                        "any gain moves)")
    p.add_argument("--launcher", default="python",
                   help="command prefix of every run, e.g. 'torchrun --nproc_per_node=4', or 'inprocess' to call "
                        "each script's main() inside the driver's process (no start-up cost per run, one process "
                        "only) (default: this python)")
    p.add_argument("--run_cache",
                   help="a folder shared with other drivers and runs: a run identical to one finished before (same "
                        "command apart from its folder, same data) is reused instead of trained again")
    p.add_argument("--train_script", default=DEFAULT_TRAIN_SCRIPT)
    p.add_argument("--score_script", default=DEFAULT_SCORE_SCRIPT)
    p.add_argument("--final_epochs", type=int, default=PUBLISHED_EPOCHS,
                   help=f"epochs of the final run (default {PUBLISHED_EPOCHS})")
    p.add_argument("--candidate_epochs", type=int,
                   help="epochs of each search candidate (default: --final_epochs; when equal, the best "
                        "candidate is the final model and no extra run is made)")
    p.add_argument("--measurer_epochs", type=int, help="epochs of measurer training (default: --final_epochs)")
    p.add_argument("--update_budget", type=int,
                   help="instead of a fixed number of epochs, train every run (measurers, candidates, final) for "
                        "exactly this many optimizer steps (the training script's --max_steps), so that a candidate "
                        "on fewer samples is not also trained less (default: the fixed epochs above)")
    p.add_argument("--candidate_budget", type=int,
                   help="with --update_budget: steps of each search candidate (default: --update_budget; when "
                        "smaller, the search is cheaper and the final model is one more run of --update_budget "
                        "steps on the chosen samples)")
    p.add_argument("--measurer_budget", type=int,
                   help="with --update_budget: steps of each measurer the driver trains (default: --update_budget)")
    p.add_argument("--score_args", default="",
                   help="extra arguments for the scoring script only, e.g. --score_args='--batch_size 128'")
    p.add_argument("--min_samples", type=int,
                   help="a candidate selecting fewer training samples is infeasible and not trained (default: one "
                        "batch per process, --batch_size x the launcher's --nproc_per_node)")
    p.add_argument("--search_only", action="store_true",
                   help="stop after the threshold search (measurers, scores, candidates and the selected samples are "
                        "written) and before the final run; the same command without it then trains only the final "
                        "model (not a recorded option)")
    p.add_argument("--parallel_candidates", type=int, default=1,
                   help="train up to this many candidates of a search step at the same time, each a process of its "
                        "own started by --launcher (with 'inprocess', a fresh interpreter: runs in the driver's "
                        "process go one at a time); the search and its results do not change (not a recorded "
                        "option) (default 1)")
    p.add_argument("--force", action="store_true", help="accept options that differ from the recorded state")
    p.add_argument("--verbose", action="store_true", help="echo every line the runs print")


def validate_common(args: argparse.Namespace, train_args: Sequence[str]) -> None:
    """Fill defaults and check the common options; SystemExit naming the flag at fault."""
    check_passthrough(train_args, "training arguments after --")
    check_passthrough(shlex.split(args.score_args), "--score_args")
    args.candidate_epochs = args.candidate_epochs or args.final_epochs
    args.measurer_epochs = args.measurer_epochs or args.final_epochs
    args.samples_per_step = default_min_samples(train_args, args.launcher)
    if args.min_samples is None:
        args.min_samples = args.samples_per_step
    if args.update_budget and "max_steps" in given_flags(train_args):
        raise UsageError("--update_budget sets --max_steps of every run: do not pass --max_steps after --")
    for flag in ("candidate_budget", "measurer_budget"):
        if getattr(args, flag) is not None and not args.update_budget:
            raise UsageError(f"--{flag} needs --update_budget (without it every run trains for a number of epochs)")
    for flag in ("final_epochs", "candidate_epochs", "measurer_epochs", "min_samples", "update_budget",
                 "candidate_budget", "measurer_budget", "parallel_candidates"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag} {value}: must be at least 1")
    args.final_budget = args.update_budget
    args.candidate_budget = args.candidate_budget or args.update_budget
    args.measurer_budget = args.measurer_budget or args.update_budget
    if not 0.0 <= args.start <= 1.0:
        raise UsageError(f"--start {args.start}: must be in [0, 1]")
    if not 1e-6 <= args.delta <= 1.0:
        raise UsageError(f"--delta {args.delta}: must be in [1e-6, 1]")
    if not 0.0 <= args.min_gain < 1.0:
        raise UsageError(f"--min_gain {args.min_gain}: must be in [0, 1)")
    if not os.path.isdir(os.path.join(args.split_root, args.dataset)):
        raise InputError(f"--split_root {args.split_root}: no folder {args.dataset}/ (validation split needed)")
    for flag in ("train_script", "score_script"):
        if not os.path.isfile(getattr(args, flag)):
            raise SystemExit(f"--{flag} {getattr(args, flag)}: no such file")


def common_options(args: argparse.Namespace, train_args: Sequence[str]) -> Dict[str, Any]:
    """The options recorded in the state file (everything that changes what is run)."""
    return {"dataset": args.dataset, "data_root": os.path.abspath(args.data_root),
            "split_root": os.path.abspath(args.split_root), "delta": args.delta, "start": args.start,
            "min_gain": args.min_gain, "launcher": args.launcher,
            "train_script": os.path.abspath(args.train_script),
            "score_script": os.path.abspath(args.score_script), "final_epochs": args.final_epochs,
            "candidate_epochs": args.candidate_epochs, "measurer_epochs": args.measurer_epochs,
            "score_args": args.score_args, "min_samples": args.min_samples, "train_args": list(train_args),
            **({"update_budget": args.update_budget, "candidate_budget": args.candidate_budget,
                "measurer_budget": args.measurer_budget} if args.update_budget else {})}


def make_launchers(args: argparse.Namespace, train_args: Sequence[str]
                   ) -> Tuple[TrainLauncher, TrainLauncher, ScoreLauncher]:
    """The launchers of training runs, of search candidates and of scoring runs (scoring gets the training
    arguments, then ``--score_args``). Candidates trained several at a time (``--parallel_candidates``) need
    processes of their own: with ``--launcher inprocess`` they are started as fresh interpreters."""
    echo = "all" if args.verbose else "progress"
    data_cache = DataCache()  # one for every run made in this process ('inprocess')
    train = TrainLauncher(args.launcher, args.train_script, train_args, echo=echo, run_cache=args.run_cache,
                          data_cache=data_cache)
    candidate = train
    if args.parallel_candidates > 1 and args.launcher == INPROCESS:
        candidate = TrainLauncher(sys.executable, args.train_script, train_args, echo=echo, run_cache=args.run_cache)
    score = ScoreLauncher(args.launcher, args.score_script, [*train_args, *shlex.split(args.score_args)],
                          echo=echo, run_cache=args.run_cache, data_cache=data_cache)
    return train, candidate, score

