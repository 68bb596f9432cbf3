#!/usr/bin/env python3
"""ONNX Runtime (CPU, 2 threads) on texprune's exported models, beside texprune's own inference
and PyTorch's dense model, in one sequence.

1. `cargo run --release --example perf -- --part inference --onnx-dir DIR` times texprune (dense
   and compact ResNet-56 and VGG-16 for 3x32x32, 0/50/75 % of the stripes removed at random,
   batch 1 and 64) and writes every model as ONNX: `<model>_dense.onnx`, and per rate the
   bounding-box form `<model>_<rate>_box.onnx` (dynamic batch), the same compacted with channel
   counts kept at multiples of 16 `<model>_<rate>_box16.onnx`, and the stripe form
   `<model>_<rate>_stripes_b<batch>.onnx` (docs/deployment.md).
2. ONNX Runtime times each file at batch 1 and 64 (median of `--runs`, after 3 warm-up runs).
3. PyTorch times the dense models (`scripts/torch_anchor.py`'s ResNet-56 and VGG-16), if
   installed.

    python3 -m venv ~/onnx && ~/onnx/bin/pip install onnxruntime onnx numpy torch
    ~/onnx/bin/python scripts/onnx_bench.py                # ~10 minutes on 2 cores
    ~/onnx/bin/python scripts/onnx_bench.py --skip-export  # reuse DIR's files and perf.json

Prints one table (medians, ms) and writes it as JSON (`DIR/onnx_bench.json`). `speedup` is the
dense ONNX model's time over the compact one's; `MAC ratio` is dense / compact MACs.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from onnx_check import median_ms, session  # noqa: E402


def ort_ms(path, batch, runs):
    sess = session(path)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, 32, 32)).astype(np.float32)
    return median_ms(runs, lambda: sess.run(None, {name: x}))


def kernels(path):
    """How ONNX Runtime runs the file's convolutions after its graph optimizations: convs in its
    blocked NCHWc layout, plain (im2col) convs, and the layout reorders between the two."""
    import collections
    import tempfile

    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        nodes = onnx.load(options.optimized_model_filepath).graph.node
    count = collections.Counter((n.domain, n.op_type) for n in nodes)
    # The multiply-adds of the file's convolutions per image, as a dense engine runs them.
    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output)}
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv" and node.output[0] in shapes:
            cout, cin_group, kh, kw = weights[node.input[1]]
            _, _, ho, wo = shapes[node.output[0]]
            macs += cout * cin_group * kh * kw * ho * wo
    return {
        "conv_macs": macs,
        "nchwc_conv": count[("com.microsoft.nchwc", "Conv")],
        "plain_conv": count[("com.microsoft", "FusedConv")] + count[("", "Conv")],
        "reorders": count[("com.microsoft.nchwc", "ReorderInput")]
        + count[("com.microsoft.nchwc", "ReorderOutput")],
    }


def torch_ms(model_name, batch, runs):
    try:
        import torch
    except ImportError:
        return None
    from torch_anchor import ResNet, Vgg

    torch.set_num_threads(2)
    model = (ResNet(56) if model_name == "resnet56" else Vgg()).eval()
    x = torch.rand(batch, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        return median_ms(runs, lambda: model(x))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=os.path.join(ROOT, "target", "onnx-bench"))
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--runs", type=int, nargs=2, default=[30, 8], metavar=("B1", "B64"))
    parser.add_argument("--quick", action="store_true", help="texprune's quick timing runs")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    perf_json = os.path.join(args.dir, "perf.json")
    if not args.skip_export:
        command = ["cargo", "run", "--release", "--example", "perf", "--", "--part", "inference",
                   "--onnx-dir", args.dir, "--out", perf_json]
        if args.quick:
            command.append("--quick")
        subprocess.run(command, cwd=ROOT, check=True)
    with open(perf_json) as f:
        texprune = {(r["model"], r["batch"], round(r["stripes_removed"] * 100)): r
                    for r in json.load(f)["inference"]}

    rows = []
    for model in ["resnet56", "vgg16"]:
        for batch, runs in zip([1, 64], args.runs):
            dense = os.path.join(args.dir, f"{model}_dense.onnx")
            dense_ms = ort_ms(dense, batch, runs)
            pytorch_ms = torch_ms(model, batch, runs)
            for rate in [0, 50, 75]:
                ours = texprune[(model, batch, rate)]
                row = {
                    "model": model, "batch": batch, "stripes_removed": rate,
                    "mac_ratio": ours["mac_ratio"],
                    "texprune_dense_ms": ours["dense_ms"],
                    "texprune_compact_ms": ours["compact_ms"],
                    "ort_dense_ms": dense_ms, "pytorch_dense_ms": pytorch_ms,
                }
                if rate > 0:
                    box = os.path.join(args.dir, f"{model}_{rate}_box.onnx")
                    stripes = os.path.join(args.dir, f"{model}_{rate}_stripes_b{batch}.onnx")
                    box16 = os.path.join(args.dir, f"{model}_{rate}_box16.onnx")
                    row["ort_box_ms"] = ort_ms(box, batch, runs)
                    row["ort_box16_ms"] = ort_ms(box16, batch, runs)
                    row["ort_stripes_ms"] = ort_ms(stripes, batch, runs)
                    row["box_speedup"] = dense_ms / row["ort_box_ms"]
                    row["box16_speedup"] = dense_ms / row["ort_box16_ms"]
                    row["stripes_speedup"] = dense_ms / row["ort_stripes_ms"]
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)

    print(f"\nONNX Runtime {ort.__version__}, CPU, 2 threads; medians, ms\n")
    print("| model | stripes removed | batch | MAC ratio | ORT dense | ORT box | ORT box16 "
          "| ORT stripes | box speedup | box16 speedup | stripes speedup | texprune compact "
          "| texprune dense | PyTorch dense |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v: "–" if v is None else f"{v:.2f}"
    for r in rows:
        print(f"| {r['model']} | {r['stripes_removed']} % | {r['batch']} | {r['mac_ratio']:.2f}x "
              f"| {fmt(r['ort_dense_ms'])} | {fmt(r.get('ort_box_ms'))} "
              f"| {fmt(r.get('ort_box16_ms'))} | {fmt(r.get('ort_stripes_ms'))} "
              f"| {fmt(r.get('box_speedup'))} | {fmt(r.get('box16_speedup'))} "
              f"| {fmt(r.get('stripes_speedup'))} "
              f"| {fmt(r['texprune_compact_ms'])} | {fmt(r['texprune_dense_ms'])} "
              f"| {fmt(r['pytorch_dense_ms'])} |")
    layouts = {}
    print("\nconvolutions as ONNX Runtime runs them (blocked NCHWc, plain, layout reorders):\n")
    print("| file | conv MACs / image | NCHWc convs | plain convs | reorders |")
    print("|---|---|---|---|---|")
    for model in ["resnet56", "vgg16"]:
        for form in ["dense", "50_box", "50_box16", "75_box", "75_box16"]:
            name = f"{model}_{form}.onnx"
            layouts[name] = kernels(os.path.join(args.dir, name))
            k = layouts[name]
            print(f"| {name} | {k['conv_macs'] / 1e6:.1f} M | {k['nchwc_conv']} | "
                  f"{k['plain_conv']} | {k['reorders']} |")
    out = os.path.join(args.dir, "onnx_bench.json")
    with open(out + ".tmp", "w") as f:
        json.dump({"onnxruntime": ort.__version__, "rows": rows, "layouts": layouts}, f,
                  indent=1)
    os.replace(out + ".tmp", out)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
