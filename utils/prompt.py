"""The ``--prompt`` template: the text the model reads for a query (shared by the data sets, inference and the
checkpoint settings)."""
from __future__ import annotations

from typing import Optional

from utils.errors import UsageError

PROMPT_PLACEHOLDER = "{pseudo_query}"


def apply_prompt(query: str, prompt: Optional[str]) -> str:
    """The text fed to the model: the prompt with the query in place of ``{pseudo_query}``, lower-cased."""
    return (prompt.replace(PROMPT_PLACEHOLDER, query) if prompt else query).lower()


def check_prompt(prompt: Optional[str]) -> None:
    """Raise ``UsageError`` when a non-empty ``--prompt`` lacks the ``{pseudo_query}`` placeholder."""
    if prompt and PROMPT_PLACEHOLDER not in prompt:
        raise UsageError(f"--prompt {prompt!r} has no {PROMPT_PLACEHOLDER} placeholder: every query would read the "
                         "same; include it, e.g. 'find the region that corresponds to the description "
                         "{pseudo_query}'")
