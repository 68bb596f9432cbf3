#!/usr/bin/env python3
"""Checks ONNX files written by texprune with the ONNX checker and ONNX Runtime.

For each file: `onnx.checker.check_model(full_check=True)` (shapes inferred too), then ONNX
Runtime (CPU) runs it. With `--probe FILE.safetensors` (what `train` writes beside its compact
model: `input`, eight test images, and `logits`, texprune's output on them) the runtime's output
must equal texprune's within `--tolerance` (max |diff| / max |logits|) with the same argmax.
A file `NAME.onnx` with a `NAME.probe.safetensors` beside it is checked against that probe
(`TEXPRUNE_ONNX_DIR=DIR cargo test --release --test onnx` writes the test suite's models so).
Without a probe the file is run on random inputs at batch 1 and 3 (a dynamic batch axis).

    python3 -m venv ~/onnx && ~/onnx/bin/pip install onnxruntime onnx numpy safetensors
    ~/onnx/bin/python scripts/onnx_check.py target/train/compact.onnx \
        --probe target/train/probe.safetensors
    ~/onnx/bin/python scripts/onnx_check.py target/quickstart/*.onnx --time
    mkdir -p target/onnx-tests && TEXPRUNE_ONNX_DIR=target/onnx-tests \
        cargo test --release --test onnx
    ~/onnx/bin/python scripts/onnx_check.py target/onnx-tests/*.onnx

With `--time`, each file is also timed in ONNX Runtime (2 threads, median of 20 runs after 3
warm-up runs) at batch 1 and 64 (its own batch size when the file has a fixed one).
Exits 1 when a check fails. Not run by the tests (`cargo test` runs the files in tract).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def session(path):
    """An ONNX Runtime CPU session with 2 threads (the machines' cores)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def input_shape(sess):
    """The input's shape, with a symbolic axis (the batch) as None."""
    shape = sess.get_inputs()[0].shape
    return [d if isinstance(d, int) else None for d in shape]


def median_ms(runs, f):
    """The median of `runs` timed calls of `f` in ms, after 3 warm-up calls."""
    for _ in range(3):
        f()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        f()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def timing(path):
    sess = session(path)
    shape = input_shape(sess)
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(1)
    batches = [1, 64] if shape[0] is None else [shape[0]]
    parts = []
    for batch in batches:
        x = rng.uniform(-1, 1, [batch] + shape[1:]).astype(np.float32)
        ms = median_ms(20, lambda: sess.run(None, {name: x}))
        parts.append(f"batch {batch}: {ms:.2f} ms")
    print(f"{path}: ONNX Runtime {ort.__version__}, 2 threads, median: " + ", ".join(parts))


def check(path, probe, tolerance):
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    sess = session(path)
    shape = input_shape(sess)
    name = sess.get_inputs()[0].name
    if probe is not None:
        from safetensors.numpy import load_file

        tensors = load_file(probe)
        images, expected = tensors["input"], tensors["logits"]
        if shape[0] is not None:
            images, expected = images[: shape[0]], expected[: shape[0]]
        got = sess.run(None, {name: images})[0]
        deviation = np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-6)
        same = (got.argmax(1) == expected.argmax(1)).all()
        ok = deviation <= tolerance and same
        print(f"{path}: checker ok, opset {opset}, ONNX Runtime vs texprune {deviation:.1e}, "
              f"argmax {'same' if same else 'DIFFERENT'} -> {'ok' if ok else 'FAILED'}")
        return ok
    rng = np.random.default_rng(0)
    batches = [1, 3] if shape[0] is None else [shape[0]]
    outputs = []
    for batch in batches:
        x = rng.uniform(-2, 2, [batch] + shape[1:]).astype(np.float32)
        outputs.append(sess.run(None, {name: x})[0].shape)
    print(f"{path}: checker ok, opset {opset}, input {sess.get_inputs()[0].shape}, "
          f"ONNX Runtime ran batch {batches} -> {outputs}")
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--probe", help="safetensors with `input` and `logits` (train's probe)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--time", action="store_true", help="time each file in ONNX Runtime")
    args = parser.parse_args()
    ok = True
    for path in args.files:
        try:
            probe = args.probe
            beside = path[: -len(".onnx")] + ".probe.safetensors"
            if probe is None and path.endswith(".onnx") and os.path.exists(beside):
                probe = beside
            ok &= check(path, probe, args.tolerance)
            if args.time:
                timing(path)
        except Exception as error:  # one line per failing file
            print(f"{path}: FAILED: {error}".splitlines()[0])
            ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
