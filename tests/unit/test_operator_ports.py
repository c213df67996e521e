"""An operator whose metrics or health port is taken exits 2 with one line naming the port and the flag."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from torchjob_operator import main


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("flag", ["--metrics-port", "--health-port"])
def test_a_taken_port_is_one_line_naming_the_flag(
    flag: str, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    other = "--health-port" if flag == "--metrics-port" else "--metrics-port"
    code = main.main(["--standalone", flag, str(busy_port), other, "0"])
    err = capsys.readouterr().err
    assert code == main.EXIT_PORT_IN_USE
    assert err == f"torchjob-operator: {flag} {busy_port} is in use: free it or pass another {flag}\n"
