"""Prompts from real espeak-ng and from audio files made with ffmpeg; a broken file falls back to the text.

Hold music: the shipped tune (its level, length, band and seam), a configured file, and the
fallback to the shipped tune when that file is broken. Queue prompts: position and menu texts.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from config import Settings, load_settings
from telephony import prompts
from telephony.audio import decode
from telephony.prompts import SHIPPED_HOLD_MUSIC, PromptError, PromptLibrary, render_text
from telephony.sounds import make_hold_music
from tests.telephony.audio_checks import best_correlation, envelope, pcm_samples

pytestmark = pytest.mark.timeout(120)

FAKE_TTS = textwrap.dedent("""
    import sys, wave
    out, text, log = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(text + "\\n")
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1); wav.setsampwidth(2); wav.setframerate(16000)
        wav.writeframes(b"\\x10\\x00" * 16000)
""")


@pytest.fixture
def prompt_settings(tmp_path: Path) -> Settings:
    return load_settings(path=tmp_path / "absent.toml", env={"HOTLINE_HOME": str(tmp_path / "home")})


@pytest.fixture
def fake_tts(prompt_settings: Settings, tmp_path: Path) -> Path:
    """A TTS command that logs the text it was given and speaks one second of a constant."""
    script = tmp_path / "fake_tts.py"
    script.write_text(FAKE_TTS)
    log = tmp_path / "tts.log"
    prompt_settings.prompts.tts_command = f"{sys.executable} {script} {{out}} {{text}} {log}"
    return log


def ffmpeg(*arguments: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *arguments], check=True)


def test_greeting_from_real_espeak_is_mandarin_speech_and_cached(prompt_settings: Settings, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    greeting = PromptLibrary(prompt_settings).greeting()
    assert 2 * 8000 * 2 < len(greeting) < 15 * 8000 * 2 and len(greeting) % 2 == 0
    assert np.sqrt((pcm_samples(greeting).astype(np.float64) ** 2).mean()) > 300  # speech, not silence

    direct = tmp_path / "direct.wav"
    text = prompt_settings.prompts.greeting.replace("{company}", prompt_settings.general.company_name)
    subprocess.run(["espeak-ng", "-v", "cmn", "-s", "150", "-w", str(direct), text], check=True)
    assert best_correlation(pcm_samples(decode(direct)), pcm_samples(greeting), max_lag_s=0.1)[0] > 0.99

    cached = list((prompt_settings.home / "prompts").glob("*.wav"))
    assert len(cached) == 1
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))  # espeak-ng and ffmpeg gone: the cache answers
    assert PromptLibrary(prompt_settings).greeting() == greeting


def test_text_is_one_argument_and_company_is_filled_in(prompt_settings: Settings, fake_tts: Path) -> None:
    prompt_settings.general.company_name = "ACME; rm -rf / $(reboot)"
    library = PromptLibrary(prompt_settings)
    pcm = library.greeting()
    assert len(pcm) == 8000 * 2  # one second, resampled from 16 kHz
    library.greeting()  # made once per library
    PromptLibrary(prompt_settings).greeting()  # and once on disk
    assert fake_tts.read_text(encoding="utf-8") == "您好，ACME; rm -rf / $(reboot)，请问有什么可以帮您？\n"
    PromptLibrary(prompt_settings).closing()
    assert fake_tts.read_text(encoding="utf-8").splitlines()[-1] == prompt_settings.prompts.closing


def test_configured_files_win_over_text(prompt_settings: Settings, fake_tts: Path, tmp_path: Path) -> None:
    greeting_file, closing_file = tmp_path / "greeting.mp3", tmp_path / "closing.ogg"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1.5:sample_rate=44100", "-ac", "2", str(greeting_file))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=880:duration=0.5:sample_rate=48000", str(closing_file))
    prompt_settings.prompts.greeting_file = str(greeting_file)
    prompt_settings.prompts.closing_file = str(closing_file)
    library = PromptLibrary(prompt_settings)
    assert library.greeting() == decode(greeting_file) and abs(len(library.greeting()) / 16000 - 1.5) < 0.1
    assert library.closing() == decode(closing_file)
    assert not fake_tts.exists()


@pytest.mark.parametrize("setting", ["greeting_file", "closing_file"])
@pytest.mark.parametrize("content", [None, b"", b"this is not audio" * 100])
def test_unreadable_file_is_logged_by_its_setting_and_the_text_is_spoken(
        prompt_settings: Settings, fake_tts: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        setting: str, content: bytes | None) -> None:
    broken = tmp_path / "broken prompt.mp3"
    if content is not None:
        broken.write_bytes(content)
    setattr(prompt_settings.prompts, setting, str(broken))
    library = PromptLibrary(prompt_settings)
    prompt = library.greeting if setting == "greeting_file" else library.closing
    with caplog.at_level(logging.ERROR, logger="telephony.prompts"):
        assert len(prompt()) == 8000 * 2 and prompt() == prompt()  # the fake TTS's second
    [error] = caplog.records  # once per process, not once per call
    assert f"prompts.{setting}: " in error.getMessage() and "broken prompt.mp3" in error.getMessage()
    text = prompt_settings.prompts.greeting if setting == "greeting_file" else prompt_settings.prompts.closing
    spoken = text.replace("{company}", prompt_settings.general.company_name)
    assert fake_tts.read_text(encoding="utf-8").splitlines() == [spoken]


def test_broken_tts_command_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="no-such-tts is not installed"):
        render_text("你好", "no-such-tts -w {out} {text}", tmp_path)
    with pytest.raises(PromptError, match="exit code 1"):
        render_text("你好", "false {out} {text}", tmp_path)
    with pytest.raises(PromptError, match="wrote no audio"):
        render_text("你好", "espeak-ng --no-such-option -w {out} {text}", tmp_path)
    with pytest.raises(PromptError, match="no {out} placeholder"):
        render_text("你好", "espeak-ng {text}", tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left in the cache


def test_shipped_hold_music_is_music_all_along_in_the_phone_band_and_loops_without_a_click(
        prompt_settings: Settings) -> None:
    music = pcm_samples(PromptLibrary(prompt_settings).hold_music()).astype(np.float64)
    assert 20 <= len(music) / 8000 <= 40
    assert SHIPPED_HOLD_MUSIC.stat().st_size < 300_000
    levels = envelope(music, frame_ms=500)
    assert levels.min() > 0.2 * levels.mean() and levels.mean() > 1000  # never a quiet stretch, never a gap
    spectrum = np.abs(np.fft.rfft(music)) ** 2
    above_band = spectrum[np.fft.rfftfreq(len(music), 1 / 8000) > 3500].sum() / spectrum.sum()
    assert above_band < 0.001  # nothing G.711 would not carry
    # Where the loop turns, the waveform steps no further than it does anywhere else in the tune.
    steps = np.abs(np.diff(music))
    seam = abs(music[0] - music[-1])
    assert seam < np.percentile(steps, 95), (seam, np.median(steps))
    turning = np.concatenate([music[-4000:], music[:4000]])
    assert envelope(turning, frame_ms=100).min() > 0.2 * levels.mean()


def test_shipped_hold_music_is_what_its_script_makes(prompt_settings: Settings) -> None:
    made = make_hold_music.tune()
    shipped = pcm_samples(PromptLibrary(prompt_settings).hold_music()).astype(np.float64)
    assert len(made) == len(shipped)
    assert np.corrcoef(made, shipped)[0, 1] > 0.99  # the same tune, through the Vorbis codec


def test_configured_hold_music_is_used_and_decoded_once(prompt_settings: Settings, tmp_path: Path) -> None:
    music_file = tmp_path / "music.mp3"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=523:duration=3:sample_rate=44100", "-ac", "2", str(music_file))
    prompt_settings.queues.hold_music_file = str(music_file)
    library = PromptLibrary(prompt_settings)
    music = library.hold_music()
    assert music == decode(music_file) and abs(len(music) / 16000 - 3) < 0.1
    music_file.unlink()
    assert library.hold_music() is music


@pytest.mark.parametrize("content", [None, b"", b"this is not audio" * 100])
def test_broken_hold_music_file_is_logged_and_the_shipped_tune_plays(
        prompt_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes | None) -> None:
    broken = tmp_path / "broken music.ogg"
    if content is not None:
        broken.write_bytes(content)
    prompt_settings.queues.hold_music_file = str(broken)
    library = PromptLibrary(prompt_settings)
    with caplog.at_level(logging.ERROR, logger="telephony.prompts"):
        assert library.hold_music() == library.hold_music() == decode(SHIPPED_HOLD_MUSIC)
    [error] = caplog.records
    assert "queues.hold_music_file: " in error.getMessage() and "broken music.ogg" in error.getMessage()


def test_position_and_menu_are_mandarin_speech_from_real_espeak(prompt_settings: Settings, tmp_path: Path) -> None:
    library = PromptLibrary(prompt_settings)
    for prompt, text in [(library.position(2, 3), "您前面还有2位客户，预计等待约3分钟。"),
                         (library.position(0, 3), prompt_settings.queues.next_prompt),
                         (library.menu([("技术咨询", "1"), ("售后服务", "2")]), "技术咨询请按1，售后服务请按2。")]:
        assert np.sqrt((pcm_samples(prompt).astype(np.float64) ** 2).mean()) > 300
        direct = tmp_path / "direct.wav"
        subprocess.run(["espeak-ng", "-v", "cmn", "-s", "150", "-w", str(direct), text], check=True)
        assert best_correlation(pcm_samples(decode(direct)), pcm_samples(prompt), max_lag_s=0.1)[0] > 0.99


def test_queue_prompts_fill_their_texts_and_are_made_once(prompt_settings: Settings, fake_tts: Path) -> None:
    library = PromptLibrary(prompt_settings)
    for _ in range(3):  # a busy queue: every caller hears the same few texts
        library.position(2, 3)
        library.position(0, 7)
        library.menu([("技术咨询", "1"), ("售后服务", "2"), ("粤语服务", "3")])
    assert fake_tts.read_text(encoding="utf-8").splitlines() == [
        "您前面还有2位客户，预计等待约3分钟。", "您是下一位，请稍候。", "技术咨询请按1，售后服务请按2，粤语服务请按3。"]
    prompt_settings.queues.position_prompt = "前面{ahead}位，约{minutes}分钟"
    prompt_settings.queues.menu_choice = "按{key}：{name}"
    prompt_settings.queues.menu_prompt = "请选择：{choices}"
    library.position(4, 10)
    library.menu([("售后", "2")])
    assert fake_tts.read_text(encoding="utf-8").splitlines()[-2:] == ["前面4位，约10分钟", "请选择：按2：售后"]


def test_prompt_memory_keeps_the_most_recently_used(prompt_settings: Settings, fake_tts: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prompts, "CACHE_SIZE", 2)
    library = PromptLibrary(prompt_settings)
    first, second = library.position(1, 1), library.position(2, 1)
    assert library.position(1, 1) is first  # used again: now the most recent
    library.position(3, 1)  # the 2-ahead prompt leaves memory (the disk cache keeps it)
    assert library.position(1, 1) is first
    again = library.position(2, 1)
    assert again == second and again is not second
    assert len(fake_tts.read_text(encoding="utf-8").splitlines()) == 3
