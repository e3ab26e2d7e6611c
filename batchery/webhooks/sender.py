"""The thread in every worker process that calls the webhooks of ended jobs, and retries them with backoff.

Each round it looks through the watched jobs whose look is due (a job whose end no write reported, because
a process died in between, is found ended here), then takes the due calls under a lease and makes them.
A call is a POST of the job's document, signed (:mod:`batchery.webhooks.signing`); any 2xx answer delivers
it. Anything else (another status, a refused connection, a timeout) is recorded in the job's record and
tried again after ``base·2ⁿ⁻¹`` seconds (capped), until ``BATCHERY_WEBHOOK_ATTEMPTS`` calls have been made;
then the webhook is ``failed``. Any number of workers run one each: the lease keeps a call to one of them at a
time, and one that dies mid-call leaves it to another when the lease runs out, so a call is made at least
once, and may be repeated. A job that asked for result files is called about once they are written (or
:data:`RESULTS_WAIT_S` after it ended, whichever comes first), so that the call can link them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson
import redis
import requests

from batchery import __version__, documents
from batchery.settings import Settings
from batchery.store import JobStore
from batchery.store.jobs import FINAL_STATUSES
from batchery.store.webhooks import Attempt
from batchery.webhooks.signing import HEADER, sign

log = logging.getLogger(__name__)
#: Seconds between rounds, and jobs looked at or called per round.
POLL_S = 1.0
PER_ROUND = 100
EVENT = "job.ended"
#: A job that asked for result files is called about once they are written, so that the call links them; if they
#: are not written this long after the job ended (the file store is down, say), it is called about without them.
RESULTS_WAIT_S = 600.0
#: How often a call held back for the result files is looked at again.
RESULTS_POLL_S = 1.0


def retry_delay(attempt: int, base_s: float, max_s: float) -> float:
    """The wait after failed call number ``attempt`` (from 1): base, 2·base, 4·base, ... max."""
    return min(max_s, base_s * 2 ** max(0, attempt - 1))


def payload(job: dict[str, Any], public_url: str, now: float) -> bytes:
    """The body: the event, when it was sent, and the job's document (with links on ``public_url``, if set)."""
    document = documents.job(job)
    if public_url:
        documents.link_files(document, public_url)
        base = f"{public_url.rstrip('/')}/v1/jobs/{job['id']}"
        document["links"] = {"self": base, "results": f"{base}/results"}
    return orjson.dumps({"event": EVENT, "sent_at": documents.iso(now), "job": document})


class WebhookSender:
    def __init__(self, store: JobStore, settings: Settings, session: requests.Session | None = None) -> None:
        self.store = store
        self.webhooks = store.webhooks
        self.settings = settings
        self.session = session or requests.Session()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)

    def start(self) -> "WebhookSender":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.settings.webhook_timeout_s + 5)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.round()
            except redis.RedisError as exc:
                log.warning("webhooks: round interrupted, to be resumed: %s", exc)
            except Exception:
                log.exception("webhooks: round failed")

    def round(self) -> int:
        """Find ended jobs among the watched, then make the due calls; returns how many calls were made."""
        now = time.time()
        self.look(now)
        lease_s = self.settings.webhook_timeout_s + 5
        calls = 0
        for job_id in self.webhooks.claim(now, lease_s, PER_ROUND):
            if self._stop.is_set():
                break
            self.call(job_id)
            calls += 1
        return calls

    def look(self, now: float) -> None:
        """Watched jobs whose look is due: ended ones become due, gone ones are dropped, the rest wait."""
        job_ids = self.webhooks.to_check(now, PER_ROUND)
        if not job_ids:
            return
        found = self.store.summaries(job_ids)
        self.webhooks.sort({job_id: s[1] if s else None for job_id, s in zip(job_ids, found)}, FINAL_STATUSES, now)

    def call(self, job_id: str) -> Attempt | None:
        """Make one call of the job's webhook and record it; None when the job or its webhook is gone."""
        job = self.store.get(job_id)
        if job is None or not job.get("webhook"):
            self.webhooks.record(job_id, Attempt(0, "gone", time.time(), False), None, "failed")
            return None
        now = time.time()
        if _files_coming(job, now):
            self.webhooks.retry_at(job_id, now + RESULTS_POLL_S)
            return None
        number = job["webhook_attempts"] + 1
        body = payload(job, self.settings.public_url, now)
        headers = {
            "Content-Type": "application/json", "User-Agent": f"batchery/{__version__}", "X-Batchery-Event": EVENT,
            "X-Batchery-Delivery": job_id, "X-Batchery-Attempt": str(number), HEADER: sign(self.settings.webhook_secret, body),
        }
        try:
            answer = self.session.post(job["webhook"]["url"], data=body, headers=headers,
                                       timeout=self.settings.webhook_timeout_s, allow_redirects=False)
            status, delivered = str(answer.status_code), 200 <= answer.status_code < 300
        except requests.RequestException as exc:
            status, delivered = f"{type(exc).__name__}: {exc}"[:300], False
        attempt = Attempt(number, status, now, delivered)
        self._record(job_id, attempt)
        return attempt

    def _record(self, job_id: str, attempt: Attempt) -> None:
        settings = self.settings
        if attempt.delivered:
            self.webhooks.record(job_id, attempt, None, "delivered")
            log.info("webhook of job %s delivered (attempt %d: %s)", job_id, attempt.number, attempt.status,
                     extra={"job_id": job_id})
        elif attempt.number >= settings.webhook_attempts:
            self.webhooks.record(job_id, attempt, None, "failed")
            log.warning("webhook of job %s given up after %d attempts (last: %s)", job_id, attempt.number, attempt.status,
                        extra={"job_id": job_id})
        else:
            delay = retry_delay(attempt.number, settings.webhook_retry_base_s, settings.webhook_retry_max_s)
            self.webhooks.record(job_id, attempt, time.time() + delay, "pending")
            log.info("webhook of job %s: attempt %d got %s; again in %.1fs", job_id, attempt.number, attempt.status, delay,
                     extra={"job_id": job_id})


def _files_coming(job: dict[str, Any], now: float) -> bool:
    """The job asked for result files, and they are not written yet but may still be."""
    if not job.get("results") or job.get("results_state") == "written":
        return False
    ended = job.get("finished_at") or job.get("cancelled_at") or now
    return now - ended < RESULTS_WAIT_S
