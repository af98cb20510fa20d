"""The training text processor (SPEC §2), applied where the official data code applies it.

It is BLIP's caption processor: lowercase, each of ``.!"()*#:;~`` becomes a space, runs of two or
more whitespace characters become one space, trailing newlines and outer spaces are stripped, and
at most ``max_words`` space-separated words are kept.  It is written out exactly, quirks included
(a lone tab or newline inside the text is not collapsed), because the weights were trained on its
output.
"""

from __future__ import annotations

import re

MAX_WORDS = 50
_MARKS_RE = re.compile(r'[.!"()*#:;~]')
_RUNS_RE = re.compile(r"\s{2,}")


def process_text(text: str, max_words: int = MAX_WORDS) -> str:
    """Normalise a caption, question or referring expression the way training data was."""
    out = _MARKS_RE.sub(" ", text.lower())
    out = _RUNS_RE.sub(" ", out)
    out = out.rstrip("\n").strip(" ")
    words = out.split(" ")
    if len(words) > max_words:
        out = " ".join(words[:max_words])
    return out
