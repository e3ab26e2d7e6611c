"""How jobs look on the wire: the status document, its links, and the URLs links are made of."""

from __future__ import annotations

import re
from typing import Any

from flask import request, url_for

from batchery import documents
from batchery.app.services import services
from batchery.errors import BadRequest

#: ``host[:port]``: a name or an IPv4 address, or an IPv6 address in brackets, and an optional port.
HOST = re.compile(r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def base_url() -> str:
    """Where clients reach the API: ``BATCHERY_PUBLIC_URL`` when it is set (behind a proxy, the Host a request
    carries need not be where others reach the API), else the request's own scheme and Host."""
    return services().settings.public_url.rstrip("/") or request.host_url.rstrip("/")


def external_url(endpoint: str, **values: Any) -> str:
    """The absolute URL of a route, for links and ``Location``."""
    return base_url() + url_for(endpoint, **values)


def check_host() -> None:
    """Refuse a request whose Host is not ``host[:port]`` while links are made on it (no public URL set).

    Such a Host made broken links (``http:///v1/jobs/...``) or links elsewhere; refused before anything is
    done, a job included, as RFC 9112 section 3.2 asks (400).
    """
    if HOST.fullmatch(request.host) is None:
        raise BadRequest("the Host header is not a host name or address with an optional port")


def job_links(job_id: str) -> dict[str, str]:
    return {
        "self": external_url("jobs.get_job", job_id=job_id),
        "results": external_url("jobs.get_results", job_id=job_id),
    }


def job_document(job: dict[str, Any]) -> dict[str, Any]:
    return {**documents.link_files(documents.job(job), base_url()), "links": job_links(job["id"])}
