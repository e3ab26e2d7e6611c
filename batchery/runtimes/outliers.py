"""Activation outliers, tamed in the fp32 graph before it is quantised to int8: smoothing and split channels.

Dynamic quantisation gives each activation tensor one uint8 scale for the whole batch. In BERT-family models a
few hidden channels run ten to twenty times larger than the median one, so that one scale leaves every other
channel a handful of int8 steps. MiniLM's worst reference text lost most of its agreement with fp32 that way.
Two remedies, each for the kind of outlier it suits; both change the graph, never its fp32 function:

- **Smoothing** (SmoothQuant), for an activation straight out of a LayerNormalization. Per input channel ``k`` of
  the MatMuls that read it, ``X_k`` is divided by ``s_k`` and row ``k`` of each weight is multiplied by it:
  ``(X / s) @ (s W) == X @ W``. The weights are quantised one scale per output channel and take the larger rows
  far better than the activation takes its outliers. ``s_k = a_k ** alpha / w_k ** (1 - alpha)``, with ``a_k``
  the largest ``|X_k|`` seen in calibration and ``w_k`` the largest ``|W[k, :]|`` over the MatMuls that read
  ``X`` (Q, K and V share theirs). ``X / s`` is one ``Mul`` in front of those MatMuls only: the residual
  ``Add`` that reads the norm's output too keeps ``X``.
- **Split channels**, for any other activation with a few channels over :data:`OUTLIER_RATIO` times the median
  channel's range. Those channels skip int8: a ``Mul`` zeroes them in the int8 MatMul's input (and their rows
  in its weight), a ``Gather`` takes them out, and a small fp32 MatMul of their own adds their share back after
  the int8 MatMul's bias. The fp32 MatMuls are named in :attr:`Tamed.fp32_matmuls`, so that the quantiser
  leaves them alone.

Which remedy goes where was measured on MiniLM, one kind of MatMul quantised at a time (docs/int8.md). The
inputs of the feed-forward output MatMuls in layers 0 to 3 have one outlier channel or two, near zero on almost
every token and 14 to 25 on [CLS]: smoothing divides a whole channel, so it cannot shrink one token's value
alone, and no alpha took those MatMuls' worst reference text past 0.992, where splitting their largest channel
out reached 0.997. The norms' outputs (Q/K/V's and the feed-forward layer's inputs) smooth well, to 0.998, and
splitting there too cost 13% of int8's speed: a side MatMul and an ``Add`` per reader, three for Q, K and V,
and 1536 channels wide for the feed-forward layer. As done here, the worst reference text rose from a
cosine of 0.95 to fp32 to 0.995, for 2 to 3% of int8's speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

#: How far smoothing moves the difficulty from activations to weights: 0 leaves activations alone, 1 flattens
#: them. MiniLM's worst reference text agreed best with fp32 at 0.7 (0.9949; 0.9914 to 0.9946 at 0.6 to 0.8).
ALPHA = 0.7
#: A channel whose calibration range is over this many times the median channel's is an outlier, and is split.
OUTLIER_RATIO = 8.0
#: At most this many channels of one activation are split out (MiniLM has at most two over the ratio).
MAX_OUTLIERS = 4
#: Bounds on a channel's smoothing factor, so that no channel's weight row is scaled past reason.
MIN_SCALE = 1e-2
MAX_SCALE = 1e2
_EPS = 1e-6


@dataclass(frozen=True)
class Tamed:
    """The fp32 graph with its outliers tamed, the fp32 MatMuls the quantiser must skip, and what was done."""

    model: Any
    fp32_matmuls: tuple[str, ...]
    smoothed: int
    split_channels: int


def tame(model: Any, feeds: Iterable[Mapping[str, np.ndarray]], alpha: float = ALPHA) -> Tamed:
    """A copy of ``model`` (an ``onnx.ModelProto``) made ready for dynamic int8, from the activation ranges
    seen when it runs ``feeds`` (calibration inputs, which must not be the inputs the copy is checked on)."""
    import onnx

    tamed = onnx.ModelProto()
    tamed.CopyFrom(model)
    groups = weight_matmuls(tamed)
    ranges = activation_ranges(tamed, list(groups), feeds) if groups else {}
    names = _Names(tamed)
    fp32: list[str] = []
    smoothed = split = 0
    for activation, nodes in groups.items():
        if _op_type(tamed, activation) == "LayerNormalization":
            weights = [_array(tamed, node.input[1]) for node in nodes]
            smooth(tamed, activation, nodes, smoothing_scales(ranges[activation], weights, alpha), names)
            smoothed += 1
            continue
        channels = outlier_channels(ranges[activation])
        if channels.size:
            fp32 += split_out(tamed, activation, nodes, channels, names)
            split += channels.size
    return Tamed(tamed, tuple(fp32), smoothed, split)


def weight_matmuls(model: Any) -> dict[str, list[Any]]:
    """The MatMuls of an activation by a 2-D weight, grouped by the activation they read, in graph order."""
    initializers = {init.name: init for init in model.graph.initializer}
    groups: dict[str, list[Any]] = {}
    for node in model.graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is not None and len(weight.dims) == 2 and node.input[0] not in initializers:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def activation_ranges(
    model: Any, activations: list[str], feeds: Iterable[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per activation, each channel's (last axis) largest absolute value over all ``feeds``, padded positions
    included: they count towards a batch's dynamic scale too."""
    import onnx
    import onnxruntime

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inputs = {value.name for value in probe.graph.input}
    listed = {value.name for value in probe.graph.output}
    probe.graph.output.extend(
        onnx.helper.make_empty_tensor_value_info(name) for name in activations if name not in listed | inputs
    )
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = onnxruntime.InferenceSession(
        probe.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    fed = [value.name for value in session.get_inputs()]
    computed = [name for name in activations if name not in inputs]
    ranges: dict[str, np.ndarray] = {}
    for feed in feeds:
        values = dict(zip(computed, session.run(computed, {name: feed[name] for name in fed})))
        values.update({name: feed[name] for name in activations if name in inputs})
        for name in activations:
            seen = np.abs(values[name].reshape(-1, values[name].shape[-1])).max(axis=0).astype(np.float64)
            ranges[name] = np.maximum(ranges[name], seen) if name in ranges else seen
    if len(ranges) != len(activations):
        raise ValueError("no calibration inputs to measure the activations on")
    return ranges


def smoothing_scales(activation_max: np.ndarray, weights: list[np.ndarray], alpha: float = ALPHA) -> np.ndarray:
    """``s_k = a_k ** alpha / w_k ** (1 - alpha)`` within ``[MIN_SCALE, MAX_SCALE]``; 1 for a channel that
    calibration never lit or whose weight rows are all zero."""
    weight_max = np.max([np.abs(weight).max(axis=1) for weight in weights], axis=0).astype(np.float64)
    scales = np.ones_like(activation_max)
    live = (activation_max > _EPS) & (weight_max > _EPS)
    scales[live] = activation_max[live] ** alpha / weight_max[live] ** (1.0 - alpha)
    return np.clip(scales, MIN_SCALE, MAX_SCALE)


def outlier_channels(activation_max: np.ndarray) -> np.ndarray:
    """The largest channels over :data:`OUTLIER_RATIO` times the median channel's range, at most
    :data:`MAX_OUTLIERS`, in ascending order."""
    largest = np.argsort(activation_max)[::-1][:MAX_OUTLIERS]
    return np.sort(largest[activation_max[largest] > OUTLIER_RATIO * np.median(activation_max)])


def smooth(model: Any, activation: str, nodes: list[Any], scales: np.ndarray, names: "_Names") -> None:
    """Row ``k`` of each weight times ``s_k``, and ``nodes`` fed ``activation / s``."""
    for node in nodes:
        _set_weight(model, node, _array(model, node.input[1]) * scales[:, None], names)
    _feed_scaled(model, activation, nodes, 1.0 / scales, names)


def split_out(model: Any, activation: str, nodes: list[Any], channels: np.ndarray, names: "_Names") -> list[str]:
    """``channels`` of ``activation`` taken out of ``nodes``' int8 MatMuls into fp32 ones; their names."""
    from onnx import helper, numpy_helper

    mask = np.ones(_array(model, nodes[0].input[1]).shape[0])
    mask[channels] = 0.0
    _feed_scaled(model, activation, nodes, mask, names)
    indices, taken = names.fresh(f"{activation}/outlier_channels"), names.fresh(f"{activation}/outliers")
    model.graph.initializer.append(numpy_helper.from_array(channels.astype(np.int64), indices))
    _insert(model, _position(model, nodes[0]), helper.make_node("Gather", [activation, indices], [taken], axis=-1))
    fp32 = []
    for node in nodes:
        weight = _array(model, node.input[1])
        rows, side = names.fresh(f"{node.input[1]}/outlier_rows"), names.fresh(f"{node.output[0]}/outliers")
        model.graph.initializer.append(numpy_helper.from_array(weight[channels], rows))
        kept = weight.copy()
        kept[channels] = 0
        _set_weight(model, node, kept, names)
        name = names.fresh(f"{node.name or node.output[0]}/outliers")
        _insert(model, _position(model, node), helper.make_node("MatMul", [taken, rows], [side], name=name))
        _add_after_bias(model, node, side, names)
        fp32.append(name)
    return fp32


def _feed_scaled(model: Any, activation: str, nodes: list[Any], factor: np.ndarray, names: "_Names") -> None:
    """``nodes`` read ``activation * factor`` (per channel) from one Mul; the activation's other readers keep it."""
    from onnx import helper, numpy_helper

    dtype = _array(model, nodes[0].input[1]).dtype
    constant, scaled = names.fresh(f"{activation}/channel_factor"), names.fresh(f"{activation}/scaled")
    model.graph.initializer.append(numpy_helper.from_array(factor.astype(dtype), constant))
    _insert(model, _position(model, nodes[0]), helper.make_node("Mul", [activation, constant], [scaled]))
    for node in nodes:
        node.input[0] = scaled


def _add_after_bias(model: Any, node: Any, side: str, names: "_Names") -> None:
    """Adds ``side`` to ``node``'s output, after its bias ``Add`` where that is the output's one reader: ORT
    fuses a bias into the int8 MatMul before it, which an ``Add`` in between would prevent."""
    from onnx import helper

    initializers = {init.name for init in model.graph.initializer}
    readers = [other for other in model.graph.node if node.output[0] in other.input]
    biased = len(readers) == 1 and readers[0].op_type == "Add" and any(i in initializers for i in readers[0].input)
    last = readers[0] if biased else node
    total = last.output[0]
    last.output[0] = names.fresh(f"{total}/without_outliers")
    _insert(model, _position(model, last) + 1, helper.make_node("Add", [last.output[0], side], [total]))


def _set_weight(model: Any, node: Any, value: np.ndarray, names: "_Names") -> None:
    """``node``'s weight becomes ``value``: in place if ``node`` alone reads it, else as a new initializer."""
    from onnx import numpy_helper

    name = node.input[1]
    readers = sum(name in other.input for other in model.graph.node)
    if readers > 1:
        node.input[1] = names.fresh(f"{name}/own")
        model.graph.initializer.append(numpy_helper.from_array(value.astype(_array(model, name).dtype), node.input[1]))
        return
    initializer = _initializer(model, name)
    initializer.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(initializer).dtype), name))


def _array(model: Any, name: str) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(_initializer(model, name))


def _initializer(model: Any, name: str) -> Any:
    return next(init for init in model.graph.initializer if init.name == name)


def _op_type(model: Any, tensor: str) -> str | None:
    """The op type of the node that makes ``tensor``; None for a graph input."""
    return next((node.op_type for node in model.graph.node if tensor in node.output), None)


def _position(model: Any, node: Any) -> int:
    return next(index for index, other in enumerate(model.graph.node) if other.output == node.output)


def _insert(model: Any, position: int, node: Any) -> None:
    model.graph.node.insert(position, node)


class _Names:
    """Tensor and node names not yet taken in the graph, made from readable bases."""

    def __init__(self, model: Any) -> None:
        self.taken = {init.name for init in model.graph.initializer}
        self.taken.update(value.name for value in (*model.graph.input, *model.graph.output))
        for node in model.graph.node:
            self.taken.update((*node.input, *node.output, node.name))

    def fresh(self, base: str) -> str:
        name, number = base, 1
        while name in self.taken:
            number += 1
            name = f"{base}_{number}"
        self.taken.add(name)
        return name
