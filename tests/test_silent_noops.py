"""What used to pass without a word: an ignored --model, an empty evaluation split, a folder as a checkpoint, a
checkpoint refused for a global it holds."""
import fractions
import os
import re

import pytest
import torch

import eval as eval_script
from helpers_world import common_args, world_with_checkpoint
from utils.checkpoint import load_checkpoint
from utils.errors import InputError


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return world_with_checkpoint(str(tmp_path_factory.mktemp("noops")), n_train_pseudo=4, n_val=4)


def test_a_given_model_that_the_checkpoint_overrides_is_named_in_a_warning(world, tmp_path):
    argv = common_args(world, tmp_path, "--eval_model", world["ckpt"], "--eval_set", "val")
    argv[argv.index("--model") + 1] = "random:tiny"
    with pytest.warns(UserWarning, match=rf"--model random:tiny is ignored: .*tiny.pth carries its own CLIP, "
                                         rf"{re.escape(world['clip'])}, recorded in it"):
        eval_script.main(argv)


def test_an_empty_evaluation_split_is_an_error_not_accuracy_zero(world, tmp_path):
    torch.save([], os.path.join(world["splits"], "synthetic", "synthetic_testB.pth"))
    with pytest.raises(InputError, match="--eval_set testB of synthetic .*: no samples to evaluate"):
        eval_script.main(common_args(world, tmp_path, "--eval_model", world["ckpt"], "--eval_set", "testB"))


def test_a_folder_given_as_eval_model_is_called_a_folder(world, tmp_path):
    with pytest.raises(InputError, match=f"--eval_model {tmp_path}: is a directory"):
        eval_script.main(common_args(world, tmp_path / "out", "--eval_model", str(tmp_path), "--eval_set", "val"))
    with pytest.raises(InputError, match="is a directory"):
        load_checkpoint(str(tmp_path))


def test_a_refused_checkpoint_names_the_global_it_holds(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"model": {}, "ratio": fractions.Fraction(1, 2)}, path)
    with pytest.raises(InputError) as info:
        load_checkpoint(str(path))
    assert "refused by the safe loader (weights_only=True): it holds a fractions.Fraction" in str(info.value)
    assert "add_safe_globals" not in str(info.value)  # no advice to allow-list it
