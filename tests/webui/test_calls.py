"""The calls page: live calls, the recent log, recordings to play."""

import wave

from models.call import CallOutcome, HangupParty
from models.calllog import log_inbound, mark_answered, mark_ended, open_recording, ticket_for_call


def test_live_and_recent_calls_with_ticket_and_recording(logged_in, db, settings, tmp_path):
    live = log_inbound(db, settings, caller="13800138000", callee="1000", sip_call_id="a")
    ended = log_inbound(db, settings, caller="13900139000", callee="1000", sip_call_id="b")
    mark_answered(db, ended)
    mark_ended(db, ended, outcome=CallOutcome.COMPLETED, hangup_by=HangupParty.CUSTOMER)
    ticket = ticket_for_call(db, settings, ended)
    path = tmp_path / "r.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0" * 3200)
    recording = open_recording(db, settings, ended, str(path))
    db.commit()

    page = logged_in.get("/calls/").get_data(as_text=True)
    assert "实时通话 (1)" in page and "+8613800138000" in page and "振铃" in page
    assert ticket.number in page and "已完成" in page
    audio = logged_in.get(f"/calls/recordings/{recording.id}.wav")
    assert audio.status_code == 200 and audio.data[:4] == b"RIFF"
    assert live.id != ended.id


def test_unknown_recording_is_404(logged_in):
    assert logged_in.get("/calls/recordings/999.wav").status_code == 404
