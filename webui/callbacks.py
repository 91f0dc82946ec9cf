"""The callback list (回访列表): revisit staff work the due and overdue callbacks; supervisors see them all.

The list shows the open callbacks the user may work, overdue first, then by deadline, and the
latest automatic-survey results with their recordings. A callback's page has its ticket, the
customer's history and the attempts, and the actions: call now (the staff member's softphone
rings first, then Hotline dials the customer and bridges and records the two), reschedule inside
the window, mark unreachable, and the survey form (回访表) filled while or after talking. The
rules are ``models.callbacks``'; a rule refused is said at the field it concerns, the input kept
and nothing saved.
"""

from __future__ import annotations

from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from redis.exceptions import RedisError
from werkzeug.wrappers import Response
from wtforms import IntegerField, RadioField, StringField, TextAreaField
from wtforms.fields import DateTimeLocalField, SelectChoice, enum_coerce
from wtforms.validators import AnyOf, InputRequired, Length, NumberRange, Optional

from config import Settings
from models.callback import Callback, CallbackKind, CallbackState, Satisfaction
from models.callback_list import (
    WORKERS, attempts_with_calls, customer_calls, customer_tickets, open_callbacks, survey_results, visible_to,
)
from models.callbacks import WAITING, CallbackError, answered_otherwise, dial_now, give_up, mark_due, record_answers, reschedule
from models.db import Unavailable
from webui.db import get_db
from webui.roles import restrict
from workers.dispatch import enqueue_callback

bp = Blueprint("callbacks", __name__, url_prefix="/callbacks")
restrict(bp, WORKERS)

# The survey form is for a call that took place: the customer answered (or the call is over).
SURVEYED_STATES = (CallbackState.IN_CALL, CallbackState.DONE)
KIND_LABELS = {
    CallbackKind.SATISFACTION: _l("Satisfaction revisit"),
    CallbackKind.COMPLAINT: _l("Complaint revisit"),
    CallbackKind.SUPERVISOR: _l("Supervisor callback"),
    CallbackKind.CUSTOMER_REQUESTED: _l("Promised callback"),
    CallbackKind.VIRTUAL_HOLD: _l("Virtual hold callback"),
}
SATISFACTION_LABELS = {
    Satisfaction.VERY_SATISFIED: _l("Very satisfied"),
    Satisfaction.SATISFIED: _l("Satisfied"),
    Satisfaction.NEUTRAL: _l("Neutral"),
    Satisfaction.DISSATISFIED: _l("Dissatisfied"),
}
PRODUCT_ANSWERS = {"yes": _l("Yes"), "no": _l("No"), "unclear": _l("Not sure")}
TECHNICIAN_ANSWERS = {"yes": _l("Yes"), "no": _l("No"), "no_visit": _l("No visit")}
TEXT_LIMIT = 2000


def _strip(text: str | None) -> str | None:
    return text.strip() if text else text


def said(error: CallbackError) -> str:
    """A rule's refusal in the user's language (the catalogue has the rules' messages)."""
    return _(error.template, **error.params)  # type: ignore[arg-type]


def _team_zone() -> ZoneInfo:
    return ZoneInfo(_settings().general.timezone)


def _choices(labels: dict[Any, Any]) -> list[SelectChoice]:
    return [SelectChoice(key.value if isinstance(key, Enum) else key, label) for key, label in labels.items()]


def _answer(question: Any, labels: dict[str, Any]) -> RadioField:
    """One of the manual's closed questions: optional, one of its answers."""
    return RadioField(question, choices=_choices(labels), validate_choice=False,
                      validators=[Optional(), AnyOf(list(labels), message=_l("Choose one of the answers."))])


class ActionForm(FlaskForm):
    """A button with nothing to fill (call now): its CSRF token only."""


class RescheduleForm(FlaskForm):
    at = DateTimeLocalField(_l("New time"), format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"],
                            tz=_team_zone, validators=[InputRequired(_l("Choose a time."))])


class UnreachableForm(FlaskForm):
    reason = StringField(_l("Reason"), filters=[_strip],
                         validators=[Optional(), Length(max=500, message=_l("At most %(max)d characters."))])


class SurveyForm(FlaskForm):
    """The survey form (回访表): the satisfaction question and the manuals' open questions."""

    satisfaction = RadioField(_l("Satisfaction"), coerce=enum_coerce(Satisfaction),
                              choices=_choices(SATISFACTION_LABELS),
                              invalid_value_message=_l("Choose the customer's answer."),
                              invalid_choice_message=_l("Choose the customer's answer."))
    score = IntegerField(_l("Score (1-5)"), validators=[
        Optional(), NumberRange(1, 5, message=_l("A score is a whole number from 1 to 5."))])
    product_working = _answer(_l("Is the product working normally?"), PRODUCT_ANSWERS)
    technician = _answer(_l("Was the visiting technician satisfactory?"), TECHNICIAN_ANSWERS)
    unclear = TextAreaField(_l("Is anything unclear?"), filters=[_strip],
                            validators=[Length(max=TEXT_LIMIT, message=_l("At most %(max)d characters."))])
    suggestions = TextAreaField(_l("Comments and suggestions"), filters=[_strip],
                                validators=[Length(max=TEXT_LIMIT, message=_l("At most %(max)d characters."))])

    ANSWERS = ("product_working", "technician", "unclear", "suggestions")

    def answers(self) -> dict[str, str | None]:
        """The open answers as stored on the callback: empty is None (not asked or not answered)."""
        return {name: self[name].data or None for name in self.ANSWERS}

    @classmethod
    def of(cls, callback: Callback) -> SurveyForm:
        """The form filled with what is on record (a second submission corrects the first)."""
        given = callback.survey_answers or {}
        return cls(formdata=None, data={"satisfaction": callback.satisfaction, "score": callback.score,
                                        **{name: given.get(name) for name in cls.ANSWERS}})


@bp.context_processor
def labels() -> dict[str, Any]:
    return {"kind_labels": KIND_LABELS, "satisfaction_labels": SATISFACTION_LABELS,
            "answer_rows": answer_rows}


@bp.get("/")
def index() -> str:
    db = get_db()
    mark_due(db)
    db.commit()
    return render_template("callbacks.html", callbacks=open_callbacks(db, current_user),
                           results=survey_results(db, current_user))


@bp.get("/<int:callback_id>")
def show(callback_id: int) -> str:
    db = get_db()
    mark_due(db)
    db.commit()
    return _page(_callback(callback_id))


@bp.post("/<int:callback_id>/call")
def call_now(callback_id: int) -> Response:
    """Staff first: the user's softphone rings, then Hotline dials the customer (a running ``hotline sip``)."""
    callback = _callback(callback_id)
    if not ActionForm().validate_on_submit():
        flash(_("That request was not understood; try again."))
    elif not current_user.extension:
        flash(_("You need an extension (a softphone) to call: ask an admin for one."))
    else:
        _dial(callback)
    return redirect(url_for("callbacks.show", callback_id=callback.id))


def _dial(callback: Callback) -> None:
    db, settings = get_db(), _settings()
    try:
        attempt = dial_now(db, settings, callback)
    except CallbackError as error:
        db.rollback()
        flash(_("Not dialled: %(reason)s", reason=said(error)))
        return
    db.commit()
    try:
        enqueue_callback(settings, callback.id, attempt, None, current_user.id)
    except (RedisError, Unavailable):
        flash(_("The call could not be queued (Redis does not answer); try again."))
        return
    flash(_("Your phone (%(extension)s) rings first: answer it, then Hotline dials %(phone)s.",
            extension=current_user.extension, phone=callback.phone))


@bp.post("/<int:callback_id>/reschedule")
def move(callback_id: int) -> Response | tuple[str, int]:
    db, callback = get_db(), _callback(callback_id)
    form = RescheduleForm()
    if form.validate_on_submit():
        try:
            reschedule(db, _settings(), callback, form.at.data, actor_id=current_user.id)
        except CallbackError as error:
            db.rollback()
            form.at.errors = [*form.at.errors, said(error)]
        else:
            db.commit()
            flash(_("Callback %(id)d rescheduled to %(time)s.", id=callback.id,
                    time=form.at.data.astimezone(_team_zone()).strftime("%Y-%m-%d %H:%M")))
            return redirect(url_for("callbacks.show", callback_id=callback.id))
    flash(_("Not rescheduled: correct the time marked below."))
    return _page(_callback(callback_id), reschedule_form=form), 400


@bp.post("/<int:callback_id>/unreachable")
def unreachable(callback_id: int) -> Response | tuple[str, int]:
    db, callback = get_db(), _callback(callback_id)
    form = UnreachableForm()
    if not form.validate_on_submit():
        flash(_("Not marked: correct the reason marked below."))
        return _page(callback, unreachable_form=form), 400
    try:
        give_up(db, callback, CallbackState.UNREACHABLE, reason=form.reason.data or "", actor_id=current_user.id)
    except CallbackError as error:
        db.rollback()
        flash(_("Not marked: %(reason)s", reason=said(error)))
        return redirect(url_for("callbacks.show", callback_id=callback_id))
    db.commit()
    flash(_("Callback %(id)d marked unreachable.", id=callback_id))
    return redirect(url_for("callbacks.index"))


@bp.post("/<int:callback_id>/survey")
def survey(callback_id: int) -> Response | tuple[str, int]:
    """The survey form: the answers on the callback and its ticket; 不满意 or a low score → the supervisor's callback."""
    db, callback = get_db(), _callback(callback_id)
    form = SurveyForm()
    if callback.state not in SURVEYED_STATES + WAITING:
        flash(_("The form opens once the customer has answered (not for a callback given up)."))
        return redirect(url_for("callbacks.show", callback_id=callback_id))
    if not form.validate_on_submit():
        flash(_("The answers were not saved: correct the fields marked below."))
        return _page(callback, survey_form=form), 400
    try:
        if callback.state in WAITING:  # answers taken another way: that closes the callback
            answered_otherwise(db, callback, actor_id=current_user.id)
        escalated = record_answers(db, _settings(), callback, satisfaction=form.satisfaction.data,
                                   score=form.score.data, answers=form.answers(), actor_id=current_user.id)
    except CallbackError as error:
        db.rollback()
        form.score.errors = [*form.score.errors, said(error)]
        return _page(_callback(callback_id), survey_form=form), 400
    db.commit()
    flash(_("The answers of callback %(id)d are saved.", id=callback_id))
    if escalated is not None:
        flash(_("Ticket %(number)s is flagged for improvement; the supervisor's callback %(id)d is scheduled.",
                number=callback.ticket.number if callback.ticket else "", id=escalated.id))
    return redirect(url_for("callbacks.show", callback_id=callback_id))


def _callback(callback_id: int) -> Callback:
    """The callback if the user may work it; else 404 or 403."""
    callback = get_db().get(Callback, callback_id)
    if callback is None:
        abort(404)
    if not visible_to(current_user, callback):
        abort(403)
    return callback


def _page(callback: Callback, **forms: FlaskForm) -> str:
    """The callback's page; ``forms`` are those the user just sent, with their input and errors."""
    db, settings = get_db(), _settings()
    blank = {
        "call_form": ActionForm(formdata=None),
        "reschedule_form": RescheduleForm(formdata=None, data={"at": callback.next_attempt_at}),
        "unreachable_form": UnreachableForm(formdata=None),
        "survey_form": SurveyForm.of(callback),
    }
    return render_template(
        "callbacks_detail.html", callback=callback, **{**blank, **forms},
        waiting=callback.state in WAITING, surveyed=callback.state in SURVEYED_STATES,
        attempts=attempts_with_calls(db, callback),
        calls=customer_calls(db, settings, callback), tickets=customer_tickets(db, settings, callback),
    )


def answer_rows(callback: Callback) -> list[tuple[str, str]]:
    """The open answers on record, as question and answer in the user's language."""
    given = callback.survey_answers or {}
    questions = (("product_working", _("Is the product working normally?"), PRODUCT_ANSWERS),
                 ("technician", _("Was the visiting technician satisfactory?"), TECHNICIAN_ANSWERS),
                 ("unclear", _("Is anything unclear?"), {}), ("suggestions", _("Comments and suggestions"), {}),
                 ("key", _("Key pressed"), {}))
    return [(question, str(choices.get(given[name], given[name]))) for name, question, choices in questions
            if given.get(name) not in (None, "")]


def _settings() -> Settings:
    return current_app.config["HOTLINE_SETTINGS"]
