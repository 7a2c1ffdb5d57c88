"""The argument parser of ``train_clip_vg.py``, ``eval.py``, ``eval_for_reliability_distribution.py`` and
``inference.py``: one definition of every flag, and per script the flags it shows in ``--help`` (``SCRIPT_FLAGS``).

Every flag of the official scripts is accepted by every script with the official default, so existing launch
scripts run unchanged; official flags a script does not use are hidden from its ``--help``, and those the official
code parses but never reads (``NO_OP_FLAGS``, listed in docs/deviations.md) warn when given. A flag of another
script that is not an official one (``--image`` given to the train script) is refused. Per-script defaults (batch
size, workers, evaluation split) follow the official scripts.
"""
from __future__ import annotations

import argparse
import warnings
from typing import Any, Iterable, Sequence

from utils.errors import UsageError

# Official flags that had no effect there and have none here: a warning says so when they are given.
NO_OP_FLAGS = {
    "lr_bert": "the official code selects these parameters by names that do not exist; everything trains at --lr",
    "lr_visu_cnn": "the official code selects these parameters by names that do not exist; everything trains at --lr",
    "lr_visu_tra": "the official code selects these parameters by names that do not exist; everything trains at --lr",
    "emb_size": "parsed and never read by the official code",
    "num_queries": "parsed and never read by the official code",
    "dim_feedforward": "parsed and never read by the official code (the fusion FFN width is --vl_dim_feedforward)",
    "dropout": "parsed and never read by the official code (the fusion dropout is --vl_dropout)",
    "nheads": "parsed and never read by the official code (the fusion heads are --vl_nheads)",
    "pre_norm": "parsed and never read by the official code (the fusion encoder is post-norm)",
    "light": "parsed and never read by the official code",
    "vl_dec_layers": "parsed and never read by the official code (the fusion module has no decoder)",
    "world_size": "the process count comes from the launcher (torchrun/SLURM), not from this flag",
    "model_name": "parsed and never read by the official code",
    "bert_enc_num": "parsed and never read by the official code",
    "detr_enc_num": "parsed and never read by the official code",
    "backbone": "parsed and never read by the official code",
    "dilation": "parsed and never read by the official code",
    "position_embedding": "parsed and never read by the official code",
    "enc_layers": "parsed and never read by the official code (the fusion depth is --vl_enc_layers)",
    "dec_layers": "parsed and never read by the official code",
    "hidden_dim": "parsed and never read by the official code (the fusion width is --vl_hidden_dim)",
    "cross_num_attention_heads": "parsed and never read by the official code",
    "cross_vis_hidden_size": "parsed and never read by the official code",
    "cross_text_hidden_size": "parsed and never read by the official code",
    "cross_hidden_dropout_prob": "parsed and never read by the official code",
    "cross_attention_probs_dropout_prob": "parsed and never read by the official code",
}

# Flags of the official scripts (their users' launch scripts pass them to any of the four scripts).
OFFICIAL_FLAGS = frozenset((
    "sup_type lr lr_bert lr_visu_cnn lr_visu_tra batch_size weight_decay epochs lr_power lr_exponential "
    "clip_max_norm eval optimizer lr_scheduler lr_drop aug_blur aug_crop aug_scale aug_translate model imsize "
    "emb_size vl_dropout vl_nheads vl_hidden_dim vl_dim_feedforward vl_enc_layers data_root split_root dataset "
    "max_query_len prompt output_dir device seed resume retrain start_epoch num_workers world_size dist_url "
    "eval_set eval_model local_rank").split()) | NO_OP_FLAGS.keys()

_MODEL = ("batch_size amp model clip_download_root tapped_layers imsize max_query_len vl_dropout vl_nheads "
          "vl_hidden_dim vl_dim_feedforward vl_enc_layers prompt device seed deterministic compile")
_DATA = "data_root split_root dataset num_workers cache_images dist_url local_rank output_dir"
SCRIPT_FLAGS = {
    "train": frozenset(f"{_MODEL} {_DATA} sup_type lr weight_decay epochs max_steps val_interval_steps lr_power "
                       "lr_exponential clip_max_norm eval optimizer lr_scheduler lr_drop lr_per_step aug_blur "
                       "aug_crop aug_scale aug_translate aug_color resume retrain overwrite start_epoch "
                       "full_checkpoint skip_bad_samples".split()),
    "eval": frozenset(f"{_MODEL} {_DATA} eval_set eval_model save_predictions report".split()),
    "reliability": frozenset(f"{_MODEL} {_DATA} eval_set eval_model report".split()),
    "inference": frozenset(f"{_MODEL} eval_model image query out batch_file attention attention_layer".split()),
}
"""The flags each script uses: shown in its ``--help``; official ones outside it are accepted but hidden."""
HIDDEN_EXTRA_FLAGS = {"reliability": SCRIPT_FLAGS["train"]}
"""Flags a script accepts, hidden, besides its own and the official ones: the curriculum drivers pass the training
arguments to the reliability script too (the model-shaping settings must match), training-only ones included."""

SCRIPT_DEFAULTS = {
    "train": dict(batch_size=8, num_workers=8, eval_set="test", prompt=""),
    "eval": dict(batch_size=32, num_workers=4, eval_set="test", prompt="{pseudo_query}"),
    "reliability": dict(batch_size=32, num_workers=4, eval_set="train_pseudo", prompt="{pseudo_query}"),
    "inference": dict(batch_size=32, num_workers=0, eval_set="test", prompt="{pseudo_query}"),
}


class _ScriptGroup:
    """An argument group that hides from ``--help`` the flags its script does not use (``SCRIPT_FLAGS``)."""

    def __init__(self, parser: argparse.ArgumentParser, title: str, script: str) -> None:
        self.group, self.shown = parser.add_argument_group(title), SCRIPT_FLAGS[script]

    def add_argument(self, *flags: str, **kwargs: Any) -> argparse.Action:
        dest = kwargs.get("dest") or flags[0].lstrip("-").replace("-", "_")
        if dest not in self.shown:
            kwargs["help"] = argparse.SUPPRESS
        return self.group.add_argument(*flags, **kwargs)


def get_args_parser(script: str = "train") -> argparse.ArgumentParser:
    """Build ``script``'s parser: every flag, its own shown in ``--help``, with the official per-script defaults."""
    if script not in SCRIPT_DEFAULTS:
        raise ValueError(f"unknown script {script!r}; expected one of {sorted(SCRIPT_DEFAULTS)}")
    p = argparse.ArgumentParser(f"CLIP-VG ({script})", allow_abbrev=False)

    g = _ScriptGroup(p, "optimisation", script)
    g.add_argument("--sup_type", default="un", choices=["un", "full"],
                   help="'full' trains on the human 'train' split, 'un' (default) on 'train_pseudo'")
    g.add_argument("--lr", default=1e-4, type=float)
    g.add_argument("--lr_bert", default=1e-5, type=float)
    g.add_argument("--lr_visu_cnn", default=1e-5, type=float)
    g.add_argument("--lr_visu_tra", default=1e-5, type=float)
    g.add_argument("--batch_size", type=int, help="batch size per process")
    g.add_argument("--weight_decay", default=1e-4, type=float)
    g.add_argument("--epochs", default=90, type=int)
    g.add_argument("--max_steps", type=int,
                   help="train for exactly this many optimizer steps: --epochs becomes the fewest epochs holding "
                        "them (the schedule's length) and the last one stops early (default: whole --epochs)")
    g.add_argument("--val_interval_steps", default=0, type=int,
                   help="validate (and write checkpoints) only at the end of an epoch that comes at least this many "
                        "optimizer steps after the previous validation, and after the last epoch: step-budgeted runs "
                        "on small splits (epochs of a few steps) then validate every N steps instead of after each "
                        "tiny epoch; training itself is unchanged (default 0: after every epoch, as the official code)")
    g.add_argument("--lr_power", default=0.9, type=float, help="poly schedule power")
    g.add_argument("--lr_exponential", default=0.9, type=float, help="exponential schedule base")
    g.add_argument("--clip_max_norm", default=0.0, type=float, help="gradient clipping max norm (0: off)")
    g.add_argument("--eval", action="store_true", help="train script: only validate the --resume checkpoint")
    g.add_argument("--optimizer", default="adamw", choices=["adamw", "adam", "sgd", "rmsprop"])
    g.add_argument("--lr_scheduler", default="step",
                   choices=["step", "poly", "halfdecay", "cosine", "exponential"])
    g.add_argument("--lr_drop", default=60, type=int, help="step schedule: epochs between x0.1 drops")
    g.add_argument("--lr_per_step", action="store_true",
                   help="advance a poly/halfdecay/cosine/exponential schedule after every optimizer step, over the "
                        "run's steps (--max_steps or all epochs), instead of once per epoch: short runs anneal "
                        "smoothly (default: per epoch, as the official code)")
    g.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"],
                   help="mixed precision: auto = bf16 on CUDA, off (fp32) on the CPU; bf16 also runs on the CPU and "
                        "pays where the CPU has AMX or AVX512-BF16 (about 3x on ViT-B/16 inference, 2x in training; "
                        "evaluation accuracy within 0.2 points of fp32 on the demo's models), not on small models or "
                        "other CPUs (docs/speed.md); fp16 is CUDA only")

    g = _ScriptGroup(p, "augmentation", script)
    g.add_argument("--aug_blur", action="store_true", help="Gaussian blur with probability 0.5")
    g.add_argument("--aug_crop", action="store_true", help="random crop branch")
    g.add_argument("--aug_scale", action="store_true", help="multi-scale resize")
    g.add_argument("--aug_translate", action="store_true", help="random paste position")
    g.add_argument("--aug_color", action=argparse.BooleanOptionalAction, default=True,
                   help="colour jitter with probability 0.8 (on, as the official code always applies it; "
                        "--no-aug_color turns it off, e.g. where colour words are the labels)")

    g = _ScriptGroup(p, "model", script)
    g.add_argument("--model", default="ViT-B/16",
                   help="CLIP weights: ViT-B/16, ViT-B/32, ViT-L/14 or ViT-L/14@336px (OpenAI's file under "
                        "--clip_download_root, else the Hugging Face hub, else OpenAI's URL), hf-hub:ORG/NAME[@REV] "
                        "(open_clip or transformers layout), a file (.safetensors, state dict, OpenAI TorchScript) "
                        "or folder, or 'random:<name>' (tests, benchmarks); see docs/clip_weights.md")
    g.add_argument("--clip_download_root", default=None,
                   help="folder of OpenAI's CLIP files, checked first for named models (default: ~/.cache/clip)")
    g.add_argument("--tapped_layers", default=None,
                   help="comma-separated 0-based CLIP visual blocks to tap (default: per backbone, see "
                        "docs/method.md#model)")
    g.add_argument("--imsize", default=224, type=int)
    g.add_argument("--max_query_len", default=77, type=int, help="text tokens, at most CLIP's 77")
    g.add_argument("--vl_dropout", default=0.1, type=float)
    g.add_argument("--vl_nheads", default=8, type=int)
    g.add_argument("--vl_hidden_dim", default=512, type=int,
                   help="fusion width; must equal the CLIP text width (512 for ViT-B, 768 for ViT-L)")
    g.add_argument("--vl_dim_feedforward", default=2048, type=int)
    g.add_argument("--vl_enc_layers", default=6, type=int)

    g = _ScriptGroup(p, "data", script)
    g.add_argument("--data_root", default="./data/image_data/", help="image folders (see docs/data.md)")
    g.add_argument("--split_root", default="./data/pseudo_samples/", help="split files {dataset}/{dataset}_{split}.pth")
    g.add_argument("--dataset", default="referit",
                   help="referit, unc, unc+, gref, gref_umd, flickr, or synthetic")
    g.add_argument("--prompt", help="template with {pseudo_query}, e.g. 'find the region that corresponds "
                                    "to the description {pseudo_query}'")
    g.add_argument("--num_workers", type=int)
    g.add_argument("--cache_images", action="store_true",
                   help="keep every decoded image in memory after its first use (per process and data-loader "
                        "worker), or with no augmentation on (evaluation, or training with every --aug_* off) the "
                        "resized, normalised and padded image (shared by every data set of the process, so the runs of "
                        "an in-process SSA / MSA driver reuse it) and each sample's item: faster epochs for data sets "
                        "that fit in RAM, e.g. the synthetic one on a CPU")

    g = _ScriptGroup(p, "run", script)
    g.add_argument("--output_dir", default="./outputs", help="where checkpoints, logs and results go")
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    g.add_argument("--seed", default=13, type=int, help="base seed; each process uses seed + rank")
    g.add_argument("--resume", default="", help="checkpoint to continue from, or 'auto' (latest in --output_dir)")
    g.add_argument("--retrain", default="", help="initialise the model from this checkpoint, fresh optimizer")
    g.add_argument("--overwrite", action="store_true",
                   help="train script: start a new run in an --output_dir that already holds one, deleting its "
                        "checkpoint.pth, best_checkpoint.pth, log.txt, result.json and tensorboard/ first (without "
                        "it such a folder is refused: continue its run with --resume auto instead)")
    g.add_argument("--start_epoch", default=0, type=int)
    g.add_argument("--full_checkpoint", action="store_true",
                   help="write full checkpoints (CLIP tensors included) that the official code can load")
    g.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    g.add_argument("--skip_bad_samples", action=argparse.BooleanOptionalAction, default=True,
                   help="training: skip malformed samples and print their count (evaluation never skips)")

    g = _ScriptGroup(p, "distributed", script)
    g.add_argument("--world_size", default=1, type=int)
    g.add_argument("--dist_url", default="env://")
    g.add_argument("--local_rank", "--local-rank", dest="local_rank", default=-1, type=int,
                   help="set by the legacy torch.distributed.launch without --use_env")

    g = _ScriptGroup(p, "evaluation", script)
    g.add_argument("--eval_set", help="split to evaluate or score")
    g.add_argument("--eval_model", default="", help="checkpoint to evaluate")
    g.add_argument("--save_predictions", default="",
                   help="eval: write one JSON line per sample (index, image, query, target_xyxy, pred_xyxy, iou)")
    g.add_argument("--report", default="",
                   help="eval: write report.md and a self-contained report.html (metric tables, IoU histogram, "
                        "worst and best predictions) into this folder; reliability script: the same for the least and "
                        "most reliable pseudo labels")

    g = _ScriptGroup(p, "inference (inference.py)", script)
    g.add_argument("--image", default="", help="image file to ground --query in")
    g.add_argument("--query", default="", help="referring expression")
    g.add_argument("--out", default="", help="write the image with the predicted box drawn on it here")
    g.add_argument("--batch_file", default="",
                   help='JSON list of {"image": PATH, "query": TEXT[, "out": PATH]} to ground in one run')
    g.add_argument("--attention", default="",
                   help="write a picture of where the [REG] token looked here (heatmap over the image patches, "
                        "weights of the query's words, the box); single-image mode only")
    g.add_argument("--attention_layer", default=-1, type=int,
                   help="fusion layer whose [REG] attention --attention shows (0-based; default -1: the last)")

    g = _ScriptGroup(p, "official flags without effect (accepted, hidden; they warn when given)", script)
    g.add_argument("--emb_size", default=512, type=int)
    g.add_argument("--num_queries", default=100, type=int)
    g.add_argument("--dim_feedforward", default=2048, type=int)
    g.add_argument("--dropout", default=0.1, type=float)
    g.add_argument("--nheads", default=8, type=int)
    g.add_argument("--pre_norm", action="store_true")
    g.add_argument("--light", action="store_true")
    g.add_argument("--vl_dec_layers", default=6, type=int)
    g.add_argument("--model_name", default="TransVG")
    g.add_argument("--bert_enc_num", default=12, type=int)
    g.add_argument("--detr_enc_num", default=6, type=int)
    g.add_argument("--backbone", default="resnet50")
    g.add_argument("--dilation", action="store_true")
    g.add_argument("--position_embedding", default="sine")
    g.add_argument("--enc_layers", default=6, type=int)
    g.add_argument("--dec_layers", default=0, type=int)
    g.add_argument("--hidden_dim", default=256, type=int)
    g.add_argument("--cross_num_attention_heads", default=1, type=int)
    g.add_argument("--cross_vis_hidden_size", default=512, type=int)
    g.add_argument("--cross_text_hidden_size", default=512, type=int)
    g.add_argument("--cross_hidden_dropout_prob", default=0.1, type=float)
    g.add_argument("--cross_attention_probs_dropout_prob", default=0.1, type=float)

    p.set_defaults(**SCRIPT_DEFAULTS[script], script=script)
    return p


def given_flags(argv: Iterable[str]) -> set[str]:
    """Names (dest style) of the ``--flags`` present on a command line."""
    out = set()
    for tok in argv:
        if tok.startswith("--"):
            out.add(tok[2:].split("=", 1)[0].replace("-", "_"))
    return out


def warn_no_op_flags(argv: Sequence[str]) -> list[str]:
    """Warn once for each given official flag that has no effect; returns their names."""
    hit = sorted(given_flags(argv) & NO_OP_FLAGS.keys())
    for name in hit:
        warnings.warn(f"--{name} has no effect: {NO_OP_FLAGS[name]}", stacklevel=2)
    return hit


def parse_args(script: str, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (None: sys.argv) with the shared parser and warn about no-op flags."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser(script).parse_args(argv)
    args.no_op_flags = warn_no_op_flags(argv)
    args.given_flags = sorted(given_flags(argv))
    accepted = SCRIPT_FLAGS[script] | OFFICIAL_FLAGS | HIDDEN_EXTRA_FLAGS.get(script, frozenset())
    # --no-X is the negative form of a boolean flag X (argparse.BooleanOptionalAction)
    foreign = sorted(f for f in args.given_flags if f not in accepted and f.removeprefix("no_") not in accepted)
    if foreign:
        raise UsageError(f"--{foreign[0]} is not an option of this script (see --help)")
    if args.max_query_len < 2 or args.max_query_len > 77:
        raise UsageError(f"--max_query_len {args.max_query_len}: must be between 2 and CLIP's 77")
    if args.lr_per_step and args.lr_scheduler == "step":
        raise UsageError("--lr_per_step: the step schedule drops per epoch (--lr_drop); use a multiplier schedule "
                         "(--lr_scheduler poly, halfdecay, cosine or exponential)")
    if args.val_interval_steps < 0:
        raise UsageError(f"--val_interval_steps {args.val_interval_steps}: must be 0 (every epoch) or more")
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError(f"--max_steps {args.max_steps}: must be at least 1")
    return args
