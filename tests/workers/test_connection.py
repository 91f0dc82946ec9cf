"""The Redis connection: one embedded server per process, and one clear message when Redis cannot be used."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from redis.exceptions import ResponseError

from config import Settings, load_settings
from hotline.processes import stop_process
from workers.connection import RedisUnavailable, check_redis, redis_connection, redis_problem


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def settings_for(redis_url: str, tmp_path: Path) -> Settings:
    return load_settings(tmp_path / "absent.toml", env={"REDIS_URL": redis_url, "HOTLINE_HOME": str(tmp_path)})


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[int]:
    """A real redis-server on a free loopback port that wants the password 'right-password'."""
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--requirepass", "right-password", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        assert wait_until_listening(port), "redis-server did not start"
        yield port
    finally:
        stop_process(server)


def wait_until_listening(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def test_redis_on_a_closed_port_does_not_answer(tmp_path: Path):
    port = free_port()
    settings = settings_for(f"redis://:secret@127.0.0.1:{port}/0", tmp_path)
    with pytest.raises(RedisUnavailable) as raised:
        check_redis(settings)
    assert str(raised.value) == (f"Redis at redis://:***@127.0.0.1:{port}/0 does not answer (connection refused): "
                                 "check redis.url / REDIS_URL, or start the server")
    assert raised.value.transient


def test_a_missing_unix_socket_does_not_answer(tmp_path: Path):
    settings = settings_for(f"unix://{tmp_path / 'no.sock'}", tmp_path)
    with pytest.raises(RedisUnavailable, match=r"does not answer \(no socket there\): check redis.url / REDIS_URL"):
        check_redis(settings)


def test_a_wrong_password_is_refused_and_waiting_cannot_help(tmp_path: Path, password_redis: int):
    settings = settings_for(f"redis://:wrong-password@127.0.0.1:{password_redis}/0", tmp_path)
    with pytest.raises(RedisUnavailable) as raised:
        check_redis(settings)
    assert "refused the login" in str(raised.value) and "check the password in redis.url / REDIS_URL" in str(raised.value)
    assert "wrong-password" not in str(raised.value) and not raised.value.transient
    check_redis(settings_for(f"redis://:right-password@127.0.0.1:{password_redis}/0", tmp_path))


def test_a_redis_error_about_data_is_left_alone(settings: Settings):
    assert redis_problem(ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
                         settings) is None


def test_threads_share_one_embedded_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings = load_settings(tmp_path / "absent.toml", env={"HOTLINE_HOME": str(tmp_path / "home")})
    connections = []
    threads = [threading.Thread(target=lambda: connections.append(redis_connection(settings))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(connection) for connection in connections}) == 1
    check_redis(settings)


def test_the_embedded_redis_stops_with_its_process_without_complaint(tmp_path: Path):
    script = ("import logging; logging.basicConfig(level=logging.INFO); from config import load_settings; "
              "from workers.connection import queue, redis_connection; settings = load_settings(); "
              "queue(settings).enqueue('os.getpid'); print(redis_connection(settings).pid)")
    env = {**os.environ, "HOTLINE_HOME": str(tmp_path / "home"), "HOTLINE_CONFIG": str(tmp_path / "absent.toml")}
    env.pop("REDIS_URL", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "shutdown failed" not in done.stderr, done.stderr
    assert has_exited(int(done.stdout)), "the embedded redis-server outlived its process"


def has_exited(pid: int) -> bool:
    """Gone, or a zombie: a daemon is reaped by init, whenever init gets to it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
