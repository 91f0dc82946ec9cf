"""Tickets: the list, one ticket with its calls, recordings and audit trail, and its resolve action."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from redis.exceptions import RedisError
from sqlalchemy import select
from werkzeug.wrappers import Response
from wtforms import TextAreaField
from wtforms.validators import InputRequired, Length

from models.callbacks import CallbackError, due_now, resolve_ticket
from models.db import Unavailable
from models.ticket import Ticket, TicketStatus
from models.user import Role
from webui.callbacks import said
from webui.db import get_db
from workers.dispatch import enqueue_callback

bp = Blueprint("tickets", __name__, url_prefix="/tickets")

# Who delivers a result: the agents who handle tickets, and those above them.
RESOLVERS = (Role.AGENT, Role.SUPERVISOR, Role.ADMIN)
NOTE_LIMIT = 2000


class ResolveForm(FlaskForm):
    """The result delivered to the customer (处理结果): resolving schedules the revisit."""

    note = TextAreaField(_l("Result delivered"), filters=[lambda text: text.strip() if text else text],
                         validators=[InputRequired(_l("Say what was done for the customer.")),
                                     Length(max=NOTE_LIMIT, message=_l("At most %(max)d characters."))])


@bp.route("/")
@login_required
def index() -> str:
    tickets = get_db().scalars(select(Ticket).order_by(Ticket.created_at.desc()).limit(200)).all()
    return render_template("tickets.html", tickets=tickets)


@bp.route("/<number>")
@login_required
def show(number: str) -> str:
    return _page(_ticket(number), ResolveForm(formdata=None))


@bp.post("/<number>/resolve")
@login_required
def resolve(number: str) -> Response | tuple[str, int]:
    """Mark the result delivered; the satisfaction (or complaint) revisit is scheduled and, if due, dialled."""
    if current_user.role not in RESOLVERS:
        abort(403)
    db, ticket, form = get_db(), _ticket(number), ResolveForm()
    if not form.validate_on_submit():
        return _page(ticket, form), 400
    settings = current_app.config["HOTLINE_SETTINGS"]
    try:
        callback = resolve_ticket(db, settings, ticket, form.note.data, actor_id=current_user.id)
    except CallbackError as error:
        db.rollback()
        form.note.errors = [*form.note.errors, said(error)]
        return _page(_ticket(number), form), 400
    db.commit()
    flash(_("Ticket %(number)s resolved; callback %(id)d is scheduled.", number=number, id=callback.id))
    if (due := due_now(callback)) is not None:
        try:
            enqueue_callback(settings, due.callback_id, due.number, due.at)
        except (RedisError, Unavailable):
            pass  # the reconciler of `hotline sip` hands it to RQ within `callbacks.reconcile_seconds`
    return redirect(url_for("tickets.show", number=number))


def _ticket(number: str) -> Ticket:
    ticket = get_db().scalar(select(Ticket).where(Ticket.number == number))
    if ticket is None:
        abort(404)
    return ticket


def _page(ticket: Ticket, form: ResolveForm) -> str:
    resolvable = current_user.role in RESOLVERS and ticket.status not in (TicketStatus.RESOLVED, TicketStatus.CLOSED)
    return render_template("ticket.html", ticket=ticket, resolve_form=form if resolvable else None)
