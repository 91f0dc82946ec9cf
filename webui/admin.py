"""The admin pages: call queues and agents, managed as ``hotline queue add|set`` and ``hotline agent state`` do.

Admins change everything here. Supervisors may open the two lists (queues, agents) and change
nothing: they run the floor from the wallboard, while the queues' settings and who serves which
queue are the admin's. The rules are those of ``models.queues`` and ``models.agents``, the same
the CLI applies; a rule refused is said at the field it concerns, the admin's input kept and
nothing saved.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response
from wtforms import Field, SelectChoice, SelectField, SelectMultipleField, StringField
from wtforms.validators import Length, Optional, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from config import Settings
from models.agent import Agent, AgentState
from models.agents import CHOSEN_STATES, AgentStateError, agent_of, choose, serves, skill_levels
from models.queue import Queue
from models.queues import (
    MENU_KEYS, QueueError, add_queue, all_queues, assign_agent, check_menu_key, check_name, check_numbers,
    check_seconds, check_skills, check_text, parse_seconds, set_queue, timers,
)
from models.user import Role, User
from webui.db import get_db
from webui.roles import restrict

bp = Blueprint("admin", __name__, url_prefix="/admin")
restrict(bp, (Role.SUPERVISOR, Role.ADMIN))

SOURCE = "admin"
# The pages a supervisor may open; every other page and every change is the admin's.
VIEWS = {"admin.index", "admin.queues", "admin.agents"}
# Between the items of a list typed on one line: "粤语:3, 空调", "1000，1001".
SEPARATORS = re.compile(r"[,，、;；\n]")


@bp.before_request
def only_admins_change() -> None:
    if current_user.role is not Role.ADMIN and request.endpoint not in VIEWS:
        abort(403)


def say(error: QueueError) -> str:
    """A rule's reason in the user's language: the catalogue holds the rules' message templates."""
    return _(error.template, **error.params)


def _text(value: str | None) -> str:
    return (value or "").strip()


def rule(check: Callable[[Any], Any]) -> Callable[[FlaskForm, Field], None]:
    """A validator applying a rule of ``models.queues``: the field holds the value as stored, or the reason."""

    def validate(_form: FlaskForm, field: Field) -> None:
        if field.process_errors:
            return
        try:
            field.data = check(field.data)
        except QueueError as error:
            raise ValidationError(say(error)) from None

    return validate


class SecondsField(StringField):
    """A timer typed in seconds; empty is None: the ``[queues]`` default. Named as the queue's column."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        if valuelist:
            self.data = None
            try:
                self.data = parse_seconds(valuelist[0])
            except QueueError as error:
                raise ValueError(say(error)) from None

    def pre_validate(self, form: FlaskForm) -> None:
        if self.process_errors:
            return
        try:
            check_seconds(self.name, self.data)
        except QueueError as error:
            raise ValidationError(say(error)) from None

    def _value(self) -> str:
        if self.raw_data:
            return self.raw_data[0]
        return "" if self.data is None else f"{self.data:g}"


class ListField(StringField):
    """A list typed on one line, its items between commas: "粤语:3, 空调"."""

    def process_data(self, value: Iterable[Any] | None) -> None:
        self.data = list(value or [])

    def process_formdata(self, valuelist: list[Any]) -> None:
        if valuelist:
            self.data = [item.strip() for item in SEPARATORS.split(valuelist[0]) if item.strip()]

    def _value(self) -> str:
        return self.raw_data[0] if self.raw_data else ", ".join(str(item) for item in self.data or [])


class RuleForm(FlaskForm):
    def refuse(self, error: QueueError) -> None:
        """A rule broken by the whole (a taken name or menu key), said at its field or above the form."""
        field = self._fields.get(error.field or "")
        (field.errors if field is not None else self.form_errors).append(say(error))


class QueueForm(RuleForm):
    """A queue's settings as ``hotline queue set`` takes them, each field named as ``set_queue``'s."""

    display_name = StringField(_l("Display name"), filters=[_text],
                               validators=[rule(partial(check_text, "display_name"))])
    numbers = ListField(_l("Hotline numbers"), validators=[rule(check_numbers)])
    menu_key = SelectField(_l("Menu key"), choices=[SelectChoice("", _l("none")), *MENU_KEYS],
                           validate_choice=False, filters=[lambda key: key or None], validators=[rule(check_menu_key)])
    skills = ListField(_l("Skills"), validators=[rule(check_skills)])
    ring_timeout_seconds = SecondsField(_l("Ring timeout"))
    wrap_up_seconds = SecondsField(_l("Wrap-up"))
    announce_seconds = SecondsField(_l("Announcement period"))
    max_wait_seconds = SecondsField(_l("Maximum wait"))
    virtual_hold_after_seconds = SecondsField(_l("Virtual hold after"))
    # Any name reaches the rule, which says when there is no such queue.
    overflow = SelectField(_l("Overflow to"), validate_choice=False, filters=[_text])
    language = StringField(_l("Language"), filters=[_text, lambda language: language or None],
                           validators=[rule(partial(check_text, "language"))])

    SETTINGS = ("numbers", "menu_key", "skills", "ring_timeout_seconds", "wrap_up_seconds", "announce_seconds",
                "max_wait_seconds", "virtual_hold_after_seconds", "language")

    def settings(self, name: str) -> dict[str, Any]:
        """The form as ``set_queue``'s fields: an empty display name is the queue's name, no overflow clears it."""
        return {**{field: self[field].data for field in self.SETTINGS},
                "display_name": self.display_name.data or name, "overflow": self.overflow.data}

    def offer_overflow(self, queues: Iterable[Queue], own: Queue | None = None) -> None:
        self.overflow.choices = [SelectChoice("", _("none")), *(queue.name for queue in queues if queue is not own)]


class NewQueueForm(QueueForm):
    name = StringField(_l("Name"), filters=[_text], validators=[rule(check_name)])


class AgentForm(RuleForm):
    skills = ListField(_l("Skills"), validators=[rule(check_skills)])
    # Names not offered reach the rule, which says there is no such queue.
    queues = SelectMultipleField(_l("Queues served"), validate_choice=False, widget=ListWidget(prefix_label=False),
                                 option_widget=CheckboxInput())


class AgentStateForm(FlaskForm):
    state = SelectField(choices=sorted(state.value for state in CHOSEN_STATES))
    reason = StringField(validators=[Optional(), Length(max=128)])


# queues

@bp.get("/")
def index() -> Response:
    return redirect(url_for("admin.queues"))


@bp.get("/queues/")
def queues() -> str:
    form = NewQueueForm(formdata=None)
    form.offer_overflow(all_queues(get_db()))
    return _queues_page(form)


@bp.post("/queues/")
def new_queue() -> tuple[str, int] | Response:
    db = get_db()
    form = NewQueueForm()
    form.offer_overflow(all_queues(db))
    added = _saved(form, lambda: add_queue(db, form.name.data, **form.settings(form.name.data)))
    if added is None:
        return _queues_page(form), 400
    flash(_("Queue %(name)s added.", name=added.name))
    return redirect(url_for("admin.queues"))


@bp.route("/queues/<int:queue_id>", methods=["GET", "POST"])
def edit_queue(queue_id: int) -> str | tuple[str, int] | Response:
    db = get_db()
    queue = db.get(Queue, queue_id)
    if queue is None:
        abort(404)
    form = QueueForm(obj=queue, overflow=queue.overflow_queue.name if queue.overflow_queue else "")
    form.offer_overflow(all_queues(db), queue)
    if request.method == "GET":
        return _queue_page(queue, form)
    if _saved(form, lambda: set_queue(db, queue, **form.settings(queue.name))) is None:
        return _queue_page(queue, form), 400
    flash(_("Queue %(name)s saved.", name=queue.name))
    return redirect(url_for("admin.queues"))


def _saved(form: RuleForm, save: Callable[[], Any]) -> Any:
    """What ``save`` returns, committed, if the form and then the rules allow it; else None, nothing saved."""
    if form.validate_on_submit():
        db = get_db()
        try:
            saved = save()
        except QueueError as error:
            db.rollback()
            form.refuse(error)
        else:
            db.commit()
            return saved
    flash(_("Nothing was saved: correct the fields marked below."))
    return None


def _queues_page(form: NewQueueForm) -> str:
    settings = _settings()
    rows = [(queue, timers(queue, settings), skill_levels(queue.skills)) for queue in all_queues(get_db())]
    return render_template("admin_queues.html", rows=rows, form=form, **_defaults(settings))


def _queue_page(queue: Queue, form: QueueForm) -> str:
    return render_template("admin_queue.html", queue=queue, form=form, **_defaults(_settings()))


def _defaults(settings: Settings) -> dict[str, Any]:
    """What a queue without settings of its own has: the ``[queues]`` timers and the transcription language."""
    return {"defaults": timers(Queue(), settings), "default_language": settings.transcription.default_language}


# agents

@bp.get("/agents/")
def agents() -> str:
    db = get_db()
    users = db.scalars(select(User).where(User.extension.is_not(None)).order_by(User.username)).all()
    found = [agent_of(db, user) for user in users]
    db.commit()  # a user with an extension never seen as an agent gets their row: logged out
    queues = all_queues(db)
    rows = [(agent, skill_levels(agent.user.skills), [queue.name for queue in queues if serves(agent, queue)])
            for agent in found]
    return render_template("admin_agents.html", rows=rows)


@bp.route("/agents/<int:user_id>", methods=["GET", "POST"])
def edit_agent(user_id: int) -> str | tuple[str, int] | Response:
    db = get_db()
    agent = _agent(db, user_id)
    form = AgentForm(skills=agent.user.skills, queues=agent.queues)
    form.queues.choices = [queue.name for queue in all_queues(db)]
    if request.method == "GET":
        return _agent_page(agent, form)
    if _saved(form, lambda: assign_agent(db, agent, skills=form.skills.data, queues=form.queues.data)) is None:
        return _agent_page(agent, form), 400
    flash(_("%(name)s saved.", name=_name(agent)))
    return redirect(url_for("admin.agents"))


@bp.post("/agents/<int:user_id>/state")
def agent_state(user_id: int) -> Response:
    db = get_db()
    agent = _agent(db, user_id)
    form = AgentStateForm()
    reason = _text(form.reason.data)
    if not form.validate_on_submit():
        flash(_("That state change was not understood; try again."))
    elif form.state.data == AgentState.PAUSED.value and not reason:
        flash(_("Choose or type a reason for the pause."))
    else:
        _choose(db, agent, AgentState(form.state.data), reason)
    return redirect(url_for("admin.edit_agent", user_id=user_id))


def _choose(db: Session, agent: Agent, state: AgentState, reason: str) -> None:
    """The state chosen for the agent, through the state machine; what came of it is flashed."""
    try:
        moved = choose(db, agent, state, reason=reason, source=SOURCE)
    except AgentStateError:
        db.rollback()
        flash(_("Not possible while %(name)s is %(state)s.", name=_name(agent), state=_(agent.state.value)))
        return
    db.commit()
    if moved:
        flash(_("%(name)s is %(state)s now.", name=_name(agent), state=_(agent.state.value)))
    else:  # the distributor or the agent's desk changed them between our read and our write
        flash(_("%(name)s changed meanwhile and is %(state)s; try again.", name=_name(agent),
                state=_(agent.state.value)))


def _agent(db: Session, user_id: int) -> Agent:
    """The agent of a user with an extension (created logged out on first use); 404 for anyone else."""
    user = db.get(User, user_id)
    if user is None or not user.extension:
        abort(404)
    agent = agent_of(db, user)
    db.commit()  # a new row is kept whatever comes next: a refused change rolls back only itself
    return agent


def _agent_page(agent: Agent, form: AgentForm) -> str:
    return render_template("admin_agent.html", agent=agent, name=_name(agent), form=form)


def _name(agent: Agent) -> str:
    return agent.user.display_name or agent.user.username


def _settings() -> Settings:
    return current_app.config["HOTLINE_SETTINGS"]
