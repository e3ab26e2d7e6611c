"""int8 copies of ONNX models: made once with ONNX Runtime's dynamic quantisation, cached, checked before use.

``options.quantize = "int8"`` makes :class:`batchery.runtimes.onnx.OnnxRuntime` serve a copy of its ONNX file
whose MatMul weights are int8, one scale per output channel; activations are quantised batch by batch as they
come (``quantize_dynamic``). Per channel keeps MiniLM's embeddings much closer to fp32 than one scale per tensor
does, and the embedding tables (Gather) stay fp32: quantising them shrinks the file but costs accuracy and buys
no speed. For a text model the fp32 graph is first run on :data:`CALIBRATION_TEXTS`, and the activation
outliers it shows are tamed (:mod:`batchery.runtimes.outliers`: smoothing, and a few channels kept fp32), which
took MiniLM's worst reference text from a cosine of 0.95 to fp32 to 0.995. A tensor model has no inputs to
calibrate on that stand for its traffic, so its copy is quantised as it is.

The copy is cached under the data directory by a digest of the fp32 file's bytes and of the settings that
made it, so a changed fp32 file gets a new copy. It is written to a temporary name and renamed into place
under a file lock: workers that start together make it once, and none reads half a file.

Every load checks the copy against the fp32 file on reference inputs (texts, or seeded random tensors) before
it serves: int8 arithmetic depends on the CPU (VNNI or not), so a copy good on one machine is not proven good
on another. A copy that falls short is deleted, so that the next start makes it afresh, and the model refuses
to load with a ConfigError that gives the figures.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from batchery.errors import ConfigError
from batchery.runtimes import outliers
from batchery.runtimes.text import TextEncoder, embeddings

if TYPE_CHECKING:
    from batchery.models.registry import ModelSpec
    from batchery.settings import Settings

log = logging.getLogger(__name__)

#: Bump when the way copies are made changes in a way the settings below and ORT's version do not show.
FORMAT = 2
#: The ops whose weights are quantised unless the model's ``quantize_ops`` option names others (``Conv``, say).
#: Gemm is not among the ops ONNX Runtime quantises dynamically: a graph of Gemms has nothing to quantise.
OP_TYPES = ("MatMul",)
PER_CHANNEL = True
#: What the copy must reach on the reference inputs, unless the model's options set their own bounds.
MEAN_COSINE = 0.99
MIN_COSINE = 0.99
#: Tensor models are checked on this many seeded random inputs of the model's input shape.
TENSOR_CHECKS = 32
#: Reference texts per batch, of like length: a batch padded to the longest text would cost four times as much.
TEXT_BATCH = 8
_TENSOR_SEED = 11
_HASH_BLOCK = 1 << 20

#: Varied on purpose: one word to a paragraph, questions, numbers, code, URLs, other languages, emoji. Short
#: texts are where int8 strays most, since there are few tokens for the mean to smooth.
REFERENCE_TEXTS = (
    "Hello",
    "ok",
    "Thanks!",
    "Where is the nearest train station?",
    "A man is playing a guitar.",
    "Someone is strumming an acoustic guitar on stage.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Cats sleep for most of the day.",
    "My kitten naps in the sun all afternoon, curled up on the windowsill.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "How do I reset my password if I no longer have access to my email?",
    "The patient presented with acute chest pain radiating to the left arm.",
    "Preheat the oven to 180 degrees and grease a round cake tin.",
    "The court ruled that the contract was void because one party had been misled.",
    "Quarterly revenue rose 12% to $4.3 billion, beating analysts' estimates.",
    "The spacecraft entered orbit around Jupiter after a five-year journey.",
    "He missed the last bus and had to walk home in the rain.",
    "Water boils at 100 degrees Celsius at sea level.",
    "I absolutely loved this film, the acting was superb!",
    "Worst purchase ever. It broke after two days and support never answered.",
    "def add(a, b):\n    return a + b",
    "SELECT name, email FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    "Error: connection refused (errno 111) while connecting to 10.0.0.5:6379",
    "https://example.com/docs/getting-started?lang=en#install",
    "Call me at +1 (555) 010-2368 before 5pm, or email team@example.org.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le chat dort sur le canapé pendant que la pluie tombe.",
    "El tren llega a la estación a las ocho de la mañana.",
    "東京は日本の首都です。",
    "🙂🙂 great job team 🎉",
    "2 + 2 = 4, and the square root of 16 is 4 as well.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "the the the the the the the the",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt.",
    "In 1969, Neil Armstrong became the first person to walk on the Moon, followed minutes later by Buzz Aldrin.",
    (
        "Climate change is driving more frequent heatwaves, droughts and floods, and scientists warn that the "
        "costs of adapting will rise sharply unless emissions fall within the next decade."
    ),
    (
        "The committee reviewed every application twice: first for completeness, then for merit, and only the "
        "strongest proposals, those with clear goals, realistic budgets and evidence of prior results, went on "
        "to the final round, where external experts scored them independently before the panel met to decide."
    ),
    (
        "Rivers shape the land they cross. Over thousands of years, water carries sand and stone downstream, "
        "cutting valleys, building deltas and leaving fertile plains where farmers have grown food since the first "
        "cities were founded. Floods renew the soil but also destroy homes, so people have built levees, dams and "
        "canals to tame them, often with consequences downstream that nobody foresaw. Today engineers and "
        "ecologists work together to give rivers room again: reconnecting flood plains, removing old weirs and "
        "restoring wetlands that store water in wet years and release it slowly in dry ones."
    ),
)

#: What the fp32 graph runs to find its activation outliers before a text model's copy is made. As varied as
#: :data:`REFERENCE_TEXTS` and kept apart from them: the check must run texts the copy was not tuned on.
CALIBRATION_TEXTS = (
    "Hi",
    "yes",
    "Good morning, everyone.",
    "What time does the museum open on Sundays?",
    "Two dogs are chasing a ball across the park.",
    "The orchestra tuned up while the audience found their seats.",
    "Inflation eased for the third month in a row, giving households some relief.",
    "Birds migrate south when the days grow shorter.",
    "Can you recommend a good book about the history of mathematics?",
    "The doctor prescribed antibiotics for the infection and advised a week of rest.",
    "Whisk the eggs with sugar until pale, then fold in the flour gently.",
    "The appeal was dismissed and the original sentence was upheld.",
    "Net profit fell 8% to 1.2 billion euros as energy costs climbed.",
    "The telescope captured images of a galaxy thirteen billion light-years away.",
    "She forgot her umbrella and arrived at the office soaked.",
    "Ice melts at zero degrees Celsius.",
    "Terrible service, cold food, and we waited an hour for the bill.",
    "What a wonderful concert, the best night out I have had in years!",
    "for i in range(10):\n    print(i * i)",
    "UPDATE orders SET status = 'shipped' WHERE id = 4217;",
    "Traceback (most recent call last): KeyError: 'user_id'",
    "http://localhost:8080/api/v1/items?page=2&size=50",
    "Meeting moved to 14:30 in room B-204; dial-in code 8812#.",
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
    "Nous partirons demain matin avant le lever du soleil.",
    "La biblioteca cierra a las nueve de la noche.",
    "今日はとても良い天気ですね。",
    "Это очень интересная книга о космосе.",
    "🚀🚀 launch day!!! 🔥",
    "x = 3.14159 * r ** 2; print(f'{x:.2f}')",
    "ALL STAFF MUST COMPLETE THE SAFETY TRAINING BY FRIDAY",
    "no no no no no no",
    "In 1492 Columbus crossed the Atlantic, and in 1519 Magellan set out to sail around the world.",
    (
        "Bees pollinate a large share of the crops we eat, yet their numbers have fallen in many regions because "
        "of pesticides, disease and the loss of the wild flowers they feed on."
    ),
    (
        "The library's new reading room opened last spring. It has long oak tables, green lamps and tall windows "
        "that face the river, and students queue at the door every morning during exams, hoping for a seat near "
        "the light. The staff extended the opening hours after a petition signed by more than two thousand readers."
    ),
    (
        "Modern compilers transform source code through many stages: the parser builds a syntax tree, semantic "
        "analysis checks types and scopes, an intermediate representation is optimised by dozens of passes that "
        "inline functions, remove dead code and unroll loops, and finally a back end selects machine instructions, "
        "allocates registers and schedules them so that the processor's pipelines stay busy. Each stage trades "
        "compile time for faster programs, and the defaults that ship with a compiler reflect years of measurement "
        "on real workloads rather than any single principle."
    ),
)


@dataclass(frozen=True)
class Agreement:
    """How close the copy's outputs came to the fp32 file's, one cosine similarity per reference input."""

    cosines: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.cosines))

    @property
    def min(self) -> float:
        return float(np.min(self.cosines))

    def __str__(self) -> str:
        return f"mean cosine {self.mean:.4f}, min {self.min:.4f} over {len(self.cosines)} reference inputs"


def serving_path(
    spec: "ModelSpec", device: str, settings: "Settings", source: Path, encoder: TextEncoder | None
) -> Path:
    """The file to serve: ``source`` itself, or for an int8 model its checked int8 copy (made now if missing)."""
    from batchery.models.precision import quantization  # models sit above runtimes: imported when called

    if quantization(spec) is None:
        return source
    if device.startswith("cuda"):
        raise ConfigError(
            f"model {spec.name!r}: int8 runs on the CPU only; set quantize under [models.{spec.name}.on.cpu]"
        )
    ops = op_types(spec)
    target = copy_path(settings, source, ops, encoder)
    with _lock(target.parent):
        if not target.is_file():
            make_copy(source, target, ops, encoder)
    agreement = compare(spec, source, target, encoder)
    mean_bound, min_bound = bounds(spec)
    if not (agreement.mean >= mean_bound and agreement.min >= min_bound):
        target.unlink(missing_ok=True)
        raise ConfigError(
            f"model {spec.name!r}: its int8 copy of {source} strays from fp32: {agreement} (required: mean >= "
            f"{mean_bound}, min >= {min_bound}); the copy was deleted and the model is not served"
        )
    log.info("model %s: serving the int8 copy %s: %s", spec.name, target, agreement)
    return target


def op_types(spec: "ModelSpec") -> tuple[str, ...]:
    """The op types to quantise: ``options.quantize_ops``, else :data:`OP_TYPES`."""
    ops = spec.options.get("quantize_ops", OP_TYPES)
    if isinstance(ops, str) or not ops or not all(isinstance(op, str) and op for op in ops):
        raise ConfigError(f"model {spec.name!r}: quantize_ops must be a list of ONNX op types, not {ops!r}")
    return tuple(sorted(ops))


def copy_path(
    settings: "Settings", source: Path, ops: Sequence[str] = OP_TYPES, encoder: TextEncoder | None = None
) -> Path:
    """``<data dir>/models/int8/<digest>/model.onnx``: the digest covers the fp32 bytes and how the copy is made,
    the calibration inputs included (a text model's, as its tokenizer makes them)."""
    key = copy_key(source, ops, calibration_feeds(encoder, ops))
    return settings.data_path / "models" / "int8" / key / "model.onnx"


def copy_key(source: Path, ops: Sequence[str] = OP_TYPES, calibration: Sequence[dict[str, np.ndarray]] = ()) -> str:
    digest = hashlib.sha256()
    digest.update(f"format={FORMAT};ops={','.join(ops)};per_channel={PER_CHANNEL};weights=QInt8;".encode())
    digest.update(f"onnxruntime={_ort_version()};".encode())
    if calibration:
        digest.update(
            f"alpha={outliers.ALPHA};ratio={outliers.OUTLIER_RATIO};max={outliers.MAX_OUTLIERS};"
            f"scales={outliers.MIN_SCALE},{outliers.MAX_SCALE};".encode()
        )
    for feed in calibration:
        for name in sorted(feed):
            digest.update(f"{name}:{feed[name].dtype}:{feed[name].shape};".encode())
            digest.update(np.ascontiguousarray(feed[name]).tobytes())
    with source.open("rb") as fp32:
        for block in iter(functools.partial(fp32.read, _HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def make_copy(
    source: Path, target: Path, ops: Sequence[str] = OP_TYPES, encoder: TextEncoder | None = None
) -> None:
    """Quantise ``source`` into ``target`` atomically: a temporary file, flushed, then renamed into place; a
    text model's graph has its activation outliers tamed first, on :data:`CALIBRATION_TEXTS`.

    A copy with no int8 weights (a graph without the ops asked for) is refused: it would be served as int8
    and be nothing of the kind.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    log.info("quantising %s to int8 at %s", source, target)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        model, fp32_matmuls = _tamed(source, calibration_feeds(encoder, ops))
        with _quiet_quantizer():
            quantize_dynamic(
                model,
                partial,
                weight_type=QuantType.QInt8,
                per_channel=PER_CHANNEL,
                op_types_to_quantize=list(ops),
                nodes_to_exclude=list(fp32_matmuls),
            )
        if not int8_weights(partial):
            raise ConfigError(f"{source} has no {'/'.join(ops)} weights to quantise (set options.quantize_ops)")
        with partial.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, target)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot quantise {source} to int8: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def calibration_feeds(encoder: TextEncoder | None, ops: Sequence[str] = OP_TYPES) -> list[dict[str, np.ndarray]]:
    """:data:`CALIBRATION_TEXTS` in batches of like length, for a text model whose MatMuls are quantised; else
    none (a tensor model's copy is quantised untamed)."""
    if encoder is None or "MatMul" not in ops:
        return []
    return text_batches(CALIBRATION_TEXTS, encoder)


def _tamed(source: Path, calibration: list[dict[str, np.ndarray]]) -> tuple[Any, tuple[str, ...]]:
    """What to quantise (``source``, or its graph with outliers tamed) and the MatMuls to leave fp32."""
    if not calibration:
        return source, ()
    import onnx

    tamed = outliers.tame(onnx.load(str(source)), calibration)
    log.info(
        "tamed %s: %d activations smoothed, %d outlier channels kept fp32",
        source,
        tamed.smoothed,
        tamed.split_channels,
    )
    return tamed.model, tamed.fp32_matmuls


def int8_weights(path: Path) -> int:
    """How many of the graph's weight matrices are stored as int8 (their zero points, 1-D, are not counted)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(init.data_type == onnx.TensorProto.INT8 and len(init.dims) >= 2 for init in model.graph.initializer)


def compare(spec: "ModelSpec", source: Path, copy: Path, encoder: TextEncoder | None) -> Agreement:
    """The cosine similarity of each reference input's output from ``copy`` and from ``source``."""
    fp32, int8 = _session(spec, source), _session(spec, copy)
    feeds = reference_feeds(spec, fp32, encoder)
    expected, got = ([row for feed in feeds for row in _outputs(spec, s, feed, encoder)] for s in (fp32, int8))
    return Agreement(tuple(cosines(expected, got)))


def bounds(spec: "ModelSpec") -> tuple[float, float]:
    """``(mean, min)`` cosine bounds: the model's ``quantize_mean_cosine`` and ``quantize_min_cosine`` options,
    else the defaults."""
    try:
        return (
            float(spec.options.get("quantize_mean_cosine", MEAN_COSINE)),
            float(spec.options.get("quantize_min_cosine", MIN_COSINE)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {spec.name!r}: quantize_mean_cosine and quantize_min_cosine are numbers: {exc}")


def reference_feeds(spec: "ModelSpec", session: Any, encoder: TextEncoder | None) -> list[dict[str, np.ndarray]]:
    """Batches of the reference texts, tokenised as the runtime would and grouped by length so that little
    padding is run; or one batch of seeded random tensors of the input shape (``options.shape``, else the
    graph's) for a tensor model."""
    names = [i.name for i in session.get_inputs()]
    if encoder is not None:
        batches = text_batches(REFERENCE_TEXTS, encoder)
        return [{name: batch[name] for name in names if name in batch} for batch in batches]
    first = session.get_inputs()[0]
    shape = spec.options.get("shape") or first.shape[1:]
    if not all(isinstance(dim, int) for dim in shape):
        raise ConfigError(f"model {spec.name!r}: set options.shape, so that its int8 copy can be checked")
    dtype = np.float64 if first.type == "tensor(double)" else np.float32
    values = np.random.default_rng(_TENSOR_SEED).standard_normal((TENSOR_CHECKS, *shape))
    return [{first.name: values.astype(dtype)}]


def text_batches(texts: Sequence[str], encoder: TextEncoder) -> list[dict[str, np.ndarray]]:
    """``texts`` tokenised and padded in batches of :data:`TEXT_BATCH` texts of like length."""
    ordered = sorted(texts, key=lambda text: len(encoder.tokenize([text])[0]))
    return [encoder.encode(ordered[i : i + TEXT_BATCH]) for i in range(0, len(ordered), TEXT_BATCH)]


def _outputs(
    spec: "ModelSpec", session: Any, feed: dict[str, np.ndarray], encoder: TextEncoder | None
) -> list[np.ndarray]:
    output = session.run(None, feed)[0]
    if encoder is None:
        return list(output)
    pooling, normalize = str(spec.options.get("pooling", "mean")), bool(spec.options.get("normalize", False))
    return embeddings(output, feed["attention_mask"], pooling, normalize)


def cosines(a: Sequence[Any], b: Sequence[Any]) -> list[float]:
    """Row by row cosine similarities of two runtimes' outputs (the check, and the benchmark's agreement)."""
    return [_cosine(np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()) for x, y in zip(a, b)]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0.0:
        return 1.0 if not (a.any() or b.any()) else 0.0
    return float(a @ b) / norms


def _session(spec: "ModelSpec", path: Path) -> Any:
    import onnxruntime

    from batchery.runtimes.onnx import session_options

    try:
        return onnxruntime.InferenceSession(
            str(path), sess_options=session_options(spec), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ConfigError(f"model {spec.name!r}: cannot load {path}: {exc}") from exc


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """One quantiser per copy across processes; the others wait, then find the copy in place."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class _SkipAdvice(logging.Filter):
    """Drops what the quantiser logs on the root logger: notes per tensor, and advice the check makes moot."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantiser logs on the root logger: a note per tensor it leaves alone, and advice to pre-process the
    model first (which does not help here: its output is checked instead). Errors still pass."""
    advice = _SkipAdvice()
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def _ort_version() -> str:
    try:
        return importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
