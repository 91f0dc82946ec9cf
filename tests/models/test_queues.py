"""Queue rules: adding and changing queues, menu keys on shared numbers, routing a caller, timers."""

from __future__ import annotations

import pytest

from models.accounts import add_user
from models.agents import agent_named
from models.queues import (
    QueueError, add_queue, all_queues, assign_agent, check_skills, ensure_default_queue, menu_choices, parse_seconds,
    queue_named, queues_of_number, route, set_queue, timers,
)
from models.user import Role


def test_add_a_queue_with_its_settings(db, settings):
    queue = add_queue(db, "技术支持", numbers=["1000"], skills=["空调"], menu_key="1", wrap_up_seconds=10,
                      language="zh")
    assert queue_named(db, "技术支持") is queue and all_queues(db) == [queue]
    assert (queue.display_name, queue.numbers, queue.skills, queue.menu_key, queue.language) == \
        ("技术支持", ["1000"], ["空调"], "1", "zh")
    assert queue_named(db, "售后服务") is None


def test_add_refuses_a_duplicate_or_empty_name_and_unknown_settings(db, settings):
    add_queue(db, "技术支持")
    with pytest.raises(QueueError, match="queue '技术支持' exists already"):
        add_queue(db, "技术支持")
    with pytest.raises(QueueError, match="a queue needs a name"):
        add_queue(db, "  ")
    with pytest.raises(QueueError, match="queues have no setting 'colour'"):
        add_queue(db, "售后服务", colour="red")


def test_set_changes_only_what_is_given(db, settings):
    queue = add_queue(db, "技术支持", numbers=["1000"], skills=["空调"], ring_timeout_seconds=20)
    set_queue(db, queue, display_name="技术咨询", max_wait_seconds=120)
    assert (queue.display_name, queue.numbers, queue.skills) == ("技术咨询", ["1000"], ["空调"])
    assert (queue.ring_timeout_seconds, queue.max_wait_seconds) == (20, 120)
    set_queue(db, queue, ring_timeout_seconds=None)  # back to the default
    assert queue.ring_timeout_seconds is None
    with pytest.raises(QueueError, match="wrap_up_seconds must not be negative"):
        set_queue(db, queue, wrap_up_seconds=-1)
    with pytest.raises(QueueError, match="queues have no setting 'name'"):
        set_queue(db, queue, name="x")


def test_overflow_to_another_queue_never_to_itself_and_cleared_with_an_empty_name(db, settings):
    main = add_queue(db, "呼叫中心")
    spare = add_queue(db, "售后服务")
    set_queue(db, main, overflow="售后服务")
    assert main.overflow_queue is spare
    set_queue(db, main, max_wait_seconds=60)  # overflow not given: kept
    assert main.overflow_queue is spare
    with pytest.raises(QueueError, match="a queue cannot overflow to itself"):
        set_queue(db, main, overflow="呼叫中心")
    with pytest.raises(QueueError, match="no queue '投诉' to overflow to"):
        set_queue(db, main, overflow="投诉")
    set_queue(db, main, overflow="")
    assert main.overflow_queue is None


@pytest.mark.parametrize("key", ["0", "a", "12", "", "#"])
def test_a_menu_key_is_one_digit_from_1_to_9(db, settings, key):
    with pytest.raises(QueueError, match="menu key must be one digit 1-9"):
        add_queue(db, "技术支持", numbers=["1000"], menu_key=key)


def test_queues_sharing_a_number_need_different_keys_and_one_default(db, settings):
    add_queue(db, "呼叫中心", numbers=["1000"])
    add_queue(db, "技术支持", numbers=["1000", "1001"], menu_key="1")
    with pytest.raises(QueueError, match="queue '技术支持' already has menu key 1 on 1000, 1001"):
        add_queue(db, "售后服务", numbers=["1001", "1000"], menu_key="1")
    with pytest.raises(QueueError, match=r"queue '呼叫中心' already has the default \(no menu key\) on 1000"):
        add_queue(db, "投诉", numbers=["1000"])


def test_the_same_key_on_other_numbers_is_fine(db, settings):
    add_queue(db, "技术支持", numbers=["1000"], menu_key="1")
    other = add_queue(db, "粤语", numbers=["1002"], menu_key="1")
    assert other.menu_key == "1"
    with pytest.raises(QueueError, match="queue '技术支持' already has menu key 1 on 1000"):
        set_queue(db, other, numbers=["1002", "1000"])


def test_route_by_key_then_the_number_s_default(db, settings):
    main = add_queue(db, "呼叫中心", numbers=["1000"])
    support = add_queue(db, "技术支持", numbers=["1000"], menu_key="1")
    service = add_queue(db, "售后服务", numbers=["1000"], menu_key="2")
    add_queue(db, "粤语", numbers=["1002"])
    queues = queues_of_number(db, "1000")
    assert queues == [main, support, service] and menu_choices(queues) == [support, service]
    assert route(queues, "2") is service and route(queues, "1") is support
    assert route(queues, None) is main and route(queues, "9") is main  # no key or a wrong one: the default


def test_route_without_a_default_takes_the_first_and_without_queues_none(db, settings):
    support = add_queue(db, "技术支持", numbers=["1000"], menu_key="2")
    service = add_queue(db, "售后服务", numbers=["1000"], menu_key="1")
    queues = queues_of_number(db, "1000")
    assert menu_choices(queues) == [service, support]  # in key order
    assert route(queues, None) is support and route(queues, "1") is service
    assert queues_of_number(db, "1999") == [] and route([], None) is None and route([], "1") is None


def test_timers_are_the_queue_s_own_or_the_defaults(db, settings):
    queue = add_queue(db, "技术支持")
    default = timers(queue, settings)
    assert (default.ring_timeout, default.wrap_up, default.announce, default.max_wait) == (15.0, 30.0, 45.0, 0.0)
    set_queue(db, queue, ring_timeout_seconds=20, wrap_up_seconds=0, announce_seconds=30, max_wait_seconds=300)
    own = timers(queue, settings)
    # 0 is a value of its own (no wrap-up), not "use the default".
    assert (own.ring_timeout, own.wrap_up, own.announce, own.max_wait) == (20, 0, 30, 300)


def test_the_default_queue_is_created_once_on_the_first_hotline_number(db, settings):
    queue = ensure_default_queue(db, settings)
    assert (queue.name, queue.numbers) == ("呼叫中心", ["1000"])
    assert ensure_default_queue(db, settings) is None and all_queues(db) == [queue]


def test_no_default_queue_where_queues_exist(db, settings):
    add_queue(db, "技术支持", numbers=["1000"])
    assert ensure_default_queue(db, settings) is None and [q.name for q in all_queues(db)] == ["技术支持"]


# the settings one by one (shared with the web UI's admin pages)

@pytest.mark.parametrize("number", ["10-00", "一千", "", "1000 1001", "+"])
def test_a_hotline_number_is_digits(db, settings, number):
    with pytest.raises(QueueError, match="is not a hotline number") as refused:
        add_queue(db, "技术支持", numbers=[number])
    assert refused.value.field == "numbers"


def test_numbers_are_kept_once_in_the_order_given(db, settings):
    queue = add_queue(db, "技术支持", numbers=["1001", " 1000", "1001", "+861012345"])
    assert queue.numbers == ["1001", "1000", "+861012345"]


@pytest.mark.parametrize("skill", ["粤语:0", "粤语:10", "粤语:2.5", "粤语:高", "粤语:"])
def test_a_skill_level_is_a_whole_number_from_1_to_9(db, settings, skill):
    with pytest.raises(QueueError, match=f"skill '{skill}': the level is a whole number from 1 to 9"):
        add_queue(db, "粤语", skills=[skill])


def test_skills_are_named_once_and_written_plainly():
    assert check_skills([" 粤语 ： 3", "空调"]) == ["粤语:3", "空调"]  # the full-width colon of a Chinese keyboard
    with pytest.raises(QueueError, match="a skill needs a name, not ':3'"):
        check_skills([":3"])
    with pytest.raises(QueueError, match="skill '空调' is given twice"):
        check_skills(["空调", "空调:2"])


@pytest.mark.parametrize("text, seconds", [(None, None), ("", None), ("  ", None), ("20", 20.0), ("0.5", 0.5),
                                           ("-5", -5.0)])
def test_seconds_as_typed(text, seconds):
    assert parse_seconds(text) == seconds  # the sign is set_queue's to refuse, naming the setting


@pytest.mark.parametrize("text", ["soon", "inf", "nan", "1e999"])
def test_seconds_are_finite_numbers(text):
    with pytest.raises(QueueError, match=f"'{text}' is not a number of seconds"):
        parse_seconds(text)


def test_names_and_texts_fit_their_columns(db, settings):
    with pytest.raises(QueueError, match="name has at most 64 characters"):
        add_queue(db, "长" * 65)
    with pytest.raises(QueueError, match="language has at most 16 characters"):
        add_queue(db, "粤语", language="x" * 17)


def test_an_error_names_its_setting_and_keeps_its_template(db, settings):
    add_queue(db, "技术支持")
    with pytest.raises(QueueError) as refused:
        add_queue(db, "技术支持")
    assert (refused.value.template, refused.value.field, refused.value.params["name"]) == \
        ("queue '%(name)s' exists already", "name", "技术支持")


def test_assign_an_agent_their_skills_and_queues(db, settings):
    add_user(db, "zhang", Role.AGENT, "agent-pass-1", realm=settings.sip.realm, extension="1001")
    agent = agent_named(db, "zhang")
    add_queue(db, "粤语", skills=["粤语:2"])
    assign_agent(db, agent, skills=["粤语：3", "空调"], queues=["粤语", "粤语"])
    assert (agent.user.skills, agent.queues) == (["粤语:3", "空调"], ["粤语"])
    with pytest.raises(QueueError, match="no queue '投诉'"):
        assign_agent(db, agent, skills=[], queues=["投诉"])
    with pytest.raises(QueueError, match="the level is a whole number"):
        assign_agent(db, agent, skills=["粤语:0"], queues=[])
    assert (agent.user.skills, agent.queues) == (["粤语:3", "空调"], ["粤语"])  # refused: unchanged


def test_an_overflow_loop_is_refused(db, settings):
    first = add_queue(db, "A")
    second = add_queue(db, "B", overflow="A")
    add_queue(db, "C", overflow="B")
    with pytest.raises(QueueError, match="overflows back"):
        set_queue(db, first, overflow="C")  # A → C → B → A
    assert first.overflow_queue is None and second.overflow_queue is first
