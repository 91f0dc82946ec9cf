"""The admin pages: queues added and changed under the queue rules, agents' skills, queues and states."""

from __future__ import annotations

import itertools
import re

import pytest
from markupsafe import escape
from sqlalchemy import select

from models.accounts import add_user
from models.agent import Agent, AgentEvent, AgentState
from models.agents import agent_named, log_in, offer, serves
from models.queues import add_queue, all_queues, queue_named
from models.user import Role, User
from tests.webui.conftest import PASSWORD, csrf_token, queue_caller
from workers import bus

QUEUES = "/admin/queues/"
AGENTS = "/admin/agents/"
QUEUE_FIELDS = ("name", "display_name", "numbers", "menu_key", "skills", "ring_timeout_seconds", "wrap_up_seconds",
                "announce_seconds", "max_wait_seconds", "overflow", "language")
# A queue the rules allow beside 呼叫中心 (the default of 1000): each error case spoils one field of it.
SUPPORT = {"name": "技术支持", "numbers": "1000", "menu_key": "1"}


@pytest.fixture
def admin(login_as):
    return login_as(Role.ADMIN)


def token(client, url: str = QUEUES) -> str:
    return csrf_token(client.get(url).get_data(as_text=True))


def queue_form(client, **fields: str) -> dict[str, str]:
    """Every field of the queue form as a browser posts it (those not given empty), with the admin's token."""
    return {**dict.fromkeys(QUEUE_FIELDS, ""), **fields, "csrf_token": token(client)}


def error_at(page: str, field: str) -> str | None:
    found = re.search(rf'data-error="{field}">([^<]*)<', page)
    return found.group(1) if found else None


def value_of(page: str, field: str) -> str | None:
    """The value an input of the page holds (as HTML)."""
    found = re.search(rf'<input [^>]*name="{field}" [^>]*value="([^"]*)"', page)
    return found.group(1) if found else None


def row(page: str, queue: str) -> str:
    return page.split(f'data-queue="{queue}"')[1].split("</tr>")[0]


def cell(html: str, attribute: str) -> str:
    """The text of the cell marked ``attribute`` (tags dropped, blanks squeezed)."""
    found = re.search(rf"<td {attribute}>(.*?)</td>", html, re.S).group(1)
    return " ".join(re.sub(r"<[^>]+>", "", found).split())


def stored(db) -> list[tuple[object, ...]]:
    """Every queue as the database has it now."""
    db.expire_all()
    return [(q.name, q.display_name, q.numbers, q.menu_key, q.skills, q.ring_timeout_seconds, q.wrap_up_seconds,
             q.announce_seconds, q.max_wait_seconds, q.overflow_queue_id, q.language) for q in all_queues(db)]


def agent(db, name: str = "zhang") -> Agent:
    found = agent_named(db, name)
    db.refresh(found)
    db.refresh(found.user)
    return found


def agent_url(db, name: str = "zhang") -> str:
    return f"{AGENTS}{agent(db, name).user_id}"


# who may open what

def test_the_admin_pages_need_a_login(client, db, hotline_queue):
    for url in ("/admin/", QUEUES, f"{QUEUES}{hotline_queue.id}", AGENTS, agent_url(db)):
        response = client.get(url)
        assert response.status_code == 302 and "/auth/login" in response.headers["Location"], url
    anonymous = csrf_token(client.get("/auth/login").get_data(as_text=True))
    response = client.post(QUEUES, data={"name": "技术支持", "csrf_token": anonymous})
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


@pytest.mark.parametrize("role", [Role.AGENT, Role.REVISIT, Role.QA])
def test_other_roles_get_403(login_as, db, hotline_queue, role):
    client = login_as(role)
    for url in (QUEUES, f"{QUEUES}{hotline_queue.id}", AGENTS, agent_url(db)):
        assert client.get(url).status_code == 403, url
    form = {**dict.fromkeys(QUEUE_FIELDS, ""), **SUPPORT, "csrf_token": token(client, "/calls/")}
    assert client.post(QUEUES, data=form).status_code == 403
    assert client.post(f"{agent_url(db)}/state", data={"state": "available", "csrf_token": form["csrf_token"]}) \
        .status_code == 403
    assert "href=\"/admin/queues/\"" not in client.get("/calls/").get_data(as_text=True)


def test_supervisors_see_the_lists_and_change_nothing(login_as, db, hotline_queue):
    supervisor = login_as(Role.SUPERVISOR)
    queues = supervisor.get(QUEUES).get_data(as_text=True)
    assert 'data-queue="呼叫中心"' in queues and 'id="new-queue"' not in queues and 'data-action="edit"' not in queues
    assert "只有管理员可以修改队列" in queues and 'href="/admin/queues/">管理</a>' in queues
    agents = supervisor.get(AGENTS).get_data(as_text=True)
    assert 'data-agent="zhang"' in agents and 'data-action="edit"' not in agents and "只有管理员可以修改坐席" in agents
    assert supervisor.get(f"{QUEUES}{hotline_queue.id}").status_code == 403
    assert supervisor.get(agent_url(db)).status_code == 403
    csrf = token(supervisor, "/calls/")
    before = stored(db)
    assert supervisor.post(QUEUES, data={**SUPPORT, "csrf_token": csrf}).status_code == 403
    edit = supervisor.post(f"{QUEUES}{hotline_queue.id}", data={"numbers": "1002", "csrf_token": csrf})
    assert edit.status_code == 403
    assert supervisor.post(agent_url(db), data={"skills": "粤语", "csrf_token": csrf}).status_code == 403
    assert supervisor.post(f"{agent_url(db)}/state", data={"state": "available", "csrf_token": csrf}).status_code == 403
    assert stored(db) == before and agent(db).user.skills == [] and agent(db).state is AgentState.LOGGED_OUT


def test_admins_reach_the_pages_from_the_navigation(admin, hotline_queue):
    assert admin.get("/admin/").headers["Location"].endswith(QUEUES)
    page = admin.get("/calls/").get_data(as_text=True)
    assert 'href="/admin/queues/">管理</a>' in page
    queues = admin.get(QUEUES).get_data(as_text=True)
    assert 'id="new-queue"' in queues and 'data-action="edit"' in queues and 'href="/admin/agents/"' in queues
    english = admin.get(f"{QUEUES}?lang=en").get_data(as_text=True)
    assert ">Admin</a>" in english and "Add a queue" in english and "Ring timeout" in english


def test_every_form_needs_its_csrf_token(admin, db, hotline_queue):
    before = stored(db)
    assert admin.post(QUEUES, data={**SUPPORT, "numbers": "1002"}).status_code == 400
    assert admin.post(f"{QUEUES}{hotline_queue.id}", data={"numbers": "1002"}).status_code == 400
    assert admin.post(agent_url(db), data={"skills": "粤语"}).status_code == 400
    assert admin.post(f"{agent_url(db)}/state", data={"state": "available"}).status_code == 400
    assert stored(db) == before and agent(db).user.skills == [] and agent(db).state is AgentState.LOGGED_OUT


# the queues' table

def test_the_table_shows_every_setting_and_which_timers_are_the_defaults(admin, db, hotline_queue):
    add_queue(db, "技术支持", display_name="技术咨询", numbers=["1000", "1001"], menu_key="1", skills=["粤语:2", "空调"],
              ring_timeout_seconds=20, wrap_up_seconds=0, max_wait_seconds=300, overflow="呼叫中心", language="yue")
    db.commit()
    page = admin.get(QUEUES).get_data(as_text=True)
    own = row(page, "技术支持")
    assert "<td>技术咨询</td>" in own
    assert (cell(own, "data-numbers"), cell(own, "data-menu-key")) == ("1000, 1001", "1")
    assert cell(own, "data-skills") == "粤语（2 级及以上）, 空调（1 级及以上）"
    # Own values, 0 included, are not the default; announce has none of its own.
    assert cell(own, 'data-timer="ring_timeout"') == "20 秒" and cell(own, 'data-timer="wrap_up"') == "0 秒"
    assert cell(own, 'data-timer="announce"') == "45 秒 默认"
    assert cell(own, 'data-timer="max_wait"') == "300 秒 → 呼叫中心" and cell(own, "data-language") == "yue"
    main = row(page, "呼叫中心")
    assert cell(main, 'data-timer="ring_timeout"') == "15 秒 默认" and cell(main, 'data-timer="wrap_up"') == "30 秒 默认"
    assert cell(main, 'data-timer="max_wait"') == "不限 默认" and cell(main, "data-language") == "zh 默认"
    assert (cell(main, "data-menu-key"), cell(main, "data-skills")) == ("—", "—")


# adding and changing queues

def test_add_a_queue_with_every_setting(admin, db, hotline_queue):
    response = admin.post(QUEUES, data=queue_form(
        admin, name=" 技术支持 ", display_name="技术咨询", numbers="1000，1001, 1000", menu_key="1", skills="粤语：2、 空调",
        ring_timeout_seconds="20", wrap_up_seconds="0", announce_seconds="", max_wait_seconds="300", overflow="呼叫中心",
        language="yue"), follow_redirects=True)
    assert response.status_code == 200 and "队列“技术支持”已添加" in response.get_data(as_text=True)
    support = queue_named(db, "技术支持")
    assert (support.display_name, support.numbers, support.menu_key, support.skills, support.language) == \
        ("技术咨询", ["1000", "1001"], "1", ["粤语:2", "空调"], "yue")
    assert (support.ring_timeout_seconds, support.wrap_up_seconds, support.announce_seconds,
            support.max_wait_seconds) == (20, 0, None, 300)
    assert support.overflow_queue.name == "呼叫中心"


def test_empty_fields_take_the_defaults(admin, db):
    assert admin.post(QUEUES, data=queue_form(admin, name="售后服务")).status_code == 302
    added = queue_named(db, "售后服务")
    assert (added.display_name, added.numbers, added.skills, added.menu_key, added.language, added.overflow_queue) == \
        ("售后服务", [], [], None, None, None)
    assert [added.ring_timeout_seconds, added.wrap_up_seconds, added.announce_seconds, added.max_wait_seconds] == \
        [None] * 4


def test_edit_a_queue_prefilled_clearing_timers_and_overflow(admin, db, hotline_queue):
    service = add_queue(db, "售后服务", numbers=["1000"], menu_key="2", ring_timeout_seconds=20, overflow="呼叫中心")
    db.commit()
    url = f"{QUEUES}{service.id}"
    page = admin.get(url).get_data(as_text=True)
    assert 'name="ring_timeout_seconds" placeholder="默认：15" size="8" type="text" value="20"' in page
    assert '<option selected value="2">' in page and '<option selected value="呼叫中心">' in page
    assert '<option value="售后服务">' not in page  # never its own overflow
    response = admin.post(url, data=queue_form(admin, display_name="售后", numbers="1000, 1002", menu_key="3",
                                               skills="空调", wrap_up_seconds="15", max_wait_seconds="0"),
                          follow_redirects=True)
    assert response.status_code == 200 and "队列“售后服务”已保存" in response.get_data(as_text=True)
    db.expire_all()
    assert (service.display_name, service.numbers, service.menu_key, service.skills) == \
        ("售后", ["1000", "1002"], "3", ["空调"])
    assert (service.ring_timeout_seconds, service.wrap_up_seconds, service.max_wait_seconds) == (None, 15, 0)
    assert service.overflow_queue is None
    shown = row(response.get_data(as_text=True), "售后服务")
    assert cell(shown, 'data-timer="ring_timeout"') == "15 秒 默认" and cell(shown, 'data-timer="max_wait"') == "不限"


def test_an_unknown_queue_is_404(admin):
    assert admin.get(f"{QUEUES}999").status_code == 404


@pytest.mark.parametrize("field, value, message", [
    ("numbers", "1000, 10-00", "“10-00”不是有效的热线号码（应为数字，如 1000）"),
    ("numbers", "一千", "“一千”不是有效的热线号码"),
    ("menu_key", "0", "菜单按键须为 1-9 中的一个数字，不能是“0”"),
    ("skills", "粤语:10", "技能“粤语:10”：等级须为 1 到 9 的整数"),
    ("skills", "粤语:0", "等级须为 1 到 9 的整数"),
    ("skills", "粤语:2.5", "等级须为 1 到 9 的整数"),
    ("skills", "粤语:高", "等级须为 1 到 9 的整数"),
    ("skills", ":3", "技能须有名称"),
    ("skills", "空调, 空调:2", "技能“空调”重复"),
    ("ring_timeout_seconds", "soon", "“soon”不是秒数"),
    ("max_wait_seconds", "inf", "“inf”不是秒数"),
    ("announce_seconds", "nan", "“nan”不是秒数"),
    ("wrap_up_seconds", "-5", "不能为负数"),
    ("name", "呼叫中心", "队列“呼叫中心”已存在"),
    ("name", "  ", "请填写队列名称"),
    ("name", "长" * 65, "最多 64 个字符"),
    ("language", "x" * 17, "最多 16 个字符"),
    ("overflow", "投诉", "没有名为“投诉”的队列可供溢出"),
])
def test_a_bad_setting_is_said_at_its_field_with_the_input_kept_and_nothing_saved(admin, db, hotline_queue, field,
                                                                                   value, message):
    before = stored(db)
    response = admin.post(QUEUES, data=queue_form(admin, **{**SUPPORT, field: value}))
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and "未保存：请更正下方标出的字段" in page
    assert message in error_at(page, field)
    kept = {**SUPPORT, field: value}
    for name in ("name", "numbers", "skills", "language", "ring_timeout_seconds", "wrap_up_seconds",
                 "announce_seconds", "max_wait_seconds"):
        assert value_of(page, name) == escape(kept.get(name, "").strip()), name
    assert stored(db) == before


def test_menu_keys_shared_on_a_number_are_refused(admin, db, hotline_queue):
    add_queue(db, "技术支持", numbers=["1000"], menu_key="1")
    db.commit()
    before = stored(db)
    taken = admin.post(QUEUES, data=queue_form(admin, name="售后服务", numbers="1001, 1000", menu_key="1"))
    assert taken.status_code == 400
    assert error_at(taken.get_data(as_text=True), "menu_key") == "队列“技术支持”在号码 1000 上已使用按键 1"
    default = admin.post(QUEUES, data=queue_form(admin, name="售后服务", numbers="1000"))
    assert default.status_code == 400
    assert error_at(default.get_data(as_text=True), "menu_key") == "队列“呼叫中心”已是号码 1000 的默认队列（无按键）"
    assert stored(db) == before


def test_several_mistakes_are_said_at_once(admin, db, hotline_queue):
    page = admin.post(QUEUES, data=queue_form(admin, name="技术支持", numbers="10 00", skills="粤语:x",
                                              ring_timeout_seconds="-1", wrap_up_seconds="soon")).get_data(as_text=True)
    assert all(error_at(page, field) for field in ("numbers", "skills", "ring_timeout_seconds", "wrap_up_seconds"))
    assert error_at(page, "name") is None and queue_named(db, "技术支持") is None


def test_errors_speak_english_second(admin, db, hotline_queue):
    admin.get(f"{QUEUES}?lang=en")
    page = admin.post(QUEUES, data=queue_form(admin, name="呼叫中心", numbers="10-00")).get_data(as_text=True)
    assert "Nothing was saved: correct the fields marked below." in page
    assert error_at(page, "numbers") == "&#39;10-00&#39; is not a hotline number (digits, e.g. 1000)"
    page = admin.post(QUEUES, data=queue_form(admin, name="呼叫中心")).get_data(as_text=True)
    assert error_at(page, "name") == "queue &#39;呼叫中心&#39; exists already"


def test_a_rule_failing_after_other_changes_saves_none_of_them(admin, db, hotline_queue):
    support = add_queue(db, "技术支持", numbers=["1001"], menu_key="1", ring_timeout_seconds=20)
    add_queue(db, "售后服务", numbers=["1000"], menu_key="2")
    db.commit()
    before = stored(db)
    # Key 2 is taken on 1000: found only after the new timers and numbers are set on the queue.
    response = admin.post(f"{QUEUES}{support.id}", data=queue_form(admin, numbers="1001, 1000", menu_key="2",
                                                                   ring_timeout_seconds="25", overflow="呼叫中心"))
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert error_at(page, "menu_key") == "队列“售后服务”在号码 1000 上已使用按键 2"
    assert 'value="1001, 1000"' in page and 'value="25"' in page and '<option selected value="呼叫中心">' in page
    assert stored(db) == before


def test_a_queue_cannot_overflow_to_itself(admin, db, hotline_queue):
    response = admin.post(f"{QUEUES}{hotline_queue.id}", data=queue_form(admin, numbers="1000", overflow="呼叫中心"))
    assert response.status_code == 400
    assert error_at(response.get_data(as_text=True), "overflow") == "队列不能溢出到自身"


# agents

@pytest.fixture
def team(db, settings, hotline_queue):
    """li (粤语:3, 空调) on 1002, wang on 1003 who was never an agent, the 粤语 and 冰箱 queues."""
    add_user(db, "li", Role.AGENT, PASSWORD, realm=settings.sip.realm, display_name="李四", extension="1002",
             skills=["粤语:3", "空调"])
    wang = add_user(db, "wang", Role.AGENT, PASSWORD, realm=settings.sip.realm, display_name="王五")
    wang.extension = "1003"  # given an extension after the account: no agent row yet
    add_queue(db, "粤语", numbers=["1002"], skills=["粤语:2"])
    add_queue(db, "冰箱", numbers=["1003"], skills=["冰箱"])
    db.commit()
    return wang


def test_the_agents_page_lists_every_user_with_an_extension(admin, db, team):
    assert db.scalar(select(Agent).where(Agent.user_id == team.id)) is None
    li = agent(db, "li")
    log_in(db, li, source="test")
    li.queues = ["粤语", "冰箱"]
    db.commit()
    page = admin.get(AGENTS).get_data(as_text=True)
    assert re.findall(r'data-agent="([^"]+)"', page) == ["li", "wang", "zhang"]  # not the admin: no extension
    shown = page.split('data-agent="li"')[1].split("</tr>")[0]
    assert "李四" in shown and "<td>1002</td>" in shown and 'data-agent-state="available"' in shown and "就绪" in shown
    assert cell(shown, "data-skills") == "粤语（3 级）, 空调（1 级）"
    assert cell(shown, "data-queues") == "粤语, 冰箱（缺少所需技能）"
    zhang = page.split('data-agent="zhang"')[1].split("</tr>")[0]
    assert cell(zhang, "data-queues") == "所有符合技能的队列：呼叫中心" and cell(zhang, "data-skills") == "—"
    wang = page.split('data-agent="wang"')[1].split("</tr>")[0]
    assert 'data-agent-state="logged_out"' in wang
    assert agent(db, "wang").state is AgentState.LOGGED_OUT  # created as it was listed


def test_edit_an_agent_s_skills_and_queues(admin, db, settings, team):
    url = agent_url(db)
    page = admin.get(url).get_data(as_text=True)
    assert all(f'type="checkbox" value="{name}"' in page for name in ("呼叫中心", "粤语", "冰箱"))
    changes = bus.changes(settings, timeout=0.1)
    next(changes)  # subscribed, as a distributor is
    response = admin.post(url, data={"skills": "粤语：3， 空调", "queues": ["粤语"], "csrf_token": token(admin, url)},
                          follow_redirects=True)
    assert response.status_code == 200 and "张三 已保存" in response.get_data(as_text=True)
    zhang = agent(db)
    assert (zhang.user.skills, zhang.queues) == (["粤语:3", "空调"], ["粤语"])
    assert serves(zhang, queue_named(db, "粤语")) and not serves(zhang, queue_named(db, "呼叫中心"))
    # Quiet batches come every 0.1 s: a bounded wait for the change the distributors wake on.
    assert any({"kind": "agent", "id": zhang.id} in batch for batch in itertools.islice(changes, 100))
    changes.close()
    page = admin.get(url).get_data(as_text=True)
    assert 'value="粤语:3, 空调"' in page and 'checked id="queues-1" name="queues" type="checkbox" value="粤语"' in page
    assert admin.post(url, data={"skills": "", "csrf_token": token(admin, url)}).status_code == 302
    zhang = agent(db)
    assert (zhang.user.skills, zhang.queues) == ([], [])  # nothing ticked: every queue whose skills they have


@pytest.mark.parametrize("skills, message", [
    ("粤语:0", "技能“粤语:0”：等级须为 1 到 9 的整数"),
    ("粤语:10", "等级须为 1 到 9 的整数"),
    ("粤语:3.5", "等级须为 1 到 9 的整数"),
    ("粤语:三", "等级须为 1 到 9 的整数"),
    (":2", "技能须有名称"),
    ("空调, 空调", "技能“空调”重复"),
])
def test_bad_skills_are_refused_with_the_input_kept(admin, db, team, skills, message):
    url = agent_url(db, "li")
    response = admin.post(url, data={"skills": skills, "queues": ["粤语"], "csrf_token": token(admin, url)})
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and message in error_at(page, "skills")
    assert value_of(page, "skills") == escape(skills)
    assert 'checked id="queues-1" name="queues" type="checkbox" value="粤语"' in page
    li = agent(db, "li")
    assert (li.user.skills, li.queues) == (["粤语:3", "空调"], [])


def test_an_unknown_queue_is_refused(admin, db, team):
    url = agent_url(db)
    response = admin.post(url, data={"skills": "空调", "queues": ["粤语", "投诉"], "csrf_token": token(admin, url)})
    assert response.status_code == 400 and error_at(response.get_data(as_text=True), "queues") == "没有名为“投诉”的队列"
    zhang = agent(db)
    assert (zhang.user.skills, zhang.queues) == ([], [])


def test_only_users_with_an_extension_are_agents_here(admin, db):
    assert admin.get(f"{AGENTS}999").status_code == 404
    no_extension = db.scalar(select(User.id).where(User.username == "admin-user"))
    assert admin.get(f"{AGENTS}{no_extension}").status_code == 404
    assert admin.post(f"{AGENTS}{no_extension}/state", data={"state": "available", "csrf_token": token(admin)}) \
        .status_code == 404


# agents' states

def press(client, db, state: str, reason: str = ""):
    url = agent_url(db)
    return client.post(f"{url}/state", data={"state": state, "reason": reason, "csrf_token": token(client, url)},
                       follow_redirects=True).get_data(as_text=True)


def test_the_admin_sets_an_agent_s_state_through_the_state_machine(admin, db):
    assert "张三 现在是“就绪”" in press(admin, db, "available")
    assert agent(db).state is AgentState.AVAILABLE
    page = press(admin, db, "paused", " 培训 ")
    zhang = agent(db)
    assert (zhang.state, zhang.reason) == (AgentState.PAUSED, "培训") and 'data-agent-state="paused"' in page
    press(admin, db, "logged_out")
    events = db.scalars(select(AgentEvent).where(AgentEvent.agent_id == zhang.id).order_by(AgentEvent.id)).all()
    assert [(e.state, e.source) for e in events] == [
        (AgentState.AVAILABLE, "admin"), (AgentState.PAUSED, "admin"), (AgentState.LOGGED_OUT, "admin")]


def test_a_pause_needs_a_reason_and_an_unknown_state_is_not_understood(admin, db):
    assert "请选择或填写暂停原因" in press(admin, db, "paused", "  ")
    assert "无法识别该状态操作" in press(admin, db, "on_call")
    assert agent(db).state is AgentState.LOGGED_OUT


def test_a_refused_transition_is_a_message(admin, db, settings, hotline_queue):
    zhang = agent(db)
    log_in(db, zhang, source="test")
    call = queue_caller(db, settings, hotline_queue)
    assert offer(db, zhang, call.uid)
    db.commit()
    page = press(admin, db, "paused", "培训")
    assert "张三 当前为“振铃”，无法执行此操作。" in page and agent(db).state is AgentState.RINGING
