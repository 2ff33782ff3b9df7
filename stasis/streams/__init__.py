"""Streamed answers: finding event boundaries, reading events, recording, pacing replays."""
