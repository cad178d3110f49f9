"""The encoders' tokenisers: the shipped checkpoints' ``tokenizer.json`` on the tokenizers library gives
transformers' ids (special tokens, truncation, no padding), loads without importing transformers, and any
other checkpoint falls back to transformers' own tokeniser; broken files are named."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.encoders.loading import default_dense_path, default_splade_path
from retrieval.encoders.tokenizer import (
    FastTokenizer,
    TransformersTokenizer,
    auto_tokenizer,
    load_tokenizer,
)
from retrieval.errors import ModelLoadError

CHECKPOINTS = {"dense": default_dense_path, "splade": default_splade_path}


def _texts(tiny_world: Path) -> list[str]:
    import pyarrow.parquet as pq

    texts: list[str] = []
    for name in ("docs.parquet", "blocks.parquet"):
        table = pq.read_table(tiny_world / name)
        for column in ("title", "body", "keywords"):
            if column in table.column_names and table.schema.field(column).type == "string":
                texts += [t for t in table[column].to_pylist() if t]
    rng = random.Random(7)
    alphabet = "abcdefghij klmnopqrstuvwxyzé한中😀.,'-\u0301\u00a0\u200b\t"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(300)]
    texts += [
        "", " ", "\t\n", "Café naïve résumé", "ÅNGSTRÖM", "제주도 맛집", "済州島の観光", "北京 烤鸭",
        "emoji 😀 test", "a\u0000b\u200bc", "x" * 3000, "word " * 600, "don't stop—now…",
        "\uff26\uff35\uff2c\uff2c \uff57\uff49\uff44\uff54\uff48",  # full-width letters
        "ß straße", "İstanbul", "ﬁ ligature", "\u00adsoft\u00adhyphen",
    ]  # fmt: skip
    return texts


@pytest.mark.parametrize("which", sorted(CHECKPOINTS))
@pytest.mark.parametrize("max_length", [8, 64, 256])
def test_fast_tokenizer_gives_transformers_ids(tiny_world: Path, which: str, max_length: int) -> None:
    """Every id equal to ``AutoTokenizer``'s, as the encoders called it. MiniLM's file pads and cuts every
    text to 128: that must not leak (a 600-word text keeps ``max_length`` ids, a short one no padding)."""
    path = str(CHECKPOINTS[which]())
    fast, reference = load_tokenizer(path), TransformersTokenizer(auto_tokenizer(path))
    assert isinstance(fast, FastTokenizer)
    texts = _texts(tiny_world)
    ids = fast.token_ids(texts, max_length)
    assert ids == reference.token_ids(texts, max_length)
    assert max(len(row) for row in ids) == max_length and min(len(row) for row in ids) == 2  # [CLS] [SEP]
    assert fast.pad_token_id == reference.pad_token_id
    if max_length == 8:
        assert fast.get_vocab() == reference.get_vocab()


def test_loading_the_shipped_tokenizers_imports_no_transformers() -> None:
    code = (
        "import sys; from retrieval.encoders.tokenizer import load_tokenizer; "
        "from retrieval.encoders.loading import default_dense_path, default_splade_path; "
        "[load_tokenizer(str(p())).token_ids(['jeju island'], 16) "
        "for p in (default_dense_path, default_splade_path)]; "
        "print('transformers' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_other_checkpoints_use_transformers_tokenizer(tmp_path: Path) -> None:
    """No tokenizer.json (a vocab.txt checkpoint), or a tokeniser class the fast path was not checked
    against: transformers' tokeniser, with the same ids where both apply."""
    source = default_dense_path()
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, plain / name)
    other = tmp_path / "other"
    shutil.copytree(source, other)
    config = json.loads((other / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "RobertaTokenizer"
    (other / "tokenizer_config.json").write_text(json.dumps(config))
    cased = tmp_path / "cased"  # transformers builds the normaliser from the config, not from the file
    shutil.copytree(source, cased)
    config = json.loads((cased / "tokenizer_config.json").read_text())
    config["do_lower_case"] = False
    (cased / "tokenizer_config.json").write_text(json.dumps(config))
    expected = load_tokenizer(str(source)).token_ids(["Jeju island restaurants"], 32)
    for folder in (plain, other, cased):
        tokenizer = load_tokenizer(str(folder))
        assert isinstance(tokenizer, TransformersTokenizer)
    assert load_tokenizer(str(plain)).token_ids(["Jeju island restaurants"], 32) == expected


def test_a_padding_token_written_as_an_added_token_is_read(tmp_path: Path) -> None:
    """transformers 4 saves special tokens as ``{"__type": "AddedToken", "content": ...}``."""
    folder = tmp_path / "added"
    shutil.copytree(default_splade_path(), folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["pad_token"] = {"__type": "AddedToken", "content": "[PAD]", "lstrip": False, "rstrip": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = load_tokenizer(str(folder))
    assert isinstance(tokenizer, FastTokenizer) and tokenizer.pad_token_id == 0


def test_a_broken_tokenizer_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(default_splade_path(), folder)
    text = (folder / "tokenizer.json").read_text()
    (folder / "tokenizer.json").write_text(text[: len(text) // 2])  # truncated mid-file
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json"):
        load_tokenizer(str(folder))
