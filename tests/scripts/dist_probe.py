"""Launched by tests under each launcher: parses the shared flags, initialises the process group and reports."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from utils.args import parse_args  # noqa: E402
from utils.misc import all_gather_object, cleanup_distributed, get_rank, init_distributed_mode  # noqa: E402

args = parse_args("eval", sys.argv[1:])
init_distributed_mode(args)
ranks = all_gather_object(get_rank())
report = {"rank": args.rank, "world": args.world_size, "local_rank": args.local_rank,
          "distributed": args.distributed, "device": str(args.device), "gathered": ranks}
with open(os.path.join(os.environ["PROBE_OUT"], f"rank{args.rank}.json"), "w") as fh:
    json.dump(report, fh)
cleanup_distributed()
