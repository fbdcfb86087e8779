"""``mova ask --gpus``: one model per GPU on this machine, each answering its share of the items.

With Ray installed (``mova[ray]``) this is ``--ray`` on a local Ray with one replica per listed GPU:
Ray balances the items and one writer writes ``-o``. Without it, the fallback is a process per GPU: this
command started again without ``--gpus`` (``mova.batch.distributed``'s launcher sets ``RANK``/
``WORLD_SIZE`` as torchrun does), and rank 0 merges their part files into ``-o``.
"""

import importlib.util
import logging
import os
from dataclasses import replace

import click

from mova.batch.distributed import launch_local, relaunch_command
from mova.batch.runner import current_world
from mova.batch.spec import RAY_LOCAL, STDOUT, AskSpec

logger = logging.getLogger(__name__)


def resolve_gpus(spec: AskSpec, gpus: tuple[int, ...]) -> tuple[AskSpec, tuple[int, ...]]:
    """The GPUs to start one process each on (``()``: all); one GPU is used in this process instead
    (returned as the spec's device, with no GPUs to launch)."""
    import torch  # only when --gpus is given

    if current_world().distributed:
        raise click.UsageError("--gpus starts one process per GPU itself: do not also start mova with a launcher")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise click.UsageError("--gpus needs CUDA GPUs and torch finds none on this machine; leave --gpus out")
    gpus = gpus or tuple(range(count))
    if max(gpus) >= count:
        raise click.UsageError(f"--gpus {max(gpus)}: this machine has {count} GPU(s), numbered 0-{count - 1}")
    if spec.device not in ("auto", "cuda"):
        raise click.UsageError("--gpus chooses the device of each process: leave out --device")
    if spec.device_map or spec.max_memory:
        raise click.UsageError(
            "--gpus runs one whole model per GPU; for a model larger than one GPU use --device-map in one process"
        )
    if len(gpus) == 1:
        return replace(spec, device=f"cuda:{gpus[0]}"), ()
    if importlib.util.find_spec("ray") is not None:
        if spec.ray is not None:
            raise click.UsageError("--gpus runs on a local Ray itself: use --ray with --replicas instead")
        os.environ["CUDA_VISIBLE_DEVICES"] = _visible(gpus)  # the local Ray sees (and places on) only these
        return replace(spec, ray=RAY_LOCAL, replicas=len(gpus), gpus_per_replica=1), ()
    if spec.output == STDOUT:
        raise click.UsageError("--gpus needs -o FILE: every process writes its own part of it")
    if spec.files_from == STDOUT:
        raise click.UsageError("--gpus processes cannot share --files-from stdin; write the list to a file")
    return spec, gpus


def launch(gpus: tuple[int, ...], argv: list[str] | None) -> int:
    """One process per GPU, each answering its share; their exit code."""
    if not argv:
        raise click.UsageError("--gpus cannot re-launch this command; use torchrun or accelerate launch")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": _visible(gpus)}
    logger.info("starting %d processes on GPUs %s", len(gpus), env["CUDA_VISIBLE_DEVICES"])
    return launch_local(relaunch_command(argv, drop_option="--gpus"), nprocs=len(gpus), env=env)


def _visible(gpus: tuple[int, ...]) -> str:
    """``CUDA_VISIBLE_DEVICES`` for the listed GPUs (numbered as this process sees them)."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")] if visible else [str(i) for i in range(torch.cuda.device_count())]
    return ",".join(ids[gpu] for gpu in gpus)


__all__ = ["launch", "resolve_gpus"]
