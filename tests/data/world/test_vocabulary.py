"""The simulator's vocabulary file: what it loads is what the generators use, and a broken file is refused
with a DataError naming the file and the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from data.errors import DataError
from data.world import generate, population, queries, sim_catalog, taxonomy
from data.world.vocabulary import PACKAGED_VOCABULARY, load_vocabulary, parse_vocabulary, vocabulary

Edit = Callable[[dict[str, Any]], None]


def _raw() -> dict[str, Any]:
    return yaml.safe_load(PACKAGED_VOCABULARY.read_text(encoding="utf-8"))


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "vocabulary.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _set(*keys: str | int, value: Any) -> Edit:
    def edit(raw: dict[str, Any]) -> None:
        node: Any = raw
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return edit


def _delete(*keys: str | int) -> Edit:
    def edit(raw: dict[str, Any]) -> None:
        node: Any = raw
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return edit


def _copy(source: tuple[str | int, ...], target: tuple[str | int, ...]) -> Edit:
    """Overwrite the value at ``target`` with the one at ``source`` (a duplicate on purpose)."""

    def edit(raw: dict[str, Any]) -> None:
        node: Any = raw
        for key in source:
            node = node[key]
        _set(*target, value=node)(raw)

    return edit


def test_the_packaged_file_loads_once_and_is_what_the_simulator_uses() -> None:
    vocab = vocabulary()
    assert vocabulary() is vocab
    assert taxonomy.GENRES is vocab.genres and taxonomy.ANGLES is vocab.angles
    assert taxonomy.GENRE_QUERY_WORDS is vocab.genre_query_words and taxonomy.DOMAINS is vocab.domains
    # The generators hold the very objects the loader built, not copies that could drift.
    assert sim_catalog.DOMAINS is queries.DOMAINS is population.DOMAINS is generate.DOMAINS is vocab.domains
    assert sim_catalog.ANGLES is vocab.angles and sim_catalog.GENRE_LABELS is vocab.genre_labels
    assert queries.GENRE_QUERY_WORDS is vocab.genre_query_words and sim_catalog.GENRES is vocab.genres
    assert max(len(domain.facets) for domain in vocab.domains) == sim_catalog.N_FACETS
    fresh = load_vocabulary(PACKAGED_VOCABULARY)
    assert fresh is not vocab and fresh == vocab
    taxonomy.check_taxonomy()


def test_the_loaded_values_match_the_file() -> None:
    raw = _raw()
    vocab = vocabulary()
    assert vocab.genres == tuple(genre["name"] for genre in raw["genres"])
    assert vocab.genre_labels == {genre["name"]: genre["label"] for genre in raw["genres"]}
    assert vocab.angles == tuple(raw["angles"])
    for domain, entry in zip(vocab.domains, raw["domains"], strict=True):
        assert domain.entities == tuple(entry["entities"])
        assert domain.facets == tuple(facet["name"] for facet in entry["facets"])
        assert domain.facet_aliases == {facet["name"]: tuple(facet["aliases"]) for facet in entry["facets"]}
        assert domain.specials == tuple((s["query"], s["entity"], s["facet"]) for s in entry["specials"])
    assert isinstance(vocab.genre_query_words["blog"], tuple)
    assert isinstance(vocab.domains[0].facet_words[vocab.domains[0].facets[0]], tuple)


def test_a_generated_world_records_the_vocabulary(tiny_world: Path) -> None:
    model = json.loads((tiny_world / "truth" / "world_model.json").read_text(encoding="utf-8"))
    vocab = vocabulary()
    assert model["genres"] == list(vocab.genres)
    assert model["domains"] == [{"name": d.name, "facets": list(d.facets)} for d in vocab.domains]


BROKEN: dict[str, tuple[Edit, str, str]] = {
    # case: (edit to the packaged file, field named, words in the message)
    "missing key": (_delete("domains", 1, "hint"), "domains[1].hint", "Field required"),
    "missing section": (_delete("angles"), "angles", "Field required"),
    "misspelt key": (_set("domains", 0, "aliasses", value=["x"]), "domains[0].aliasses", "Extra inputs"),
    "number for a phrase": (_set("angles", 3, value=7), "angles[3]", "valid string"),
    "phrase for a list": (_set("domains", 2, "facets", value="rainy day"), "domains[2].facets", "valid list"),
    "empty list": (_set("domains", 0, "sentences", value=[]), "domains[0].sentences", "has 0 items"),
    "duplicate genre": (_copy(("genres", 0, "name"), ("genres", 2, "name")), "genres[2].name", "duplicate"),
    "duplicate domain": (
        _copy(("domains", 0, "name"), ("domains", 4, "name")),
        "domains[4].name",
        "duplicate",
    ),
    "duplicate facet": (
        _copy(("domains", 1, "facets", 0, "name"), ("domains", 1, "facets", 5, "name")),
        "domains[1].facets[5].name",
        "duplicate",
    ),
    "entity in two domains": (
        _copy(("domains", 0, "entities", 0), ("domains", 3, "entities", 7)),
        "domains[3].entities[7]",
        "already belongs to domain",
    ),
    "query word of two genres": (
        _copy(("genres", 0, "query_words", 0), ("genres", 1, "query_words", 0)),
        "genres[1].query_words[0]",
        "already names genre",
    ),
    "special names a foreign entity": (
        _copy(("domains", 1, "entities", 0), ("domains", 0, "specials", 2, "entity")),
        "domains[0].specials[2].entity",
        "not an entity of this domain",
    ),
    "special names an unknown facet": (
        _set("domains", 5, "specials", 0, "facet", value="nightlife"),
        "domains[5].specials[0].facet",
        "not a facet of this domain",
    ),
    "unknown placeholder": (
        _set("domains", 2, "sentences", 1, value="Try {entity} with {topping}."),
        "domains[2].sentences[1]",
        "unknown placeholders",
    ),
    "capitals in a phrase": (
        _set("domains", 0, "entities", 0, value="Seoul"),
        "domains[0].entities[0]",
        "phrase",
    ),
    "too few angles": (_delete("angles", 39), "angles", "expected 40..40"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_file_is_refused_naming_the_file_and_field(tmp_path: Path, case: str) -> None:
    edit, field, words = BROKEN[case]
    raw = _raw()
    edit(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(DataError) as caught:
        load_vocabulary(path)
    assert caught.value.path == str(path)
    assert caught.value.field == field
    assert words in caught.value.reason
    assert str(path) in str(caught.value) and f"field '{field}'" in str(caught.value)


def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    text = PACKAGED_VOCABULARY.read_text(encoding="utf-8")
    # A second 'hint' in the first domain: plain YAML would keep the last one without a word.
    doubled = text.replace("    hint: travel\n", "    hint: travel\n    hint: trip\n", 1)
    assert doubled != text
    path = tmp_path / "vocabulary.yaml"
    path.write_text(doubled, encoding="utf-8")
    with pytest.raises(DataError, match="duplicate key 'hint'") as caught:
        load_vocabulary(path)
    assert caught.value.path == str(path)
    assert caught.value.line == doubled.splitlines().index("    hint: trip") + 1


@pytest.mark.parametrize(
    ("text", "words"),
    [("genres: [\n", "not valid YAML"), ("- a list\n", "expected a mapping"), ("", "expected a mapping")],
)
def test_text_that_is_no_vocabulary_is_refused(text: str, words: str) -> None:
    with pytest.raises(DataError, match=words) as caught:
        parse_vocabulary(text, "bad.yaml")
    assert caught.value.path == "bad.yaml"


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(DataError, match="cannot read") as caught:
        load_vocabulary(path)
    assert caught.value.path == str(path)


def test_check_taxonomy_names_the_field_of_a_broken_value(monkeypatch: pytest.MonkeyPatch) -> None:
    angles = taxonomy.ANGLES
    monkeypatch.setattr(taxonomy, "ANGLES", (angles[0], angles[0], *angles[2:]))
    with pytest.raises(DataError, match="duplicate") as caught:
        taxonomy.check_taxonomy()
    assert caught.value.field == "angles[1]"
