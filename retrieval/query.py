"""Query checks shared by every retriever: refuse what the models cannot handle, with a clear reason."""

from __future__ import annotations

import unicodedata

from retrieval.config import QueryLimits
from retrieval.errors import QueryError


def normalise(query: str) -> str:
    """Lower-case and collapse whitespace: the key the behavioural logs and the query cache use."""
    return " ".join(query.lower().split())


def _is_latin(ch: str) -> bool:
    # Unicode names of Latin letters start with "LATIN" (covers accented letters: café, naïve).
    return ch.isascii() or unicodedata.name(ch, "").startswith("LATIN")


def check_query(query: object, limits: QueryLimits) -> str:
    """Return the stripped query, or raise QueryError for an empty, over-long or non-Latin-script one.

    The shipped encoders are English models: a query in another script would be split into unknown-token
    pieces and match arbitrary blocks, so it is refused rather than answered with noise.
    """
    if not isinstance(query, str):
        raise QueryError(f"a query must be a string, got {type(query).__name__}")
    text = query.strip()
    if not text:
        raise QueryError("empty query")
    if len(text) > limits.max_chars:
        raise QueryError(f"query too long: {len(text)} characters (at most {limits.max_chars})")
    letters = [ch for ch in text if ch.isalpha()]
    if letters:
        latin = sum(_is_latin(ch) for ch in letters) / len(letters)
        if latin < limits.min_latin_share:
            raise QueryError(
                f"unsupported language: {latin:.0%} of the query's letters are Latin script "
                f"(at least {limits.min_latin_share:.0%} needed; the encoders are English models)"
            )
    return text
