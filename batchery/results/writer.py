"""The thread in every worker process that writes the result files of ended jobs.

Each round it looks through the watched jobs whose look is due (a job whose end no write reported, because a
process died in between, is found ended here), then takes the due jobs, each under a short claim on the due set
and then under the job's finalizing lease, and writes their files (:mod:`batchery.results.finalize`). A job whose
lease another process holds is looked at again a second later; one whose writer dies is taken over once the
lease lapses (:data:`batchery.keys.FINALIZE_LEASE_S`); a cancelled job, once its last items landed or their grace
passed. Any number of workers run one each.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable

import redis

from batchery import keys
from batchery.results.finalize import finalize, ready
from batchery.settings import Settings
from batchery.store import JobStore
from batchery.store.files import FileStore
from batchery.store.jobs import FINAL_STATUSES

log = logging.getLogger(__name__)
#: Seconds between rounds, and jobs looked at or written per round.
POLL_S = 1.0
PER_ROUND = 10
#: A job whose lease another process holds is looked at again after this long.
BUSY_RETRY_S = 1.0


class ResultWriter:
    def __init__(
        self, store: JobStore, files: FileStore, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.clock = clock
        self.files = files
        self.settings = settings
        self.watch = store.result_files
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="result-files", daemon=True)

    def start(self) -> "ResultWriter":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """A write in progress is left to its lease: another worker takes it over once it lapses."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.round()
            except redis.RedisError as exc:
                log.warning("result files: round interrupted, to be resumed: %s", exc)
            except Exception:
                log.exception("result files: round failed")

    def round(self) -> int:
        """Find ended jobs among the watched, then write the due files; returns how many jobs got theirs."""
        now = self.clock()
        self.look(now)
        written = 0
        for job_id in self.watch.claim(now, keys.FINALIZE_LEASE_S, PER_ROUND):
            if self._stop.is_set():
                break
            written += self.write(job_id)
        return written

    def look(self, now: float) -> None:
        job_ids = self.watch.to_check(now, PER_ROUND * 10)
        if job_ids:
            found = self.store.summaries(job_ids)
            self.watch.sort({job_id: s[1] if s else None for job_id, s in zip(job_ids, found)}, FINAL_STATUSES, now)

    def write(self, job_id: str) -> bool:
        """Write one due job's files under its lease; True when this call wrote them."""
        token = uuid.uuid4().hex
        lease = keys.job_finalizing(job_id)
        if not self.store.leases.take(lease, token, keys.FINALIZE_LEASE_S):
            self.watch.retry_at(job_id, self.clock() + BUSY_RETRY_S)
            return False
        try:
            return self._write_held(job_id, token)
        except Exception:
            log.exception("result files of job %s: writing failed; to be tried again", job_id, extra={"job_id": job_id})
            self.store.leases.release(lease, token)
            self.watch.retry_at(job_id, self.clock() + keys.FINALIZE_LEASE_S)
            return False

    def _write_held(self, job_id: str, token: str) -> bool:
        lease = keys.job_finalizing(job_id)
        job = self.store.get(job_id)
        if job is None or not job.get("results") or job.get("results_state") == "written":
            self.store.leases.release(lease, token)
            if job is not None and job.get("results_state") == "written" and job["outputs_released_at"] is None:
                self.store.release_outputs(job_id, job["total"], self.settings.result_files_keep_s)  # a writer died
            self.watch.done(job_id)
            return False
        if not ready(job, self.clock()):  # a cancelled job's last items are still landing
            self.store.leases.release(lease, token)
            self.watch.retry_at(job_id, self.clock() + BUSY_RETRY_S)
            return False
        started = time.monotonic()
        if not finalize(job, self.store, self.files, token, self.settings.result_files_keep_s):
            return False
        self.watch.done(job_id)
        took = time.monotonic() - started
        log.info("result files of job %s written in %.2fs", job_id, took, extra={"job_id": job_id})
        return True
