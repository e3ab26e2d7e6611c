"""``GET /``: the jobs page, a static shell whose script polls ``/v1/overview`` and redraws itself.

No build step and nothing fetched from elsewhere: the page works where the API is reachable and nothing else
is, as on a private cluster.
"""

from __future__ import annotations

from flask import Blueprint, Response, make_response, render_template, url_for

from batchery.app.overview import flower_url
from batchery.app.services import services
from batchery.app.views import base_url

bp = Blueprint("page", __name__, template_folder="templates", static_folder="static", static_url_path="/static")
POLL_MS = 1000


@bp.get("/")
def jobs_page() -> Response:
    page = render_template(
        "jobs.html",
        overview_url=url_for("overview.overview"),
        poll_ms=POLL_MS,
        flower_url=flower_url(services().settings, base_url()),
        metrics_url=url_for("health.metrics"),
    )
    response = make_response(page)
    response.headers["Cache-Control"] = "no-cache"
    return response
