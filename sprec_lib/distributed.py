"""Several processes (``accelerate launch``): who writes, and how the others wait for it.

Under ``accelerate launch --num_processes N ... -m sprec_lib train ...`` every process runs the
same command. The trainers train data-parallel (trl's, on accelerate); everything else a run does,
creating its folder, its log, the ``DONE`` markers and saved models, the shared stage cache, the
self-play negatives, generation and evaluation, ``FINISHED``, happens once, on the main process
(:func:`is_main`), while the others wait (:func:`on_main`, :func:`barrier`) and then read what it
wrote. :class:`sprec_lib.runs.Run` writes nothing on another process.

Cheap when not launched: the rank and the number of processes come from the environment variables
the launcher sets (``RANK``, ``WORLD_SIZE``; absent: one process, the main one), and no process
group is made unless ``WORLD_SIZE > 1``. Then :func:`init` joins it through accelerate's
``PartialState`` (the trainers share that state, so the group is made once), gloo on CPU, NCCL on
CUDA (the state also pins each process to its GPU), and adds a gloo group of its own for the
waits: the main process may generate or evaluate for a long time while the others wait, longer
than the 30 minutes a collective waits by default (:data:`TIMEOUT`, ``SPREC_DIST_TIMEOUT_HOURS``).

On CPU, ``accelerate launch --cpu --num_processes 2`` starts *one* process (accelerate's CPU path
needs ``mpirun`` for more); ``--multi_gpu --num_processes 2`` starts two through torchrun, and on a
machine without CUDA they train over gloo (``tests/test_distributed.py``).
"""

from __future__ import annotations

import os
import pickle
from datetime import timedelta
from typing import Any, Callable

TIMEOUT = timedelta(hours=float(os.environ.get("SPREC_DIST_TIMEOUT_HOURS", "6")))

_GROUP = None  # the gloo group of the waits, once made


def world_size() -> int:
    """How many processes run this command (1 unless launched by accelerate or torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    """This process's rank (0: the main process; 0 unless launched)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main() -> bool:
    """Whether this is the process that writes (always, unless launched as a non-zero rank)."""
    return rank() == 0


def init():
    """Join the process group when launched with ``WORLD_SIZE > 1`` (once; a no-op otherwise).
    Returns the gloo group :func:`barrier` and :func:`on_main` use, or None for one process."""
    global _GROUP
    if world_size() <= 1:
        return None
    if _GROUP is None:
        import torch
        import torch.distributed as dist
        from accelerate import PartialState

        # cpu=True where there is no CUDA: accelerate's multi-CPU (gloo) state; the trainers ask
        # for the same (``use_cpu``) and reuse this one.
        PartialState(cpu=not torch.cuda.is_available(), timeout=TIMEOUT)
        if not dist.is_initialized():
            raise RuntimeError(f"WORLD_SIZE={world_size()} but no process group: accelerate's state was made "
                               "for one process before sprec_lib.distributed.init() ran")
        _GROUP = dist.new_group(backend="gloo", timeout=TIMEOUT)
    return _GROUP


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for with one process)."""
    group = init()
    if group is not None:
        import torch.distributed as dist

        dist.barrier(group=group)


def _shippable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling (to be raised on the other processes too), else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"on the main process: {type(error).__name__}: {error}")


def on_main(fn: Callable, *args, share: bool = True, **kwargs) -> Any:
    """Run ``fn(*args, **kwargs)`` on the main process only, while the others wait for it.

    Returns its result on the main process and, with ``share``, a copy of it on the others (it
    must pickle; ``share=False``: None there). An exception ``fn`` raises is raised on every
    process, so that none is left waiting for a main process that has stopped. With one process
    this is ``fn(*args, **kwargs)``."""
    group = init()
    if group is None:
        return fn(*args, **kwargs)
    import torch.distributed as dist

    box: list = [None]
    result = None
    if is_main():
        try:
            result = fn(*args, **kwargs)
            box[0] = ("ok", result if share else None)
        except BaseException as e:
            box[0] = ("error", _shippable(e))
            dist.broadcast_object_list(box, src=0, group=group)
            raise
    dist.broadcast_object_list(box, src=0, group=group)
    kind, value = box[0]
    if kind == "error":
        raise value
    return result if is_main() else value
