"""Each entry script's command line: its own options in --help, the official flags still accepted, other scripts'
flags refused."""
import pytest

from utils.args import NO_OP_FLAGS, OFFICIAL_FLAGS, SCRIPT_FLAGS, get_args_parser, parse_args
from utils.errors import UsageError

SCRIPTS = ("train", "eval", "reliability", "inference")


def _help(script: str) -> str:
    return get_args_parser(script).format_help()


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_the_scripts_own_options_only(script):
    text = _help(script)
    for flag in SCRIPT_FLAGS[script]:
        assert f"--{flag}" in text, flag
    others = set().union(*SCRIPT_FLAGS.values()) - SCRIPT_FLAGS[script]
    for flag in others:
        assert f"--{flag} " not in text and f"--{flag}\n" not in text, flag
    for flag in NO_OP_FLAGS:
        assert f"--{flag} " not in text, flag


def test_the_train_scripts_help_lost_inference_and_official_no_op_flags():
    text = _help("train")
    assert "--lr_per_step" in text and "--aug_crop" in text and "--overwrite" in text
    assert "--batch_file" not in text and "--query" not in text and "--emb_size" not in text
    assert "--save_predictions" not in text
    assert "--image" in _help("inference") and "--lr_scheduler" not in _help("inference")


@pytest.mark.parametrize("script", SCRIPTS)
def test_official_flags_are_accepted_by_every_script(script, recwarn):
    argv = ["--lr", "0.00025", "--aug_crop", "--eval_set", "val", "--eval_model", "m.pth", "--emb_size", "256",
            "--world_size", "4", "--dist_url", "env://", "--retrain", ""]
    args = parse_args(script, argv)
    assert args.lr == 0.00025 and args.aug_crop and args.emb_size == 256
    assert {"emb_size", "world_size"} <= set(args.no_op_flags)
    assert any("--emb_size has no effect" in str(w.message) for w in recwarn)
    assert OFFICIAL_FLAGS >= {"lr", "aug_crop", "eval_set", "eval_model", "emb_size", "world_size"}


@pytest.mark.parametrize("script, flag", [("train", "--image"), ("train", "--save_predictions"),
                                          ("eval", "--overwrite"), ("reliability", "--save_predictions"),
                                          ("inference", "--cache_images"), ("inference", "--max_steps")])
def test_another_scripts_own_flag_is_refused_with_its_name(script, flag):
    value = [] if flag in ("--overwrite", "--cache_images") else ["x" if flag != "--max_steps" else "3"]
    with pytest.raises(UsageError, match=f"^{flag} is not an option of this script"):
        parse_args(script, [flag, *value])


def test_the_reliability_script_takes_the_training_arguments_the_curriculum_drivers_pass_it():
    args = parse_args("reliability", ["--lr_per_step", "--lr_scheduler", "cosine", "--no-aug_color",
                                      "--val_interval_steps", "250", "--max_steps", "9"])
    assert args.lr_per_step and not args.aug_color and args.max_steps == 9
    assert not parse_args("train", ["--no-aug_color", "--no-skip_bad_samples"]).skip_bad_samples
    assert "--lr_per_step" not in _help("reliability")
