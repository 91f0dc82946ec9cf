"""Logging in and out: individual accounts only (manual 000)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired
from werkzeug.wrappers import Response

from models.accounts import authenticate
from webui.db import get_db

bp = Blueprint("auth", __name__, url_prefix="/auth")


class LoginForm(FlaskForm):
    username = StringField("username", validators=[DataRequired()])
    password = PasswordField("password", validators=[DataRequired()])


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate(get_db(), form.username.data, form.password.data)
        if user:
            login_user(user)
            return redirect(request.args.get("next") or url_for("index"))
        flash(_("Wrong user name or password."))
    return render_template("login.html", form=form)


@bp.route("/logout", methods=["POST"])
@login_required
def logout() -> Response:
    logout_user()
    return redirect(url_for("auth.login"))
