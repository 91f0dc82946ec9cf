"""``hotline transcribe``: a file to text, a call's recordings to ticket notes, a model's error rates.

    hotline transcribe FILE [--model DIR] [--json]   print the transcript of any audio file
    hotline transcribe --call ID                     transcribe a call's recordings into its ticket
    hotline transcribe --since DATE                  every recording since DATE not transcribed yet
    hotline transcribe --evaluate DIR                WER and CER on audio files with <name>.txt references
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from config import Settings
from workers import notes, speech, transcription
from workers.speech import BadAudio, SpeechModel
from workers.transcription import TranscriptionFailed

DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]


@click.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Vosk model directory (default: transcription.models of the default language).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: segments with channel, start, end, text, words.")
@click.option("--call", "call_id", type=int, help="Transcribe the recordings of this call into its ticket.")
@click.option("--since", type=click.DateTime(DATE_FORMATS),
              help="Transcribe every recording since this local date or time that has no transcript.")
@click.option("--evaluate", "folder", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Word and character error rates on a folder of audio files with <name>.txt references.")
@click.pass_context
def transcribe(ctx: click.Context, file: Path | None, model_dir: Path | None, as_json: bool, call_id: int | None,
               since: datetime | None, folder: Path | None) -> None:
    """Transcribe with the configured Vosk model (offline)."""
    from hotline.cli import settings_of

    chosen = [name for name, value in (("FILE", file), ("--call", call_id), ("--since", since),
                                       ("--evaluate", folder)) if value is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of FILE, --call, --since, --evaluate")
    settings = settings_of(ctx)
    if file is not None:
        print_transcript(file, load(settings, model_dir), as_json)
    elif folder is not None:
        print_scores(speech.evaluate(folder, load(settings, model_dir)), as_json)
    else:
        local = since.replace(tzinfo=ZoneInfo(settings.general.timezone)) if since else None
        model = load(settings, model_dir) if model_dir else None
        ids = transcription.pending_recordings(settings, call_id=call_id, since=local,
                                               model=model.name if model else None)
        transcribe_recordings(settings, ids, model)


def load(settings: Settings, model_dir: Path | None) -> SpeechModel:
    try:
        directory = str(model_dir) if model_dir else transcription.model_dir(
            settings, settings.transcription.default_language)
        return speech.vosk_model(directory)
    except (TranscriptionFailed, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None


def print_transcript(file: Path, model: SpeechModel, as_json: bool) -> None:
    try:
        result = speech.transcribe_file(file, model)
    except BadAudio as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"file": str(file), "model": model.name, "duration": result.duration,
                               "channels": result.channels, "segments": [asdict(s) for s in result.segments]},
                              ensure_ascii=False, indent=2))
        return
    for line in notes.dialogue(result.segments) or ["(未识别到语音)"]:
        click.echo(line)


def transcribe_recordings(settings: Settings, recording_ids: list[int], model: SpeechModel | None) -> None:
    """Each recording into its ticket, with a progress bar; failures are listed and set the exit code."""
    from tqdm import tqdm

    if not recording_ids:
        click.echo("nothing to transcribe")
        return
    failures: list[str] = []
    done = 0
    for recording_id in tqdm(recording_ids, desc="transcribing", unit="recording"):
        try:
            done += transcription.transcribe(settings, recording_id, model).state == "done"
        except TranscriptionFailed as exc:
            failures.append(f"recording {recording_id}: {exc}")
    click.echo(f"transcribed {done} of {len(recording_ids)} recordings")
    if failures:
        raise click.ClickException("\n".join(failures))


def print_scores(scores: list[speech.Score], as_json: bool) -> None:
    if not scores:
        raise click.ClickException("no audio file with a <name>.txt reference in the folder")
    total = totals(scores)
    if as_json:
        click.echo(json.dumps({"files": [{"file": s.name, "wer": s.wer, "cer": s.cer, "reference": s.reference,
                                          "hypothesis": s.hypothesis} for s in scores], **total},
                              ensure_ascii=False, indent=2))
        return
    for s in scores:
        click.echo(f"{s.name}\tWER {s.wer:.3f}\tCER {s.cer:.3f}\t{s.hypothesis}")
    click.echo(f"total ({len(scores)} files)\tWER {total['wer']:.3f}\tCER {total['cer']:.3f}")


def totals(scores: list[speech.Score]) -> dict[str, Any]:
    """Error rates over all files together: errors summed over reference lengths summed."""
    return {"wer": sum(s.word_errors for s in scores) / max(sum(s.words for s in scores), 1),
            "cer": sum(s.char_errors for s in scores) / max(sum(s.chars for s in scores), 1)}
