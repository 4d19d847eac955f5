"""A "slow on purpose" ONNX model for the cache and spill tests, built with the onnx package.

Interface (like tiny-cnn, one input and one output, batch dimension first):

    x  FP32 [-1, 256]  ->  y  FP32 [-1, 256]

Graph: each row is fanned out into `width` copies (x + a fixed bias per copy,
[-1, width, 256]), then `depth` times MatMul by a fixed random 256x256 weight
and Tanh, then the mean over the copies. A plain chain of 256x256 MatMuls on
one row is only microseconds of work; the fan-out is the knob that makes one
row cost a few milliseconds on one CPU thread. `calibrated()` measures that
with onnxruntime (one thread, as nusad runs it) and picks the width so that a
batch of 1 takes TARGET_MS; golden outputs come from onnxruntime too.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

NAME = "slow-mlp"
INPUT = "x"
OUTPUT = "y"
DIM = 256
DEPTH = 12
RTOL, ATOL = 1e-4, 1e-5

# Per-row compute aimed at for a batch of 1 (the brief: 3-10 ms on one thread).
TARGET_MS = float(os.environ.get("NUSA_SLOW_MODEL_MS", "6"))
MIN_MS, MAX_MS = 3.0, 10.0


def build(depth: int = DEPTH, width: int = 16, seed: int = 20240611) -> bytes:
    """The serialized model; deterministic for given arguments."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(rng.standard_normal((width, DIM)).astype(np.float32) * 0.5, "fan_bias"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", [INPUT, "axis1"], ["x3"]),
        helper.make_node("Add", ["x3", "fan_bias"], ["h0"]),
    ]
    prev = "h0"
    # Gain 1.5 / sqrt(DIM): Tanh neither saturates nor fades out over the chain.
    scale = 1.5 / np.sqrt(DIM)
    for i in range(depth):
        w = f"w{i}"
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((DIM, DIM)) * scale).astype(np.float32), w))
        nodes.append(helper.make_node("MatMul", [prev, w], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]))
        prev = f"h{i + 1}"
    nodes.append(helper.make_node("ReduceMean", [prev], [OUTPUT], axes=[1], keepdims=0))
    graph = helper.make_graph(
        nodes, "slow_mlp",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", DIM])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", DIM])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="nusa-tests")
    model.ir_version = 8  # any onnxruntime of the last years loads IR 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def session(model: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def time_one_row_ms(model: bytes, runs: int = 21) -> float:
    """Wall time of a batch of 1 on one thread, after a warm-up: the 25th
    percentile, so a busy neighbour on the box skews it less than a median."""
    sess = session(model)
    x = np.random.default_rng(1).standard_normal((1, DIM)).astype(np.float32)
    for _ in range(3):
        sess.run([OUTPUT], {INPUT: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run([OUTPUT], {INPUT: x})
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 25))


@dataclass(frozen=True)
class SlowModel:
    model: bytes
    depth: int
    width: int
    row_ms: float  # measured: batch of 1, one thread

    def expected(self, x: np.ndarray) -> np.ndarray:
        return expected_outputs(self.model, np.ascontiguousarray(x, dtype=np.float32))

    def describe(self) -> str:
        return (f"{NAME}: depth {self.depth}, fan-out {self.width}, {len(self.model) >> 10} KiB; "
                f"batch of 1 = {self.row_ms:.2f} ms on one onnxruntime thread")


_sessions: dict[int, object] = {}


def expected_outputs(model: bytes, x: np.ndarray) -> np.ndarray:
    key = hash(model)
    if key not in _sessions:
        _sessions[key] = session(model)
    return _sessions[key].run([OUTPUT], {INPUT: x})[0]


@lru_cache(maxsize=4)
def calibrated(target_ms: float = TARGET_MS, depth: int = DEPTH) -> SlowModel:
    """The model whose batch of 1 takes about target_ms here (3-10 ms), measured."""
    width = 16
    row_ms = time_one_row_ms(build(depth, width))
    for _ in range(5):
        if MIN_MS <= row_ms <= MAX_MS and abs(row_ms - target_ms) < 0.3 * target_ms:
            break
        # Work grows linearly with the fan-out.
        width = int(min(4096, max(1, round(width * target_ms / max(row_ms, 0.01)))))
        row_ms = time_one_row_ms(build(depth, width))
    sm = SlowModel(build(depth, width), depth, width, row_ms)
    print(f"\n[slowmodel] {sm.describe()}")
    return sm


def scaled(base: SlowModel, factor: float) -> SlowModel:
    """A slower variant (same interface, more fan-out), for single-flight overlap."""
    width = max(1, int(round(base.width * factor)))
    model = build(base.depth, width)
    sm = SlowModel(model, base.depth, width, time_one_row_ms(model, runs=5))
    print(f"\n[slowmodel] {sm.describe()}")
    return sm


def rows(n: int, seed: int) -> np.ndarray:
    """n distinct input rows, [n, 256] float32."""
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str = OUTPUT) -> None:
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == np.float32, f"{what}: dtype {actual.dtype}"
    if not np.allclose(actual, expected, rtol=RTOL, atol=ATOL):
        worst = float(np.max(np.abs(actual - expected)))
        raise AssertionError(f"{what}: differs from onnxruntime (max abs diff {worst:g})")
