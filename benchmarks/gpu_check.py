"""Every GPU check of the trainer in a few minutes, for the day a GPU machine is lent (hack/gpu-check.sh).

Checks (each gives ok, its numbers, and its seconds; one failing does not stop the others):

- `cuda`: torch sees the GPU; device, driver (NVML), torch version.
- `nccl_ddp`: the real trainer under the launcher, 1 process, `--backend nccl`: the NCCL process group,
  DDP, pinned batches, and a scrape of its /metrics during the run: the CUDA allocator gauges and the
  NVML GPU series. One process only: NCCL refuses two ranks on one GPU (see `nccl_shared_refused`).
- `pinned_copy`: the tuned loader's batches are pinned; a non_blocking copy lands intact; pinned vs
  pageable host-to-device bandwidth.
- `loader`: ResNet-18 on FakeData, the naive loader (0 workers, no pinning) vs the tuned one
  (`num_workers=auto`, pinning), samples/s with the training step; goal >= 2.5x with >= 4 workers. For
  the tuned loader also its data-wait ratio (wait in `next()` / step wall time, as the trainer counts
  it; goal <= 0.05) and its headroom H = loader-only samples/s (batches copied to the GPU, no step) /
  the model's samples/s (steps on one batch already on the GPU, no loader) (goal >= 1.2); `goals` holds
  each goal's flag, `ok` is all of them.
- `ddp_overhead`: benchmarks/ddp_overhead.py on CUDA (NCCL, world of one); goal >= 0.95.
- `sharing`: two trainer processes on the one GPU with `TORCHJOB_CUDA_MEMORY_FRACTION`: both on cuda:0
  (local_rank % device_count), backend auto falls back to gloo, both complete.
- `memory_fraction`: a process capped at 2% of the GPU gets CUDA out-of-memory allocating 5%.
- `nccl_shared_refused`: two processes with `--backend nccl` fail with the error naming the fields.

`--dry-run` imports what the checks import and validates the arguments, on any machine (no GPU needed).
Results go to `--out` (default `$OUT/gpu-check.json` when OUT is set, else `build/gpu-check.json`).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # steptiming, also when loaded by path

from steptiming import steady_steps

ROOT = Path(__file__).resolve().parents[1]
CHECKS = (
    "cuda",
    "nccl_ddp",
    "pinned_copy",
    "loader",
    "ddp_overhead",
    "sharing",
    "memory_fraction",
    "nccl_shared_refused",
)
IMPORTS = (
    "torch",
    "torchvision",
    "prometheus_client",
    "pynvml",
    "torchjob_trainer.train",
    "torchjob_trainer.launch",
    "torchjob_trainer.gpu_metrics",
)
Result = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", TORCHJOB_LOG_EVERY="20")
    # Without the venv (the lent machine's own python) the packages come from the working tree.
    paths = [str(ROOT / "core"), str(ROOT / "trainer"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update(extra)
    return env


def launch_cmd(procs: int, *train_args: str) -> list[str]:
    py = sys.executable
    launcher = [py, "-m", "torchjob_trainer.launch", "--standalone", "--nproc-per-node", str(procs)]
    return [*launcher, "--", "-m", "torchjob_trainer", *train_args]


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def run_trainer(cmd: list[str], env: dict[str, str], timeout: float, port: int | None = None) -> Result:
    """Run to the end; with `port`, keep the last scrape of rank 0's /metrics that had CUDA series."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if port is not None:
            text = scrape(port)
            if "torchjob_trainer_cuda_memory_allocated_bytes" in text:
                seen = text
        time.sleep(0.3)
    if proc.poll() is None:
        proc.kill()
    out = proc.communicate()[0]
    return {"rc": proc.returncode, "output": out, "scrape": seen}


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def summary_of(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


def check_cuda(args: argparse.Namespace) -> Result:
    import torch
    from torchjob_trainer import gpu_metrics

    nvml = gpu_metrics.load_nvml()
    ok = torch.cuda.is_available()
    return {
        "ok": ok,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if ok else [],
        "driver": nvml.nvmlSystemGetDriverVersion() if nvml is not None else None,
        "cpus": len(os.sched_getaffinity(0)),
    }


def check_nccl_ddp(args: argparse.Namespace) -> Result:
    port, summary = free_port(), args.work / "nccl-summary.json"
    train = ["--backend", "nccl", "--model", "cnn", "--epochs", "1", "--steps-per-epoch", "400"]
    train += ["--metrics-port", str(port), "--summary-file", str(summary)]
    run = run_trainer(launch_cmd(1, *train), child_env(), args.timeout, port)
    names = ("torchjob_trainer_cuda_memory_allocated_bytes", "torchjob_trainer_gpu_utilization_ratio")
    found = {n: n in run["scrape"] for n in (*names, "torchjob_trainer_gpu_process_memory_bytes")}
    s = summary_of(summary)
    ok = run["rc"] == 0 and "backend=nccl" in run["output"] and all(found[n] for n in names)
    ok = ok and s.get("outcome") == "completed" and s.get("dataloader", {}).get("pin_memory") is True
    gpu_lines = [
        ln
        for ln in run["scrape"].splitlines()
        if ln.startswith(("torchjob_trainer_gpu_", "torchjob_trainer_cuda_"))
    ]
    return {
        "ok": ok,
        "rc": run["rc"],
        "series": found,
        "gpu_series": gpu_lines,
        "summary": s,
        "log_tail": tail(run["output"]),
    }


def check_pinned_copy(args: argparse.Namespace) -> Result:
    import torch
    from torchjob_trainer.data.datasets import SyntheticDataset
    from torchjob_trainer.data.loader import LoaderSettings, make_loader

    data = SyntheticDataset(256, (3, 64, 64), 10)
    loader = make_loader(data, None, 32, LoaderSettings(2, True, False, 2))
    x, _ = next(iter(loader))
    gpu = x.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    intact = bool(torch.equal(gpu.cpu(), x))
    host = torch.randn(64 << 20)  # 256 MiB
    rates = {}
    for name, src in (("pageable", host), ("pinned", host.pin_memory())):
        src.to("cuda", non_blocking=True)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            src.to("cuda", non_blocking=True)
        torch.cuda.synchronize()
        rates[name + "_bytes_per_second"] = 5 * src.numel() * 4 / (time.perf_counter() - start)
    return {
        "ok": bool(x.is_pinned()) and intact,
        "batch_pinned": bool(x.is_pinned()),
        "intact": intact,
        **rates,
    }


def to_gpu(batch: Any) -> None:
    """The loader-only step: the copy to the GPU the training step starts with, and nothing else."""
    import torch

    for tensor in batch:
        tensor.cuda(non_blocking=True)
    torch.cuda.synchronize()


def resnet_step() -> Callable[[Any], None]:
    import torch
    from torchjob_trainer.models import build_model

    model = build_model("resnet18", (3, 224, 224), 1000).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(b: Any) -> None:
        x, y = b
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True))
        loss.backward()
        optimizer.step()
        loss.item()

    return step


def check_loader(args: argparse.Namespace) -> Result:
    """Naive vs tuned with the training step; then, for the tuned loader, its data-wait ratio in that run
    and its headroom H = loader-only samples/s (batches copied to the GPU, no step) / the model's own
    samples/s (the step on one cached GPU batch): H < 1 means no loader setting can keep the GPU fed.
    Tuned and loader-only runs are timed after the batches in flight at start-up
    (`LoaderSettings.batches_in_flight`)."""
    import torch
    from torchjob_trainer.config import TrainerConfig
    from torchjob_trainer.data import cpu
    from torchjob_trainer.data.datasets import build_dataset
    from torchjob_trainer.data.loader import LoaderSettings, make_loader, resolve_settings
    from torchjob_trainer.data.probe import probe_fetch

    config = TrainerConfig(
        dataset="fakedata", image_size=args.image_size, dataset_size=16384, num_classes=1000
    )
    data = build_dataset(config)
    budget = cpu.cpu_budget()
    tuned = resolve_settings(
        config, local_world_size=1, cuda=True, budget=budget, probe=probe_fetch(data, args.batch_size)
    )
    naive = LoaderSettings(0, False, False, 2)
    step = resnet_step()
    torch.backends.cudnn.benchmark = True
    naive_run = steady_steps(iter(make_loader(data, None, args.batch_size, naive)), step, 1, args.naive_steps)
    loader = make_loader(data, None, args.batch_size, tuned)
    warmup = tuned.batches_in_flight()
    tuned_run = steady_steps(iter(loader), step, warmup, args.tuned_steps)
    # The same loader again (its persistent workers stay up), with no step: what it can deliver.
    loader_only = steady_steps(iter(loader), to_gpu, warmup, args.tuned_steps)
    cached = tuple(t.cuda() for t in next(iter(loader)))
    del loader
    # The step alone, on one batch already on the GPU: what the model can take.
    model_only = steady_steps(itertools.repeat(cached), step, 2, args.tuned_steps)
    naive_rate, tuned_rate = naive_run.samples_per_second, tuned_run.samples_per_second
    ratio = tuned_rate / naive_rate if naive_rate else 0.0
    model_rate = model_only.samples_per_second
    headroom = loader_only.samples_per_second / model_rate if model_rate else 0.0
    goals = {
        "tuned_vs_naive": ratio >= 2.5 and tuned.num_workers >= 4,  # performance.md goal 3
        "data_wait": tuned_run.steps > 0 and tuned_run.wait_ratio <= 0.05,  # goal 1
        "headroom": headroom >= 1.2,  # goal 2
    }
    return {
        "ok": all(goals.values()),
        "goals": goals,
        "naive_samples_per_second": naive_rate,
        "tuned_samples_per_second": tuned_rate,
        "ratio": ratio,
        "data_wait_ratio": tuned_run.wait_ratio,
        "loader_only_samples_per_second": loader_only.samples_per_second,
        "model_only_samples_per_second": model_rate,
        "headroom": headroom,
        "steps": {
            "naive": naive_run.steps,
            "tuned": tuned_run.steps,
            "loader_only": loader_only.steps,
            "model_only": model_only.steps,
        },
        "warmup_steps": warmup,
        "tuned": tuned.describe(),
        "cpus": budget.cpus,
        "image_size": args.image_size,
    }


def check_ddp_overhead(args: argparse.Namespace) -> Result:
    bench = importlib.import_module("ddp_overhead")
    argv = [
        "--model",
        "resnet18",
        "--batch-size",
        "64",
        "--image-size",
        "112",
        "--block",
        "5",
        "--rounds",
        "12",
    ]
    res: dict[str, Any] = bench.run(bench.parse_args(argv))
    return {"ok": res["ratio_median"] >= 0.95, **res}


def check_sharing(args: argparse.Namespace) -> Result:
    port, summary = free_port(), args.work / "sharing-summary.json"
    train = ["--model", "cnn", "--epochs", "1", "--steps-per-epoch", "60", "--metrics-port", str(port)]
    env = child_env(TORCHJOB_CUDA_MEMORY_FRACTION="0.3", TORCHJOB_SUMMARY_FILE=str(summary))
    run = run_trainer(launch_cmd(2, *train), env, args.timeout)
    s, out = summary_of(summary), run["output"]
    marks = {
        "gloo_fallback": "backend auto -> gloo" in out,
        "shared_device": "2 processes share 1 GPUs" in out,
        "capped": "capped at 30%" in out,
    }
    ok = (
        run["rc"] == 0
        and s.get("world_size") == 2
        and s.get("outcome") == "completed"
        and all(marks.values())
    )
    return {"ok": ok, "rc": run["rc"], **marks, "summary": s, "log_tail": tail(out)}


FRACTION_PROBE = """
import torch
torch.cuda.set_per_process_memory_fraction(0.02, 0)
total = torch.cuda.get_device_properties(0).total_memory
try:
    torch.empty(int(total * 0.05), dtype=torch.uint8, device="cuda")
except torch.cuda.OutOfMemoryError:
    print("refused")
else:
    print("allowed")
"""


def check_memory_fraction(args: argparse.Namespace) -> Result:
    out = subprocess.run(
        [sys.executable, "-c", FRACTION_PROBE], check=False, capture_output=True, text=True, timeout=120
    )
    return {
        "ok": out.stdout.strip() == "refused",
        "stdout": out.stdout.strip(),
        "stderr": tail(out.stderr, 5),
    }


def check_nccl_shared_refused(args: argparse.Namespace) -> Result:
    train = ["--backend", "nccl", "--epochs", "1", "--steps-per-epoch", "5", "--metrics-port", "0"]
    run = run_trainer(launch_cmd(2, *train), child_env(), args.timeout)
    named = "nccl refuses two ranks on one GPU" in run["output"] and "procsPerNode" in run["output"]
    return {
        "ok": run["rc"] != 0 and named,
        "rc": run["rc"],
        "error_named": named,
        "log_tail": tail(run["output"], 15),
    }


RUNNERS: dict[str, Callable[[argparse.Namespace], Result]] = {
    "cuda": check_cuda,
    "nccl_ddp": check_nccl_ddp,
    "pinned_copy": check_pinned_copy,
    "loader": check_loader,
    "ddp_overhead": check_ddp_overhead,
    "sharing": check_sharing,
    "memory_fraction": check_memory_fraction,
    "nccl_shared_refused": check_nccl_shared_refused,
}


def _checks(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown checks {unknown}; known: {', '.join(CHECKS)}")
    return names


def default_out() -> Path:
    out = os.environ.get("OUT")
    return Path(out) / "gpu-check.json" if out else ROOT / "build" / "gpu-check.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="import and validate only; no GPU needed")
    p.add_argument("--only", type=_checks, default=list(CHECKS), help="comma-separated checks")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default $OUT/gpu-check.json)")
    p.add_argument("--timeout", type=float, default=150.0, help="seconds per trainer run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224, help="FakeData side for the loader check")
    p.add_argument("--naive-steps", type=int, default=12, help="timed steps after the first")
    p.add_argument(
        "--tuned-steps", type=int, default=60, help="timed steps (and loader-only batches) after start-up"
    )
    args = p.parse_args(argv)
    args.out = args.out or default_out()
    args.work = args.out.parent / "gpu-check-work"
    return args


def dry_run(args: argparse.Namespace) -> Result:
    imported = {}
    for name in IMPORTS:
        try:
            importlib.import_module(name)
            imported[name] = "ok"
        except ImportError as exc:
            imported[name] = f"missing: {exc}"
    missing = [n for n, v in imported.items() if v != "ok" and n != "pynvml"]  # NVML is optional
    return {"ok": not missing, "imports": imported, "checks": args.only, "python": sys.executable}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "dry_run": args.dry_run,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.dry_run:
        report["plan"] = dry_run(args)
        ok = report["plan"]["ok"]
    else:
        report["checks"] = {}
        for name in args.only:
            start = time.perf_counter()
            try:
                result = RUNNERS[name](args)
            except Exception as exc:  # one broken check must not hide the results of the others
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            result["seconds"] = round(time.perf_counter() - start, 2)
            report["checks"][name] = result
            print(
                f"gpu-check {name}: {'ok' if result['ok'] else 'FAILED'} ({result['seconds']} s)", flush=True
            )
            args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")  # partial results survive
        ok = all(r["ok"] for r in report["checks"].values())
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"gpu-check: {'all ok' if ok else 'FAILURES'}; results in {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
