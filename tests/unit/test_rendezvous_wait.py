"""torchjob-launch's wait for node 0's rendezvous store: who waits, how long, and what it says."""

from __future__ import annotations

import socket

import pytest
from torchjob_trainer import rendezvous_wait as rw

STORE = rw.Endpoint("job-node-0.job.ns.svc", 29400)


@pytest.mark.parametrize(
    ("backend", "endpoint", "conf", "expected"),
    [
        ("c10d", "job-node-0.job.ns.svc:29400", {"is_host": "0"}, STORE),  # what the operator renders
        ("c10d", "job-node-0.job.ns.svc:29400", {"is_host": "false"}, STORE),
        ("c10d", "job-node-0.job.ns.svc:29400", {"is_host": "1"}, None),  # node 0 hosts it
        ("c10d", "job-node-0.job.ns.svc:29400", {}, None),  # torch decides: it may host it itself
        ("c10d", "localhost:0", {"is_host": "0"}, None),  # a store that picks its own port
        ("c10d", "job-node-0", {"is_host": "0"}, None),  # no port: torch's default and its own errors
        ("static", "job-node-0:29500", {"rank": 1, "timeout": 900}, rw.Endpoint("job-node-0", 29500)),
        ("static", "job-node-0:29500", {"rank": 0, "timeout": 900}, None),  # node rank 0 hosts it
        ("etcd-v2", "etcd:2379", {"is_host": "0"}, None),
        ("c10d", "[fd00::1]:29400", {"is_host": "0"}, rw.Endpoint("fd00::1", 29400)),
    ],
)
def test_only_nodes_told_they_do_not_host_the_store_wait(
    backend: str, endpoint: str, conf: dict[str, str], expected: rw.Endpoint | None
) -> None:
    assert rw.endpoint_to_wait_for(backend, endpoint, conf) == expected


def test_wait_seconds_default_and_override() -> None:
    assert rw.wait_seconds({}) == rw.DEFAULT_WAIT_SECONDS == 600
    assert rw.wait_seconds({rw.WAIT_ENV: "45"}) == 45
    assert rw.wait_seconds({rw.WAIT_ENV: "soon"}) == rw.DEFAULT_WAIT_SECONDS


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_waits_with_backoff_until_the_store_connects(caplog: pytest.LogCaptureFixture) -> None:
    t = FakeTime()
    answers = iter(["job-node-0.job.ns.svc does not resolve yet", "nothing accepts connections", None])
    caplog.set_level("INFO", logger="torchjob_trainer.launch")
    why = rw.wait_until_reachable(STORE, 600, connect=lambda _: next(answers), clock=t.clock, sleep=t.sleep)
    assert why is None
    assert t.sleeps == [0.25, 0.5]
    assert "does not resolve yet" in caplog.text  # the first miss is logged at once, with its reason
    assert "accepts connections after 0.8 s" in caplog.text


def test_gives_up_after_the_timeout_with_the_last_reason() -> None:
    t = FakeTime()
    why = rw.wait_until_reachable(STORE, 20, connect=lambda _: "refused", clock=t.clock, sleep=t.sleep)
    assert why == "refused"
    assert t.now == pytest.approx(20)  # the last sleep is cut to the time left
    assert max(t.sleeps) == rw.MAX_DELAY_SECONDS


def test_a_reachable_store_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="torchjob_trainer.launch")
    assert rw.wait_until_reachable(STORE, 600, connect=lambda _: None) is None
    assert caplog.text == ""


def test_try_connect_against_real_sockets() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert rw.try_connect(rw.Endpoint("127.0.0.1", port)) is None
    why = rw.try_connect(rw.Endpoint("127.0.0.1", port))
    assert why is not None and "nothing accepts connections at 127.0.0.1 port" in why


def test_try_connect_says_when_the_name_does_not_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(*_: object, **__: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    assert rw.try_connect(STORE) == "job-node-0.job.ns.svc does not resolve yet (Name or service not known)"


def test_the_message_names_the_store_and_where_to_look() -> None:
    text = rw.unreachable_message(STORE, 600, "refused")
    assert text.startswith("the rendezvous store at job-node-0.job.ns.svc:29400 (node 0) was not reachable")
    assert "within 600 s: refused" in text and "Node 0's pod" in text
