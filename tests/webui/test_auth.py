"""Logging in: individual accounts, CSRF-protected forms, pages closed to strangers."""

from tests.webui.conftest import PASSWORD, csrf_token


def test_pages_need_a_login(client):
    response = client.get("/calls/")
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_login_page_speaks_chinese_first_then_english(client):
    assert "登录" in client.get("/auth/login").get_data(as_text=True)
    assert "Log in" in client.get("/auth/login?lang=en").get_data(as_text=True)


def test_wrong_password_is_refused_with_a_message(client):
    page = client.get("/auth/login").get_data(as_text=True)
    response = client.post("/auth/login", data={"username": "zhang", "password": "nope", "csrf_token": csrf_token(page)})
    assert response.status_code == 200 and "用户名或密码错误" in response.get_data(as_text=True)


def test_form_without_csrf_token_is_rejected(client):
    response = client.post("/auth/login", data={"username": "zhang", "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/calls/").status_code == 302


def test_login_then_logout(logged_in):
    assert logged_in.get("/calls/").status_code == 200
    page = logged_in.get("/calls/").get_data(as_text=True)
    assert logged_in.post("/auth/logout", data={"csrf_token": csrf_token(page)}).status_code == 302
    assert logged_in.get("/calls/").status_code == 302
