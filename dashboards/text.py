"""Text from users' files shown on the pages as text, not markup (no streamlit import: the upload checks use it too)."""

from __future__ import annotations

from typing import Any

__all__ = ["md_text", "md_code"]

_MD_SPECIAL = "\\`*_{}[]()#+-.!|<>~$"


def md_text(value: Any) -> str:
    """``value`` as literal text inside ``st.markdown`` / ``st.caption``: markdown, LaTeX (``$``) and HTML
    characters are escaped and line breaks become spaces, so a user id, a catalogue title or a ticker from a
    user's file shows as typed — it cannot add links or images, start math or break the layout."""
    text = " ".join(str(value).split())
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in text)


def md_code(value: Any, limit: int | None = None, empty: str = " ") -> str:
    """``value`` as an inline code span: shown literally, a backtick in it cannot close the span, a line break
    cannot split it; with ``limit`` a longer text is shortened (ending in …)."""
    text = " ".join(str(value).replace("`", "'").split()) or empty
    if limit is not None and len(text) > limit:
        text = text[:limit - 1] + "…"
    return f"`{text}`"
