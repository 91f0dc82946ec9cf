"""The agent desk: the agent's state, and the caller's card with its ticket as the phone rings.

The page and its event stream (``/desk/stream``) show the same three parts, rendered here: the
agent's state with the buttons that apply now, the caller card (number, customer, products, open
tickets, earlier calls with their notes, and the call's ticket to complete while talking) and the
live transcript. The card is the agent's current call: the one ringing or taken, and during
wrap-up (话后处理) the one they just took.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response
from wtforms import SelectField, StringField, TextAreaField
from wtforms.fields import SelectChoice, enum_choices, enum_coerce
from wtforms.validators import DataRequired, Length, Optional

from config import Settings
from models.agent import Agent, AgentState
from models.agents import AgentStateError, agent_of, choose, end_wrap_up
from models.call import Call, CallState
from models.calllog import call_by_uid, ticket_for_call
from models.ticket import EventKind, Priority, Ticket, TicketEvent, TicketType, Urgency
from models.queues import all_queues
from models.ticketing import OPEN_STATUSES, change_ticket, default_priority
from models.transcript import TranscriptSegment
from models.user import Role, User
from webui.db import get_db
from webui.roles import restrict
from webui.stream import Changes, event_stream, on_fresh_session
from workers import bus

bp = Blueprint("desk", __name__, url_prefix="/desk")
restrict(bp, (Role.AGENT, Role.SUPERVISOR, Role.ADMIN))

SOURCE = "desk"
EARLIER_CALLS = 5
OPEN_TICKETS = 10
CARD_REFRESH_SECONDS = 5.0
NOTE_KINDS = (EventKind.NOTE, EventKind.TRANSCRIPT)
# Offered in the pause box; the agent may type any other reason.
PAUSE_REASONS = (_l("Break"), _l("Meal"), _l("Training"), _l("Meeting"), _l("Ticket follow-up"))
# Who may complete the ticket of a call they are not on.
OVERSEERS = (Role.SUPERVISOR, Role.ADMIN)


def _label(member: Enum) -> str:
    return _l(member.value)


class StateForm(FlaskForm):
    action = SelectField(choices=["ready", "pause", "wrap_up_done", "log_out"])
    reason = StringField(validators=[Optional(), Length(max=128)])


class HoldForm(FlaskForm):
    """Hold or resume; while consulting a colleague (attended transfer), complete or cancel."""

    action = SelectField(choices=["hold", "resume", "complete", "cancel"])


class TransferForm(FlaskForm):
    """Blind transfer: to a queue (by name) or an agent (by extension); the choices are set per request."""

    target = SelectField(_l("Transfer to"), validators=[DataRequired()])
    kind = SelectField(choices=["transfer", "consult"], default="transfer")  # blind, or attended (consult first)


class TicketForm(FlaskForm):
    """The fields an agent completes while talking; named as the ticket's columns."""

    type = SelectField(_l("Type"), coerce=enum_coerce(TicketType), choices=enum_choices(TicketType, label=_label))
    urgency = SelectField(_l("Urgency"), coerce=enum_coerce(Urgency), choices=enum_choices(Urgency, label=_label))
    priority = SelectField(_l("Priority"), coerce=enum_coerce(Priority), choices=enum_choices(Priority))
    description = TextAreaField(_l("Description"), filters=[lambda text: text.strip() if text else text],
                                validators=[DataRequired(_l("Describe the caller's problem.")),
                                            Length(max=4000, message=_l("At most %(max)d characters."))])

    FIELDS = ("type", "urgency", "priority", "description")

    def changes(self, ticket: Ticket) -> dict[str, Any]:
        return {name: self[name].data for name in self.FIELDS if self[name].data != getattr(ticket, name)}


@bp.get("/")
def index() -> str:
    db = get_db()
    agent = agent_of(db, current_user)
    db.commit()  # a first visit creates the agent (logged out)
    return render_template("desk.html", parts=desk_parts(db, _settings(), agent))


@bp.post("/state")
def change_state() -> Response:
    form = StateForm()
    if not form.validate_on_submit():
        flash(_("That state change was not understood; try again."))
        return redirect(url_for("desk.index"))
    reason = (form.reason.data or "").strip()
    if form.action.data == "pause" and not reason:
        flash(_("Choose or type a reason for the pause."))
        return redirect(url_for("desk.index"))
    db = get_db()
    agent = agent_of(db, current_user)
    try:
        moved = _apply(db, agent, form.action.data, reason)
    except AgentStateError:
        db.rollback()
        flash(_("Not possible while you are %(state)s.", state=_(agent.state.value)))
        return redirect(url_for("desk.index"))
    db.commit()
    if not moved:
        flash(_("Your state is %(state)s now; nothing was changed.", state=_(agent.state.value)))
    return redirect(url_for("desk.index"))


def _apply(db: Session, agent: Agent, action: str, reason: str) -> bool:
    if action == "wrap_up_done":
        return end_wrap_up(db, agent, source=SOURCE)
    if action == "pause":
        return choose(db, agent, AgentState.PAUSED, reason=reason, source=SOURCE)
    chosen = AgentState.AVAILABLE if action == "ready" else AgentState.LOGGED_OUT
    return choose(db, agent, chosen, source=SOURCE)


@bp.post("/calls/<uid>/ticket")
def save_ticket(uid: str) -> str | tuple[str, int] | Response:
    """The agent's edits of the call's ticket, through the audit trail; a call without one gets it now."""
    db, settings = get_db(), _settings()
    call = call_by_uid(db, uid)
    if call is None:
        abort(404)
    agent = agent_of(db, current_user)
    if not _may_edit(current_user, agent, call):
        abort(403)
    form = TicketForm()
    if not form.validate_on_submit():
        flash(_("The ticket was not saved: correct the fields marked below."))
        return render_template("desk.html", parts=desk_parts(db, settings, agent, call, form)), 400
    ticket = call.ticket or ticket_for_call(db, settings, call)
    changes = form.changes(ticket)
    if changes:
        change_ticket(db, settings, ticket, current_user.id, **changes)
    db.commit()
    flash(_("Ticket %(number)s saved.", number=ticket.number))
    return redirect(url_for("desk.index"))


@bp.post("/calls/<uid>/hold")
def hold(uid: str) -> Response:
    """Hold or resume the call, or end a consultation: asked of the ``hotline sip`` running it (the desk never speaks SIP)."""
    form = HoldForm()
    call = _my_call(uid)
    if not form.validate_on_submit():
        flash(_("That request was not understood; try again."))
    elif call.state not in (CallState.BRIDGED, CallState.ON_HOLD):
        flash(_("The call is not connected to you."))
    elif not bus.request_call(_settings(), uid, form.action.data):
        flash(_("The call could not be reached; try again."))
    return redirect(url_for("desk.index"))


@bp.post("/calls/<uid>/transfer")
def transfer(uid: str) -> Response:
    """A transfer (转接), blind or attended (consult first), asked of the ``hotline sip`` running the call."""
    call = _my_call(uid)
    form = TransferForm()
    form.target.choices = transfer_targets(get_db(), call)
    if not form.validate_on_submit():
        flash(_("Choose where to transfer the caller."))
    elif call.state not in (CallState.BRIDGED, CallState.ON_HOLD):
        flash(_("The call is not connected to you."))
    elif not bus.request_call(_settings(), uid, form.kind.data, form.target.data):
        flash(_("The call could not be reached; try again."))
    return redirect(url_for("desk.index"))


def _my_call(uid: str) -> Call:
    """The call ``uid`` if the user may act on it (its agent, a supervisor or an admin); else 404 or 403."""
    db = get_db()
    call = call_by_uid(db, uid)
    if call is None:
        abort(404)
    if not _may_edit(current_user, agent_of(db, current_user), call):
        abort(403)
    return call


def transfer_targets(session: Session, call: Call) -> list[SelectChoice]:
    """Every queue (by name) and every agent with an extension but the call's (by extension), for the transfer box."""
    queues = [SelectChoice(queue.name, _("Queue %(name)s", name=queue.display_name or queue.name))
              for queue in all_queues(session)]
    agents = session.scalars(select(User).where(User.extension.is_not(None), User.active.is_(True),
                                                User.id != call.agent_id)
                             .order_by(User.username))
    return queues + [SelectChoice(agent.extension or "", f"{agent.display_name or agent.username} ({agent.extension})")
                     for agent in agents]


def _may_edit(user: User, agent: Agent, call: Call) -> bool:
    return call.agent_id == user.id or agent.call_uid == call.uid or user.role in OVERSEERS


@bp.get("/stream")
def stream() -> Response:
    feed = DeskFeed(_settings(), current_user.id)
    return event_stream(_settings(), on_fresh_session(feed.build), feed.concerns)


class DeskFeed:
    """One agent's desk as the stream sends it, and which bus changes concern it.

    The card is the costly part: it is rebuilt when the call changes or the bus says the agent
    or the call did, and every ``CARD_REFRESH_SECONDS`` for the rest (a ticket changed elsewhere);
    the state and the transcript are rebuilt on every poll.
    """

    def __init__(self, settings: Settings, user_id: int) -> None:
        self.settings = settings
        self.user_id = user_id
        self.agent_id: int | None = None
        self.call_uid: str | None = None
        self.card = ""
        self.card_at = 0.0
        self.stale = True

    def build(self, session: Session) -> dict[str, str]:
        agent = agent_of(session, session.get_one(User, self.user_id))
        call = current_call(session, agent)
        uid = call.uid if call else None
        now = time.monotonic()
        if self.stale or uid != self.call_uid or now - self.card_at >= CARD_REFRESH_SECONDS:
            self.card, self.card_at, self.stale = card_part(session, self.settings, call), now, False
        self.agent_id, self.call_uid = agent.id, uid
        return {"desk-state": state_part(agent), "desk-card": self.card, "desk-transcript": transcript_part(call)}

    def concerns(self, changes: Changes) -> bool:
        """Whether the changes are about this agent or their call (which makes the card stale)."""
        mine = any(self._mine(change) for change in changes)
        self.stale = self.stale or mine
        return mine

    def _mine(self, change: dict[str, Any]) -> bool:
        if change.get("kind") == "agent":
            return change.get("id") == self.agent_id
        return change.get("kind") == "call" and self.call_uid is not None and change.get("uid") == self.call_uid


# the parts of the page

def desk_parts(session: Session, settings: Settings, agent: Agent, call: Call | None = None,
               form: TicketForm | None = None) -> dict[str, str]:
    """The page's live parts by element id, as HTML: what its stream sends too."""
    call = call or current_call(session, agent)
    return {"desk-state": state_part(agent), "desk-card": card_part(session, settings, call, form),
            "desk-transcript": transcript_part(call)}


def state_part(agent: Agent) -> str:
    return render_template("_desk_state.html", agent=agent, reasons=PAUSE_REASONS, form=StateForm(formdata=None))


def card_part(session: Session, settings: Settings, call: Call | None, form: TicketForm | None = None) -> str:
    return render_template("_desk_card.html", call=call, **(caller_card(session, settings, call, form) if call else {}))


def transcript_part(call: Call | None) -> str:
    return render_template("_desk_transcript.html", call=call, segments=live_transcript(call) if call else [])


def current_call(session: Session, agent: Agent) -> Call | None:
    """The call ringing or taken; during wrap-up the last one the agent took."""
    if agent.call_uid:
        return call_by_uid(session, agent.call_uid)
    if agent.state is AgentState.WRAP_UP:
        return session.scalar(select(Call).where(Call.agent_id == agent.user_id).order_by(Call.id.desc()).limit(1))
    return None


def caller_card(session: Session, settings: Settings, call: Call, form: TicketForm | None = None) -> dict[str, Any]:
    """Who calls and their history, and the form of the call's ticket (pre-filled from it)."""
    if form is None:
        form = TicketForm(formdata=None, obj=call.ticket, data=None if call.ticket else {
            "type": TicketType.INQUIRY, "urgency": Urgency.NORMAL,
            "priority": default_priority(Urgency.NORMAL, settings.tickets)})
    return {
        "customer": call.customer,
        "ticket": call.ticket,
        "form": form,
        "open_tickets": open_tickets(session, call),
        "transfer_form": _transfer_form(session, call),
        "earlier": [(earlier, notes_of(earlier)) for earlier in earlier_calls(session, call)],
    }


def _transfer_form(session: Session, call: Call) -> TransferForm:
    form = TransferForm(formdata=None)
    form.target.choices = transfer_targets(session, call)
    return form


def _same_caller(column_customer: Any, column_phone: Any, call: Call) -> Any:
    """The customer's rows when the caller is known, else the rows of the number."""
    return column_customer == call.customer_id if call.customer_id else column_phone == call.caller_id


def open_tickets(session: Session, call: Call) -> list[Ticket]:
    return list(session.scalars(select(Ticket)
                                .where(_same_caller(Ticket.customer_id, Ticket.phone, call),
                                       Ticket.status.in_(OPEN_STATUSES))
                                .order_by(Ticket.created_at.desc(), Ticket.id.desc()).limit(OPEN_TICKETS)))


def earlier_calls(session: Session, call: Call) -> list[Call]:
    return list(session.scalars(select(Call)
                                .where(_same_caller(Call.customer_id, Call.caller_id, call), Call.id != call.id)
                                .order_by(Call.ring_at.desc(), Call.id.desc()).limit(EARLIER_CALLS)))


def notes_of(call: Call) -> list[TicketEvent]:
    """The notes and transcripts on the call's ticket that are about this call (or its recordings)."""
    if call.ticket is None:
        return []
    recordings = {recording.id for recording in call.recordings}
    return [event for event in call.ticket.events if event.kind in NOTE_KINDS
            and ((event.data or {}).get("call_id") == call.id or (event.data or {}).get("recording_id") in recordings)]


def live_transcript(call: Call) -> list[TranscriptSegment]:
    """The segments recognised so far of the call's recording (the newest transcript that has any)."""
    recording = call.recording
    transcripts = [transcript for transcript in recording.transcripts if transcript.segments] if recording else []
    return transcripts[-1].segments if transcripts else []


def _settings() -> Settings:
    return current_app.config["HOTLINE_SETTINGS"]
