"""Several processes on one job: who am I (rank), waiting for the others, and ``--gpus`` launching.

Launchers (``accelerate launch``, ``torchrun``, ``mova ask --gpus``) start one process per device with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set. Each rank answers its share of the plan and writes its
own part file; the ranks only talk to each other to agree on a run id, to wait until rank 0 has
tidied the output before anyone writes, and to wait for everyone before rank 0 merges. Those are tiny
CPU messages, so they go over a gloo group even on GPUs (no GPU stays busy in a barrier for hours).
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

logger = logging.getLogger(__name__)

# A rank may finish its share hours before the slowest one; the final barrier must outlast that.
BARRIER_TIMEOUT = timedelta(days=7)
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one launched run.

    Attributes:
        rank: 0..world_size-1 over all machines; rank 0 merges the parts at the end.
        world_size: number of processes; 1 when not launched.
        local_rank: index among the processes of this machine (the GPU it uses).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect_world(environ: Mapping[str, str] | None = None) -> World:
    """The world described by the launcher's environment variables (a single process if none).

    Raises:
        ValueError: the variables are not integers or the rank is outside the world.
    """
    env = os.environ if environ is None else environ
    if not any(key in env for key in ENV_KEYS):
        return World()
    try:
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        values = ", ".join(f"{key}={env.get(key)!r}" for key in ENV_KEYS)
        raise ValueError(f"launcher environment is not numeric ({values})") from exc
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(f"launcher environment is inconsistent: RANK={rank}, WORLD_SIZE={world_size}")
    return World(rank=rank, world_size=world_size, local_rank=local_rank)


class ProcessGroup:
    """The ranks of a launched run, joined through accelerate's ``PartialState``.

    Without CUDA, ``PartialState(cpu=True)`` is what makes torchrun's processes form one gloo group
    (plain ``PartialState()`` leaves each process alone). With CUDA, accelerate joins them over NCCL
    and this class adds a gloo group for its own messages.

    Raises:
        RuntimeError: another rank died while this one waited (``barrier``, ``broadcast``).
    """

    def __init__(self, *, timeout: timedelta = BARRIER_TIMEOUT) -> None:
        import torch  # torch and accelerate: only in a launched run (the batch layer loads without them)
        import torch.distributed as dist
        from accelerate import PartialState

        self._state = PartialState(cpu=not torch.cuda.is_available(), timeout=timeout)
        if not dist.is_initialized():
            raise RuntimeError("accelerate did not start a process group; launch with torchrun or accelerate")
        self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo", timeout=timeout)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier(group=self._group)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value``, on every rank."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self._group)
        return box[0]

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- `mova ask --gpus`: one process per GPU -------------------------------------------------------


def relaunch_command(args: Sequence[str], *, drop_option: str, orig_argv: Sequence[str] | None = None) -> list[str]:
    """The command line that runs this program again with ``args`` minus ``drop_option`` and its value.

    Args:
        args: the arguments the root command parsed (after the program name).
        drop_option: a long option that takes a value (``--gpus``), given as ``--gpus X`` or ``--gpus=X``.
        orig_argv: the interpreter's command line (``sys.orig_argv``); what precedes ``args`` in it
            (``python -m mova_cli``, ``.../bin/mova``, a wrapper script) is kept. When ``args`` are not
            its tail (an in-process call), ``python -m mova_cli`` is used.
    """
    orig = list(sys.orig_argv if orig_argv is None else orig_argv)
    args = list(args)
    if args and len(orig) > len(args) and orig[-len(args) :] == args:
        prefix = orig[: -len(args)]
    else:
        prefix = [sys.executable, "-m", "mova_cli"]
    kept: list[str] = []
    skip = False
    for position, arg in enumerate(args):
        if skip:
            skip = False
        elif arg == "--":
            kept.extend(args[position:])
            break
        elif arg == drop_option:
            skip = True
        elif not arg.startswith(drop_option + "="):
            kept.append(arg)
    return prefix + kept


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # killed by signal N -> 128 + N (shell style)


def launch_local(
    command: Sequence[str], *, nprocs: int, env: Mapping[str, str] | None = None, poll_seconds: float = 0.1
) -> int:
    """Run ``command`` ``nprocs`` times on this machine as the ranks of one run, as torchrun would.

    Each process gets ``RANK``/``LOCAL_RANK`` (0..nprocs-1), ``WORLD_SIZE``/``LOCAL_WORLD_SIZE``,
    ``MASTER_ADDR`` and a free ``MASTER_PORT``. When a process fails (non-zero exit), the others are
    stopped: they would otherwise wait for it forever. Ranks other than 0 exit 0 when their share is
    done; rank 0 exits last, with the code for the whole run.

    Args:
        command: the program and its arguments.
        nprocs: number of processes.
        env: the environment to start from (default: this process's).

    Returns:
        Rank 0's exit code, or the first failing rank's (signals as 128 + N).
    """
    base = dict(os.environ if env is None else env)
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(nprocs))
    base["LOCAL_WORLD_SIZE"] = str(nprocs)
    processes = []
    for rank in range(nprocs):
        rank_env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        processes.append(subprocess.Popen(list(command), env=rank_env))
    failed: int | None = None
    try:
        while [process.poll() for process in processes].count(None):  # poll every process, every time
            failure = next((p for p in processes if p.returncode not in (None, 0)), None)
            if failure is not None:
                failed = _exit_code(failure.returncode)
                logger.warning("rank %d exited with %d; stopping the others", processes.index(failure), failed)
                _stop(processes)
                break
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        # Ctrl-C reached every process of the terminal's group; give them time to flush and exit.
        _stop(processes, signal_first=signal.SIGINT)
        raise
    if failed is not None:
        return failed
    first = next((p for p in processes if p.returncode != 0), processes[0])
    return _exit_code(first.returncode)


def _stop(processes: list[subprocess.Popen], *, signal_first: int = signal.SIGTERM, grace: float = 10.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal_first)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


__all__ = [
    "BARRIER_TIMEOUT",
    "ProcessGroup",
    "World",
    "detect_world",
    "launch_local",
    "relaunch_command",
]
