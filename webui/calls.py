"""Calls: live ones (ringing, greeting, queued, bridged) and the recent log."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, send_file
from flask_login import login_required
from sqlalchemy import select
from werkzeug.wrappers import Response

from models.call import Call, CallState
from models.recording import Recording
from webui.db import get_db

bp = Blueprint("calls", __name__, url_prefix="/calls")
RECENT = 100


@bp.route("/")
@login_required
def index() -> str:
    db = get_db()
    live = db.scalars(select(Call).where(Call.state != CallState.ENDED).order_by(Call.ring_at)).all()
    recent = db.scalars(select(Call).order_by(Call.ring_at.desc(), Call.id.desc()).limit(RECENT)).all()
    return render_template("calls.html", live=live, recent=recent)


@bp.route("/recordings/<int:recording_id>.wav")
@login_required
def recording(recording_id: int) -> Response:
    found = get_db().get(Recording, recording_id)
    if found is None:
        abort(404)
    return send_file(found.path, mimetype="audio/wav", conditional=True)
