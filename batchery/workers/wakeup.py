"""A consumer bootstep that lets a signal wake Celery's event loop at once.

Celery's TERM and INT handlers only set a flag, which its event loop reads between two polls; a poll waits up
to a second for the broker, and Python resumes a poll that a signal interrupted. So a warm shutdown began up
to a second after the signal: a second more for every worker a supervisor, the scaler or a rollout stops. Here
the signal also writes a byte to a pipe that the loop polls (``signal.set_wakeup_fd``): the poll returns, the
loop reads the flag, and the shutdown begins at once.
"""

from __future__ import annotations

import os
import signal
import threading

from celery import bootsteps


class SignalWakeup(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.connection:Connection"}

    def __init__(self, c, **kwargs) -> None:  # noqa: ANN001 (Celery's signature)
        super().__init__(c, **kwargs)
        self.pipe: tuple[int, int] | None = None
        self.previous = -1

    def register_with_event_loop(self, c, hub) -> None:  # noqa: ANN001
        """Called each time the consumer (re)starts its loop; the pipe is made once, in the main thread, the
        only one that may set the wakeup fd (and the one that runs the loop)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if self.pipe is None:
            read, write = os.pipe()
            os.set_blocking(read, False)
            os.set_blocking(write, False)
            self.pipe = (read, write)
            self.previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        hub.add_reader(self.pipe[0], self._drain)

    def shutdown(self, c) -> None:  # noqa: ANN001
        if self.pipe is None or threading.current_thread() is not threading.main_thread():
            return
        signal.set_wakeup_fd(self.previous)
        for fd in self.pipe:
            os.close(fd)
        self.pipe = None

    def _drain(self, *args: object) -> None:
        """Empty the pipe (the loop and shutdown both run in the main thread, so the pipe is open here)."""
        try:
            while os.read(self.pipe[0], 4096):
                pass
        except BlockingIOError:
            pass  # drained
