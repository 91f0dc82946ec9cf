"""The ticket note made from a transcript: summary line, keywords, dialogue order."""

from __future__ import annotations

from models.transcript import Channel, TranscriptSegment
from workers import notes
from workers.speech import Segment


def test_dialogue_is_in_order_of_time_with_speakers_and_clock() -> None:
    segments = [Segment("agent", 65.2, 67.0, "您好 请 讲"), Segment("customer", 3.0, 4.0, "喂")]
    assert notes.dialogue(segments) == ["[00:03] 客户: 喂", "[01:05] 坐席: 您好请讲"]


def test_stored_segments_read_the_same_as_fresh_ones() -> None:
    stored = TranscriptSegment(channel=Channel.AGENT, start=1.0, end=2.0, text="您好", words=[])
    assert notes.dialogue([stored]) == ["[00:01] 坐席: 您好"]


def test_summary_counts_complaint_words_and_model_numbers() -> None:
    segments = [
        Segment("customer", 0, 6, "我 要 投诉 你们 的 X200 洗衣机 质量 问题 还是 不满意"),
        Segment("customer", 7, 9, "再 投诉 一次 要 退货 给 差评"),
        Segment("agent", 6, 7, "请问 型号 是 kfr-35gw 吗"),
    ]
    summary = notes.summarize(segments, 200.4)
    assert summary.keywords == {"投诉": 2, "不满意": 1, "退货": 1, "差评": 1, "质量问题": 1}
    assert summary.model_numbers == ["X200", "KFR-35GW"]
    assert summary.talk_share == {"customer": 0.889, "agent": 0.111}
    assert notes.summary_line(summary) == (
        "通话转写 · 时长 03:20 · 客户 89% / 坐席 11% · 关键词: 投诉×2, 不满意, 退货, 差评, 质量问题 · 型号: X200, KFR-35GW")


def test_mixed_text_keeps_spaces_between_latin_words() -> None:
    assert notes.joined("型号 是 X 200 ok then") == "型号是X 200 ok then"


def test_a_call_without_speech_says_so() -> None:
    text, summary = notes.transcript_note([], 12.0)
    assert text == "通话转写 · 时长 00:12 · 客户 0% / 坐席 0%\n(未识别到语音)"
    assert summary.keywords == {} and summary.model_numbers == []


def test_failure_note_names_the_recording_and_the_command_to_retry() -> None:
    text = notes.failure_note("no speech model configured", "/rec/1.wav", 7)
    assert "通话转写失败: no speech model configured" in text
    assert "/rec/1.wav" in text and "hotline transcribe --call 7" in text


def test_flagged_words_are_a_setting() -> None:
    segments = [Segment("customer", 0, 2, "漏水 了 要 投诉")]
    assert notes.summarize(segments, 2.0, keywords=["漏水"]).keywords == {"漏水": 1}
