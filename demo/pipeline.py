"""The paper's pipeline in miniature, offline, on the synthetic referring world.

    python demo.py --output_dir demo_out            # the full preset (docs/demo.md)
    python demo.py --output_dir demo_out --preset quick   # a smoke run of every stage (the test suite's)

Stages (each cached: a rerun skips finished work; killed, it resumes where it stopped):
 1. world      the synthetic data set, its simulated upstream-model outputs and an image-caption corpus
 2. clip       a tiny CLIP pretrained contrastively on that corpus, saved in OpenAI's checkpoint format and
               loaded by every run through ``--model PATH`` like a real CLIP file
 3. pseudo     template, relation and caption pseudo labels (``pseudo_label_generation_module``)
 4. training   every CLIP-VG run, ``parallel_runs`` processes at a time, each started as soon as what it needs is
               done: CLIP-VG on all template pseudo labels (the baseline, no selection; also the template
               measurer), on all caption / all relation labels (their MSA measurers) and on the human ground truth
               (supervised, the upper bound); SSA's threshold search (the template labels scored by the baseline)
               and MSA's (the three sources easy to hard, one measurer each, a threshold per source), each driver
               with ``--search_only``; then each driver again for its final model
 5. evaluate   every model on val, testA and testB (each as soon as it is trained); the centre-box and
               largest-object priors
Results: ``results.json``, ``results.md`` (printed at the end) and the reliability histograms under
``--output_dir``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torchvision.ops import box_iou

from curriculum.runs.cache import file_fingerprint
from curriculum.runs.command_line import budget_epochs, default_min_samples
from curriculum.runs.launchers import REPO_ROOT, RunFailedError, TrainLauncher
from curriculum.runs.outputs import RUN_RECORD
from curriculum.runs.processes import log_tail, spawn_streaming
from curriculum.subset_files import prepare_split_root
from datasets import DataCache
from datasets.records import load_split_file, parse_records
from demo.jobs import Job, run_jobs
from demo.synthetic import SyntheticConfig, generate
from demo.tiny_clip import TinyClipConfig, pretrain_tiny_clip
from utils.box_ops import elementwise_iou
from utils.errors import InputError
from utils.io import atomic_write_text, write_json
from utils.misc import available_cpus
from utils.predictions import ACCURACY_IOU, paired_comparison, read_predictions

SPLITS = ("val", "testA", "testB")
SOURCES = ("template", "relation", "caption")
LAUNCHER = "inprocess"
"""The SSA / MSA drivers' runs are calls of their script's ``main`` in this process (no interpreter start-up per
run), and identical runs (e.g. SSA's candidates are MSA's first step) are trained once (``--run_cache``)."""
RUNS = "runs"
"""The folder under ``--output_dir`` holding the independent CLIP-VG runs (one folder per training job)."""
COMPARED = {"baseline_all_template": ("all template labels (no selection)", "best_checkpoint"),
            "ssa_final": ("SSA (template)", "final_model"),
            "msa_final": ("MSA (template + caption + relation)", "final_model"),
            "supervised": ("fully supervised (ground truth)", "best_checkpoint")}
"""The models compared, in table order: the training job that makes each, its name in the results and the key of
its checkpoint in the job's result."""
_DRIVER_PHASES = {"ssa": "template labels scored by the baseline, greedy threshold search",
                  "msa": "sources easy to hard, source-specific measurers, a threshold per source"}
MEASURED_SOURCES = ("caption", "relation")
"""Sources whose MSA measurer the demo trains itself; the baseline (all template labels) is the template measurer."""


@dataclass
class DemoConfig:
    """Everything that decides what the demo computes (part of every cache key)."""

    world: Dict[str, Any] = field(default_factory=dict)
    clip: Dict[str, Any] = field(default_factory=dict)
    clip_resolution: int = 128
    clip_epochs: int = 30
    template: List[str] = field(default_factory=list)
    train: List[str] = field(default_factory=list)
    epochs: int = 6
    supervised_epochs: int = 6
    delta: float = 0.1
    start: float = 0.5
    min_gain: float = 0.0
    """The drivers' ``--min_gain``: how much (validation accuracy, a fraction) a neighbouring threshold must beat the
    search's current one by to replace it."""
    min_samples: Optional[int] = None
    update_budget: Optional[int] = None
    """With a value, every CLIP-VG run trains for exactly that many optimizer steps (the drivers'
    ``--update_budget``) instead of ``epochs`` / ``supervised_epochs``."""
    candidate_budget: Optional[int] = None
    """Steps of each SSA / MSA search candidate (the drivers' ``--candidate_budget``; default ``update_budget``)."""
    measurer_budget: Optional[int] = None
    """Steps of each MSA measurer (the drivers' ``--measurer_budget``; default ``update_budget``)."""
    parallel_runs: int = 1
    """How many training jobs (runs, threshold searches, final models) run side by side, each a process of its own
    with an equal share of the CPUs. The tiny model's steps use a second CPU thread poorly, so on 2 cores two
    one-thread runs side by side do ~1.6x the work of one two-thread run."""
    parallel_candidates: int = 1
    """The drivers' ``--parallel_candidates`` (search candidates of one step trained at the same time, each a fresh
    one-thread interpreter). 1 in both presets: on 2 cores the other lane is busy during nearly all of both searches,
    and three candidates beside it, each with its own start-up, made the full demo slower."""


PRESETS: Dict[str, DemoConfig] = {
    "full": DemoConfig(
        world=dict(image_size=64, n_train_images=6000, n_val_images=200, n_testA_images=500, n_testB_images=500,
                   min_objects=2, max_objects=3, object_scale=1.5, same_class_rate=0.2,
                   expression_mix=(0.25, 0.3, 0.2, 0.15, 0.1), class_error_rate=0.25, spurious_rate=1.0,
                   duplicate_rate=0.25, box_jitter=0.12, wrong_attribute_rate=0.25, relation_error_rate=0.3,
                   caption_error_rate=0.3, class_textures=True, overspecify_category=0.8, overspecify_colour=0.6),
        clip=dict(embed_dim=64, vision_width=64, vision_layers=2, vision_patch_size=16, text_width=64, text_layers=2),
        clip_resolution=64, clip_epochs=30,
        template=["--horizontal_px", "6", "--vertical_px", "6"],
        train=["--batch_size", "32", "--lr", "5e-4", "--lr_scheduler", "cosine", "--lr_per_step", "--vl_enc_layers",
               "2", "--vl_dim_feedforward", "256", "--vl_dropout", "0", "--no-aug_color", "--num_workers", "0",
               "--cache_images", "--val_interval_steps", "250"],
        epochs=8, supervised_epochs=8, start=0.5, delta=0.3, min_gain=0.01, update_budget=2000, candidate_budget=500,
        parallel_runs=2),
    "quick": DemoConfig(
        world=dict(n_train_images=40, n_val_images=12, n_testA_images=10, n_testB_images=10, n_pretrain=128,
                   image_size=64),
        clip=dict(embed_dim=64, vision_width=64, vision_layers=2, text_width=64, text_layers=1),
        clip_resolution=64, clip_epochs=1,
        template=["--horizontal_px", "6", "--vertical_px", "6"],
        train=["--batch_size", "16", "--lr", "1e-3", "--vl_enc_layers", "1", "--vl_dim_feedforward", "64",
               "--vl_nheads", "2", "--num_workers", "0", "--cache_images"],
        epochs=1, supervised_epochs=1, start=0.0, delta=1.0, min_samples=16, parallel_runs=2),
}


def log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Demo:
    """One demo run in ``output_dir``; each ``stage_*`` method is cached and returns its result."""

    def __init__(self, output_dir: str, config: DemoConfig, seed: int, device: str) -> None:
        self.out = os.path.abspath(output_dir)
        self.config = config
        self.seed = seed
        self.device = device
        self.data_root = os.path.join(self.out, "data")
        self.split_root = os.path.join(self.out, "splits")
        self.clip_path = os.path.join(self.out, "clip", "tiny_clip.pt")
        self.pseudo_dir = os.path.join(self.out, "pseudo")
        self.runs = os.path.join(self.out, RUNS)
        self.run_cache = os.path.join(self.out, "run_cache")
        self._scenes: Optional[Dict[str, Any]] = None
        self._eval_lock = threading.Lock()
        # the evaluations in this process (one at a time) share their data sets' cache: each split's queries are
        # tokenised once, not once per model
        self._eval_data = DataCache()
        os.makedirs(self.out, exist_ok=True)

    # -------------------------------------------------------------------------------------------- shared
    def train_args(self) -> List[str]:
        """Arguments every CLIP-VG run gets (the drivers add dataset, paths and epochs)."""
        return ["--model", self.clip_path, "--imsize", str(self.config.clip_resolution), "--device", self.device,
                "--seed", str(self.seed), *self.config.train]

    def driver_args(self, work_dir: str) -> List[str]:
        """SSA / MSA driver arguments. ``--force``: a changed preset restarts the driver's steps in the same output
        folder instead of stopping (the run cache still reuses every unchanged run)."""
        args = ["--dataset", "synthetic", "--data_root", self.data_root, "--split_root", self.split_root,
                "--work_dir", work_dir, "--launcher", LAUNCHER, "--run_cache", self.run_cache, "--force",
                "--delta", str(self.config.delta), "--start", str(self.config.start),
                "--min_gain", str(self.config.min_gain),
                "--final_epochs", str(self.config.epochs),
                "--parallel_candidates", str(self.config.parallel_candidates)]
        if self.config.min_samples is not None:
            args += ["--min_samples", str(self.config.min_samples)]
        for flag in ("update_budget", "candidate_budget", "measurer_budget"):
            if getattr(self.config, flag) is not None:
                args += [f"--{flag}", str(getattr(self.config, flag))]
        return args

    def _cached(self, name: str, key: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        path = os.path.join(self.out, "stages", f"{name}.json")
        if os.path.isfile(path):
            with open(path) as fh:
                record = json.load(fh)
            if record.get("key") == key:
                return record["result"]
        return None

    def _store(self, name: str, key: Dict[str, Any], result: Dict[str, Any]) -> Dict[str, Any]:
        write_json(os.path.join(self.out, "stages", f"{name}.json"), {"key": key, "result": result})
        return result

    # -------------------------------------------------------------------------------------------- stages
    def stage_world(self) -> Dict[str, Any]:
        config = SyntheticConfig(seed=self.seed, **self.config.world)
        summary = generate(self.data_root, self.split_root, config)
        log(f"world: {'cached' if summary['cached'] else 'written'} ({summary['seconds']} s): "
            + ", ".join(f"{s} {v['expressions']} expressions" for s, v in summary["splits"].items()))
        return summary

    def stage_clip(self) -> Dict[str, Any]:
        corpus = os.path.join(self.data_root, "synthetic", "pretrain", "caption_corpus.json")
        stats = pretrain_tiny_clip(corpus, self.clip_path, image_resolution=self.config.clip_resolution,
                                   config=TinyClipConfig(**self.config.clip), epochs=self.config.clip_epochs,
                                   seed=self.seed)
        r = stats["retrieval"]
        log(f"tiny CLIP: {'cached' if stats.get('cached') else 'pretrained'}; held-out retrieval top-1 "
            f"image->text {r['image_to_text_top1']:.3f}, text->image {r['text_to_image_top1']:.3f} "
            f"(chance {r['chance']:.3f}) -> {self.clip_path}")
        return stats

    def stage_pseudo(self) -> Dict[str, Any]:
        from pseudo_label_generation_module import caption, relation, stats, template
        up = os.path.join(self.data_root, "synthetic", "upstream")
        files = {s: os.path.join(self.pseudo_dir, f"{k}_synthetic_train_pseudo_{s}.pth")
                 for k, s in enumerate(SOURCES, 1)}
        key = {"upstream": {n: file_fingerprint(os.path.join(up, f"{n}.json"))
                            for n in ("detections", "attributes", "scene_graphs", "captions", "synonyms")},
               "template": self.config.template, "seed": self.seed}
        cached = self._cached("pseudo", key)
        if cached is not None and all(os.path.isfile(p) for p in files.values()):
            log("pseudo labels: cached")
            return cached
        dets, attrs = os.path.join(up, "detections.json"), os.path.join(up, "attributes.json")
        template.main(["--detections", dets, "--attributes", attrs, "--dataset", "synthetic", "--seed",
                       str(self.seed), *self.config.template, "--output", files["template"]])
        relation.main(["--scene_graphs", os.path.join(up, "scene_graphs.json"), "--dataset", "synthetic",
                       "--output", files["relation"]])
        caption.main(["--captions", os.path.join(up, "captions.json"), "--detections", dets, "--attributes", attrs,
                      "--synonyms", os.path.join(up, "synonyms.json"), "--dataset", "synthetic",
                      "--output", files["caption"]])
        statistics = stats.main(["--dataset", "synthetic", *files.values(), "--detections", dets,
                                 "--output", os.path.join(self.pseudo_dir, "stats.json")])
        return self._store("pseudo", key, {"files": files, "stats": statistics})

    def lane_threads(self, lanes: int = 1) -> int:
        """Threads of a job on ``lanes`` of the ``parallel_runs`` lanes: its share of the CPUs."""
        return max(1, available_cpus() * lanes // self.config.parallel_runs)

    def training_env(self) -> Dict[str, str]:
        """Environment of a training process: one lane's threads (``lane_threads``), always, even when the other lanes
        idle: a run's thread count changes its float rounding, so a share that depended on timing would make reruns
        of a seed differ."""
        return {"OMP_NUM_THREADS": str(self.lane_threads())}

    def _train(self, name: str, samples: Sequence[Any], epochs: int, max_steps: Optional[int],
               extra: Sequence[str], train_split: str) -> Dict[str, Any]:
        """One independent CLIP-VG run on ``samples`` in a process of its own (``training_env``); its result."""
        epochs = budget_epochs(len(samples), epochs, max_steps, default_min_samples(self.config.train, LAUNCHER))
        launcher = TrainLauncher("python", common_args=[*self.train_args(), *extra], run_cache=self.run_cache,
                                 env=self.training_env())
        record = launcher.run(os.path.join(self.runs, name), "synthetic", self.data_root, self.split_root,
                              samples, epochs, train_split=train_split, tag=name, max_steps=max_steps)
        result = record["result"]
        log(f"{name}: {epochs} epochs, best val accuracy {result['val_accu']:.4f} at epoch {result['best_epoch']}")
        return result

    def training_jobs(self, pseudo: Dict[str, Any]) -> List[Job]:
        """Every CLIP-VG run of the demo as jobs, most urgent first (the chain baseline -> SSA search -> MSA search
        -> MSA final is the longest): the baseline on all template labels (no selection; also the template
        measurer), the caption and relation measurers (all labels of their source), supervised on the ground
        truth, the SSA and MSA threshold searches (each driver with ``--search_only``) and their final models
        (each driver again, resuming its recorded state); each model compared is evaluated (``evaluate_<job>``,
        in this process) as soon as it is trained."""
        cfg = self.config
        measurer_steps = cfg.measurer_budget or cfg.update_budget
        template = load_split_file(pseudo["files"]["template"])
        truth = load_split_file(os.path.join(self.split_root, "synthetic", "synthetic_train.pth"))

        def train(name: str, samples: Sequence[Any], epochs: int, steps: Optional[int], extra: Sequence[str] = (),
                  split: str = "train_pseudo") -> Job:
            return Job(name, lambda done, lanes: self._train(name, samples, epochs, steps, extra, split))

        ssa_input = os.path.join(self.out, "ssa_input")
        prepare_split_root(ssa_input, "synthetic", self.split_root, "train_pseudo", template)

        def driver(name: str, search: bool, needs: Tuple[str, ...]) -> Job:
            def argv(done: Mapping[str, Any]) -> List[str]:
                return self.ssa_argv(ssa_input, done) if name == "ssa" else self.msa_argv(pseudo, done)
            return Job(f"{name}_{'search' if search else 'final'}",
                       lambda done, lanes: self._driver_process(name, argv(done), search), needs)

        measurers = [train(f"measurer_{source}", load_split_file(pseudo["files"][source]), cfg.epochs,
                           measurer_steps) for source in MEASURED_SOURCES]
        msa_needs = ("ssa_search", "baseline_all_template", *(job.name for job in measurers))

        def evaluation(job: str) -> Job:
            name, key = COMPARED[job]
            return Job(f"evaluate_{job}", lambda done, lanes: self.evaluate(name, done[job][key], lanes), (job,))

        return [
            train("baseline_all_template", template, cfg.epochs, cfg.update_budget),
            measurers[0],
            driver("ssa", True, ("baseline_all_template",)),
            *measurers[1:],
            driver("msa", True, msa_needs),
            train("supervised", truth, cfg.supervised_epochs, cfg.update_budget, ("--sup_type", "full"), "train"),
            evaluation("baseline_all_template"),
            evaluation("supervised"),
            driver("ssa", False, ("ssa_search", "baseline_all_template")),
            evaluation("ssa_final"),
            driver("msa", False, (*msa_needs, "msa_search")),
            evaluation("msa_final"),
        ]

    def stage_training(self, pseudo: Dict[str, Any]) -> Dict[str, Any]:
        """The jobs of ``training_jobs`` on ``parallel_runs`` lanes, each started as soon as a lane is free and what
        it needs is done (the training jobs as processes of their own); their results by job name."""
        jobs = self.training_jobs(pseudo)
        log(f"{len(jobs)} jobs, {self.config.parallel_runs} at a time: " + ", ".join(j.name for j in jobs))
        return run_jobs(jobs, self.config.parallel_runs)

    def ssa_argv(self, split_root: str, done: Mapping[str, Any]) -> List[str]:
        """The SSA driver's arguments: the template labels (the training split under ``split_root``) scored by the
        baseline."""
        argv = self.driver_args(os.path.join(self.out, "ssa"))
        argv[argv.index("--split_root") + 1] = split_root
        return [*argv, "--measurer", done["baseline_all_template"]["best_checkpoint"], "--", *self.train_args()]

    def msa_argv(self, pseudo: Dict[str, Any], done: Mapping[str, Any]) -> List[str]:
        """The MSA driver's arguments: the three sources, each with the measurer the demo trained on it."""
        sources = ",".join(f"{s}:{p}" for s, p in pseudo["files"].items())
        measurers = {"template": done["baseline_all_template"],
                     **{source: done[f"measurer_{source}"] for source in MEASURED_SOURCES}}
        return [*self.driver_args(os.path.join(self.out, "msa")), "--sources", sources, "--source_specific_only",
                "--entity_vocab", os.path.join(self.data_root, "synthetic", "upstream", "synonyms.json"),
                "--measurers", ",".join(f"{s}:{r['best_checkpoint']}" for s, r in measurers.items()),
                "--", *self.train_args()]

    def _driver_process(self, name: str, argv: List[str], search: bool) -> Dict[str, Any]:
        """Run ``python -m curriculum.<name> <argv>`` (``training_env``): with ``search``, only its threshold search
        (``--search_only``), else its final model (it resumes its recorded search). Everything it prints is
        appended to ``<name>/{search,final}_process.log`` and its progress lines (``[tag] ...``) are echoed;
        returns its ``<name>_result.json``."""
        phase = "search" if search else "final"
        work = os.path.join(self.out, name)
        os.makedirs(work, exist_ok=True)
        log_path = os.path.join(work, f"{phase}_process.log")
        if search:
            argv = _with_flag(argv, "--search_only")
        log(f"{name.upper()} {phase}: " + (_DRIVER_PHASES[name] if search else "the final model on its selection"))
        with open(log_path, "ab") as fh:
            def emit(raw: bytes) -> None:
                fh.write(raw)
                line = raw.decode(errors="replace").rstrip()
                if line.startswith("["):
                    print(line, flush=True)

            status = spawn_streaming([sys.executable, "-m", f"curriculum.{name}", *argv], REPO_ROOT,
                                     self.training_env(), emit)
        if status != 0:
            raise RunFailedError(f"the {name.upper()} driver's {phase} process failed (exit status {status}); log "
                                 f"{log_path}:\n{log_tail(log_path)}")
        with open(driver_result_file(self.out, name)) as fh:
            result = json.load(fh)
        if not search:
            log(f"{name.upper()} final model: val accuracy {result['final_val_accu']:.4f} ({result['n_selected']} "
                "samples)")
        return result

    def evaluate(self, name: str, checkpoint: str, lanes: int = 1) -> Dict[str, Dict[str, float]]:
        """Accuracy, mean IoU, accuracy by expression kind and the share of boxes on some shape of the model
        ``name`` (``checkpoint``) on every test split (cached by the checkpoint's bytes). In this process, one
        evaluation at a time, with ``lanes``' share of the CPUs as its threads."""
        with self._eval_lock:
            threads = torch.get_num_threads()
            torch.set_num_threads(self.lane_threads(lanes))
            try:
                scores = self._evaluate(_slug(name), checkpoint)
            finally:
                torch.set_num_threads(threads)
        log(f"{name}: " + ", ".join(f"{split} {100 * scores[split]['accuracy']:.1f}" for split in SPLITS))
        return scores

    def _evaluate(self, name: str, checkpoint: str) -> Dict[str, Dict[str, float]]:
        import eval as eval_script
        scores = {}
        for split in SPLITS:
            split_file = os.path.join(self.split_root, "synthetic", f"synthetic_{split}.pth")
            key = {"checkpoint": file_fingerprint(checkpoint), "split": file_fingerprint(split_file), "fields": 2}
            cached = self._cached(f"eval_{name}_{split}", key)
            if cached is None:
                predictions = self.predictions_file(name, split)
                out_dir = os.path.dirname(predictions)
                stats = eval_script.main(["--eval_model", checkpoint, "--dataset", "synthetic", "--eval_set", split,
                                          "--data_root", self.data_root, "--split_root", self.split_root,
                                          "--output_dir", out_dir, "--device", self.device, "--num_workers", "0",
                                          "--save_predictions", predictions], data_cache=self._eval_data)
                cached = self._store(f"eval_{name}_{split}", key, {
                    "accuracy": stats[f"{split}_set_accuracy"], "miou": stats[f"{split}_set_miou"],
                    "samples": stats["samples"], "by_kind": accuracy_by_kind(predictions, split_file),
                    "on_object": on_object_rate(predictions, self.scenes())})
            scores[split] = cached
        return scores

    def predictions_file(self, name: str, split: str) -> str:
        """Where the evaluation of the model ``name`` (its slug) writes its per-sample predictions on ``split``."""
        return os.path.join(self.out, "eval", name, f"{split}.jsonl")

    def paired_tests(self) -> List[Dict[str, Any]]:
        """Each compared model against the one before it in the table (SSA against no selection, MSA against SSA,
        supervised against MSA), per split, by McNemar's exact test on their per-sample predictions."""
        names = [name for name, _ in COMPARED.values()]
        return [{"model": model, "baseline": baseline,
                 **{split: paired_comparison(self.predictions_file(_slug(model), split),
                                             self.predictions_file(_slug(baseline), split)) for split in SPLITS}}
                for baseline, model in zip(names, names[1:])]

    def records(self, split: str) -> List[Any]:
        """The ground-truth records of a split of the world."""
        path = os.path.join(self.split_root, "synthetic", f"synthetic_{split}.pth")
        return parse_records(load_split_file(path), "synthetic")[0]

    def scenes(self) -> Dict[str, Any]:
        """Every image's ground-truth scene (objects and boxes) from the world's ``annotations.json`` (read once)."""
        if self._scenes is None:
            with open(os.path.join(self.data_root, "synthetic", "annotations.json")) as fh:
                self._scenes = {entry["image"]: entry for entries in json.load(fh).values() for entry in entries}
        return self._scenes

    def priors(self) -> Dict[str, Dict[str, Dict[str, float]]]:
        """Language-free guesses: the centre box (the mean ground-truth size) and the largest object."""
        train = self.records("train")
        mean_wh = torch.tensor([[s.box_xyxy[2] - s.box_xyxy[0], s.box_xyxy[3] - s.box_xyxy[1]] for s in train]
                               ).mean(0)
        annotations = self.scenes()
        out: Dict[str, Dict[str, Dict[str, float]]] = {"centre box": {}, "largest object": {}}
        for split in SPLITS:
            samples = self.records(split)
            gts = torch.tensor([s.box_xyxy for s in samples], dtype=torch.float64)
            side = torch.tensor([_image_size(annotations, s.image) for s in samples], dtype=torch.float64)
            centre = torch.cat([side / 2 - mean_wh / 2, side / 2 + mean_wh / 2], dim=1)
            largest = torch.tensor([_largest_box(annotations, s.image) for s in samples], dtype=torch.float64)
            for name, pred in (("centre box", centre), ("largest object", largest)):
                iou = elementwise_iou(pred, gts)
                out[name][split] = {"accuracy": float((iou >= ACCURACY_IOU).double().mean()),
                                    "miou": float(iou.mean()), "samples": len(samples)}
        return out

    # -------------------------------------------------------------------------------------------- report
    def run(self) -> Dict[str, Any]:
        tic = time.perf_counter()
        log(f"output folder {self.out}")
        world = self.stage_world()
        clip_stats = self.stage_clip()
        pseudo = self.stage_pseudo()
        done = self.stage_training(pseudo)
        ssa_result, msa_result = done["ssa_final"], done["msa_final"]
        table = {**{name: done[f"evaluate_{job}"] for job, (name, _) in COMPARED.items()}, **self.priors()}
        figures = self.collect_figures(ssa_result, msa_result)
        results = {
            "config": dataclasses.asdict(self.config), "seed": self.seed, "results": table,
            "train_samples": {"all template labels (no selection)": pseudo["stats"]["sources"]["template"]["samples"]
                              if "sources" in pseudo["stats"] else None,
                              "SSA (template)": ssa_result["n_selected"],
                              "MSA (template + caption + relation)": msa_result["n_selected"],
                              "fully supervised (ground truth)": world["splits"]["train"]["expressions"]},
            "ssa": {"h_star": ssa_result["h_star"], "candidates": ssa_result["candidates"]},
            "msa": {"order": msa_result["order"], "steps": msa_result.get("steps")},
            "tiny_clip": {"retrieval": clip_stats["retrieval"], "seconds": clip_stats["seconds"]},
            "paired_tests": self.paired_tests(), "figures": figures,
            "seconds": round(time.perf_counter() - tic, 1)}
        write_json(os.path.join(self.out, "results.json"), results)
        markdown = results_markdown(results)
        atomic_write_text(os.path.join(self.out, "results.md"), markdown)
        print(markdown, flush=True)
        log(f"done in {results['seconds']:.0f} s: {os.path.join(self.out, 'results.json')}, results.md")
        return results

    def collect_figures(self, ssa_result: Dict[str, Any], msa_result: Dict[str, Any]) -> List[str]:
        """Copy the reliability histograms next to the results."""
        folder = os.path.join(self.out, "figures")
        os.makedirs(folder, exist_ok=True)
        found = []
        ssa_png = os.path.splitext(ssa_result["reliability_file"])[0] + "_histogram.png"
        for src, name in ((ssa_png, "ssa_template_reliability.png"),
                          (os.path.join(self.out, "msa", "msa_reliability_matrix.png"), "msa_reliability_matrix.png")):
            if os.path.isfile(src):
                shutil.copyfile(src, os.path.join(folder, name))
                found.append(os.path.join("figures", name))
        return found


def _with_flag(argv: List[str], flag: str) -> List[str]:
    """``argv`` (driver arguments, ``--``, training arguments) with ``flag`` added to the driver's part."""
    cut = argv.index("--")
    return [*argv[:cut], flag, *argv[cut:]]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")[:40]


def _image_size(annotations: Dict[str, Any], image: str) -> Tuple[float, float]:
    info = annotations[image]
    return float(info["width"]), float(info["height"])


def _largest_box(annotations: Dict[str, Any], image: str) -> List[float]:
    boxes = [o["box"] for o in annotations[image]["objects"]]
    return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))


def accuracy_by_kind(predictions_jsonl: str, split_file: str) -> Dict[str, Dict[str, float]]:
    """Accuracy@0.5 per ground-truth expression kind (the synthetic split files' fifth field, e.g. 'category')
    from ``eval.py --save_predictions`` lines: ``{kind: {"accuracy", "samples"}}``."""
    kinds = [record[4] for record in load_split_file(split_file)]
    hits: Dict[str, List[bool]] = {}
    for row in read_predictions(predictions_jsonl).values():
        hits.setdefault(kinds[row["index"]], []).append(row["iou"] >= ACCURACY_IOU)
    return {kind: {"accuracy": sum(h) / len(h), "samples": len(h)} for kind, h in sorted(hits.items())}


def on_object_rate(predictions_jsonl: str, scenes: Dict[str, Any]) -> float:
    """Share of predicted boxes that match some object of their image (IoU >= ACCURACY_IOU with any ground-truth
    shape, the target or another): how often a model localises an object at all, whichever it picks."""
    hits = []
    with open(predictions_jsonl, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            boxes = torch.tensor([o["box"] for o in scenes[row["image"]]["objects"]], dtype=torch.float64)
            iou = box_iou(torch.tensor([row["pred_xyxy"]], dtype=torch.float64), boxes)
            hits.append(bool((iou >= ACCURACY_IOU).any()))
    return sum(hits) / len(hits)


def driver_result_file(output_dir: str, driver: str) -> str:
    """Where the demo's ``driver`` (``ssa`` or ``msa``) leaves its result: ``<output_dir>/<driver>/<driver>_result.json``."""
    return os.path.join(output_dir, driver, f"{driver}_result.json")


def compared_checkpoints(output_dir: str) -> Dict[str, str]:
    """The checkpoints of a finished demo's compared models (``COMPARED``, in table order: name -> path), read from
    what their jobs recorded: a driver's result file (``driver_result_file``), a run's record under ``runs/``."""
    checkpoints = {}
    for job, (name, key) in COMPARED.items():
        driver = job[: -len("_final")] if job.endswith("_final") else None
        path = driver_result_file(output_dir, driver) if driver else os.path.join(output_dir, RUNS, job, RUN_RECORD)
        try:
            with open(path, encoding="utf-8") as fh:
                record = json.load(fh)
            checkpoints[name] = (record if driver else record["result"])[key]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{output_dir}: the demo's model {name!r} is not finished (no result in {path})") from exc
    return checkpoints


def results_markdown(results: Dict[str, Any]) -> str:
    """The demo's result table (accuracy@0.5 in %, mean IoU in brackets)."""
    lines = ["| model | train samples | " + " | ".join(SPLITS) + " |", "|---|---:|" + "---:|" * len(SPLITS)]
    for name, scores in results["results"].items():
        n = results["train_samples"].get(name)
        cells = [f"{100 * scores[s]['accuracy']:.1f} ({scores[s]['miou']:.3f})" for s in SPLITS]
        lines.append(f"| {name} | {'-' if n is None else n} | " + " | ".join(cells) + " |")
    models = {name: scores["val"]["by_kind"] for name, scores in results["results"].items()
              if "by_kind" in scores["val"]}
    if models:
        kinds = sorted({kind for by_kind in models.values() for kind in by_kind})
        lines += ["", "val accuracy@0.5 (%) by expression kind:", "",
                  "| model | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
        for name, by_kind in models.items():
            cells = [f"{100 * by_kind[k]['accuracy']:.1f}" if k in by_kind else "-" for k in kinds]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    located = {name: scores for name, scores in results["results"].items() if "on_object" in scores["val"]}
    if located:
        title = f"predicted box on some object (IoU >= {ACCURACY_IOU:g} with any shape, the target or another), %:"
        lines += ["", title, "", "| model | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]
        for name, scores in located.items():
            lines.append(f"| {name} | " + " | ".join(f"{100 * scores[s]['on_object']:.1f}" for s in SPLITS) + " |")
    if results.get("paired_tests"):
        lines += ["", "McNemar's exact test on the same samples: correct only for the model / only for the baseline "
                  "(two-sided p):", "", "| model | baseline | " + " | ".join(SPLITS) + " |",
                  "|---|---|" + "---:|" * len(SPLITS)]
        for test in results["paired_tests"]:
            cells = [f"{test[s]['only_model']} / {test[s]['only_baseline']} ({test[s]['p_value']:.3g})" for s in SPLITS]
            lines.append(f"| {test['model']} | {test['baseline']} | " + " | ".join(cells) + " |")
    ssa = results["ssa"]
    notes = [f"SSA threshold h* = {ssa['h_star']:g}; MSA order: {', '.join(results['msa']['order'])}.",
             f"Accuracy@0.5 in %, mean IoU in brackets; seed {results['seed']}; {results['seconds']:.0f} s."]
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python demo.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="demo_out", help="where everything goes (default: demo_out)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="full",
                   help="'full' (the experiment; docs/demo.md) or 'quick' (a smoke run)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world, the CLIP and every run")
    p.add_argument("--device", default="cpu", help="device of every run (default cpu)")
    p.add_argument("--update_budget", type=int,
                   help="train every CLIP-VG run for exactly this many optimizer steps instead of the preset's "
                        "budget or fixed epochs (the same number of updates for every model compared)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Entry point; ``argv`` like ``sys.argv[1:]``."""
    args = build_parser().parse_args(argv)
    config = PRESETS[args.preset]
    if args.update_budget is not None:
        if args.update_budget < 1:
            raise SystemExit(f"--update_budget {args.update_budget}: must be at least 1")
        config = dataclasses.replace(config, update_budget=args.update_budget, candidate_budget=None,
                                     measurer_budget=None)
    return Demo(args.output_dir, config, args.seed, args.device).run()

