"""Command groups of the hotline CLI, one module each (sip, calls, transcribe…)."""
