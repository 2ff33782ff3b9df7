"""
The twistd plugin: ``twistd -n stasis [options]``.

Kept to one line of wiring on purpose: twistd imports every plugin module to
list them, so this must stay cheap and must not import stasis's internals.
"""

from twisted.application.service import ServiceMaker

stasis = ServiceMaker(
    "stasis",
    "stasis.tap",
    "A caching proxy for LLM APIs (OpenAI, Anthropic, Bedrock, Gemini).",
    "stasis",
)
