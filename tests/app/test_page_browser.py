"""The jobs page in a real browser (Debian's headless ``chromium``) while a job runs.

The browser runs the page's script against the live API: the DOM it dumps must show the running job with a
progress bar part way, the model's throughput and the worker's device. A screenshot is kept beside the
test's temporary files (the README's picture, docs/jobs-page.png, is one of these).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.helpers import wait_for_job

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("echo_worker")]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1280, 820)


class Elements(HTMLParser):
    """Every element's tag, attributes and the text directly inside it, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str], list[str]]] = []
        self._open: list[int] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {k: v or "" for k, v in attrs}, []))
        self._open.append(len(self.found) - 1)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self.found[self._open.pop()][0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._open:
            self.found[self._open[-1]][2].append(data)

    def within(self, attr: str, value: str) -> list[tuple[str, dict[str, str], str]]:
        """The element with ``attr=value`` and everything after it up to its end (a row, a card)."""
        start = next(i for i, (_, attrs, _) in enumerate(self.found) if attrs.get(attr) == value)
        return [(tag, attrs, "".join(text)) for tag, attrs, text in self.found[start : start + 40]]


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless run; the virtual time budget lets the page's script fetch and draw before the dump."""
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--virtual-time-budget=3000", *args, url,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def wait_running(http, api, job_url: str, timeout_s: float = 20.0) -> None:
    """Until the job is part way and the model's throughput shows (it counts complete seconds only)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc = http.get(f"{api.url}/v1/overview").json()
        job = next((j for j in doc["jobs"] if j["links"]["self"] == job_url), None)
        slow = next(m for m in doc["models"] if m["name"] == "echo-slow")
        if job and job["status"] == "running" and job["progress"] > 0.02 and slow["items_per_s"] > 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"the job was not seen running with throughput in {timeout_s}s: {doc}")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_the_page_shows_a_running_job_in_a_real_browser(http, api, tmp_path):
    finished = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": list(range(500)), "cache": False}).json()
    wait_for_job(http, finished["links"]["self"])
    response = http.post(f"{api.url}/v1/jobs", json={"model": "echo-slow", "inputs": list(range(12_000)), "cache": False})
    assert response.status_code == 202, response.text
    job = response.json()
    job_path = f"/v1/jobs/{job['id']}"
    try:
        wait_running(http, api, job_path)
        dom = chromium(tmp_path, f"{api.url}/", "--dump-dom").stdout
        screenshot = tmp_path / "jobs-page.png"
        chromium(tmp_path, f"{api.url}/", f"--screenshot={screenshot}")
        during = http.get(f"{api.url}{job_path}").json()
    finally:
        http.delete(f"{api.url}{job_path}")
    assert during["status"] == "running", "the job ended before the browser saw it: make it longer"

    page = Elements()
    page.feed(dom)
    row = page.within("data-job-id", job["id"])
    assert row[0][1]["data-status"] == "running"
    assert any(tag == "span" and attrs.get("class") == "status status-running" and text == "running" for tag, attrs, text in row)
    bar = next(attrs for tag, attrs, _ in row if attrs.get("role") == "progressbar")
    assert 0 < float(bar["aria-valuenow"]) < 100
    done = page.within("data-job-id", finished["id"])
    assert done[0][1]["data-status"] == "completed"
    assert next(attrs for _, attrs, _ in done if attrs.get("role") == "progressbar")["aria-valuenow"] == "100"
    model = page.within("data-model", "echo-slow")
    assert float(next(text for _, attrs, text in model if "items-per-s" in attrs.get("class", "")).replace(",", "")) > 0
    assert any(attrs.get("data-device") == "cpu" for _, attrs, _ in page.within("data-device", "cpu"))
    assert next(attrs for _, attrs, _ in page.within("id", "live"))["data-state"] == "live"

    assert png_size(screenshot) == WINDOW and screenshot.stat().st_size > 20_000
    print(f"screenshot: {screenshot}")
