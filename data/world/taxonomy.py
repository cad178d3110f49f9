"""Pure vocabulary for the simulated search portal: genres, editorial angles and topical domains.

In: ``vocabulary.yaml`` beside this module, read and checked once by ``data.world.vocabulary``.
Out: ``GENRES``, ``GENRE_QUERY_WORDS``, ``GENRE_LABELS``, ``ANGLES`` and ``DOMAINS`` (``Domain`` records),
which the generators combine into realistic English doc bodies, smart-block titles and user queries.
``check_taxonomy()`` checks these values against every structural rule and raises ``DataError`` naming the
field that broke it.
"""

from data.world.vocabulary import Domain, Vocabulary, check_vocabulary, vocabulary

# Read at import: the simulator's modules take these as constants, and a bad file should stop it before any
# world is half written. The file is small (about 20 ms to parse and check).
_VOCABULARY = vocabulary()

GENRES: tuple[str, ...] = _VOCABULARY.genres

# How a user types each genre inside a query.
GENRE_QUERY_WORDS: dict[str, tuple[str, ...]] = _VOCABULARY.genre_query_words

# How a block title names each genre.
GENRE_LABELS: dict[str, str] = _VOCABULARY.genre_labels

# Editorial angles that distinguish several blocks serving one intent.
ANGLES: tuple[str, ...] = _VOCABULARY.angles

DOMAINS: tuple[Domain, ...] = _VOCABULARY.domains


def check_taxonomy() -> None:
    """Raise ``DataError`` naming the field when any structural rule of the taxonomy is broken."""
    check_vocabulary(Vocabulary(GENRES, GENRE_QUERY_WORDS, GENRE_LABELS, ANGLES, DOMAINS))
