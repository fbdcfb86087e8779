"""`--ray` scaling: the same pages answered in one process, on Ray with 1 replica and with 2.

    python benchmarks/ray_scaling.py [--pages 24] [--model small-random] [--route-only]
                                     [--max-new-tokens 8] [--rounds 2] [--threads 1]

Each mode runs ``mova.batch.run`` in its own subprocess over the same generated PNG pages (a fresh
output each time), the Ray modes on a local Ray started in that subprocess (its start-up is not
counted: a cluster is up before a run). Reported per mode: items/s over the whole run (the model
loads included) and in the steady part (first record to last, where replicas are loaded), and the
ratios to the one-process mode. ``--threads`` pins torch's threads in every process (one process, and
each replica: Ray gives an actor of one CPU one thread), so a replica and the one process compute
alike and the ratio at one replica is Ray's overhead. Modes alternate for ``--rounds``; each mode's
best round counts (noise on a shared machine only ever adds time). Records of every mode are
compared with the one-process run's (all fields but run ids and timings).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mova.batch import LogObserver

MODES = {"one process": None, "ray, 1 replica": 1, "ray, 2 replicas": 2}
VARYING = ("run", "timing_ms", "timings_ms")


def make_pages(folder: Path, count: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (320 + i, 240), (i * 37 % 256, i * 91 % 256, 200 - i % 200)).save(folder / f"p{i:03d}.png")


class _Times(LogObserver):
    """The default observer, noting when each record arrived."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def record(self, record: dict) -> None:
        self.times.append(time.perf_counter())


def run_mode(args: argparse.Namespace) -> dict:
    """One mode in this process (the subprocess): its timings as a dict."""
    import mova.batch

    options = {"prompt": "What is shown?", "model": args.model, "max_new_tokens": args.max_new_tokens}
    options |= {"route_only": args.route_only, "output": args.output, "batch_size": args.batch_size}
    if args.replicas:
        import ray

        ray.init(num_cpus=(os.cpu_count() or 1) + args.replicas, include_dashboard=False, logging_level="ERROR")
        options |= {"ray": "local", "replicas": args.replicas}
    times = _Times()
    start = time.perf_counter()
    outcome = mova.batch.run(args.docs, observer=times, **options)
    wall = time.perf_counter() - start
    items = outcome.summary.ok + outcome.summary.failed
    steady = (len(times.times) - 1) / (times.times[-1] - times.times[0]) if len(times.times) > 1 else float("nan")
    return {"items": items, "wall_s": wall, "items_per_s": items / wall, "steady_items_per_s": steady}


def _records(path: Path) -> dict[str, dict]:
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    return {r["id"]: {k: v for k, v in r.items() if k not in VARYING} for r in records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=24)
    parser.add_argument("--model", default="small-random")
    parser.add_argument("--route-only", action="store_true")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mode-replicas", type=int, default=None, help=argparse.SUPPRESS)  # one mode's subprocess
    parser.add_argument("--docs", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.docs:
        args.replicas = args.mode_replicas
        print(json.dumps(run_mode(args)))
        return

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mova-ray-bench-") as folder:
        docs = Path(folder) / "docs"
        make_pages(docs, args.pages)
        reference = None
        for round_ in range(args.rounds):
            for mode, replicas in MODES.items():
                output = Path(folder) / f"{round_}-{replicas}.jsonl"
                command = [sys.executable, __file__, "--docs", str(docs), "--output", str(output)]
                command += ["--model", args.model, "--max-new-tokens", str(args.max_new_tokens)]
                command += ["--batch-size", str(args.batch_size), *(["--route-only"] if args.route_only else [])]
                command += [] if replicas is None else ["--mode-replicas", str(replicas)]
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
                report = json.loads(done.stdout.strip().splitlines()[-1])
                records = _records(output)
                reference = reference if reference is not None else records
                report["same_records"] = records == reference
                print(f"round {round_ + 1}, {mode}: {report}", file=sys.stderr)
                if mode not in best or report["items_per_s"] > best[mode]["items_per_s"]:
                    best[mode] = report
    one = best["one process"]
    print(
        f"machine: {os.cpu_count()} CPUs; {args.pages} pages, {args.model}, route_only={args.route_only}, "
        f"max_new_tokens={args.max_new_tokens}, -b {args.batch_size}, {args.threads} torch thread(s) per process"
    )
    print(f"{'mode':<17} {'items/s':>8} {'steady':>8} {'vs one':>7} {'steady vs one':>14} same records")
    for mode, report in best.items():
        print(
            f"{mode:<17} {report['items_per_s']:8.2f} {report['steady_items_per_s']:8.2f} "
            f"{report['items_per_s'] / one['items_per_s']:7.2f} "
            f"{report['steady_items_per_s'] / one['steady_items_per_s']:14.2f} {report['same_records']}"
        )


if __name__ == "__main__":
    main()
