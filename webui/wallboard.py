"""The wallboard: per queue who waits and for how long, agents by state, calls in progress, today's figures.

Everything comes from ``models.board.wallboard``, read from the database on each rebuild, so the
board is right again as soon as a restarted ``hotline web`` (or ``hotline sip``) answers; the
stream rebuilds it on every change on the bus and every second, so waits count up.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from config import Settings
from models.base import utcnow
from models.board import wallboard
from models.user import Role
from webui.db import get_db
from webui.roles import restrict
from webui.stream import event_stream, on_fresh_session

bp = Blueprint("wallboard", __name__, url_prefix="/wallboard")
restrict(bp, (Role.SUPERVISOR, Role.ADMIN))


@bp.get("/")
def index() -> str:
    return render_template("wallboard.html", board=board_parts(get_db(), _settings())["board"])


@bp.get("/stream")
def stream() -> Response:
    settings = _settings()
    return event_stream(settings, on_fresh_session(lambda session: board_parts(session, settings)))


def board_parts(session: Session, settings: Settings) -> dict[str, str]:
    """The board as HTML by element id: the same for the page and for its stream."""
    now = utcnow()
    return {"board": render_template("_wallboard.html", board=wallboard(session, settings, now), at=now)}


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    """``83.4`` → ``1:23``; an hour or more → ``1:02:03``; no figure yet → ``—``."""
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@bp.app_template_filter("percent")
def percent(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.0%}"


def _settings() -> Settings:
    return current_app.config["HOTLINE_SETTINGS"]
