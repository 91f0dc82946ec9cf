"""Tickets: the list and one ticket with its calls, recordings and audit trail."""

from __future__ import annotations

from flask import Blueprint, abort, render_template
from flask_login import login_required
from sqlalchemy import select

from models.ticket import Ticket
from webui.db import get_db

bp = Blueprint("tickets", __name__, url_prefix="/tickets")


@bp.route("/")
@login_required
def index() -> str:
    tickets = get_db().scalars(select(Ticket).order_by(Ticket.created_at.desc()).limit(200)).all()
    return render_template("tickets.html", tickets=tickets)


@bp.route("/<number>")
@login_required
def show(number: str) -> str:
    ticket = get_db().scalar(select(Ticket).where(Ticket.number == number))
    if ticket is None:
        abort(404)
    return render_template("ticket.html", ticket=ticket)
