"""Launched by tests under torchrun (2 gloo ranks): a run where one rank fails, and a training epoch on per-rank data.

    dist_failures.py MODE --device cpu      (PROBE_OUT: folder for per-rank JSON reports)

MODE ``input_error``: rank 1 raises an ``InputError`` while rank 0 waits in a barrier. ``nan``: a training epoch
whose loss turns non-finite on rank 1 only, at step 2. ``loss_mean``: a training epoch on different data per rank
with a frozen model; each rank reports its own mean loss (computed directly) and what ``train_one_epoch`` returned.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

import engine  # noqa: E402
from models.loss import grounding_loss  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import InputError  # noqa: E402
from utils.misc import barrier  # noqa: E402
from utils.run_setup import run_distributed  # noqa: E402

STEPS, BATCH = 4, 2


class Boxes(torch.nn.Module):
    """A stand-in grounding model: one learnable box shifted by the first four pixels of each 'image'."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(4))

    def forward(self, img: torch.Tensor, img_mask: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits + img[:, :4])


def batches(rank: int, nan_step: int = -1) -> list:
    gen = torch.Generator().manual_seed(rank)
    out = []
    for step in range(STEPS):
        img = torch.randn(BATCH, 4, generator=gen) * (rank + 1)
        if step == nan_step:
            img[0, 0] = float("nan")
        box = torch.tensor([[0.5, 0.5, 0.2, 0.3]]).repeat(BATCH, 1)
        out.append({"img": img, "img_mask": torch.zeros(BATCH), "text": torch.zeros(BATCH), "box": box,
                    "index": torch.arange(BATCH) + 100 * rank + BATCH * step})
    return out


def train(args, data: list, lr: float) -> engine.TrainStats:
    model = Boxes()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return engine.train_one_epoch(model, data, optimizer, args.device, 0, check_every=1, world_size=args.world_size)


def run(args) -> None:
    mode = args.eval_set
    if mode == "input_error":
        if args.rank == 1:
            raise InputError("samples.pth: sample 7 has no query")
        barrier()
    elif mode == "nan":
        train(args, batches(args.rank, nan_step=2 if args.rank == 1 else -1), lr=0.1)
    elif mode == "loss_mean":
        data = batches(args.rank)
        own = sum(float(grounding_loss(Boxes()(b["img"], None, None), b["box"])["loss"]) for b in data) / STEPS
        stats = train(args, data, lr=0.0)
        with open(os.path.join(os.environ["PROBE_OUT"], f"rank{args.rank}.json"), "w") as fh:
            json.dump({"own_loss": own, "logged_loss": stats.loss}, fh)


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    run_cli(lambda: run_distributed("eval", run, ["--eval_set", mode, *rest]))
