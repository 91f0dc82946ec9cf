"""Queued callers and agents with real softphones: baresip customers and agents at the local Kamailio."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from config import Settings
from models import agents as agent_rules
from models.accounts import add_user
from models.agent import Agent, AgentState
from models.call import Call, CallOutcome, CallState, HangupParty, SupervisionMode, TransferKind
from models.calllog import agent_segments, supervisions
from models.db import session_scope
from models.queue import Queue
from models.ticket import EventKind
from models.queues import add_queue, ensure_default_queue, set_queue
from models.user import Role
from telephony.service import HotlineService
from tests.telephony import peers
from workers import bus
from telephony.prompts import PromptLibrary
from tests.telephony.audio_checks import MATCH_THRESHOLD, best_correlation, pcm_samples, read_wav

pytestmark = pytest.mark.sip

AGENT_PASSWORD = "agent-secret"
TARGET = f"sip:1000@{peers.HOST}:{peers.PBX_PORT}"
# baresip takes its port and the next (TLS): customers on 5180 and 5186, agents on 5182 and 5184.
CUSTOMER_PORT = peers.BARESIP_PORT


def add_agent(settings: Settings, name: str, extension: str, *, skills: list[str] | None = None,
              available: bool = True) -> None:
    with session_scope(settings) as session:
        user = add_user(session, name, Role.AGENT, AGENT_PASSWORD, realm=settings.sip.realm, extension=extension,
                        skills=skills)
        agent = agent_rules.agent_of(session, user)
        if available:
            agent_rules.log_in(session, agent, source="test")


def agent_state(settings: Settings, name: str) -> Agent:
    with session_scope(settings) as session:
        agent = agent_rules.agent_named(session, name)
        assert agent is not None
        session.expunge(agent)
        return agent


def calls(settings: Settings) -> list[Call]:
    with session_scope(settings) as session:
        rows = list(session.scalars(select(Call).order_by(Call.id)))
        for row in rows:
            _ = row.agent, row.recordings, row.queue, row.transfers, [segment.agent for segment in row.segments]
            _ = [supervision.supervisor for supervision in row.supervisions]
        return rows


def handlers(settings: Settings, call: Call) -> list[str]:
    """The call's ticket's handlers (处理人), in the order they came."""
    with session_scope(settings) as session:
        ticket = session.get_one(Call, call.id).ticket
        assert ticket is not None
        return [handler.user.username for handler in ticket.handlers]


def segment_agents(call: Call) -> list[str]:
    """Who served the customer in turn; each segment starts no earlier than the one before ends."""
    segments = agent_segments(call)
    assert segments[0]["from"] == call.bridged_at and segments[-1]["to"] == call.ended_at
    for before, after in zip(segments, segments[1:]):
        assert before["from"] < before["to"] <= after["from"]
    return [segment["agent"] for segment in segments]


@pytest.fixture
def call_centre(sip_settings: Settings) -> Settings:
    """The default queue on 1000 with wrap-up 0 and a short ring timeout; agents are added by each test."""
    sip_settings.queues.wrap_up_seconds = 0
    sip_settings.queues.ring_timeout = 6
    with session_scope(sip_settings) as session:
        ensure_default_queue(session, sip_settings)
    return sip_settings


class Phones:
    """baresip agents (registered, auto-answering) and customers (dialling 1000); all stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[peers.Peer] = []

    def agent(self, extension: str, speech: Path, port: int, **options: object) -> peers.Peer:
        phone = peers.baresip_callee(self.workdir / f"agent-{extension}", speech, user=extension,
                                     password=AGENT_PASSWORD, port=port, **options)  # type: ignore[arg-type]
        self.started.append(phone)
        assert peers.wait_for(lambda: "200 ok" in phone.output().lower()
                              or "registered successfully" in phone.output().lower(), 10), phone.output()[-2000:]
        return phone

    def customer(self, name: str, speech: Path, port: int = CUSTOMER_PORT) -> peers.Peer:
        phone = peers.baresip_caller(self.workdir / name, speech, TARGET, port=port, user=f"1380013800{port % 10}")
        self.started.append(phone)
        return phone


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[Phones]:
    started = Phones(tmp_path)
    yield started
    for phone in started.started:
        phone.stop()


def padded(path: Path, before: float, after: float) -> Path:
    """A copy of the WAV at ``path`` with ``before`` and ``after`` seconds of silence around it."""
    samples = read_wav(path)[0][:, 0]
    copy = path.with_name(f"{path.stem}-padded.wav")
    peers.write_wav(copy, np.concatenate([np.zeros(int(before * 8000), dtype=np.int16), samples,
                                          np.zeros(int(after * 8000), dtype=np.int16)]))
    return copy


def wait_ended(settings: Settings, count: int = 1, timeout: float = 40) -> list[Call]:
    """The calls, once ``count`` of them have ended (a customer's baresip hangs up at the end of its file)."""
    assert peers.wait_for(lambda: sum(1 for c in calls(settings) if c.ended_at is not None) >= count, timeout), \
        calls(settings)
    return calls(settings)


def dump_of(workdir: Path) -> Path:
    [dump] = workdir.glob("dump-*-dec.wav")
    return dump


def test_agent_and_customer_hear_each_other_and_each_side_is_on_its_channel(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones,
        tmp_path: Path) -> None:
    add_agent(call_centre, "zhang", "2000")
    start_service()
    agent_speech = peers.speech_wav("Good morning, this is the service desk, how can I help you today?",
                                    tmp_path / "agent.wav", pad_seconds=30)
    customer_speech = peers.speech_wav("My washing machine stopped working and the door will not open.",
                                       tmp_path / "customer.wav")
    phones.agent("2000", agent_speech, 5182)
    phones.customer("customer", padded(customer_speech, 5, 6))  # it speaks once it is bridged
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.ON_CALL, 20), \
        agent_state(call_centre, "zhang")
    [call] = wait_ended(call_centre)
    assert call.outcome is CallOutcome.COMPLETED and call.hangup_by is HangupParty.CUSTOMER
    assert call.agent is not None and call.agent.username == "zhang" and call.bridged_at is not None
    assert call.queue is not None and call.queue.name == call_centre.queues.default_queue
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.AVAILABLE, 10)

    samples, _ = read_wav(call.recording.path)
    left, _ = best_correlation(read_wav(customer_speech)[0][:, 0], samples[:, 0], max_lag_s=8)
    right, _ = best_correlation(read_wav(agent_speech)[0][:, 0], samples[:, 1], max_lag_s=8)
    assert left >= MATCH_THRESHOLD, f"the customer is not on the left channel ({left:.3f})"
    assert right >= MATCH_THRESHOLD, f"the agent is not on the right channel ({right:.3f})"
    heard_by_agent, _ = best_correlation(read_wav(customer_speech)[0][:, 0],
                                         read_wav(dump_of(tmp_path / "agent-2000"))[0][:, 0], max_lag_s=8)
    heard_by_customer, _ = best_correlation(read_wav(agent_speech)[0][:, 0],
                                            read_wav(dump_of(tmp_path / "customer"))[0][:, 0], max_lag_s=8)
    assert heard_by_agent >= MATCH_THRESHOLD, f"the agent did not hear the customer ({heard_by_agent:.3f})"
    assert heard_by_customer >= MATCH_THRESHOLD, f"the customer did not hear the agent ({heard_by_customer:.3f})"



def test_second_caller_waits_hears_music_and_position_then_is_bridged(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path) -> None:
    call_centre.queues.announce_seconds = 4
    add_agent(call_centre, "zhang", "2000")
    start_service()
    phones.agent("2000", peers.speech_wav("Service desk.", tmp_path / "agent.wav", pad_seconds=60), 5182)
    phones.customer("first", padded(peers.speech_wav("First caller.", tmp_path / "first.wav"), 3, 9))
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.ON_CALL, 20)
    phones.customer("second", padded(peers.speech_wav("Second caller.", tmp_path / "second.wav"), 25, 4),
                             port=CUSTOMER_PORT + 6)
    one, two = wait_ended(call_centre, 2, timeout=60)
    assert one.agent.username == two.agent.username == "zhang"
    assert two.bridged_at >= one.ended_at, "the second caller was bridged before the agent was free"
    waited = (two.bridged_at - two.queued_at).total_seconds()
    assert waited > 4, f"the second caller did not wait ({waited:.1f} s)"
    # what the second caller heard while waiting: never silence — music, and the announcements over it
    heard = read_wav(dump_of(tmp_path / "second"))[0][:, 0]
    queued_from = (two.queued_at - two.answered_at).total_seconds() + 0.5
    waiting = heard[int(queued_from * 8000):int((queued_from + waited - 1) * 8000)]
    assert not peers.silent_runs(waiting, min_seconds=1.0), "the waiting caller heard silence"


def test_a_caller_hanging_up_while_the_agent_rings_stops_the_ringing(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path) -> None:
    call_centre.queues.ring_timeout = 30
    add_agent(call_centre, "zhang", "2000")
    start_service()
    agent = phones.agent("2000", peers.speech_wav("Hello.", tmp_path / "agent.wav"), 5182, answer=False)
    phones.customer("customer", padded(peers.speech_wav("Hello?", tmp_path / "c.wav"), 3, 0))
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.RINGING, 20)
    wait_ended(call_centre)  # the end of its file hangs up, the agent's phone still ringing
    assert peers.wait_for(lambda: "session closed" in agent.output().lower(), 5), \
        agent.output()[-2000:]
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.AVAILABLE, 5)
    [call] = calls(call_centre)
    assert call.outcome is CallOutcome.ABANDONED and call.bridged_at is None


def test_ring_timeout_goes_to_the_next_agent_and_pauses_the_missed_one(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path) -> None:
    call_centre.queues.ring_timeout = 3
    add_agent(call_centre, "zhang", "2000")
    add_agent(call_centre, "li", "2001")
    with session_scope(call_centre) as session:  # zhang has waited longest: he is offered first
        zhang, li = agent_rules.agent_named(session, "zhang"), agent_rules.agent_named(session, "li")
        li.idle_since = zhang.idle_since + timedelta(seconds=1)
    start_service()
    phones.agent("2000", peers.speech_wav("Hello.", tmp_path / "a.wav"), 5182, answer=False)
    phones.agent("2001", peers.speech_wav("Li speaking.", tmp_path / "b.wav", pad_seconds=30), 5184)
    phones.customer("customer", padded(peers.speech_wav("Hello?", tmp_path / "c.wav"), 12, 2))
    assert peers.wait_for(lambda: agent_state(call_centre, "li").state is AgentState.ON_CALL, 25)
    missed = agent_state(call_centre, "zhang")
    assert missed.state is AgentState.PAUSED and missed.reason == agent_rules.MISSED_REASON
    [call] = wait_ended(call_centre)
    assert call.agent.username == "li"


def test_skills_pick_the_agent_who_speaks_the_dialect(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path) -> None:
    with session_scope(call_centre) as session:
        [queue] = session.scalars(select(Queue)).all()
        queue.skills = ["粤语:2"]
    add_agent(call_centre, "zhang", "2000", skills=["粤语:1"])
    add_agent(call_centre, "chen", "2001", skills=["粤语:3", "空调"])
    start_service()
    phones.agent("2000", peers.speech_wav("Zhang.", tmp_path / "a.wav", pad_seconds=30), 5182)
    phones.agent("2001", peers.speech_wav("Chen.", tmp_path / "b.wav", pad_seconds=30), 5184)
    phones.customer("customer", padded(peers.speech_wav("Hello?", tmp_path / "c.wav"), 6, 2))
    assert peers.wait_for(lambda: agent_state(call_centre, "chen").state is AgentState.ON_CALL, 20)
    assert agent_state(call_centre, "zhang").state is AgentState.AVAILABLE
    wait_ended(call_centre)


@pytest.mark.parametrize("held_from", ["phone", "desk"])
def test_agent_hold_plays_music_to_the_customer(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path,
        held_from: str) -> None:
    """Held from baresip (re-INVITE sendonly) or from the agent desk (a request on the bus)."""
    add_agent(call_centre, "zhang", "2000")
    start_service()
    phones.agent("2000", peers.speech_wav("One moment please.", tmp_path / "agent.wav", pad_seconds=40), 5182)
    phones.customer("customer", padded(peers.speech_wav("Hello?", tmp_path / "c.wav"), 1, 18))
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.ON_CALL, 20)
    time.sleep(5)  # the agent has said their words: the customer hears silence
    held_at = datetime.now(timezone.utc)
    uid = agent_state(call_centre, "zhang").call_uid
    if held_from == "phone":
        assert '"ok":true' in peers.baresip_command(5182, "hold").replace(" ", "")
    else:
        assert bus.request_call(call_centre, uid, "hold"), "no hotline sip heard the request"
    assert peers.wait_for(lambda: calls(call_centre)[0].state is CallState.ON_HOLD, 3)
    time.sleep(5)
    if held_from == "phone":
        peers.baresip_command(5182, "resume")
    else:
        bus.request_call(call_centre, uid, "resume")
    assert peers.wait_for(lambda: calls(call_centre)[0].state is CallState.BRIDGED, 3)
    [call] = wait_ended(call_centre)
    heard = read_wav(dump_of(tmp_path / "customer"))[0][:, 0]
    start = (held_at - call.answered_at).total_seconds()
    before = heard[int((start - 2.5) * 8000):int(start * 8000)]
    on_hold = heard[int((start + 1) * 8000):int((start + 4) * 8000)]
    assert peers.silent_runs(before, min_seconds=1.0), "the customer heard something before the hold"
    assert not peers.silent_runs(on_hold, min_seconds=0.5), "the customer heard silence on hold"
    music = pcm_samples(PromptLibrary(call_centre).hold_music())
    assert best_correlation(on_hold, music, max_lag_s=len(music) / 8000)[0] >= MATCH_THRESHOLD



def test_after_kill_9_with_an_agent_on_a_call_no_agent_is_stuck(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path) -> None:
    add_agent(call_centre, "zhang", "2000")
    hotline = peers.Peer([sys.executable, "-m", "hotline", "sip"], tmp_path / "hotline-sip.log")
    try:
        assert peers.wait_for(lambda: "hotline sip: numbers" in hotline.output(), 20), hotline.output()[-3000:]
        phones.agent("2000", peers.speech_wav("Hello.", tmp_path / "agent.wav", pad_seconds=60), 5182)
        phones.customer("customer", padded(peers.speech_wav("Hello?", tmp_path / "c.wav"), 1, 60))
        assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.ON_CALL, 20), \
            hotline.output()[-3000:]
        hotline.process.send_signal(signal.SIGKILL)
        hotline.process.wait(5)
    finally:
        hotline.stop()
    start_service()  # repairs the call the killed process left; the watchdog frees the agent
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.AVAILABLE, 30), \
        agent_state(call_centre, "zhang")
    [call] = wait_ended(call_centre, timeout=5)
    assert call.outcome is CallOutcome.FAILED


@pytest.mark.parametrize("scenario", ["uac_menu_info", "uac_menu_2833"])
def test_the_menu_key_picks_the_queue_and_its_agent(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, sipp_dir: Path,
        tmp_path: Path, scenario: str) -> None:
    """The caller presses 2 by SIP INFO or by RFC 2833 events."""
    call_centre.prompts.greeting = "您好"
    call_centre.queues.menu_timeout = 20
    with session_scope(call_centre) as session:
        [default] = session.scalars(select(Queue)).all()
        set_queue(session, default, display_name="技术咨询", menu_key="1")
        add_queue(session, "售后服务", numbers=["1000"], menu_key="2")
    add_agent(call_centre, "zhang", "2000")
    add_agent(call_centre, "wang", "2001")
    with session_scope(call_centre) as session:
        agent_rules.agent_named(session, "zhang").queues = [call_centre.queues.default_queue]
        agent_rules.agent_named(session, "wang").queues = ["售后服务"]
    start_service()
    phones.agent("2000", peers.speech_wav("Zhang.", tmp_path / "a.wav", pad_seconds=30), 5182)
    phones.agent("2001", peers.speech_wav("Wang.", tmp_path / "b.wav", pad_seconds=5), 5184)  # hangs up after it
    caller = peers.sipp(scenario, sipp_dir)
    try:
        assert peers.wait_for(lambda: agent_state(call_centre, "wang").state is AgentState.ON_CALL, 25), \
            caller.output()[-2000:]
        [call] = wait_ended(call_centre, timeout=30)
    finally:
        caller.stop()
    assert call.queue.name == "售后服务" and call.agent.username == "wang"
    assert call.hangup_by is HangupParty.AGENT and call.outcome is CallOutcome.COMPLETED
    assert agent_state(call_centre, "zhang").state is AgentState.AVAILABLE


def test_a_caller_who_hangs_up_while_queued_rings_no_agent(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path) -> None:
    add_agent(call_centre, "zhang", "2000", available=False)
    start_service()
    phones.agent("2000", peers.speech_wav("Zhang.", tmp_path / "a.wav", pad_seconds=30), 5182, answer=False)
    phones.customer("customer", padded(peers.speech_wav("Hello?", tmp_path / "c.wav"), 1, 4))
    [call] = wait_ended(call_centre)
    assert call.outcome is CallOutcome.ABANDONED and call.queued_at is not None
    with session_scope(call_centre) as session:
        agent_rules.make_available(session, agent_rules.agent_named(session, "zhang"), source="test")
    time.sleep(3)  # the distributor has had many rounds to (wrongly) offer the gone caller
    with session_scope(call_centre) as session:
        states = [event.state for event in agent_rules.agent_named(session, "zhang").events]
    assert AgentState.RINGING not in states


@pytest.mark.slow
def test_a_linphone_caller_queued_45_s_is_still_there_and_bridged(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path) -> None:
    add_agent(call_centre, "zhang", "2000", available=False)
    start_service()
    phones.agent("2000", peers.speech_wav("Zhang here.", tmp_path / "a.wav", pad_seconds=4), 5182)
    linphone = peers.Linphone(tmp_path / "linphone", peers.speech_wav("Hello.", tmp_path / "c.wav", pad_seconds=90))
    try:
        linphone.call(TARGET)
        assert peers.wait_for(lambda: calls(call_centre) and calls(call_centre)[0].queued_at is not None, 15)
        time.sleep(45)  # Linphone hangs up after 30 s without RTP: the music keeps it
        assert calls(call_centre)[0].ended_at is None, "the Linphone caller left the queue"
        with session_scope(call_centre) as session:
            agent_rules.make_available(session, agent_rules.agent_named(session, "zhang"), source="test")
        [call] = wait_ended(call_centre, timeout=30)  # the agent's file ends: they hang up
    finally:
        linphone.stop()
    assert call.agent.username == "zhang" and call.bridged_at is not None and call.hangup_by is HangupParty.AGENT
    assert (call.bridged_at - call.queued_at).total_seconds() >= 45


def test_a_caller_waiting_past_the_maximum_overflows_to_the_next_queue(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path) -> None:
    with session_scope(call_centre) as session:
        [first] = session.scalars(select(Queue)).all()
        add_queue(session, "售后服务")
        set_queue(session, first, max_wait_seconds=3, overflow="售后服务")
    add_agent(call_centre, "wang", "2001")
    with session_scope(call_centre) as session:
        agent_rules.agent_named(session, "wang").queues = ["售后服务"]
    start_service()
    phones.agent("2001", peers.speech_wav("Wang.", tmp_path / "b.wav", pad_seconds=2), 5184)  # hangs up after it
    phones.customer("customer", padded(peers.speech_wav("Hello?", tmp_path / "c.wav"), 1, 30))
    [call] = wait_ended(call_centre)
    assert call.queue.name == "售后服务" and call.agent.username == "wang"
    assert (call.bridged_at - call.queued_at).total_seconds() >= 3
    [moved] = call.transfers
    assert (moved.kind, moved.from_, moved.to) == (TransferKind.OVERFLOW, call_centre.queues.default_queue, "售后服务")
    # the agent hung up first: the caller heard the closing prompt (谢谢您的来电) before our BYE
    assert call.hangup_by is HangupParty.AGENT
    closing = pcm_samples(PromptLibrary(call_centre).closing())
    right = read_wav(call.recording.path)[0][:, 1]
    assert best_correlation(closing, right[-(len(closing) + 3 * 8000):], max_lag_s=3)[0] >= MATCH_THRESHOLD


# transfers (转接)

def test_blind_transfer_by_refer_from_the_agents_phone_to_another_agent(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path) -> None:
    add_agent(call_centre, "zhang", "2000")
    add_agent(call_centre, "li", "2001", available=False)  # not offered the caller by the queue
    start_service()
    zhang_speech = peers.speech_wav("Zhang speaking, let me transfer you.", tmp_path / "a.wav")
    li_speech = peers.speech_wav("This is Li from technical support.", tmp_path / "b.wav")
    phones.agent("2000", padded(zhang_speech, 0, 40), 5182)
    phones.agent("2001", padded(li_speech, 2, 40), 5184)  # speaks once the caller is surely put through
    phones.customer("customer", padded(peers.speech_wav("Hello?", tmp_path / "c.wav"), 1, 22))
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.ON_CALL, 20)
    time.sleep(4)  # zhang has said his words
    with session_scope(call_centre) as session:
        agent_rules.make_available(session, agent_rules.agent_named(session, "li"), source="test")
    reply = peers.baresip_command(5182, "transfer", "2001")
    assert '"ok":true' in reply.replace(" ", ""), reply
    assert peers.wait_for(lambda: agent_state(call_centre, "li").state is AgentState.ON_CALL, 20)
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.AVAILABLE, 10)
    [call] = wait_ended(call_centre, timeout=40)
    assert call.agent.username == "li" and call.outcome is CallOutcome.COMPLETED
    [moved] = call.transfers
    assert (moved.kind, moved.from_, moved.to) == (TransferKind.BLIND, "zhang", "li")
    with session_scope(call_centre) as session:
        ticket = session.get(Call, call.id).ticket
        assert ticket.owner.username == "zhang"  # 首问负责制: the first agent keeps it
        assert any(e.kind is EventKind.TRANSFERRED for e in ticket.events)
    assert handlers(call_centre, call) == ["zhang", "li"]
    assert segment_agents(call) == ["zhang", "li"]
    assert agent_segments(call)[0]["to"] == agent_segments(call)[1]["from"] == moved.at  # handed over at once
    right = read_wav(call.recording.path)[0][:, 1]  # one recording: both agents in turn
    assert best_correlation(read_wav(zhang_speech)[0][:, 0], right, max_lag_s=10)[0] >= MATCH_THRESHOLD
    assert best_correlation(read_wav(li_speech)[0][:, 0], right, max_lag_s=20)[0] >= MATCH_THRESHOLD
    heard = read_wav(dump_of(tmp_path / "customer"))[0][:, 0]
    assert best_correlation(read_wav(li_speech)[0][:, 0], heard, max_lag_s=20)[0] >= MATCH_THRESHOLD


def test_a_blind_transfer_to_a_queue_number_queues_the_caller_at_the_head(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path) -> None:
    with session_scope(call_centre) as session:
        add_queue(session, "技术支持", numbers=["1010"])
    add_agent(call_centre, "zhang", "2000")
    add_agent(call_centre, "li", "2001", available=False)
    with session_scope(call_centre) as session:  # zhang serves 技术支持 too: he is not offered his own caller
        agent_rules.agent_named(session, "li").queues = ["技术支持"]
    start_service()
    phones.agent("2000", peers.speech_wav("Zhang.", tmp_path / "a.wav", pad_seconds=40), 5182)
    phones.agent("2001", peers.speech_wav("Li.", tmp_path / "b.wav", pad_seconds=3), 5184)  # hangs up after it
    phones.customer("customer", padded(peers.speech_wav("Hello?", tmp_path / "c.wav"), 1, 30))
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.ON_CALL, 20)
    uid = agent_state(call_centre, "zhang").call_uid
    assert bus.request_call(call_centre, uid, "transfer", "1010")  # from the desk
    assert peers.wait_for(lambda: calls(call_centre)[0].state is CallState.QUEUED, 10)
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.AVAILABLE, 5)
    with session_scope(call_centre) as session:
        agent_rules.make_available(session, agent_rules.agent_named(session, "li"), source="test")
    [call] = wait_ended(call_centre, timeout=30)
    assert call.queue.name == "技术支持" and call.agent.username == "li"
    [moved] = call.transfers
    assert (moved.kind, moved.from_, moved.to) == (TransferKind.BLIND, "zhang", "技术支持")
    assert segment_agents(call) == ["zhang", "li"] and handlers(call_centre, call) == ["zhang", "li"]
    zhang, li = agent_segments(call)
    assert zhang["to"] == moved.at < li["from"]  # the caller waited in 技术支持 between the two


def test_a_refer_to_a_queue_number_puts_the_caller_ahead_of_those_waiting_and_another_agent_takes_them(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path) -> None:
    with session_scope(call_centre) as session:
        [first] = session.scalars(select(Queue)).all()
        add_queue(session, "技术支持", numbers=["1010"])
        set_queue(session, first, max_wait_seconds=2, overflow="技术支持")  # how a second caller gets there
    add_agent(call_centre, "zhang", "2000")
    add_agent(call_centre, "li", "2001", available=False)
    with session_scope(call_centre) as session:
        agent_rules.agent_named(session, "zhang").queues = [call_centre.queues.default_queue]
        agent_rules.agent_named(session, "li").queues = ["技术支持"]
    start_service()
    phones.agent("2000", peers.speech_wav("Zhang.", tmp_path / "a.wav", pad_seconds=40), 5182)
    li_words = peers.speech_wav("This is Li from technical support.", tmp_path / "b.wav")
    phones.agent("2001", padded(li_words, 2, 3), 5184)  # speaks once put through, hangs up after it
    phones.customer("customer", padded(peers.speech_wav("Hello?", tmp_path / "c.wav"), 1, 30))
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.ON_CALL, 20)
    transferred_uid = agent_state(call_centre, "zhang").call_uid
    phones.customer("waiting", padded(peers.speech_wav("Hello?", tmp_path / "w.wav"), 1, 25), port=5186)
    assert peers.wait_for(lambda: len(calls(call_centre)) == 2 and calls(call_centre)[1].transfers, 20)  # in 技术支持
    reply = peers.baresip_command(5182, "transfer", f"sip:1010@{peers.HOST}:{peers.PBX_PORT}")
    assert '"ok":true' in reply.replace(" ", ""), reply
    assert peers.wait_for(lambda: calls(call_centre)[0].state is CallState.QUEUED, 10)
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.AVAILABLE, 5)
    with session_scope(call_centre) as session:
        agent_rules.make_available(session, agent_rules.agent_named(session, "li"), source="test")
    assert peers.wait_for(lambda: agent_state(call_centre, "li").state is AgentState.ON_CALL, 15)
    assert agent_state(call_centre, "li").call_uid == transferred_uid  # at the head, before the caller who waited
    call, waited = wait_ended(call_centre, count=2, timeout=60)
    assert call.queue.name == "技术支持" and call.agent.username == "li" and call.outcome is CallOutcome.COMPLETED
    [moved] = call.transfers
    assert (moved.kind, moved.from_, moved.to) == (TransferKind.BLIND, "zhang", "技术支持")
    assert [t.kind for t in waited.transfers] == [TransferKind.OVERFLOW]
    assert segment_agents(call) == ["zhang", "li"] and handlers(call_centre, call) == ["zhang", "li"]
    with session_scope(call_centre) as session:
        ticket = session.get_one(Call, call.id).ticket
        assert ticket.owner.username == "zhang"  # 首问负责制
        assert [e.data["to"] for e in ticket.events if e.kind is EventKind.TRANSFERRED] == ["技术支持"]
    right = read_wav(call.recording.path)[0][:, 1]  # one recording: li's words on its right channel
    assert best_correlation(read_wav(li_words)[0][:, 0], right, max_lag_s=40)[0] >= MATCH_THRESHOLD


def test_a_failed_transfer_comes_back_to_the_first_agent(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path) -> None:
    call_centre.queues.ring_timeout = 3
    add_agent(call_centre, "zhang", "2000")
    add_agent(call_centre, "li", "2001", available=False)
    start_service()
    zhang_speech = peers.speech_wav("Zhang again.", tmp_path / "a.wav", pad_seconds=40)
    phones.agent("2000", zhang_speech, 5182)
    phones.agent("2001", peers.speech_wav("Li.", tmp_path / "b.wav"), 5184, answer=False)
    phones.customer("customer", padded(peers.speech_wav("Hello?", tmp_path / "c.wav"), 1, 20))
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.ON_CALL, 20)
    with session_scope(call_centre) as session:
        agent_rules.make_available(session, agent_rules.agent_named(session, "li"), source="test")
    uid = agent_state(call_centre, "zhang").call_uid
    assert bus.request_call(call_centre, uid, "transfer", "2001")
    assert peers.wait_for(lambda: agent_state(call_centre, "li").state is AgentState.RINGING, 10)
    assert peers.wait_for(lambda: agent_state(call_centre, "li").state is AgentState.PAUSED, 10)  # rang out
    assert peers.wait_for(lambda: calls(call_centre)[0].state is CallState.BRIDGED, 5)
    assert agent_state(call_centre, "zhang").state is AgentState.ON_CALL
    [call] = wait_ended(call_centre, timeout=30)
    assert call.agent.username == "zhang" and not call.transfers
    assert segment_agents(call) == ["zhang"] and handlers(call_centre, call) == ["zhang"]


# supervision (监听)

def test_a_listening_supervisor_hears_both_sides_and_neither_hears_them(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path) -> None:
    add_agent(call_centre, "zhang", "2000")
    with session_scope(call_centre) as session:
        add_user(session, "boss", Role.SUPERVISOR, AGENT_PASSWORD, realm=call_centre.sip.realm, extension="2002")
    start_service()
    customer_words = peers.speech_wav("My fridge is making a strange noise.", tmp_path / "c.wav")
    agent_words = peers.speech_wav("I will send a technician tomorrow.", tmp_path / "a.wav")
    supervisor_words = peers.speech_wav("Supervisor testing one two three.", tmp_path / "s.wav")
    # The words come late enough for the supervisor's phone to ring and answer first on a busy machine.
    phones.agent("2000", padded(agent_words, 14, 30), 5182)
    phones.agent("2002", padded(supervisor_words, 1, 30), 5188)  # the supervisor's softphone
    phones.customer("customer", padded(customer_words, 10, 12))
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.ON_CALL, 20)
    assert bus.request_call(call_centre, agent_state(call_centre, "zhang").call_uid, "listen", "2002")
    [call] = wait_ended(call_centre, timeout=40)
    [listened] = supervisions(call)  # an event on the call: who, how, from when until when
    assert (listened["supervisor"], listened["mode"]) == ("boss", SupervisionMode.LISTEN.value)
    assert call.bridged_at < listened["at"] < listened["until"] <= call.ended_at
    supervisor_heard = read_wav(dump_of(tmp_path / "agent-2002"))[0][:, 0]
    for words, who in ((customer_words, "customer"), (agent_words, "agent")):
        heard = best_correlation(read_wav(words)[0][:, 0], supervisor_heard, max_lag_s=15)[0]
        assert heard >= MATCH_THRESHOLD, f"the supervisor did not hear the {who} ({heard:.3f})"
    said = read_wav(supervisor_words)[0][:, 0]
    for dump, who in ((tmp_path / "customer", "customer"), (tmp_path / "agent-2000", "agent")):
        heard = best_correlation(said, read_wav(dump_of(dump))[0][:, 0], max_lag_s=15)[0]
        assert heard < 0.5, f"the {who} heard the listening supervisor ({heard:.3f})"


def test_attended_transfer_the_agents_consult_unheard_by_the_caller_then_complete(
        call_centre: Settings, start_service: Callable[..., HotlineService], phones: Phones, tmp_path: Path) -> None:
    add_agent(call_centre, "zhang", "2000")
    add_agent(call_centre, "li", "2001", available=False)
    start_service()
    consult_words = peers.speech_wav("Hello Li, I have a customer with a broken fridge.", tmp_path / "a.wav")
    li_words = peers.speech_wav("Li here, I can help you with the fridge.", tmp_path / "b.wav")
    phones.agent("2000", padded(consult_words, 7, 40), 5182)
    phones.agent("2001", padded(li_words, 16, 40), 5184)  # once the transfer is complete
    phones.customer("customer", padded(peers.speech_wav("Hello?", tmp_path / "c.wav"), 1, 30))
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.ON_CALL, 20)
    uid = agent_state(call_centre, "zhang").call_uid
    with session_scope(call_centre) as session:
        agent_rules.make_available(session, agent_rules.agent_named(session, "li"), source="test")
    assert bus.request_call(call_centre, uid, "consult", "2001")  # from the desk
    assert peers.wait_for(lambda: agent_state(call_centre, "li").state is AgentState.ON_CALL, 10)
    time.sleep(11)  # zhang tells li about the caller (his words start 7 s after his answer)
    assert bus.request_call(call_centre, uid, "complete")
    assert peers.wait_for(lambda: agent_state(call_centre, "zhang").state is AgentState.AVAILABLE, 10)
    [call] = wait_ended(call_centre, timeout=40)
    assert call.agent.username == "li"
    [moved] = call.transfers
    assert (moved.kind, moved.from_, moved.to) == (TransferKind.ATTENDED, "zhang", "li")
    assert segment_agents(call) == ["zhang", "li"] and handlers(call_centre, call) == ["zhang", "li"]
    assert agent_segments(call)[1]["from"] == moved.at  # li serves the caller from the completion, not the consultation
    li_heard = read_wav(dump_of(tmp_path / "agent-2001"))[0][:, 0]
    customer_heard = read_wav(dump_of(tmp_path / "customer"))[0][:, 0]
    consult = read_wav(consult_words)[0][:, 0]
    assert best_correlation(consult, li_heard, max_lag_s=15)[0] >= MATCH_THRESHOLD, "li did not hear zhang"
    assert best_correlation(consult, customer_heard, max_lag_s=20)[0] < 0.5, "the caller heard the consultation"
    assert best_correlation(read_wav(li_words)[0][:, 0], customer_heard, max_lag_s=25)[0] >= MATCH_THRESHOLD
