"""Start-up time of the `mova` command: `python benchmarks/cli_startup.py [--runs N]`.

Times `mova --help`, `mova ask --help`, `mova --version` and `mova experts` as fresh processes (the installed console
script when found, else `python -m mova_cli`) and, for scale, `python -c "import torch"`. The target
is `mova --help` under 0.5 s: the CLI must not import torch or transformers before it has work to do.
Exits 1 when the median of `mova --help` misses the target.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.5


def _time(command: list[str], runs: int) -> list[float]:
    subprocess.run(command, capture_output=True, check=True)  # warm the OS file cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    script = shutil.which("mova") or str(Path(sys.executable).with_name("mova"))
    mova = [script] if Path(script).exists() else [sys.executable, "-m", "mova_cli"]
    cases = {
        "mova --help": [*mova, "--help"],
        "mova ask --help": [*mova, "ask", "--help"],
        "mova --version": [*mova, "--version"],
        "mova experts": [*mova, "experts"],
        "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
    }
    print(f"{'command':40s} {'min':>7s} {'median':>7s} {'max':>7s}   ({args.runs} runs, {' '.join(mova)})")
    medians = {}
    for label, command in cases.items():
        times = _time(command, args.runs)
        medians[label] = statistics.median(times)
        print(f"{label:40s} {min(times):7.3f} {medians[label]:7.3f} {max(times):7.3f}")
    ok = medians["mova --help"] < TARGET_S
    print(f"target: mova --help < {TARGET_S} s: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
