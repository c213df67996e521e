"""Runs the operator under tracemalloc and keeps its heap at the traced peak and on request.

    python benchmarks/operator_memtrace.py OUT_PREFIX [operator flags...]
    python benchmarks/operator_memtrace.py --report OUT_PREFIX

Every 5 s it reads the traced size. At a new peak (5 % above the last, at most once a minute) it writes
`OUT_PREFIX.snapshot` (a `tracemalloc.Snapshot`, 8 frames deep) and `OUT_PREFIX.types.json` (live objects
per type from the garbage collector, and the RSS then). Touching `OUT_PREFIX.now` writes the same pair as
`OUT_PREFIX-now.*` at once: the steady state after a run. `operator_scale.py --memtrace OUT_PREFIX` starts
the operator this way. Tracing slows the operator several times over and inflates its RSS: use it to see
where memory goes, not for the scale figures. `--report` prints the top allocation sites and types.
"""

from __future__ import annotations

import collections
import gc
import importlib
import json
import runpy
import sys
import threading
import time
import tracemalloc
from pathlib import Path

FRAMES, EVERY_SECONDS, STEP = 8, 5.0, 1.05
# A snapshot of a large heap holds the GIL for seconds: peaks are kept at most this often.
PEAK_EVERY_SECONDS = 60.0


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def live_types() -> dict[str, int]:
    counts = collections.Counter(type(obj).__qualname__ for obj in gc.get_objects())
    return dict(counts.most_common(40))


def dump(prefix: Path, traced: int) -> None:
    tracemalloc.take_snapshot().dump(str(prefix.with_suffix(".snapshot")))
    summary = {"traced_mib": traced / 2**20, "rss_mib": rss_mib(), "types": live_types()}
    prefix.with_suffix(".types.json").write_text(json.dumps(summary, indent=1))


def keep_peaks(prefix: Path) -> None:
    peak, last, ask = 0, 0.0, prefix.with_suffix(".now")
    while True:
        time.sleep(EVERY_SECONDS)
        traced, _ = tracemalloc.get_traced_memory()
        if ask.exists():
            ask.unlink()
            dump(prefix.with_name(prefix.name + "-now"), traced)
        if traced >= peak * STEP and time.monotonic() - last >= PEAK_EVERY_SECONDS:
            peak, last = traced, time.monotonic()
            dump(prefix, traced)


def report(prefix: Path, top: int = 25) -> None:
    summary = json.loads(prefix.with_suffix(".types.json").read_text())
    print(f"traced {summary['traced_mib']:.1f} MiB at RSS {summary['rss_mib']:.1f} MiB")
    for name, count in list(summary["types"].items())[:20]:
        print(f"{count:>9}  {name}")
    snapshot = tracemalloc.Snapshot.load(str(prefix.with_suffix(".snapshot")))
    for key in ("filename", "lineno"):
        print(f"\n-- by {key}")
        for stat in snapshot.statistics(key)[:top]:
            print(f"{stat.size / 2**20:8.2f} MiB {stat.count:>9}  {stat.traceback[0]}")


def main() -> None:
    if sys.argv[1] == "--report":
        report(Path(sys.argv[2]))
        return
    prefix = Path(sys.argv[1])
    sys.argv = ["torchjob_operator", *sys.argv[2:]]
    # Imported before tracing starts: the heap of interest is the objects the run holds, not the code.
    # The client's API classes load lazily, and tracing their thousands of annotations takes minutes.
    for module in (
        "torchjob_operator.main",
        "kubernetes.client.api.core_v1_api",
        "kubernetes.client.api.custom_objects_api",
    ):
        importlib.import_module(module)
    tracemalloc.start(FRAMES)
    threading.Thread(target=keep_peaks, args=(prefix,), name="memtrace", daemon=True).start()
    runpy.run_module("torchjob_operator", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
