"""Small helpers for the text tadkit prints."""
from __future__ import annotations


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``"1 video"``, ``"3 videos"``, ``"0 videos"``; ``plural_form`` for irregular nouns
    (``plural(2, "class", "classes")``)."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"
