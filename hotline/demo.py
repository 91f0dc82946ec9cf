"""``hotline demo``: the whole system on its embedded defaults, driven by real SIP user agents.

Customers are baresip instances calling the hotline number from Chinese mobile numbers and
speaking a Mandarin sentence (espeak-ng); agents are baresip instances registered at the local
PBX with auto-answer. The services are ``hotline run`` itself; meanwhile a thread of the demo
drives the phones and reports each call from the call log, as the web UI shows it.

Calls are not bridged to agents yet: the agents register so that they are ready for it, and the
customers are answered, greeted, recorded, queued and ticketed by Hotline alone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from config import Settings
from hotline.processes import stop_process
from models.accounts import AccountError, add_user, set_password
from models.call import Call, CallState
from models.db import session_scope
from models.recording import RecordingState
from models.user import Role, User
from telephony import sip
from telephony.sip.message import new_branch, new_tag

HOST = "127.0.0.1"
BINARIES = ("baresip", "espeak-ng", "sox")
FIRST_CUSTOMER = 13800138001  # customers call from 13800138001, 13800138002, …
CUSTOMER_GAP = 4.0  # seconds between two customers' calls
CUSTOMER_LIFETIME = 90  # a customer's baresip quits after this long whatever happens
CALL_DEADLINE = 120.0  # a customer whose call has not ended by then counts as failed
REGISTER_TIMEOUT = 30.0
AGENT_LIFETIME_ONCE = 600
POLL = 0.2
# Spoken by the customers in turn; the pause lets them hear the greeting and wait in the queue.
SENTENCES = (
    "你好，我家的洗衣机不脱水了，麻烦派师傅上门看看。",
    "您好，我上周买的冰箱不制冷，想申请维修。",
    "你好，空调遥控器按了没有反应，请问怎么处理？",
    "我想退货，新买的电视屏幕有一条亮线。",
)
WAITING_WORDS = "喂，还有人吗？我再等一下。"
WAITING_PAUSE = 8.0
AGENT_WORDS = "您好，我是客服，请问有什么可以帮您？"
AGENTS = (("demo-agent-1", "1801"), ("demo-agent-2", "1802"))


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if shutil.which(name) is None]


def render_speech(text: str, path: Path, *, pause: float = 0.0, tail: str = "") -> Path:
    """Mandarin espeak-ng speech as an 8 kHz 16-bit mono WAV; ``pause`` seconds then ``tail``."""
    pieces = [_espeak(text, path.with_suffix(".1.wav"))]
    if tail:
        pieces.append(_espeak(tail, path.with_suffix(".2.wav"), pad_before=pause))
    subprocess.run(["sox", *map(str, pieces), "-r", "8000", "-c", "1", "-b", "16", str(path)], check=True,
                   capture_output=True)
    for piece in pieces:
        piece.unlink()
    return path


def _espeak(text: str, path: Path, *, pad_before: float = 0.0) -> Path:
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "cmn", "-s", "160", "-w", str(raw), text], check=True, capture_output=True)
    # Every piece at 8 kHz mono before sox joins them (it refuses mixed rates).
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(path), "pad", str(pad_before)],
                   check=True, capture_output=True)
    raw.unlink()
    return path


class Softphone:
    """One baresip user agent in a config directory of its own, run and stopped by its pid.

    It listens on ``port`` (SIP) and on ``10 × port`` … ``+ 9`` (RTP), so phones never share ports;
    ``source`` is what it says (its end hangs up the call); what it hears is discarded.
    """

    def __init__(self, directory: Path, *, account: str, port: int, source: Path) -> None:
        self.directory, self.account, self.port, self.source = directory, account, port, source
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        rtp = 10 * self.port
        (self.directory / "config").write_text(
            f"poll_method epoll\nsip_listen {HOST}:{self.port}\nnet_interface {HOST}\n"
            f"audio_source aufile,{self.source}\naudio_player aufile,/dev/null\n"
            f"ausrc_srate 8000\nauplay_srate 8000\nrtp_ports {rtp}-{rtp + 9}\n"
            # Without uuid.so the INVITE carries an empty Supported header that strict parsers drop.
            "module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n"
            "module_tmp uuid.so\nmodule_tmp account.so\nmodule_app menu.so\n"
            f"snd_path {self.directory}\n")
        (self.directory / "accounts").write_text(self.account + "\n")

    def start(self, *commands: str, lifetime: int | None = None) -> None:
        """Run baresip with these menu commands (e.g. ``/dial …``), quitting after ``lifetime`` s."""
        self.write_config()
        args = ["baresip", "-f", str(self.directory)]
        for command in commands:
            args += ["-e", command]
        if lifetime:
            args += ["-t", str(lifetime)]
        with open(self.directory / "baresip.log", "wb") as log_file:
            # A session of its own: Ctrl-C reaches the demo, which stops every phone itself.
            self.process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.directory, start_new_session=True)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 3.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)


class RegistrationProbe:
    """Whether an extension is registered at the PBX, asked with an OPTIONS to it through the PBX.

    The demo's own SIP endpoint (no account) on ``port`` sends it: a registered phone answers 200,
    the PBX answers 404 for an extension nobody registered.
    """

    def __init__(self, *, port: int, pbx_port: int) -> None:
        self.endpoint = sip.Endpoint(local_ip=HOST, local_port=port, pbx_host=HOST, pbx_port=pbx_port, keepalive=0)

    def start(self) -> None:
        self.endpoint.start()

    def stop(self) -> None:
        self.endpoint.stop()

    def status(self, extension: str, timeout: float = 1.0) -> int | None:
        """Final status of the OPTIONS to ``extension``, or None without one within ``timeout``."""
        endpoint = self.endpoint
        host, port = endpoint.pbx
        options = sip.Message(f"OPTIONS sip:{extension}@{host}:{port} SIP/2.0")
        options.headers += [
            ("Via", f"SIP/2.0/UDP {endpoint.sent_by};branch={new_branch()};rport"), ("Max-Forwards", "10"),
            ("From", f"<sip:demo@{endpoint.sent_by}>;tag={new_tag()}"), ("To", f"<sip:{extension}@{host}>"),
            ("Call-ID", uuid.uuid4().hex), ("CSeq", "1 OPTIONS"),
        ]
        answers: list[sip.Message] = []
        answered = threading.Event()

        def on_response(response: sip.Message | None) -> None:
            if response is not None:
                answers.append(response)
            answered.set()

        endpoint.request(options, on_response)
        answered.wait(timeout)
        endpoint.transactions.forget(options)  # no retransmissions once we stopped waiting
        return answers[0].status if answers else None


@dataclass
class Customer:
    """A demo customer: their number, their phone and what the call log has shown of their call."""

    number: str
    phone: Softphone
    reported: set[str] = field(default_factory=set)
    started: float = 0.0
    done: bool = False
    succeeded: bool = False

    @property
    def e164(self) -> str:
        return f"+86{self.number}"


@dataclass
class Agent:
    username: str
    extension: str
    password: str
    phone: Softphone | None = None


class Demo:
    """Prepare users and phones, run every service, drive the calls, report; ``run()`` returns the exit code."""

    def __init__(self, settings: Settings, *, customers: int, phone_port: int, keep_running: bool,
                 echo: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.customer_count = customers
        self.phone_port = phone_port
        self.keep_running = keep_running
        self.echo = echo
        self.workdir = settings.home / "demo"
        self.agents: list[Agent] = []
        self.customers: list[Customer] = []
        self.first_call_id = 0
        self.t0 = time.monotonic()
        self.succeeded = False
        self.stopped = threading.Event()  # the services are down (Ctrl-C): the scenario gives up

    def say(self, text: str) -> None:
        self.echo(f"[demo {time.monotonic() - self.t0:5.1f} s] {text}")

    # preparation, before any service starts

    def prepare(self) -> None:
        """Fresh phone directories, the speech the phones play, and the demo agents' users."""
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.agents = [agent for agent in map(self._agent_user, AGENTS) if agent is not None]
        agent_words = render_speech(AGENT_WORDS, self.workdir / "agent.wav")
        port = self.phone_port
        for agent in self.agents:
            account = (f"<sip:{agent.extension}@{HOST}:{self.settings.sip.pbx_port}>;auth_pass={agent.password};"
                       "regint=60;answermode=auto;audio_codecs=PCMU,PCMA")
            agent.phone = Softphone(self.workdir / agent.username, account=account, port=port, source=agent_words)
            port += 2  # baresip may take the next port for TLS
        for index in range(self.customer_count):
            number = str(FIRST_CUSTOMER + index)
            speech = render_speech(SENTENCES[index % len(SENTENCES)], self.workdir / f"{number}.wav",
                                   pause=WAITING_PAUSE, tail=WAITING_WORDS)
            account = f"<sip:{number}@{HOST}>;regint=0;audio_codecs=PCMU,PCMA"
            phone = Softphone(self.workdir / number, account=account, port=port, source=speech)
            self.customers.append(Customer(number, phone))
            port += 2
        with session_scope(self.settings) as session:
            self.first_call_id = session.scalar(select(func.max(Call.id))) or 0

    def _agent_user(self, spec: tuple[str, str]) -> Agent | None:
        """The demo agent's user with its extension, created or given a fresh password (known only here)."""
        username, extension = spec
        password = secrets.token_urlsafe(12)
        realm = self.settings.sip.realm
        with session_scope(self.settings) as session:
            user = session.scalar(select(User).where(User.username == username))
            if user is None:
                try:
                    add_user(session, username, Role.AGENT, password, realm=realm, extension=extension,
                             display_name=f"演示坐席 {extension}")
                except AccountError as exc:
                    self.say(f"坐席 {username} 未创建 / agent {username} not created: {exc}")
                    return None
            elif user.extension != extension:
                self.say(f"用户 {username} 的分机不是 {extension} / user {username} has another extension: skipped")
                return None
            else:
                set_password(user, password, realm=realm)
        return Agent(username, extension, password)

    # running

    def run(self, system: Callable[[], object]) -> int:
        """``system`` runs every service until Ctrl-C or SIGTERM, while the scenario drives the phones."""
        scenario = threading.Thread(target=self._scenario, name="demo", daemon=True)
        scenario.start()
        try:
            system()
        except SystemExit:  # `hotline run` exits once its services have stopped; the phones remain
            pass
        finally:
            self.stopped.set()
            scenario.join(5)  # before the phones stop, so that it starts none after
            for phone in self._phones():
                phone.stop()
        return 0 if self.succeeded else 1

    def _phones(self) -> list[Softphone]:
        return [a.phone for a in self.agents if a.phone] + [c.phone for c in self.customers]

    def _scenario(self) -> None:
        probe = RegistrationProbe(port=self.phone_port - 1, pbx_port=self.settings.sip.pbx_port)
        try:
            probe.start()
            self.succeeded = self._drive(probe)
        except Exception as exc:  # reported, and the demo fails instead of hanging
            self.say(f"演示失败 / demo failed: {exc!r}")
        finally:
            probe.stop()
        # `hotline run` stops every service at SIGTERM, as at Ctrl-C. Its handler is in place long before:
        # it is set as soon as the services are spawned, and the scenario first waits for registration.
        if not self.keep_running and not self.stopped.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    def _drive(self, probe: RegistrationProbe) -> bool:
        pbx_port = self.settings.sip.pbx_port
        number = self.settings.sip.hotline_numbers[0]
        if not self._registered(probe, number, REGISTER_TIMEOUT):
            self.say(f"热线号码 {number} 未注册 / hotline number {number} did not register")
            return False
        self.say(f"热线 {number} 已就绪 / hotline number {number} registered at the PBX on {HOST}:{pbx_port}")
        web = self.settings.web
        self.say(f"网页 / web UI: http://{web.host}:{web.port}/calls/ — 用管理员账号登录 (密码见上方 hotline init 的输出) / "
                 "log in as the admin (password printed by hotline init above)")
        self._start_agents(probe)
        for index, customer in enumerate(self.customers):
            if index:
                self._watch(CUSTOMER_GAP)
            if self.stopped.is_set():
                return False
            customer.phone.start(f"/dial sip:{number}@{HOST}:{pbx_port}", lifetime=CUSTOMER_LIFETIME)
            customer.started = time.monotonic()
            self.say(f"客户 {customer.number} 拨打 {number} / customer {customer.number} dials {number}")
        self._watch(CALL_DEADLINE, until_done=True)
        return self._summary()

    def _start_agents(self, probe: RegistrationProbe) -> None:
        for agent in self.agents:
            assert agent.phone is not None and not self.stopped.is_set()
            agent.phone.start(lifetime=None if self.keep_running else AGENT_LIFETIME_ONCE)
        for agent in self.agents:
            if self._registered(probe, agent.extension, 10.0):
                self.say(f"坐席 {agent.username} 分机 {agent.extension} 已注册, 自动应答 / agent registered, "
                         "auto-answer")
            else:
                self.say(f"坐席 {agent.username} 分机 {agent.extension} 未注册 / agent did not register "
                         f"(see {self.workdir / agent.username}/baresip.log)")
        if self.agents:
            self.say("注意: 转接坐席尚未实现, 来电排队直到客户挂机 / note: calls are not bridged to agents yet "
                     "(next release); callers wait queued until they hang up")

    def _registered(self, probe: RegistrationProbe, extension: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.stopped.is_set() and time.monotonic() < deadline:
            if probe.status(extension) == 200:
                return True
            self.stopped.wait(0.5)
        return False

    def _watch(self, seconds: float, *, until_done: bool = False) -> None:
        """Report the calls from the call log for ``seconds`` (or until every call is done)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._report()
            if (until_done and all(customer.done for customer in self.customers)) or self.stopped.wait(POLL):
                return
        for customer in self.customers if until_done else ():
            if not customer.done:
                customer.done = True
                self.say(f"客户 {customer.number} 的通话未结束 / customer {customer.number}: call did not end in time")

    def _report(self) -> None:
        with session_scope(self.settings) as session:
            calls = session.scalars(
                select(Call).where(Call.id > self.first_call_id, Call.caller_id.in_([c.e164 for c in self.customers]))
                .options(selectinload(Call.recordings), selectinload(Call.ticket))).all()
            by_number = {call.caller_id: call for call in calls}
            for customer in self.customers:
                if not customer.done and customer.started:
                    self._report_customer(customer, by_number.get(customer.e164))

    def _report_customer(self, customer: Customer, call: Call | None) -> None:
        name = f"客户 {customer.number}"
        if call is None:
            if not customer.phone.running():
                customer.done = True
                self.say(f"{name} 的来电未到达 / customer {customer.number}: no call arrived "
                         f"(see {customer.phone.directory}/baresip.log)")
            return
        self._once(customer, "ringing", f"{name} 来电, 振铃 / ringing (call {call.id})")
        if call.answered_at:
            waited = (call.answered_at - call.ring_at).total_seconds()
            self._once(customer, "answered", f"{name} 来电 → 已接听 (振铃 {waited:.1f} s), 问候并录音 / answered, "
                                             "greeting, recording")
        if call.queued_at or call.state is CallState.QUEUED:
            self._once(customer, "queued", f"{name} 排队等待坐席 / queued for an agent")
        if call.ended_at is None:
            return
        customer.done = True
        customer.phone.stop()  # baresip stays up after its file has hung up the call
        recording = call.recording
        recorded = (call.answered_at is not None and recording is not None
                    and recording.state is RecordingState.COMPLETE and Path(recording.path).is_file())
        customer.succeeded = recorded
        ticket = call.ticket.number if call.ticket else "-"
        outcome = call.outcome.value if call.outcome else "-"
        where = f"{recording.path} ({recording.duration or 0:.1f} s)" if recording else "-"
        mark = "已录音" if recorded else "未录音!"
        self.say(f"{name} 挂机 / hung up: {outcome}; {mark} 录音 / recording {where}; 工单 / ticket {ticket}")

    def _once(self, customer: Customer, step: str, text: str) -> None:
        if step not in customer.reported:
            customer.reported.add(step)
            self.say(text)

    def _summary(self) -> bool:
        good = sum(customer.succeeded for customer in self.customers)
        self.say(f"{good}/{len(self.customers)} 通来电已接听并录音 / calls answered and recorded")
        if self.keep_running and not self.stopped.is_set():
            self.say("系统继续运行, Ctrl-C 停止 / still running: call the hotline from a softphone; Ctrl-C stops")
        return good == len(self.customers)
