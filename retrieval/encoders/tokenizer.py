"""The encoders' tokenisers: texts in, each text's token ids (special tokens included, truncated) out.

A checkpoint folder whose ``tokenizer.json`` describes a BERT WordPiece tokeniser is run by the tokenizers
library alone (``FastTokenizer``): loading transformers to build the same tokeniser took 2.8 s of CPU in
every process that encodes a query (an API worker, each training-set worker), and it imports torch. It gives
transformers' ids: over 188,294 texts (the small world's documents, blocks and queries, CISI, and accented,
CJK, Korean, emoji, control-character and 3,000-character texts) at 16 to 512 tokens, both shipped
checkpoints matched ``AutoTokenizer`` on every id (tests/retrieval/test_tokenizer.py keeps that). Any
other checkpoint, or a hub id, gets transformers' own tokeniser behind the same two calls.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from retrieval.errors import ModelLoadError

#: tokenizer_config.json classes whose tokenizer.json can give transformers' ids, when the file agrees with
#: the config (``_file_is_config``).
FAST_CLASSES = frozenset({"BertTokenizer", "BertTokenizerFast"})


class TextTokenizer(Protocol):
    """What the encoders ask of a tokeniser."""

    pad_token_id: int

    def token_ids(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Each text's ids with the special tokens, truncated to ``max_length`` ids, unpadded."""
        ...

    def get_vocab(self) -> dict[str, int]: ...


class FastTokenizer:
    """A checkpoint's ``tokenizer.json`` on the tokenizers library, with truncation set per call's length
    and no padding (the file's own settings are replaced: MiniLM's pads and cuts every text to 128)."""

    def __init__(self, spec: str, pad_token_id: int) -> None:
        self._spec = spec  # the file's JSON: each truncation length gets its own tokeniser made from it
        self._by_length: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.pad_token_id = pad_token_id

    @classmethod
    def from_folder(cls, folder: Path) -> FastTokenizer:
        import tokenizers

        # One thread per call: the tokenizers library would otherwise spread a batch over every core.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        path = folder / "tokenizer.json"
        pad = _tokenizer_config(folder).get("pad_token", "[PAD]")
        if isinstance(pad, dict):  # transformers 4 writes special tokens as serialised AddedTokens
            pad = pad.get("content", "[PAD]")
        try:
            spec = path.read_text(encoding="utf-8")
            pad_id = tokenizers.Tokenizer.from_str(spec).token_to_id(str(pad))
        except ModelLoadError:
            raise
        except Exception as exc:  # tokenizers raises plain Exceptions on a malformed file
            raise ModelLoadError(f"cannot load a tokenizer from {path}: {exc}") from exc
        if pad_id is None:
            raise ModelLoadError(f"{path} has no padding token")
        return cls(spec, int(pad_id))

    def token_ids(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        encoded = self._for_length(max_length).encode_batch(list(texts), add_special_tokens=True)
        return [e.ids for e in encoded]

    def get_vocab(self) -> dict[str, int]:
        return self._for_length(0).get_vocab(with_added_tokens=True)

    def _for_length(self, max_length: int) -> Any:
        """One tokeniser per truncation length, configured once: a tokeniser's settings are shared by every
        thread that encodes with it, so none is reconfigured while another thread encodes."""
        found = self._by_length.get(max_length)
        if found is not None:
            return found
        import tokenizers

        with self._lock:
            if max_length not in self._by_length:
                tokenizer = tokenizers.Tokenizer.from_str(self._spec)
                tokenizer.no_padding()
                if max_length > 0:
                    tokenizer.enable_truncation(max_length=max_length)
                else:
                    tokenizer.no_truncation()
                self._by_length[max_length] = tokenizer
            return self._by_length[max_length]


class TransformersTokenizer:
    """transformers' ``AutoTokenizer`` behind ``TextTokenizer``: checkpoints without a BERT
    ``tokenizer.json``, and hub ids."""

    def __init__(self, tokenizer: Any) -> None:
        if tokenizer.pad_token_id is None:
            raise ModelLoadError(f"the tokenizer of {tokenizer.name_or_path} has no padding token")
        self.tokenizer = tokenizer
        self.pad_token_id = int(tokenizer.pad_token_id)

    def token_ids(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        return self.tokenizer(
            list(texts),
            truncation=True,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]

    def get_vocab(self) -> dict[str, int]:
        return self.tokenizer.get_vocab()


def load_tokenizer(name_or_path: str) -> TextTokenizer:
    """The checkpoint's tokeniser: ``FastTokenizer`` for a local BERT folder with ``tokenizer.json``,
    else transformers'."""
    folder = Path(name_or_path)
    config = _tokenizer_config(folder)  # {} for a hub id
    if config.get("tokenizer_class") in FAST_CLASSES and _file_is_config(folder / "tokenizer.json", config):
        return FastTokenizer.from_folder(folder)
    return TransformersTokenizer(auto_tokenizer(name_or_path))


def _file_is_config(path: Path, config: dict[str, Any]) -> bool:
    """Whether ``tokenizer.json`` tokenises as transformers' BERT tokenizer built from ``config`` would:
    transformers rebuilds the normaliser from the config's keys (with its defaults), so the file's must
    agree, with BERT's pre-tokeniser and [CLS] ... [SEP] template, and truncation on the right."""
    if not path.is_file():
        return False
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load a tokenizer from {path}: {exc}") from exc
    normaliser = spec.get("normalizer") or {}
    template = [
        next(iter(part.values())).get("id") for part in (spec.get("post_processor") or {}).get("single", [])
    ]
    return (
        normaliser.get("type") == "BertNormalizer"
        and normaliser.get("lowercase") == config.get("do_lower_case", True)
        and normaliser.get("strip_accents") == config.get("strip_accents")
        and normaliser.get("handle_chinese_chars") == config.get("tokenize_chinese_chars", True)
        and (spec.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
        and template == ["[CLS]", "A", "[SEP]"]
        and config.get("truncation_side", "right") == "right"
    )


def auto_tokenizer(name_or_path: str) -> Any:
    """transformers' ``AutoTokenizer`` for a folder or hub id (what the torch export and calibration call)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load a tokenizer from {name_or_path}: {exc}") from exc


def _tokenizer_config(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    return config if isinstance(config, dict) else {}
