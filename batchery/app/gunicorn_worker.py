"""gunicorn's gthread worker with a deadline for each request to arrive (``--worker-class``, set by `batchery api`).

gthread hands a connection to one of its threads once the first bytes come, and that thread then reads the
headers and the body with blocking reads that have no time limit. A client that sends a byte a second holds
its thread as long as it likes, and as many such clients as there are threads stall every route, the probes
included. Here a request must arrive within ``request_read_timeout_s`` of its first byte, plus one second for
every ``request_min_bytes_per_s`` bytes that did arrive, so that a large body sent at a steady pace has the time
it needs while a trickle is cut off. Past that it is answered 408 in the JSON error shape (by gunicorn while
the headers are read, by the app while it reads the body) and its connection is closed, which frees the thread.

Closing a connection lingers up to two seconds for what its client is still sending (gunicorn's
``close_graceful``, so the last answer is not cut by a reset). gunicorn does that on the loop that accepts
connections, where a client that keeps sending after its answer would stall the whole process, one such client
after another; here it is done in the request's own thread.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

from gunicorn import util
from gunicorn.http.message import Request
from gunicorn.http.parser import RequestParser
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers import gthread

from batchery.errors import RequestTimeout
from batchery.settings import get_settings


class ReadDeadline:
    """When the request being read must have arrived by: ``timeout_s`` after its first read, and a second
    later for every ``min_bytes_per_s`` bytes received since."""

    def __init__(self, timeout_s: float, min_bytes_per_s: int) -> None:
        self.timeout_s = timeout_s
        self.min_bytes_per_s = min_bytes_per_s
        self.start: float | None = None
        self.received = 0
        self.request: Request | None = None

    def remaining_s(self) -> float:
        """Seconds left; the clock starts at the first read, so time spent waiting for a thread is not counted."""
        now = time.monotonic()
        if self.start is None:
            self.start = now
        allowance_s = self.received / self.min_bytes_per_s if self.min_bytes_per_s > 0 else 0.0
        return self.start + self.timeout_s + allowance_s - now

    def expired(self) -> RequestTimeout:
        """The error to raise; once the headers are read, their request is marked to close its connection, since
        the rest of its body is still on the way and no next request can be found after it."""
        if self.request is not None:
            self.request.must_close = True
        elapsed_s = time.monotonic() - (self.start or time.monotonic())
        return RequestTimeout(f"the request did not arrive within the read timeout: {self.received} bytes in {elapsed_s:.0f} s")


class DeadlineUnreader(SocketUnreader):
    """gunicorn's socket reader, each read bounded by the deadline of the request being read, when one is set."""

    deadline: ReadDeadline | None = None

    def chunk(self, size_hint: int | None = None) -> bytes:
        deadline = self.deadline
        if deadline is None:
            return super().chunk(size_hint)
        remaining = deadline.remaining_s()
        if remaining <= 0:
            raise deadline.expired()
        prior = self.sock.gettimeout()
        limit = remaining if prior is None else min(prior, remaining)
        self.sock.settimeout(limit)
        try:
            data = super().chunk(size_hint)
        except TimeoutError:
            if limit == remaining:
                raise deadline.expired() from None
            raise
        finally:
            try:
                self.sock.settimeout(prior)
            except OSError:
                pass
        deadline.received += len(data)
        return data


class DeadlineConn(gthread.TConn):
    """A connection whose requests are read under a :class:`ReadDeadline`, and that is closed only once."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.deadline: ReadDeadline | None = None
        self.closed = False

    def init(self) -> None:
        """gunicorn's set-up, then its HTTP/1 parser reads through a :class:`DeadlineUnreader`."""
        super().init()
        parser = self.parser
        if isinstance(parser, RequestParser) and type(parser.unreader) is SocketUnreader:
            guarded = DeadlineUnreader(self.sock)
            guarded.buf = parser.unreader.buf
            parser.unreader = guarded
        self.arm(self.deadline)

    def arm(self, deadline: ReadDeadline | None) -> None:
        """Bound the reads from now on by ``deadline`` (None: unbounded, as gunicorn reads)."""
        self.deadline = deadline
        if self.parser is not None and isinstance(self.parser.unreader, DeadlineUnreader):
            self.parser.unreader.deadline = deadline

    def close(self, graceful: bool = False) -> None:
        if not self.closed:
            self.closed = True
            super().close(graceful)


class ThreadWorker(gthread.ThreadWorker):
    """gthread, with each request's reading bounded in time, connections closed off the accepting loop, and
    new connections accepted only while a thread is free."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.read_timeout_s = settings.request_read_timeout_s
        self.min_bytes_per_s = settings.request_min_bytes_per_s
        #: Connections handed to the thread pool and not yet given back.
        self.busy = 0

    def enqueue_req(self, conn: DeadlineConn) -> None:
        self.busy += 1
        super().enqueue_req(conn)

    def finish_request(self, conn: DeadlineConn, fs: Any) -> None:
        self.busy -= 1
        super().finish_request(conn, fs)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """Accept only while a thread is free. gthread accepts up to ``worker_connections`` and queues what its
        threads cannot take yet; a process whose threads are all held by slow clients would then sit on new
        connections (a probe's included) that another process, with threads free, could answer at once. Left
        in the listen queue, they go to that process. (gthread's loop enables accepting before each wait.)"""
        if self._accepting and self.busy >= self.cfg.threads:
            self.set_accept_enabled(False)
        super().wait_for_and_dispatch_events(timeout)

    def accept(self, listener: socket.socket) -> None:
        """gunicorn's accept, making a :class:`DeadlineConn`."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.enqueue_req(DeadlineConn(self.cfg, client_sock, client_addr, listener.getsockname()))

    def handle(self, conn: DeadlineConn) -> Any:
        """One request under a fresh deadline (none when the timeout is 0); a connection that ends here is closed
        here, in this thread."""
        conn.arm(ReadDeadline(self.read_timeout_s, self.min_bytes_per_s) if self.read_timeout_s > 0 else None)
        result = super().handle(conn)
        if not result:
            conn.close(graceful=True)
        return result

    def handle_request(self, req: Request, conn: DeadlineConn) -> bool:
        """The app reads the body under the deadline; once it has answered, gunicorn bounds what it drains."""
        if conn.deadline is not None:
            conn.deadline.request = req
        try:
            return super().handle_request(req, conn)
        finally:
            conn.arm(None)

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        """Headers that did not arrive in time: 408, through ``util.write_error`` (JSON, see gunicorn_conf)."""
        if not isinstance(exc, RequestTimeout):
            super().handle_error(req, client, addr, exc)
            return
        self.log.warning("Request timed out from ip=%s: %s", (addr or ("",))[0], exc.message)
        try:
            util.write_error(client, 408, "Request Timeout", exc.message)
        except OSError:
            self.log.debug("Failed to send error message.")
