"""Who may open a blueprint's pages: anonymous visitors are sent to the login, other roles get 403."""

from __future__ import annotations

from collections.abc import Collection

from flask import Blueprint, abort
from flask_login import current_user, login_required

from models.user import Role


def restrict(blueprint: Blueprint, roles: Collection[Role]) -> None:
    """Every page of ``blueprint`` is for ``roles`` only."""

    @blueprint.before_request
    @login_required
    def check_role() -> None:
        if current_user.role not in roles:
            abort(403)
