"""benchmarks/startup.py reads the trainer's own start-up line (the two must stay in agreement)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import yaml
from harness.tools import load_script
from torchjob_trainer.startup import StartupPhases

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    return load_script("benchmarks/startup.py", "bench_startup")


def _line(node: int, rank: int, stamp: str, rendezvous_at: float, first_step_at: float) -> str:
    clock = StartupPhases(0.0)
    clock.mark("imports", at=2.0)
    clock.mark("rendezvous", at=rendezvous_at)
    clock.mark("first_step", at=first_step_at)
    prefix = f"[default/cpu-gloo rank {rank}/2 local {rank} node {node}] torchjob_trainer.train"
    return f"[node {node} rank {rank}] {stamp} INFO {prefix}: {clock.line()}"


def test_parses_every_rank_and_takes_the_slowest() -> None:
    bench = _bench()
    output = "\n".join(
        [
            "torchjob: running TrainingJob 'cpu-gloo' locally",
            _line(0, 1, "2026-12-02T06:00:10.500Z", 3.0, 4.0),
            _line(0, 0, "2026-12-02T06:00:10.000Z", 2.5, 3.0),
        ]
    )
    ranks = bench.parse_ranks(output)
    assert [r.rank for r in ranks] == [0, 1]
    assert ranks[1].phases == {"imports": 2.0, "rendezvous": 1.0, "first_step": 1.0}
    launched = ranks[0].logged_at - 5.0
    assert bench.job_figures(launched, ranks) == {
        "process_to_first_step": 4.0,
        "rendezvous_to_first_step": 1.0,
        "launch_to_first_step": 5.5,
    }


def test_a_variant_sets_spec_fields_and_appends_trainer_flags(tmp_path: Path) -> None:
    bench = _bench()
    path = bench.manifest_with(
        ROOT / "examples" / "cpu-gloo-2node.yaml", bench.VARIANTS["exec-no-prefetch"], tmp_path
    )
    spec = yaml.safe_load(path.read_text())["spec"]
    assert spec["launcher"] == "torchrun"
    assert spec["args"][-2:] == ["--prefetch-imports", "false"]
    assert spec["args"][:2] == ["--model", "mlp"]
