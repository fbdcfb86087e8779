"""``--ray``: the run's items answered on a Ray cluster (or a local Ray), the driver the one writer.

The driver plans exactly as a one-process run; here the todo list becomes a Ray dataset of one row
per page: decoded by Ray CPU tasks (``replica.decode_row``), answered by a pool of actors that each
load the model once (``replica.Replica``), and streamed back as records, which the runner writes as
it writes its own. Ray retries the work of a replica that dies (a killed process, out of memory); the
driver keeps each job's first record only, and a job whose work failed on every retry becomes an
error record, so every job is accounted for exactly once.
"""

import logging
import os
import signal
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import orjson

from .answering import ModelSettings, prompt_problem_records, unit_groups
from .errors import SetupError
from .jobs import Job
from .planning import RunPlan
from .records import RecordContext, build_record, error_fields
from .replica import Replica, decode_row, units_per_call
from .sources import SourceUnit
from .spec import RAY_LOCAL, AskSpec

logger = logging.getLogger(__name__)

TASK_RETRIES = 3  # tries of a replica's batch after its process died, before its jobs become error records
DECODE_CPUS = 0.5  # a decoding task's CPU share: not the replicas' 1, so Ray keeps decoding in its own tasks
CONNECT_TIMEOUT_S = 10.0
KEPT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # ray.init replaces their handlers
DATA_SETTINGS = {
    "enable_progress_bars": False,  # the run's own progress is on stderr
    "max_errored_blocks": -1,  # a batch lost on every retry: its jobs become error records, not a failed run
    "enable_fallback_to_arrow_object_ext_type": True,  # rows hold our dataclasses, pickled by Ray (no warning)
}
LOGS_HINT = "Ray's logs are under /tmp/ray/session_latest/logs on each node"


@dataclass(frozen=True)
class RayCluster:
    """Where a ``--ray`` run's replicas run, as the manifest records it.

    Attributes:
        address: the cluster's address, or ``local`` for a Ray started for this run.
        replicas: actors in the pool, each holding one copy of the model.
        gpus_per_replica: GPUs each actor holds (0: the model runs on CPU; >1: a device map over them).
    """

    address: str
    replicas: int
    gpus_per_replica: int

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "replicas": self.replicas, "gpus_per_replica": self.gpus_per_replica}


@contextmanager
def ray_cluster(spec: AskSpec) -> Iterator[RayCluster]:
    """Connect to ``spec.ray`` (or start a local Ray) for the run, and leave it when the run ends.

    A Ray this process had already started (``ray.init`` in a notebook) is used and left running.

    Raises:
        SetupError: the cluster cannot be reached.
    """
    import ray  # the [ray] extra: only for --ray

    address = os.environ.get("RAY_ADDRESS") if spec.ray == RAY_LOCAL else spec.ray  # None: start one here
    owned = not ray.is_initialized()
    if owned:
        _start(ray, address, spec)
    try:
        yield _size_pool(ray, spec, address)
    finally:
        if owned:
            ray.shutdown()


def _start(ray: Any, address: str | None, spec: AskSpec) -> None:
    """Connect to ``address``, or start a local Ray (None); the run keeps its own signal handlers."""
    shown = address or "a local Ray"
    options: dict[str, Any] = {"address": address}
    if address is None:
        # A local Ray gets a logical CPU per replica on top of the machine's for decoding: a replica on CPU
        # would otherwise take a CPU that the decoding tasks wait for. A cluster is sized by its owner.
        options = {"address": "local", "num_cpus": (os.cpu_count() or 1) + (spec.replicas or 1)}
    else:
        _check_reachable(address)
    handlers = {signum: signal.getsignal(signum) for signum in KEPT_SIGNALS}
    try:
        ray.init(**options, logging_level=logging.WARNING, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SetupError(f"cannot reach the Ray cluster at {shown}: {exc}") from exc
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in handlers.items():
                signal.signal(signum, handler)  # Ray's driver handler exits at once; the run's own end it whole
    logger.info("on Ray at %s (%s)", shown, LOGS_HINT)


def _check_reachable(address: str) -> None:
    """A cluster address that no server answers is a setup error within seconds (Ray itself waits minutes).

    Raises:
        SetupError: nothing listens at the address's host and port.
    """
    if address in ("auto", "local"):  # Ray's own words: the cluster of this machine
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise SetupError(f"--ray {address}: give HOST:PORT (from `ray start --head`) or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise SetupError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from exc


def _size_pool(ray: Any, spec: AskSpec, address: str | None) -> RayCluster:
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    per_replica = spec.gpus_per_replica if spec.gpus_per_replica is not None else (1 if gpus else 0)
    if per_replica > gpus:
        raise SetupError(f"--gpus-per-replica {per_replica}: the Ray cluster has {gpus} GPU(s)")
    replicas = spec.replicas or (gpus // per_replica if per_replica else 1)
    cpus = resources.get("CPU", 0)
    if replicas + DECODE_CPUS > cpus:
        raise SetupError(
            f"{replicas} replica(s) take one CPU each and decoding needs more, but the Ray cluster has {cpus:g} "
            f"CPU(s): use --replicas {max(1, int(cpus - DECODE_CPUS))} or a larger cluster"
        )
    shown = address or RAY_LOCAL
    return RayCluster(address=shown, replicas=replicas, gpus_per_replica=per_replica)


def answer_on_ray(
    run: RunPlan, settings: ModelSettings, *, context: RecordContext, spec: AskSpec, cluster: RayCluster
) -> Iterator[dict[str, Any]]:
    """The records of ``run``'s jobs, answered by ``cluster``'s replicas, as they come back (completion order)."""
    import ray.data

    yield from prompt_problem_records(run.todo.jobs, context)
    groups = unit_groups(run.todo.jobs)
    if not groups:
        return
    if cluster.gpus_per_replica == 0 and settings.device == "auto":
        settings = replace(settings, device="cpu")  # a replica without GPUs must not reach for one
    with _data_settings(ray.data.DataContext.get_current()):
        yield from _answered(ray, groups, settings, context=context, spec=spec, cluster=cluster)


@contextmanager
def _data_settings(data_context: Any) -> Iterator[None]:
    """Ray Data's settings for the run, put back at its end (a caller's own datasets keep theirs)."""
    saved = {name: getattr(data_context, name) for name in DATA_SETTINGS}
    for name, value in DATA_SETTINGS.items():
        setattr(data_context, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(data_context, name, value)


def _answered(
    ray: Any,
    groups: list[tuple[SourceUnit, list[Job]]],
    settings: ModelSettings,
    *,
    context: RecordContext,
    spec: AskSpec,
    cluster: RayCluster,
) -> Iterator[dict[str, Any]]:
    """The dataset of ``groups`` through the decoding tasks and the replicas; each job's record once."""
    rows = [{"unit": unit, "jobs": jobs} for unit, jobs in groups]
    decoded = ray.data.from_items(rows, override_num_blocks=len(rows)).map(decode_row, num_cpus=DECODE_CPUS)
    with warnings.catch_warnings():
        # Ray has no named parameter for an actor's task retries yet (its default retries forever)
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = decoded.map_batches(
            Replica,
            fn_constructor_kwargs={"settings": settings, "spec": spec, "context": context},
            batch_size=units_per_call(settings.batch_size),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=cluster.replicas),
            num_cpus=1,
            num_gpus=cluster.gpus_per_replica,
            max_task_retries=TASK_RETRIES,
        )
    pending = {job.id: job for _, jobs in groups for job in jobs}
    try:
        for row in dataset.iter_rows():
            record = orjson.loads(row["record"])
            if pending.pop(record["id"], None) is None:
                logger.warning("a record of %s came back twice (a retried batch); kept the first", record["id"])
                continue
            yield record
    except ray.exceptions.RayError as exc:
        raise SetupError(f"the Ray run failed: {_cause(exc)} ({LOGS_HINT})") from exc
    for job in pending.values():
        message = f"no replica returned an answer: its work failed on every one of {TASK_RETRIES} retries ({LOGS_HINT})"
        yield build_record(job, context, status="error", error=error_fields("answer", "replica_lost", message))


def _cause(exc: BaseException) -> str:
    """The first line of what failed inside Ray (a replica that could not load the model, say)."""
    cause = getattr(exc, "cause", None) or exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


__all__ = ["RayCluster", "answer_on_ray", "ray_cluster"]
