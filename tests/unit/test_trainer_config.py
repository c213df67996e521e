from __future__ import annotations

import pytest
from torchjob_trainer.config import ConfigError, TrainerConfig, env_names, from_sources


def test_defaults_without_flags_or_env() -> None:
    config = from_sources([], env={})
    assert config == TrainerConfig()
    assert config.num_workers is None  # auto
    assert config.pin_memory is None  # auto
    assert config.persistent_workers is True


def test_env_defaults_and_flags_win() -> None:
    env = {
        "TORCHJOB_NUM_WORKERS": "3",
        "TORCHJOB_PIN_MEMORY": "false",
        "TORCHJOB_PERSISTENT_WORKERS": "false",
        "TORCHJOB_PREFETCH_FACTOR": "4",
        "TORCHJOB_CPU_LIMIT": "2.5",
        "TORCHJOB_METRICS_PORT": "0",
        "TORCHJOB_CHECKPOINT_DIR": "/ckpt",
        "TORCHJOB_JOB_NAME": "mnist",
        "TORCHJOB_NAMESPACE": "team-a",
        "TORCHJOB_BACKEND": "gloo",
    }
    config = from_sources(["--num-workers", "auto", "--model", "cnn"], env=env)
    assert config.num_workers is None
    assert config.model == "cnn"
    assert config.pin_memory is False
    assert config.persistent_workers is False
    assert config.prefetch_factor == 4
    assert config.cpu_limit == 2.5
    assert config.metrics_port == 0
    assert config.checkpoint_dir == "/ckpt"
    assert (config.job_name, config.namespace, config.backend) == ("mnist", "team-a", "gloo")


def test_env_names_cover_the_operator_contract() -> None:
    names = env_names()
    for name in (
        "JOB_NAME",
        "NAMESPACE",
        "BACKEND",
        "NUM_WORKERS",
        "PIN_MEMORY",
        "PERSISTENT_WORKERS",
        "PREFETCH_FACTOR",
        "CPU_LIMIT",
        "METRICS_PORT",
        "CHECKPOINT_DIR",
        "SUMMARY_FILE",
    ):
        assert f"TORCHJOB_{name}" in names
    assert all(n.startswith("TORCHJOB_") and n.isupper() for n in names)


@pytest.mark.parametrize(
    ("argv", "env", "flag"),
    [
        (["--num-workers", "-1"], {}, "--num-workers"),
        ([], {"TORCHJOB_NUM_WORKERS": "many"}, "--num-workers (TORCHJOB_NUM_WORKERS)"),
        ([], {"TORCHJOB_PIN_MEMORY": "maybe"}, "--pin-memory"),
        (["--prefetch-factor", "0"], {}, "--prefetch-factor"),
        (["--batch-size", "0"], {}, "--batch-size"),
        (["--profile-steps", "5:2"], {}, "--profile-steps"),
        (["--profile-steps", "x"], {}, "--profile-steps"),
        (["--user-entrypoint", "nocolon"], {}, "--user-entrypoint"),
        ([], {"TORCHJOB_MODEL": "gpt"}, "--model"),
        (["--metrics-port", "70000"], {}, "--metrics-port"),
        (["--loader-worker-nice", "20"], {}, "--loader-worker-nice"),
        ([], {"TORCHJOB_LOADER_WORKER_NICE": "-1"}, "--loader-worker-nice (TORCHJOB_LOADER_WORKER_NICE)"),
    ],
)
def test_errors_name_the_flag(argv: list[str], env: dict[str, str], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag.replace("(", r"\(").replace(")", r"\)")):
        from_sources(argv, env=env)


def test_bare_boolean_flags_mean_true() -> None:
    config = from_sources(["--autotune", "--pin-memory", "--persistent-workers", "false"], env={})
    assert (config.autotune, config.pin_memory, config.persistent_workers) == (True, True, False)


def test_profile_range() -> None:
    assert TrainerConfig(profile_steps="3:7").profile_range() == (3, 7)
    assert TrainerConfig().profile_range() is None


def test_usage_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        from_sources(["--model", "gpt"], env={})
    assert exc.value.code == 1
    assert "--model" in capsys.readouterr().err
