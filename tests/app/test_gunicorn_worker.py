"""The read deadline of `batchery api`'s gunicorn worker, on a socket pair: no server, no worker."""

from __future__ import annotations

import socket
import time

import pytest

from batchery.app.gunicorn_worker import DeadlineUnreader, ReadDeadline
from batchery.errors import RequestTimeout


def test_the_clock_starts_at_the_first_read_and_what_arrives_buys_time():
    deadline = ReadDeadline(timeout_s=2.0, min_bytes_per_s=1000)
    time.sleep(0.2)
    assert deadline.remaining_s() == pytest.approx(2.0, abs=0.05), "waiting for a thread is not counted"
    deadline.received = 3000
    assert deadline.remaining_s() == pytest.approx(5.0, abs=0.05)


def test_a_rate_of_zero_buys_no_time():
    deadline = ReadDeadline(timeout_s=2.0, min_bytes_per_s=0)
    deadline.received = 10**6
    assert deadline.remaining_s() == pytest.approx(2.0, abs=0.05)


def test_a_read_past_the_deadline_raises_408_and_leaves_the_socket_as_it_was():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        unreader = DeadlineUnreader(ours)
        unreader.deadline = ReadDeadline(timeout_s=0.5, min_bytes_per_s=0)
        theirs.sendall(b"GET / HTTP/1.1\r\n")
        assert unreader.read() == b"GET / HTTP/1.1\r\n"
        start = time.monotonic()
        with pytest.raises(RequestTimeout) as raised:
            unreader.read()
        assert 0.3 < time.monotonic() - start < 1.0
        assert raised.value.status == 408 and raised.value.code == "request_timeout"
        assert ours.gettimeout() is None, "the socket stays blocking for the answer"


def test_without_a_deadline_it_reads_as_gunicorn_does():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        unreader = DeadlineUnreader(ours)
        theirs.sendall(b"abc")
        assert unreader.read() == b"abc"
