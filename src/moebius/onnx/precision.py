"""Lower-precision copies of exported graphs: float16 weights and activations, or int8 weights.

* ``float16``: every float tensor of the graph becomes float16 except the inputs and outputs (the runtime
  keeps feeding float32) and the ops listed in :data:`FLOAT32_OPS`, which run in float32 between casts.
* ``int8``: dynamic quantization (onnxruntime.quantization): the weights of MatMul/Gemm (the Mix-FFN, λ
  projections, attention) and Conv become int8, activations are quantized per call from their observed
  range. Everything else stays float32: normalisations (their statistics need the range), softmax,
  the einsum contractions of the λ layers (no integer kernel exists for Einsum) and resizing.
"""

from __future__ import annotations

import os
from pathlib import Path

from .layout import external_data_name

# Ops kept in float32 in a float16 graph. Normalisations accumulate sums of squares over whole feature maps
# (float16's 65504 overflows on 64² maps); softmax exponentiates. The timestep sinusoid also stays float32
# (:func:`_timestep_nodes`): float16 cannot tell t = 999 from 999.5, and cos(t·f) can.
FLOAT32_OPS = ["InstanceNormalization", "LayerNormalization", "GroupNormalization", "BatchNormalization",
               "Softmax", "Resize"]
# Ops whose weights int8 dynamic quantization converts.
INT8_OPS = ["MatMul", "Gemm", "Conv"]
# Keep weights beside the graph above this size (a protobuf file cannot pass 2 GiB).
_EXTERNAL_BYTES = 1 << 30


def convert_precision(path: Path, dtype: str, quantize: str | None) -> None:
    """Rewrite the graph at ``path`` (and its external data) in place at the requested precision.

    Block-wise attention (:mod:`moebius.onnx.attention`) is undone for the conversion and redone after it:
    the converters cannot follow a Scan body that reads tensors of the outer graph.
    """
    if dtype == "float16":
        _to_float16(path)
    if quantize == "int8":
        _quantize_int8(path)


def graph_bytes(path: Path) -> int:
    """Bytes of the graph at ``path`` with its external data."""
    data = path.with_name(external_data_name(path.name))
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def save_graph(model, path: Path, size_hint: int) -> None:  # type: ignore[no-untyped-def]
    """Write ``model`` to ``path``, its weights beside it when ``size_hint`` bytes would pass the limit."""
    import onnx

    data = path.with_name(external_data_name(path.name))
    if data.is_file():
        data.unlink()
    external = size_hint > _EXTERNAL_BYTES
    onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=data.name if external else None)


def _load_plain(path: Path):  # type: ignore[no-untyped-def]
    """The graph without the exporter's recorded intermediate shapes, which onnx's shape inference can
    contradict for symbolic sizes (the converters re-infer what they need)."""
    import onnx

    model = onnx.load_model(str(path))
    del model.graph.value_info[:]
    return model


def _drop_repeated_casts(model) -> None:  # type: ignore[no-untyped-def]
    """The float16 converter gives a tensor read by two float32-only nodes two identical casts of one name;
    onnx refuses a name defined twice, and one cast serves both."""
    seen: set[str] = set()
    keep = []
    for node in model.graph.node:
        if node.op_type == "Cast" and node.name in seen:
            continue
        seen.add(node.name)
        keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def _timestep_nodes(model) -> list[str]:  # type: ignore[no-untyped-def]
    """Names of the nodes between the ``timestep`` input and the first linear layer (Gemm/MatMul).

    The tensors passed between them lose their recorded types, which keeps the converter from casting them
    to float16 and back between two float32 nodes.
    """
    reached, names = {"timestep"}, []
    for node in model.graph.node:  # exported graphs are topologically sorted
        if node.op_type not in ("Gemm", "MatMul") and any(name in reached for name in node.input):
            reached.update(node.output)
            names.append(node.name)
    read_outside = {name for node in model.graph.node if node.name not in names for name in node.input}
    internal = reached - read_outside
    kept = [info for info in model.graph.value_info if info.name not in internal]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return names


def _to_float16(path: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    import onnx

    from .attention import chunk_attention, restore_attention

    size = graph_bytes(path)
    model = onnx.load_model(str(path))
    chunked = restore_attention(model)
    model = convert_float_to_float16(model, keep_io_types=True, op_block_list=FLOAT32_OPS,
                                     node_block_list=_timestep_nodes(model))
    _drop_repeated_casts(model)
    if chunked:
        chunk_attention(model)
    save_graph(model, path, size // 2)


def _weighted_nodes(model) -> list[str]:  # type: ignore[no-untyped-def]
    """The :data:`INT8_OPS` nodes whose weight (second input) is stored in the graph: products of two
    activations (the λ layers' contractions) keep float32, their ranges differ per call and per row."""
    weights = {init.name for init in model.graph.initializer}
    return [node.name for node in model.graph.node
            if node.op_type in INT8_OPS and len(node.input) > 1 and node.input[1] in weights]


def _quantize_int8(path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .attention import chunk_attention, restore_attention

    size = graph_bytes(path)
    model = _load_plain(path)
    chunked = restore_attention(model)
    save_graph(model, path, size)
    tmp = path.with_name(path.stem + ".int8.onnx")
    try:
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=True, nodes_to_quantize=_weighted_nodes(model),
                         use_external_data_format=size // 4 > _EXTERNAL_BYTES)
        data = path.with_name(external_data_name(path.name))
        if data.is_file():
            data.unlink()
        os.replace(tmp, path)
        tmp_data = tmp.with_name(external_data_name(tmp.name))
        if tmp_data.is_file() or chunked:
            import onnx

            model = onnx.load_model(str(path))  # reads tmp's data, rewritten under the graph's own name
            if chunked:
                chunk_attention(model)
            save_graph(model, path, size // 4)
            if tmp_data.is_file():
                tmp_data.unlink()
    finally:
        for leftover in (tmp, tmp.with_name(external_data_name(tmp.name))):
            if leftover.exists():
                leftover.unlink()
