"""Memory-bounded attention in exported graphs: softmax(Q·Kᵀ)·V computed a block of queries at a time.

The exporter writes scaled-dot-product attention as MatMul → Softmax → MatMul, which materialises the whole
(N, N) score matrix. In an autoencoder's middle block N is the number of latent pixels, so memory grows with
the square of the image area: ONNX Runtime needed 6.4 GB for a 600×400 image through the bundled model's f4
autoencoder (15,000 tokens), and a browser's 4 GiB WebAssembly heap runs out soon after. Rewriting the three
nodes as a ``Scan`` over blocks of ``chunk`` queries keeps one (chunk, N) block alive at a time; each query row
is computed exactly as before (its softmax sees every key), so the result is the same to float rounding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

# Queries per block: a 1024 × N float32 block is 4 MB per thousand keys.
DEFAULT_CHUNK = 1024
# Names of the nodes' outputs a rewrite adds start with this (and the rewrite's number, then "/").
PREFIX = "chunked_attention_"
# Pad along chosen axes: opset 18 and later (earlier opsets keep the whole-matrix form).
MIN_OPSET = 18


def chunk_attention(model: Any, chunk: int = DEFAULT_CHUNK) -> int:
    """Rewrite every MatMul → Softmax(last axis) → MatMul chain of ``model`` (an ``onnx.ModelProto``) in place
    as a Scan over blocks of ``chunk`` queries; -> how many chains were rewritten.

    A chain may carry Cast nodes around the Softmax (a float16 graph computes it in float32). Queries are
    the first MatMul's first input (..., N, d), keys its second (..., d, M), values the second MatMul's
    second input (..., M, e); the output keeps the second MatMul's name. The query count N is padded to a
    multiple of ``chunk`` and the padding sliced off again.
    """
    import onnx
    from onnx import TensorProto, helper

    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {out: node for node in graph.node for out in node.output}
    graph_outputs = {o.name for o in graph.output}

    def only_consumer(name: str) -> Any | None:
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in graph_outputs else None

    chains = []
    for softmax in graph.node:
        if softmax.op_type != "Softmax" or not _is_last_axis(softmax):
            continue
        before, node = [], producer.get(softmax.input[0])
        while node is not None and node.op_type == "Cast" and only_consumer(node.output[0]) is not None:
            before.insert(0, node)
            node = producer.get(node.input[0])
        scores = node
        after, node = [], only_consumer(softmax.output[0])
        while node is not None and node.op_type == "Cast":
            after.append(node)
            node = only_consumer(node.output[0])
        weighted = node
        if (scores is None or scores.op_type != "MatMul" or only_consumer(scores.output[0]) is None
                or weighted is None or weighted.op_type != "MatMul"
                or weighted.input[0] != (after[-1] if after else softmax).output[0]):
            continue
        chains.append([scores, *before, softmax, *after, weighted])
    if not chains:
        return 0

    dtype = _input_elem_type(model, chains[0][0].input[0])
    removed = {id(n) for chain in chains for n in chain}
    replacement: dict[int, list[Any]] = {}  # id of a chain's last node -> what takes its place
    for k, chain in enumerate(chains):
        scores, weighted = chain[0], chain[-1]
        p = f"{PREFIX}{k}"
        q, out = scores.input[0], weighted.output[0]

        def const(name: str, values: list[int]) -> Any:
            return helper.make_node("Constant", [], [f"{p}/{name}"], value=helper.make_tensor(
                f"{p}/{name}", TensorProto.INT64, [len(values)], values))

        # Body: one block of queries through the original nodes (keys and values read from the outer graph).
        body_nodes = [onnx.NodeProto() for _ in chain]
        for copy, node in zip(body_nodes, chain):
            copy.CopyFrom(node)
        body_nodes[0].input[0] = f"{p}/q_block"
        body_nodes[-1].output[0] = f"{p}/out_block"
        body = helper.make_graph(body_nodes, f"{p}/body",
                                 [helper.make_tensor_value_info(f"{p}/q_block", dtype, None)],
                                 [helper.make_tensor_value_info(f"{p}/out_block", dtype, None)])
        nodes = [
            const("chunk", [chunk]), const("zero", [0]), const("minus_one", [-1]), const("query_axis", [-2]),
            helper.make_node("Shape", [q], [f"{p}/lead"], start=0, end=-2),
            helper.make_node("Shape", [q], [f"{p}/n"], start=-2, end=-1),
            helper.make_node("Shape", [q], [f"{p}/d"], start=-1),
            helper.make_node("Shape", [weighted.input[1]], [f"{p}/e"], start=-1),
            # pad = (chunk − N mod chunk) mod chunk, at the end of the query axis only
            helper.make_node("Mod", [f"{p}/n", f"{p}/chunk"], [f"{p}/rest"]),
            helper.make_node("Sub", [f"{p}/chunk", f"{p}/rest"], [f"{p}/pad_or_chunk"]),
            helper.make_node("Mod", [f"{p}/pad_or_chunk", f"{p}/chunk"], [f"{p}/pad"]),
            helper.make_node("Concat", [f"{p}/zero", f"{p}/pad"], [f"{p}/pads"], axis=0),
            helper.make_node("Pad", [q, f"{p}/pads", "", f"{p}/query_axis"], [f"{p}/q_padded"]),
            helper.make_node("Concat", [f"{p}/lead", f"{p}/minus_one", f"{p}/chunk", f"{p}/d"],
                             [f"{p}/blocked_shape"], axis=0),
            helper.make_node("Reshape", [f"{p}/q_padded", f"{p}/blocked_shape"], [f"{p}/q_blocks"]),
            # (..., blocks, chunk, d): the Scan walks the blocks axis and stacks the outputs along it again
            helper.make_node("Scan", [f"{p}/q_blocks"], [f"{p}/out_blocks"], body=body, num_scan_inputs=1,
                             scan_input_axes=[-3], scan_output_axes=[-3]),
            helper.make_node("Concat", [f"{p}/lead", f"{p}/minus_one", f"{p}/e"], [f"{p}/flat_shape"], axis=0),
            helper.make_node("Reshape", [f"{p}/out_blocks", f"{p}/flat_shape"], [f"{p}/out_padded"]),
            helper.make_node("Slice", [f"{p}/out_padded", f"{p}/zero", f"{p}/n", f"{p}/query_axis"], [out]),
        ]
        replacement[id(weighted)] = nodes
    # Each replacement goes where its chain's last node was: after everything the chain read.
    _splice(graph, replacement, lambda node: id(node) in removed)
    moved = {name for chain in chains for n in chain[:-1] for name in n.output}
    kept_info = [info for info in graph.value_info if info.name not in moved]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    return len(chains)


def restore_attention(model: Any) -> int:
    """Undo :func:`chunk_attention` on ``model`` in place (the whole-matrix chain again, as exported); -> how
    many were undone. The float16 converter cannot follow a Scan body that reads tensors of the outer graph,
    so a precision change restores, converts and rewrites again."""
    import onnx

    graph = model.graph
    scans = [n for n in graph.node if n.op_type == "Scan" and n.output[0].startswith(PREFIX)]
    if not scans:
        return 0
    groups = {scan.output[0].split("/")[0] for scan in scans}
    by_output = {out: n for n in graph.node for out in n.output}
    replacement: dict[int, list[Any]] = {}
    for p in groups:
        scan = by_output[f"{p}/out_blocks"]
        q = by_output[f"{p}/q_padded"].input[0]
        last = next(n for n in graph.node if n.input and n.input[0] == f"{p}/out_padded")
        body = next(a.g for a in scan.attribute if a.name == "body")
        nodes = []
        for node in body.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.input[:] = [q if name == f"{p}/q_block" else name for name in copy.input]
            copy.output[:] = [last.output[0] if name == f"{p}/out_block" else name for name in copy.output]
            nodes.append(copy)
        replacement[id(last)] = nodes
    _splice(graph, replacement,
            lambda node: id(node) in replacement or any(name.startswith(PREFIX) for name in node.output))
    return len(groups)


def _splice(graph: Any, replacement: dict[int, list[Any]], drop: Callable[[Any], bool]) -> None:
    """Reorder ``graph.node`` in place: ``replacement[id(node)]`` goes where ``node`` is, and every node for
    which ``drop`` is true (the replaced ones included) leaves."""
    ordered = []
    for node in graph.node:
        ordered.extend(replacement.get(id(node), []))
        if not drop(node):
            ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)


def chunk_attention_file(path: Path, chunk: int = DEFAULT_CHUNK) -> int:
    """:func:`chunk_attention` on the graph stored at ``path`` (rewritten in place when it changes)."""
    return _rewrite_file(path, lambda model: chunk_attention(model, chunk))


def restore_attention_file(path: Path) -> int:
    """:func:`restore_attention` on the graph stored at ``path`` (rewritten in place when it changes)."""
    return _rewrite_file(path, restore_attention)


def _rewrite_file(path: Path, rewrite: Callable[[Any], int]) -> int:
    import onnx

    from .precision import graph_bytes, save_graph

    model = onnx.load_model(str(path))
    count = rewrite(model)
    if count:
        save_graph(model, path, graph_bytes(path))
    return count


def _is_last_axis(softmax: Any) -> bool:
    axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
    return axis == -1


def _input_elem_type(model: Any, name: str) -> int:
    """The element type of tensor ``name`` (float32 unless shape inference says otherwise)."""
    import onnx
    from onnx import TensorProto

    for info in (*model.graph.value_info, *model.graph.input, *model.graph.output):
        if info.name == name:
            return info.type.tensor_type.elem_type
    inferred = onnx.shape_inference.infer_shapes(model)
    for info in inferred.graph.value_info:
        if info.name == name:
            return info.type.tensor_type.elem_type
    return TensorProto.FLOAT
