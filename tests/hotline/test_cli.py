"""The hotline CLI: init → user add → ticket create → ticket show --json, config errors, unusable servers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

from hotline.cli import main
from hotline.processes import stop_process

TICKET_CREATE = ("ticket", "create", "--phone", "13800138000", "--type", "inquiry", "--description", "x")
DATABASE_COMMANDS = [("calls", "list"), TICKET_CREATE, ("user", "add", "li", "--role", "qa", "--password-stdin"),
                     ("db", "upgrade"), ("init",), ("transcribe", "--call", "1")]


def hotline(*args: str, stdin: str = "", env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real installed entry point, as a user runs it."""
    return subprocess.run(["hotline", *args], input=stdin, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_round_trip_through_the_installed_command(hotline_env):
    init = hotline("init", env=hotline_env)
    assert init.returncode == 0, init.stderr
    assert "log in at http://127.0.0.1:8080/ as 'admin' with password" in init.stdout
    assert "queue 呼叫中心 created on 1000" in init.stdout
    assert Path(hotline_env["HOTLINE_CONFIG"]).exists()

    added = hotline("user", "add", "zhang", "--role", "agent", "--extension", "1001", "--skill", "粤语",
                    "--password-stdin", stdin="agent-pass-1\n", env=hotline_env)
    assert added.returncode == 0, added.stderr
    assert "extension 1001" in added.stdout

    created = hotline("ticket", "create", "--phone", "138 0013 8000", "--type", "repair", "--urgency", "urgent",
                      "--description", "洗衣机不脱水", env=hotline_env)
    assert created.returncode == 0, created.stderr
    number = created.stdout.strip()
    assert number.startswith("SS") and len(number) == len("SS20261123001")

    shown = hotline("ticket", "show", number, "--json", env=hotline_env)
    ticket = json.loads(shown.stdout)
    assert (ticket["number"], ticket["type"], ticket["urgency"], ticket["priority"]) == (number, "repair", "urgent", "P2")
    assert ticket["phone"] == "+8613800138000" and ticket["description"] == "洗衣机不脱水"
    assert [e["kind"] for e in ticket["events"]] == ["created"]


def test_init_twice_keeps_the_admin_and_the_default_queue(settings, cli):
    first = cli.invoke(main, ["init"])
    assert first.exit_code == 0
    assert "queue 呼叫中心 created on 1000; add more with: hotline queue add NAME --number N" in first.output
    again = cli.invoke(main, ["init"])
    assert again.exit_code == 0 and "an admin exists already" in again.output and "created on" not in again.output
    queues = json.loads(cli.invoke(main, ["queue", "list", "--json"]).output)
    assert [(q["name"], q["numbers"], q["menu_key"]) for q in queues] == [("呼叫中心", ["1000"], None)]


def test_init_leaves_existing_queues_alone(settings, cli):
    assert cli.invoke(main, ["queue", "add", "技术支持", "--number", "1000"]).exit_code == 0
    assert "created on" not in cli.invoke(main, ["init"]).output
    assert [q["name"] for q in json.loads(cli.invoke(main, ["queue", "list", "--json"]).output)] == ["技术支持"]


def test_user_add_refuses_duplicates_and_short_passwords(settings, cli):
    args = ["user", "add", "li", "--role", "qa", "--extension", "1002", "--password-stdin"]
    assert cli.invoke(main, args, input="long-enough\n").exit_code == 0
    dup = cli.invoke(main, ["user", "add", "wu", "--role", "qa", "--extension", "1002", "--password-stdin"],
                     input="long-enough\n")
    assert dup.exit_code == 1 and "extension 1002 belongs to another user" in dup.output
    short = cli.invoke(main, ["user", "add", "he", "--role", "qa", "--password-stdin"], input="abc\n")
    assert short.exit_code == 1 and "at least 8" in short.output
    bad_role = cli.invoke(main, ["user", "add", "x", "--role", "boss", "--password-stdin"], input="long-enough\n")
    assert bad_role.exit_code == 2


def test_ticket_create_rejects_a_bad_phone(settings, cli):
    result = cli.invoke(main, ["ticket", "create", "--phone", "12", "--type", "inquiry", "--description", "x"])
    assert result.exit_code == 2 and "not a valid phone number" in result.output


def test_ticket_show_unknown_number(settings, cli):
    result = cli.invoke(main, ["ticket", "show", "TS20990101001"])
    assert result.exit_code == 1 and "no ticket TS20990101001" in result.output


def test_bad_config_exits_2_naming_the_key(hotline_env, tmp_path):
    Path(hotline_env["HOTLINE_CONFIG"]).write_text("[sip]\nmax_rings = 'many'\n", encoding="utf-8")
    result = hotline("db", "upgrade", env=hotline_env)
    assert result.returncode == 2
    assert "sip.max_rings" in result.stderr and "Traceback" not in result.stderr


# --- Servers Hotline cannot use: one line, exit 2 -------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_postgresql_on_a_closed_port_is_one_line_naming_the_setting(hotline_env, command):
    port = free_port()
    url = f"postgresql://postgres@127.0.0.1:{port}/test"
    result = hotline(*command, stdin="long-enough\n", env={**hotline_env, "HOTLINE_DATABASE_URL": url})
    assert_one_line_exit_2(result, f"the database at postgresql+psycopg://postgres@127.0.0.1:{port}/test does not "
                                   "answer (connection refused): check database.url / HOTLINE_DATABASE_URL, "
                                   "or start the server")


@pytest.mark.parametrize(("url", "phrase"), [
    ("mysql://root@127.0.0.1/hotline", "mysql:// is not supported (Hotline ships drivers for PostgreSQL and SQLite only)"),
    ("garbage", "is not a database URL ('garbage')"),
])
def test_an_unsupported_database_url_is_one_line_naming_the_setting(hotline_env, url, phrase):
    result = hotline("calls", "list", env={**hotline_env, "HOTLINE_DATABASE_URL": url})
    assert_one_line_exit_2(result, "configuration error: database.url / HOTLINE_DATABASE_URL", phrase,
                           "use postgresql://user:password@host:5432/dbname")


def test_a_bad_redis_scheme_is_one_line_naming_the_setting(hotline_env):
    result = hotline("calls", "list", env={**hotline_env, "REDIS_URL": "http://127.0.0.1:6379"})
    assert_one_line_exit_2(result, "configuration error: redis.url / REDIS_URL is not a Redis URL",
                           "use redis://[:password@]host:6379/0, rediss://… (TLS) or unix:///path/to/redis.sock")


@pytest.mark.postgres
def test_an_unknown_database_on_the_real_server_is_one_line(hotline_env):
    url = "postgresql://postgres@127.0.0.1:5432/hotline_no_such_db"
    result = hotline("db", "upgrade", env={**hotline_env, "HOTLINE_DATABASE_URL": url})
    assert_one_line_exit_2(result, 'cannot be used (database "hotline_no_such_db" does not exist): '
                                   "create it (createdb hotline_no_such_db) or check database.url / HOTLINE_DATABASE_URL")


@pytest.mark.parametrize("command", [("calls", "list"), TICKET_CREATE, ("web",), ("worker",)], ids=" ".join)
def test_an_uninitialised_sqlite_database_says_run_hotline_init(hotline_env, command):
    result = hotline(*command, env=hotline_env)
    assert_one_line_exit_2(result, f"the database at {hotline_env['HOTLINE_DATABASE_URL']} is not initialised: "
                                   "run `hotline init` (or `hotline db upgrade`)")


def test_a_worker_refused_by_redis_exits_2_as_waiting_cannot_help(settings, hotline_env):
    # The shared server knows databases 0-15: "DB index is out of range" needs someone to act.
    result = hotline("worker", env={**hotline_env, "REDIS_URL": "redis://127.0.0.1:6379/99"})
    assert_one_line_exit_2(result, "Redis at redis://127.0.0.1:6379/99 has no such database (DB index is out of "
                                   "range): check the number at the end of redis.url / REDIS_URL")


@pytest.mark.postgres
def test_the_plain_postgresql_url_works(hotline_env, postgres_database):
    env = {**hotline_env, "HOTLINE_DATABASE_URL": postgres_database.replace("postgresql+psycopg://", "postgresql://")}
    assert hotline("init", env=env).returncode == 0
    created = hotline(*TICKET_CREATE, env=env)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("TS")


# --- Services wait for the database and Redis, and pick up when they return -----------------

class TcpProxy:
    """A loopback port forwarding to a server once started: before that, its server 'does not answer'."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.sockets: list[socket.socket] = []

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self.sockets.append(listener)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


class Service:
    """A ``hotline`` service started as a user would, its log collected in a file."""

    def __init__(self, args: tuple[str, ...], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.process = subprocess.Popen(["hotline", *args], env={**os.environ, **env}, stdout=log.open("wb"),
                                        stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if predicate():
                return True
            time.sleep(0.1)
        return predicate()

    def logged(self, text: str, timeout: float = 30.0) -> bool:
        return self.wait_for(lambda: text in self.output(), timeout)


@pytest.fixture
def start_service(hotline_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start ``hotline ARGS…`` with quick retries (database.retry_seconds = 0.3); stopped afterwards."""
    Path(hotline_env["HOTLINE_CONFIG"]).write_text("[database]\nretry_seconds = 0.3\n", encoding="utf-8")
    started: list[Service] = []

    def start(*args: str, **env: str) -> Service:
        service = Service(args, {**hotline_env, **env}, tmp_path / f"{args[0]}-{len(started)}.log")
        started.append(service)
        return service

    yield start
    for service in started:
        stop_process(service.process, timeout=15)


def answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=1).status == 200
    except OSError:
        return False


@pytest.mark.postgres
def test_web_waits_for_the_database_and_serves_once_it_answers(hotline_env, postgres_database, start_service):
    assert hotline("db", "upgrade", env={**hotline_env, "HOTLINE_DATABASE_URL": postgres_database}).returncode == 0
    proxy = TcpProxy(5432)
    behind_proxy = postgres_database.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    web_port = free_port()
    try:
        web = start_service("web", "--port", str(web_port), HOTLINE_DATABASE_URL=behind_proxy)
        assert web.logged(f"waiting for the database at postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/test"), \
            web.output()
        assert web.logged(": connection refused; retrying every 0.3 s") and not answers(f"http://127.0.0.1:{web_port}/healthz")
        proxy.start()
        assert web.logged(f"the database at postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/test"), web.output()
        assert web.wait_for(lambda: answers(f"http://127.0.0.1:{web_port}/auth/login")), web.output()
        assert "answers again" in web.output() and "Traceback" not in web.output()
    finally:
        proxy.close()


class RedisServer:
    """A real redis-server on a free loopback port, without persistence, that a test stops and starts."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--dir", str(self.directory)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def job_done(url: str) -> bool:
    """Enqueue a job and wait up to 30 s for a worker to finish it."""
    job = Queue("default", connection=Redis.from_url(url)).enqueue("os.getpid")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if job.get_status(refresh=True) == "finished":
            return True
        time.sleep(0.2)
    return False


def test_worker_waits_for_redis_and_picks_up_when_it_returns(settings, start_service, tmp_path):
    redis = RedisServer(tmp_path)
    try:
        worker = start_service("worker", "--queue", "default", REDIS_URL=redis.url)
        assert worker.logged(f"waiting for Redis at {redis.url}: connection refused; retrying every 0.3 s"), \
            worker.output()
        redis.start()
        assert worker.logged(f"Redis at {redis.url} answers again"), worker.output()
        assert job_done(redis.url), worker.output()
        redis.stop()  # goes away while the worker runs: an empty server comes back
        time.sleep(1.0)
        redis.start()
        assert job_done(redis.url), worker.output()
        redis.stop()  # and a stop request while Redis is away still stops it
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(15) == 0, worker.output()
    finally:
        redis.stop()
