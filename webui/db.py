"""The request's database session."""

from flask import current_app, g
from sqlalchemy.orm import Session


def get_db() -> Session:
    if "db" not in g:
        g.db = current_app.extensions["hotline_sessions"]()
    return g.db
