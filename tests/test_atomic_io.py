"""utils/io.py is the one atomic writer: final files get the mode a plain open() gives, the curriculum uses it."""
import importlib
import json
import os
import stat

import pytest
import torch

from curriculum.reliability import write_official_subsets
from curriculum.subset_files import prepare_split_root
from utils.io import (atomic_torch_save, atomic_write_bytes, atomic_write_text, current_umask, write_json,
                      write_jsonl)


@pytest.fixture
def umask():
    """Start the test under umask 022 and hand it a setter; the caller's umask is restored afterwards."""
    old = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_get_the_mode_a_plain_open_would_give(tmp_path, umask):
    writers = {"bytes": lambda p: atomic_write_bytes(p, b"x"), "text": lambda p: atomic_write_text(p, "x"),
               "json": lambda p: write_json(p, {"a": 1}), "jsonl": lambda p: write_jsonl(p, [{"a": 1}]),
               "torch": lambda p: atomic_torch_save([1, 2], p)}
    for mask in (0o022, 0o077, 0o002):
        umask(mask)
        assert current_umask() == mask
        plain = tmp_path / f"plain_{mask:o}"
        plain.write_text("x")
        for name, write in writers.items():
            path = str(tmp_path / f"{name}_{mask:o}")
            write(path)
            assert mode(path) == 0o666 & ~mask == mode(plain), (name, oct(mask), oct(mode(path)))
    assert json.loads((tmp_path / "json_22").read_text()) == {"a": 1}
    assert torch.load(tmp_path / "torch_22", weights_only=True) == [1, 2]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_overwrite_keeps_content_whole_and_failed_write_leaves_the_old_file(tmp_path, umask):
    path = str(tmp_path / "f.json")
    write_json(path, {"v": 1})
    with pytest.raises(TypeError):
        write_json(path, {"v": object()})  # not JSON-able: fails inside the write
    assert json.loads(open(path).read()) == {"v": 1}
    assert os.listdir(tmp_path) == ["f.json"]


def test_curriculum_outputs_are_written_by_utils_io(tmp_path, umask):
    umask(0o027)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("curriculum._io")
    samples = [(f"img{i}.jpg", "x", [0.0, 0.0, 4.0, 4.0], "a thing", "y") for i in range(4)]
    out = write_official_subsets(samples, [0.0, 0.35, 0.95, 1.0], str(tmp_path), "unc")
    assert out["refine_0_3"]["count"] == 3 and out["refine_1_0"]["count"] == 1
    assert torch.load(out["refine_0_9"]["path"], weights_only=True) == [samples[2], samples[3]]
    assert mode(out["refine_0_0"]["path"]) == 0o640
    (tmp_path / "orig" / "unc").mkdir(parents=True)
    torch.save(samples, tmp_path / "orig" / "unc" / "unc_val.pth")
    train = prepare_split_root(str(tmp_path / "root"), "unc", str(tmp_path / "orig"), "train_pseudo", samples[:2])
    assert mode(train) == 0o640
    assert os.path.islink(tmp_path / "root" / "unc" / "unc_val.pth")


class _Shell:
    """Unpickling this runs a shell command: what any safe loader must refuse."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_split_files_load_fast_and_as_safely_as_weights_only(tmp_path):
    from datasets.records import load_split_file
    from utils.io import torch_load_plain

    samples = [("img_1.jpg", 3, [1.0, 2.0, 30.0, 40.0], "the red car", [("r1", "car")]),
               ("img_2.jpg", 4, [5, 6, 7, 8], "a dog on the left", []), {"nested": (1, 2.5, None, True)}]
    atomic_torch_save(samples, str(tmp_path / "plain.pth"))
    assert torch_load_plain(str(tmp_path / "plain.pth")) == samples
    assert load_split_file(str(tmp_path / "plain.pth")) == samples
    # tensors and non-zip (legacy) files go to torch.load(weights_only=True) and come back the same
    atomic_torch_save({"w": torch.arange(3.0)}, str(tmp_path / "tensor.pth"))
    assert torch.equal(torch_load_plain(str(tmp_path / "tensor.pth"))["w"], torch.arange(3.0))
    torch.save(samples, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert torch_load_plain(str(tmp_path / "legacy.pth")) == samples
    # code in a pickle is refused by both paths, with the split file named
    torch.save([_Shell()], tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="evil.pth holds objects that torch.load"):
        load_split_file(str(tmp_path / "evil.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="split file .*junk.pth"):
        load_split_file(str(tmp_path / "junk.pth"))
