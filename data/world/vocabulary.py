"""The simulator's vocabulary, read from ``vocabulary.yaml`` beside this module and checked on load.

In: a YAML file with ``genres`` (name, label, query words), ``angles`` and ``domains`` (entities, facets
with their words and aliases, special queries, sentence templates). Out: a frozen ``Vocabulary`` of tuples,
dicts and ``Domain`` records. ``vocabulary()`` reads the packaged file once per process;
``load_vocabulary(path)`` reads any file. A bad file raises ``DataError`` naming the file and the field
(``domains[0].facets[2].words``).

The rules are the simulator's assumptions, not style: queries are built by joining phrases with spaces, doc
text by formatting the templates, and every list is indexed by seeded draws, so its order and length matter.
"""

from __future__ import annotations

import io
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from data.errors import DataError

PACKAGED_VOCABULARY: Traversable = resources.files("data.world").joinpath("vocabulary.yaml")

_ENTITY_COUNT = 40
_FACET_COUNT = 8
_ANGLE_COUNT = 40
_MIN_DOMAINS = 10
_PLACEHOLDERS = frozenset({"entity", "facet", "word"})
_PHRASE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789 -")


@dataclass(frozen=True)
class Domain:
    """One topical area: its entities, the facets users ask about, and text material for docs."""

    name: str
    hint: str
    entities: tuple[str, ...]
    facets: tuple[str, ...]
    facet_words: dict[str, tuple[str, ...]]
    facet_aliases: dict[str, tuple[str, ...]]
    specials: tuple[tuple[str, str, str], ...]
    sentences: tuple[str, ...]


@dataclass(frozen=True)
class Vocabulary:
    """Everything the generators draw words from; the dicts are keyed and ordered like ``genres``."""

    genres: tuple[str, ...]
    genre_query_words: dict[str, tuple[str, ...]]
    genre_labels: dict[str, str]
    angles: tuple[str, ...]
    domains: tuple[Domain, ...]


# The file's shape. strict: a number where a phrase belongs is an error, not a silent str(); forbid: a
# misspelt key ("aliasses") is an error, not an ignored one.
class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Genre(_Record):
    name: str
    label: str
    query_words: list[str]


class _Facet(_Record):
    name: str
    words: list[str]
    aliases: list[str]


class _Special(_Record):
    query: str
    entity: str
    facet: str


class _Domain(_Record):
    name: str
    hint: str
    entities: list[str]
    facets: list[_Facet]
    specials: list[_Special]
    sentences: list[str]


class _File(_Record):
    genres: list[_Genre]
    angles: list[str]
    domains: list[_Domain]


class _Loader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """Safe YAML that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"duplicate key {key_node.value!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _fail(field: str, problem: str) -> NoReturn:
    raise DataError(problem, field=field)


def _check_phrase(field: str, value: str) -> None:
    """A lowercase ASCII phrase of words separated by single spaces (digits and hyphens allowed)."""
    if not value or not set(value) <= _PHRASE_CHARS or value != " ".join(value.split()):
        _fail(field, f"{value!r} is not a clean lowercase ascii phrase")


def _check_word(field: str, value: str) -> None:
    if not value.isascii() or not value.isalpha() or not value.islower():
        _fail(field, f"{value!r} is not a single lowercase word")


def _check_list(
    field: str, values: Sequence[str], low: int, high: int, *, phrases: bool = True, item: str = ""
) -> None:
    """Between low and high items, no item twice, and (if phrases) every item a clean phrase.

    ``item`` is the key under each list entry that holds the value (``.name`` for the genres' names).
    """
    if not low <= len(values) <= high:
        _fail(field, f"has {len(values)} items, expected {low}..{high}")
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            _fail(f"{field}[{i}]{item}", f"duplicate {value!r}")
        seen.add(value)
        if phrases:
            _check_phrase(f"{field}[{i}]{item}", value)


def _check_sentence(field: str, template: str) -> None:
    """Formats with exactly the placeholders the catalogue fills in (``catalog.py`` calls ``str.format``)."""
    if not template.isascii():
        _fail(field, f"{template!r} is not ascii")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        unknown = names - _PLACEHOLDERS
        if unknown:
            _fail(field, f"unknown placeholders {sorted(unknown)} in {template!r}")
        template.format(entity="e", facet="f", word="w")
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        _fail(field, f"{template!r} does not format: {exc}")


def _check_genres(vocab: Vocabulary) -> None:
    _check_list("genres", vocab.genres, 1, len(vocab.genres), item=".name")
    for field, keys in (("query_words", vocab.genre_query_words), ("label", vocab.genre_labels)):
        if list(keys) != list(vocab.genres):
            _fail(f"genres.{field}", f"keyed by {list(keys)}, expected the genres {list(vocab.genres)}")
    owner: dict[str, str] = {}
    for g, genre in enumerate(vocab.genres):
        words = vocab.genre_query_words[genre]
        _check_list(f"genres[{g}].query_words", words, 1, 10)
        for w, word in enumerate(words):
            if word in owner:
                _fail(f"genres[{g}].query_words[{w}]", f"{word!r} already names genre {owner[word]!r}")
            owner[word] = genre
        _check_phrase(f"genres[{g}].label", vocab.genre_labels[genre])
    _check_list("angles", vocab.angles, _ANGLE_COUNT, _ANGLE_COUNT)


def _check_facets(at: str, domain: Domain) -> None:
    _check_list(f"{at}.facets", domain.facets, _FACET_COUNT, _FACET_COUNT, item=".name")
    for field, mapping in (("words", domain.facet_words), ("aliases", domain.facet_aliases)):
        if list(mapping) != list(domain.facets):
            _fail(f"{at}.facets.{field}", f"keyed by {list(mapping)}, expected the facets {domain.facets}")
    for f, facet in enumerate(domain.facets):
        words = domain.facet_words[facet]
        _check_list(f"{at}.facets[{f}].words", words, 6, 8, phrases=False)
        for w, word in enumerate(words):
            _check_word(f"{at}.facets[{f}].words[{w}]", word)
        aliases = domain.facet_aliases[facet]
        _check_list(f"{at}.facets[{f}].aliases", aliases, 1, 3)
        if facet in aliases:
            _fail(f"{at}.facets[{f}].aliases", f"an alias repeats the facet {facet!r} itself")


def _check_domain(at: str, domain: Domain) -> None:
    _check_word(f"{at}.hint", domain.hint)
    _check_list(f"{at}.entities", domain.entities, _ENTITY_COUNT, _ENTITY_COUNT)
    _check_facets(at, domain)
    _check_list(f"{at}.specials", [query for query, _, _ in domain.specials], 4, 6, item=".query")
    for s, (query, entity, facet) in enumerate(domain.specials):
        # A special is a single-intent query of this domain: it must point at one of its entities and facets.
        if entity not in domain.entities:
            _fail(f"{at}.specials[{s}].entity", f"{query!r} names {entity!r}, not an entity of this domain")
        if facet not in domain.facets:
            _fail(f"{at}.specials[{s}].facet", f"{query!r} names {facet!r}, not a facet of this domain")
        if query == f"{entity} {facet}":
            _fail(f"{at}.specials[{s}].query", f"{query!r} is just entity + facet (an ordinary query)")
    _check_list(f"{at}.sentences", domain.sentences, 8, 10, phrases=False)
    for s, template in enumerate(domain.sentences):
        _check_sentence(f"{at}.sentences[{s}]", template)


def check_vocabulary(vocab: Vocabulary) -> None:
    """Raise ``DataError`` naming the field when a rule breaks (no file: ``parse_vocabulary`` adds it)."""
    _check_genres(vocab)
    if len(vocab.domains) < _MIN_DOMAINS:
        _fail("domains", f"has {len(vocab.domains)} domains, expected at least {_MIN_DOMAINS}")
    names = [domain.name for domain in vocab.domains]
    _check_list("domains", names, 1, len(names), item=".name")
    # Queries name an entity without its domain, so an entity in two domains would be two intents at once.
    owner: dict[str, str] = {}
    for d, domain in enumerate(vocab.domains):
        at = f"domains[{d}]"
        _check_domain(at, domain)
        for e, entity in enumerate(domain.entities):
            if entity in owner:
                _fail(f"{at}.entities[{e}]", f"{entity!r} already belongs to domain {owner[entity]!r}")
            owner[entity] = domain.name


def _field(loc: Sequence[int | str]) -> str:
    """'domains[0].facets[2].words' from a pydantic error location."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"


def _build(file: _File) -> Vocabulary:
    return Vocabulary(
        genres=tuple(genre.name for genre in file.genres),
        genre_query_words={genre.name: tuple(genre.query_words) for genre in file.genres},
        genre_labels={genre.name: genre.label for genre in file.genres},
        angles=tuple(file.angles),
        domains=tuple(
            Domain(
                name=domain.name,
                hint=domain.hint,
                entities=tuple(domain.entities),
                facets=tuple(facet.name for facet in domain.facets),
                facet_words={facet.name: tuple(facet.words) for facet in domain.facets},
                facet_aliases={facet.name: tuple(facet.aliases) for facet in domain.facets},
                specials=tuple((s.query, s.entity, s.facet) for s in domain.specials),
                sentences=tuple(domain.sentences),
            )
            for domain in file.domains
        ),
    )


def _domain_named(field: str | None, raw: dict[str, Any]) -> str:
    """ "domain 'food': " for a field under ``domains[1]``, so whoever edits the long file finds the spot."""
    found = re.match(r"domains\[(\d+)\]", field or "")
    domains = raw.get("domains")
    if found is None or not isinstance(domains, list) or int(found[1]) >= len(domains):
        return ""
    entry = domains[int(found[1])]
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"domain {name!r}: " if isinstance(name, str) else ""


def parse_vocabulary(text: str, source: Path | Traversable | str) -> Vocabulary:
    """Parse and check one vocabulary file's text; ``source`` names the file in errors."""
    stream = io.StringIO(text)
    stream.name = str(source)  # type: ignore[misc]  # YAML errors then say where, not "<unicode string>"
    try:
        raw = yaml.load(stream, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise DataError(f"not valid YAML: {exc}", path=str(source), line=line) from exc
    if not isinstance(raw, dict):
        raise DataError("expected a mapping with genres, angles and domains", path=str(source))
    try:
        file = _File.model_validate(raw)
    except ValidationError as exc:
        # DataError names one field: the first; the others ride along in the message, so one run shows all.
        first, *others = exc.errors()
        field = _field(first["loc"])
        message = _domain_named(field, raw) + first["msg"]
        if others:
            message += "; also " + "; ".join(f"{_field(err['loc'])}: {err['msg']}" for err in others[:5])
            message += f" (and {len(others) - 5} more)" if len(others) > 5 else ""
        raise DataError(message, path=str(source), field=field) from exc
    vocab = _build(file)
    try:
        check_vocabulary(vocab)
    except DataError as exc:
        message = _domain_named(exc.field, raw) + exc.reason
        raise DataError(message, path=str(source), field=exc.field) from None
    return vocab


def load_vocabulary(path: Path | Traversable) -> Vocabulary:
    """Read and check a vocabulary file (uncached: tests and tools pass their own files)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read the vocabulary: {exc.strerror or exc}", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte {exc.start})", path=str(path)) from exc
    return parse_vocabulary(text, path)


@lru_cache(maxsize=1)
def vocabulary() -> Vocabulary:
    """The packaged ``vocabulary.yaml``, read and checked once per process."""
    return load_vocabulary(PACKAGED_VOCABULARY)
