"""py-spy beside the load, when it is installed: where the worker's and the API's time goes, as collapsed stacks."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

log = logging.getLogger("benchmarks.gpu")


def py_spy() -> str | None:
    """py-spy on PATH, or beside this Python (a ``pip install --target`` puts it in ``<target>/bin``)."""
    found = shutil.which("py-spy")
    if found:
        return found
    for entry in sys.path:
        candidate = Path(entry) / "bin" / "py-spy"
        if candidate.is_file():
            return str(candidate)
    return None


class Recording:
    """``py-spy record`` of the processes named, from entering the block to leaving it (then SIGINT)."""

    def __init__(self, targets: dict[str, int], out_dir: Path, log_dir: Path, rate_hz: int = 100) -> None:
        self.targets = targets
        self.out_dir = out_dir
        self.log_dir = log_dir
        self.rate_hz = rate_hz
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.files: dict[str, str] = {}

    def __enter__(self) -> "Recording":
        binary = py_spy()
        if binary is None:
            log.warning("py-spy is not installed: no profile this run")
            return self
        for name, pid in self.targets.items():
            out = self.out_dir / f"profile-{name}.txt"
            argv = [binary, "record", "--pid", str(pid), "--rate", str(self.rate_hz), "--format", "raw",
                    "--output", str(out), "--nonblocking", "--subprocesses", "--threads"]
            log_file = (self.log_dir / f"py-spy-{name}.log").open("wb")
            self.processes[name] = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
            self.files[name] = str(out)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for name, process in self.processes.items():
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                log.warning("py-spy for %s did not stop; killing it", name)
                process.kill()
                process.wait()
