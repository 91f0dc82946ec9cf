"""The wallboard: per queue who waits and for how long, agents by state, calls in progress, today's figures.

A supervisor listens to a call in progress (监听), whispers to its agent (耳语) or barges in (强插):
the request goes on the bus to the ``hotline sip`` running the call, which rings their softphone.

Everything comes from ``models.board.wallboard``, read from the database on each rebuild, so the
board is right again as soon as a restarted ``hotline web`` (or ``hotline sip``) answers; the
stream rebuilds it on every change on the bus and every second, so waits count up.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectField
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from config import Settings
from models.base import utcnow
from models.board import wallboard
from models.call import CallState
from models.calllog import call_by_uid
from models.user import Role
from webui.db import get_db
from webui.roles import restrict
from webui.stream import event_stream, on_fresh_session
from workers import bus

bp = Blueprint("wallboard", __name__, url_prefix="/wallboard")
restrict(bp, (Role.SUPERVISOR, Role.ADMIN))


@bp.get("/")
def index() -> str:
    return render_template("wallboard.html", board=board_parts(get_db(), _settings())["board"])


class SuperviseForm(FlaskForm):
    mode = SelectField(choices=["listen", "whisper", "barge"])


@bp.post("/calls/<uid>/supervise")
def supervise(uid: str) -> Response:
    """Listen to, whisper on or barge into a live call: the supervisor's softphone rings (the UI never speaks SIP)."""
    form = SuperviseForm()
    call = call_by_uid(get_db(), uid)
    if call is None:
        abort(404)
    if not form.validate_on_submit():
        flash(_("That request was not understood; try again."))
    elif not current_user.extension:
        flash(_("You need an extension (a softphone) to join calls."))
    elif call.state not in (CallState.BRIDGED, CallState.ON_HOLD):
        flash(_("The call is not connected to an agent."))
    elif not bus.request_call(_settings(), uid, form.mode.data, current_user.extension):
        flash(_("The call could not be reached; try again."))
    else:
        flash(_("Your phone rings: answer it to join the call."))
    return redirect(url_for("wallboard.index"))


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
