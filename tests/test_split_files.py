"""The one reader of split files: a file that is not a torch.save'd list (a text file named .pth) is a one-line
``InputError`` naming it wherever a split or source file is read (training and evaluation data sets, the checker,
the pseudo-label merge, the curriculum)."""

import pytest

from datasets import build_dataset
from datasets.check import main as check_main
from datasets.records import load_split_file
from pseudo_label_generation_module import merge
from utils.args import parse_args
from utils.errors import InputError


def _text_split(split_root, dataset="unc", split="val"):
    folder = split_root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset}_{split}.pth"
    path.write_text("hello, I am a text file\n")  # decodes as a pickle whose first opcode fails (KeyError: 101)
    return str(path)


def _one_line_naming(exc, path):
    message = str(exc)
    assert isinstance(exc, InputError) and path in message and "\n" not in message, message


@pytest.mark.parametrize("content", [b"hello, I am a text file\n", b"not a split file\n",
                                     b"\x80\x04damaged pickle", b"PK\x03\x04 a cut zip archive"])
def test_a_text_or_damaged_file_is_an_input_error_naming_it(tmp_path, content):
    path = tmp_path / "unc_val.pth"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_split_file(str(path))
    _one_line_naming(info.value, str(path))
    assert "not a readable torch.save file" in str(info.value)


@pytest.mark.parametrize("split, script", [("train_pseudo", "train"), ("val", "eval")])
def test_training_and_evaluation_name_the_text_split(tmp_path, split, script):
    path = _text_split(tmp_path / "splits", split=split)
    args = parse_args(script, ["--dataset", "unc", "--data_root", str(tmp_path / "images"),
                               "--split_root", str(tmp_path / "splits"), "--imsize", "64"])
    with pytest.raises(InputError) as info:
        build_dataset(split, args)
    _one_line_naming(info.value, path)


def test_the_checker_reports_the_text_split_as_unreadable(tmp_path, capsys):
    path = _text_split(tmp_path / "splits")
    status = check_main(["--dataset", "unc", "--data_root", str(tmp_path), "--split_root", str(tmp_path / "splits"),
                         "--splits", "val", "--json"])
    out = capsys.readouterr().out
    assert status == 1 and '"status": "unreadable"' in out
    assert f"split file {path} is not a readable torch.save file" in out


def test_merge_names_the_text_source(tmp_path):
    path = _text_split(tmp_path)
    with pytest.raises(InputError) as info:
        merge.merge_files([path], "unc")
    _one_line_naming(info.value, path)
