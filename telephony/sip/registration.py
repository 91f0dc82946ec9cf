"""Registration at the PBX: accounts, digest authentication, refresh, keep-alive.

Each hotline number is an ``Account`` registered at the PBX and refreshed at half its granted
lifetime; a failed attempt is retried every ``retry_interval``. A keep-alive OPTIONS notices a PBX
that went away or restarted (its ``Server`` header changes with each boot) and registers again,
because a restarted PBX has forgotten every registration.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from models.accounts import sip_ha1
from telephony.sip.dialog import USER_AGENT
from telephony.sip.message import Message, new_branch, new_tag, param, reason
from telephony.sip.timers import Timer

if TYPE_CHECKING:
    from telephony.sip.endpoint import Endpoint

log = logging.getLogger(__name__)


@dataclass
class Account:
    """One registered user (a hotline number) at the PBX."""

    user: str
    password: str
    call_id: str = field(default_factory=lambda: f"{uuid.uuid4()}")
    tag: str = field(default_factory=new_tag)
    cseq: int = 0
    registered: bool = False
    expires_at: float = 0.0
    last_error: str = ""
    refresh: Timer | None = None


class Registrations:
    """The accounts of one endpoint and their registrations at its PBX."""

    def __init__(self, endpoint: Endpoint, *, expires: int, retry_interval: float, keepalive: float,
                 on_registration: Callable[[Account], None] | None) -> None:
        self.endpoint = endpoint
        self.expires = expires
        self.retry_interval = retry_interval
        self.keepalive = keepalive
        self.on_registration = on_registration
        self.accounts: dict[str, Account] = {}
        self.pbx_server = ""  # Server header of the PBX's last answer
        self._pbx_alive = True

    def add(self, user: str, password: str) -> Account:
        account = Account(user, password)
        self.accounts[user] = account
        if self.endpoint.running:
            self.register(account)
        return account

    def start(self) -> None:
        for account in self.accounts.values():
            self.register(account)
        if self.keepalive:
            self.endpoint.timers.later(self.keepalive, self._ping)

    def unregister_all(self, timeout: float = 1.0) -> None:
        """Best effort: expire every registration, waiting at most ``timeout``."""
        for account in self.accounts.values():
            if account.registered:
                self.register(account, expires=0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(a.registered for a in self.accounts.values()):
            time.sleep(0.02)

    def all_registered(self) -> bool:
        return all(a.registered for a in self.accounts.values())

    def register(self, account: Account, expires: int | None = None,
                 authorization: tuple[str, str] | None = None) -> None:
        endpoint = self.endpoint
        if not endpoint.running:
            return
        expires = self.expires if expires is None else expires
        account.cseq += 1
        host = endpoint.pbx[0]
        msg = Message(f"REGISTER sip:{host} SIP/2.0")
        msg.headers += [
            ("Via", f"SIP/2.0/UDP {endpoint.sent_by};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{account.user}@{host}>;tag={account.tag}"),
            ("To", f"<sip:{account.user}@{host}>"),
            ("Call-ID", account.call_id),
            ("CSeq", f"{account.cseq} REGISTER"),
            ("Contact", f"<sip:{account.user}@{endpoint.sent_by}>"),
            ("Expires", str(expires)),
            ("User-Agent", USER_AGENT),
        ]
        if authorization:
            msg.headers.append(authorization)
        endpoint.request(msg, lambda r: self._on_response(account, expires, authorization, r))

    def _on_response(self, account: Account, expires: int, authorization: tuple[str, str] | None,
                     msg: Message | None) -> None:
        if msg is not None and msg.status in (401, 407) and authorization is None:
            self.register(account, expires, digest(account, msg, "REGISTER", f"sip:{self.endpoint.pbx[0]}"))
            return
        if msg is not None and msg.get("Server"):
            self.pbx_server = msg.get("Server") or ""  # the boot the keep-alive compares with
        if expires == 0:
            account.registered = False
            return
        if msg is not None and 200 <= msg.status < 300:
            granted = self._granted_expires(msg, expires)
            account.registered, account.last_error = True, ""
            account.expires_at = time.monotonic() + granted
            self._schedule(account, max(1.0, granted / 2))
        else:
            account.registered = False
            account.last_error = "no answer from the PBX" if msg is None else f"{msg.status} {reason(msg.status)}"
            log.warning("registration of %s failed: %s", account.user, account.last_error)
            self._schedule(account, self.retry_interval)
        if self.on_registration:
            self.on_registration(account)

    def _granted_expires(self, ok: Message, asked: int) -> int:
        ours = self.endpoint.sent_by
        for contact in ok.get_all("Contact"):
            if ours in contact and (value := param(contact, "expires")) and value.isdigit():
                return int(value)
        value = ok.get("Expires")
        return int(value) if value and value.isdigit() else asked

    def _schedule(self, account: Account, delay: float) -> None:
        if account.refresh:
            account.refresh.cancel()
        account.refresh = self.endpoint.timers.later(delay, lambda: self.register(account))

    def _ping(self) -> None:
        """OPTIONS to the PBX; on a PBX that came back or restarted (new Server header), register."""
        endpoint = self.endpoint
        if not endpoint.running:
            return
        host, port = endpoint.pbx
        msg = Message(f"OPTIONS sip:{host}:{port} SIP/2.0")
        msg.headers += [
            ("Via", f"SIP/2.0/UDP {endpoint.sent_by};branch={new_branch()};rport"),
            ("Max-Forwards", "70"), ("From", f"<sip:hotline@{endpoint.local_ip}>;tag={new_tag()}"),
            ("To", f"<sip:{host}>"), ("Call-ID", f"{uuid.uuid4()}"), ("CSeq", "1 OPTIONS"),
            ("User-Agent", USER_AGENT),
        ]
        answers: list[Message] = []
        endpoint.request(msg, lambda response: answers.append(response) if response is not None else None)

        def check() -> None:
            endpoint.transactions.forget(msg)
            self._after_ping(answers[0] if answers else None)
            self._ping()

        endpoint.timers.later(self.keepalive, check)

    def _after_ping(self, response: Message | None) -> None:
        alive = response is not None
        server = (response.get("Server") or "") if response is not None else self.pbx_server
        restarted = alive and (not self._pbx_alive or (self.pbx_server and server != self.pbx_server))
        self._pbx_alive = alive
        if alive:
            self.pbx_server = server
        if restarted:
            log.info("PBX is back (%s): registering again", server)
            for account in self.accounts.values():
                self.register(account)


def digest(account: Account, challenge: Message, method: str, uri: str) -> tuple[str, str]:
    """The Authorization (or Proxy-Authorization) header answering a 401/407 (RFC 2617, MD5)."""
    name = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', (challenge.get(name) or "").removeprefix("Digest ")))
    realm, nonce = fields.get("realm", ""), fields.get("nonce", "")
    ha1 = sip_ha1(account.user, realm, account.password)
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    value = f'Digest username="{account.user}", realm="{realm}", nonce="{nonce}", uri="{uri}", algorithm=MD5'
    if "auth" in fields.get("qop", "").split(","):
        cnonce, nc = uuid.uuid4().hex[:16], "00000001"
        response = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
        value += f', qop=auth, nc={nc}, cnonce="{cnonce}"'
    else:
        response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    value += f', response="{response}"'
    if fields.get("opaque"):
        value += f', opaque="{fields["opaque"]}"'
    header = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
    return header, value
