"""k8s.RateLimiter: the operator's own client rate limit, one token bucket over all its requests, on a
fake clock (its sleeps advance the clock, so nothing really waits)."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client
from torchjob_operator import k8s, metrics
from torchjob_operator.settings import ClientRateLimit, from_args


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


THROTTLE_METRIC = "torchjob_operator_api_client_throttle_seconds_total"


def throttled_seconds() -> float:
    return float(metrics.REGISTRY.get_sample_value(THROTTLE_METRIC) or 0)


def limiter(time: FakeTime, qps: float, burst: int) -> k8s.RateLimiter:
    return k8s.RateLimiter(ClientRateLimit(qps=qps, burst=burst), clock=time.clock, sleep=time.sleep)


def test_a_burst_goes_at_once_then_requests_wait_for_the_rate() -> None:
    time, before = FakeTime(), throttled_seconds()
    rate = limiter(time, qps=4, burst=2)

    async def requests(n: int) -> None:
        for _ in range(n):
            await rate.acquire()

    asyncio.run(requests(4))
    assert time.sleeps == [0.25, 0.25]  # two from the burst, then one per 1/qps
    assert throttled_seconds() - before == pytest.approx(0.5)


def test_concurrent_loops_share_one_bucket() -> None:
    time = FakeTime()
    sleeps: list[float] = []

    async def sleep_in_parallel(seconds: float) -> None:  # concurrent sleeps: the clock stands still
        sleeps.append(seconds)

    rate = k8s.RateLimiter(ClientRateLimit(qps=10, burst=3), clock=time.clock, sleep=sleep_in_parallel)

    async def loops() -> None:
        await asyncio.gather(*(rate.acquire() for _ in range(6)))

    asyncio.run(loops())
    # Six requests from six loops, three tokens at once: the other three each slept once, for their own
    # slot in turn (no waiter woke to compete for a token another took).
    assert sleeps == pytest.approx([0.1, 0.2, 0.3])


def test_qps_zero_never_waits() -> None:
    time = FakeTime()
    rate = limiter(time, qps=0, burst=1)

    async def requests() -> None:
        for _ in range(100):
            await rate.acquire()

    asyncio.run(requests())
    assert time.sleeps == []


def test_flags_set_the_limit_and_bad_values_name_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert from_args(["--api-qps", "5", "--api-burst", "7"]).client_rate == ClientRateLimit(qps=5, burst=7)
    assert from_args([]).client_rate == ClientRateLimit()
    for argv, flag in ((["--api-qps", "-1"], "--api-qps"), (["--api-burst", "0"], "--api-burst")):
        with pytest.raises(SystemExit):
            from_args(argv)
        assert flag in capsys.readouterr().err


def test_every_try_of_a_request_takes_a_token() -> None:
    time = FakeTime()
    rate = limiter(time, qps=1, burst=1)
    api = k8s.KubeApi(client.ApiClient(), k8s.RequestLedger(), rate=rate, sleep=time.sleep)
    answers: list[Exception | None] = [client.ApiException(status=429), None]

    def request() -> str:
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return "ok"

    assert asyncio.run(api._call(("ns", "job"), "create", request)) == "ok"
    # The retry's own backoff (0.5 s) leaves the bucket half full: the second try waits the other 0.5 s.
    assert time.sleeps == [0.5, 0.5]
    assert api.ledger.total(("ns", "job")) == 2
