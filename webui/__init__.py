"""The web UI: a Flask app factory with one blueprint per resource (auth, calls, tickets, desk, wallboard, admin)."""

from __future__ import annotations

import secrets
from zoneinfo import ZoneInfo

from flask import Flask, request, session
from flask_babel import Babel, get_locale
from flask_login import LoginManager
from flask_wtf import CSRFProtect

from config import Settings, load_settings
from models.db import session_factory
from models.user import User
from workers import bus

LANGUAGES = ("zh_CN", "en")


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.web.secret_key or _secret_key(settings),
        HOTLINE_SETTINGS=settings,
        BABEL_DEFAULT_LOCALE=settings.general.language,
        WTF_CSRF_TIME_LIMIT=None,
    )
    app.extensions["hotline_sessions"] = session_factory(settings)
    # A state chosen on the desk must wake the distributor and the other pages at once.
    bus.install(settings)
    CSRFProtect(app)
    Babel(app, locale_selector=_locale)
    _login_manager(app)
    app.jinja_env.globals["get_locale"] = get_locale
    zone = ZoneInfo(settings.general.timezone)
    app.jinja_env.filters["localtime"] = lambda moment, fmt="%Y-%m-%d %H:%M:%S": moment.astimezone(zone).strftime(fmt)

    from webui import admin, auth, callbacks, calls, desk, tickets, wallboard

    app.register_blueprint(auth.bp)
    app.register_blueprint(calls.bp)
    app.register_blueprint(tickets.bp)
    app.register_blueprint(desk.bp)
    app.register_blueprint(wallboard.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(callbacks.bp)
    app.add_url_rule("/", endpoint="index", view_func=calls.index)
    app.add_url_rule("/healthz", endpoint="healthz", view_func=lambda: {"status": "ok"})
    app.teardown_appcontext(_close_db)
    return app


def _secret_key(settings: Settings) -> str:
    """A key generated once and kept under HOTLINE_HOME, so sessions survive restarts."""
    path = settings.home / "secret_key"
    if not path.exists():
        settings.home.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _locale() -> str:
    """zh_CN first: an explicit ?lang= choice, kept in the session, then the browser's wish."""
    chosen = request.args.get("lang")
    if chosen in LANGUAGES:
        session["lang"] = chosen
    return session.get("lang") or request.accept_languages.best_match(LANGUAGES) or LANGUAGES[0]


def _login_manager(app: Flask) -> None:
    manager = LoginManager(app)
    manager.login_view = "auth.login"

    @manager.user_loader
    def load_user(user_id: str) -> User | None:
        from webui.db import get_db

        return get_db().get(User, int(user_id))


def _close_db(_exc: BaseException | None) -> None:
    from flask import g

    db = g.pop("db", None)
    if db is not None:
        db.close()
