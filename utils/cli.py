"""How every entry point ends: the exit statuses tabled in ``utils/errors.py``, applied in one place (``run_cli``).

The project's own errors (``CLIPVGError``) end with one line on stderr, ``error: <message>``; anything else (a
bug, CUDA running out of memory, a failed NCCL call) keeps its full traceback. In a run of several processes each
such line starts with the rank (``[rank1]: error: ...``, as torch prefixes a rank's traceback), and the entry
point runs under torch's ``record`` when torchrun started it, so torchrun's summary names the rank that failed
first.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, Callable, Optional

from torch.distributed.elastic.multiprocessing.errors import record

from utils.errors import CLIPVGError
from utils.misc import rank_prefix

SIGNAL_EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
TORCHRUN_ERROR_FILE = "TORCHELASTIC_ERROR_FILE"
"""Set by torchrun for each worker: where ``record`` writes the worker's error for torchrun's summary."""


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler or torchrun stopping the run); like ``KeyboardInterrupt`` for SIGINT, it is
    no ``Exception``, so ``finally`` blocks run and no handler mistakes it for a failure."""


def _raise_terminated(signum: int, frame: Optional[FrameType]) -> None:
    raise Terminated()


def _stop(prefix: str, signum: signal.Signals) -> SystemExit:
    print(f"{prefix}stopped by {signum.name}{' (Ctrl-C)' if signum == signal.SIGINT else ''}", file=sys.stderr,
          flush=True)
    return SystemExit(SIGNAL_EXIT_STATUS[signum])


def run_cli(main: Callable[[], Any]) -> None:
    """Run an entry point's ``main()`` as a command: a ``CLIPVGError`` prints ``error: <message>`` (one line,
    the rank first in a multi-process run) and exits with its ``exit_code`` (1, or 2 for a ``UsageError``);
    SIGINT exits 130 and SIGTERM 143, each with a one-line note; argparse keeps its own status 2; anything else
    propagates with its traceback. A ``main`` that returns an int returns its exit status (a checker's 1 for
    "problems found"). Tests call ``main(argv)`` directly and see the exception itself."""
    own_sigterm = (threading.current_thread() is threading.main_thread()
                   and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    if own_sigterm:
        signal.signal(signal.SIGTERM, _raise_terminated)
    prefix = rank_prefix()
    try:
        status = (record(main) if TORCHRUN_ERROR_FILE in os.environ else main)()
    except CLIPVGError as exc:
        print(f"{prefix}error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise _stop(prefix, signal.SIGINT) from None
    except Terminated:
        raise _stop(prefix, signal.SIGTERM) from None
    finally:
        if own_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if isinstance(status, int) and not isinstance(status, bool) and status:
        raise SystemExit(status)
