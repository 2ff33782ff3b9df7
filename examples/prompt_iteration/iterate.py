"""
Prompt iteration: run a set of prompts, change one, run them again.

This is the inner loop of prompt engineering, and where waiting on the model
breaks concentration: every run re-sends the prompts that did not change. With
the SDK pointed at stasis, those come back from the cache in a millisecond or
two and only the prompt you edited goes to the model. Each line says which
(``X-Stasis-Status``: ``HIT`` or ``MISS``) and how long it took.

    export OPENAI_BASE_URL=http://127.0.0.1:4000/v1   # a running `stasis start`
    python iterate.py                 # prompts.json next to this file
    python iterate.py my-prompts.json # edit a prompt in it, run again: one MISS
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from openai import OpenAI

__all__ = ["Prompt", "Result", "load_prompts", "run_prompts"]

MODEL = "gpt-4o-mini"
PROMPTS = Path(__file__).with_name("prompts.json")


@dataclass(frozen=True)
class Prompt:
    name: str
    system: str
    user: str


@dataclass(frozen=True)
class Result:
    prompt: Prompt
    answer: str
    #: stasis's ``X-Stasis-Status``: ``HIT`` (from the cache) or ``MISS`` (from the model).
    status: str
    seconds: float


def load_prompts(path: Path = PROMPTS) -> list[Prompt]:
    return [Prompt(**item) for item in json.loads(path.read_text("utf-8"))]


def run_prompts(client: OpenAI, prompts: list[Prompt], out: TextIO = sys.stdout) -> list[Result]:
    """Send each prompt once, printing a line per answer as it comes."""
    results = []
    for prompt in prompts:
        started = time.perf_counter()
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL,
            temperature=0,
            messages=[
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ],
        )
        seconds = time.perf_counter() - started
        answer = raw.parse().choices[0].message.content or ""
        result = Result(prompt, answer, raw.headers.get("x-stasis-status", "-"), seconds)
        line = f"  {result.status:<5} {seconds * 1000:6.0f} ms  {prompt.name}: {answer[:60]}"
        print(line, file=out)
        results.append(result)
    return results


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else PROMPTS
    run_prompts(OpenAI(), load_prompts(path))
