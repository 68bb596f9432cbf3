#!/usr/bin/env python3
"""What users would run instead: PyTorch on the same CPU, timed like `examples/perf.rs`.

The models are the zoo's, written in PyTorch: ResNet-56 for CIFAR (3x3 stem, three stages of nine
BasicBlocks of widths 16/32/64, 1x1 projection shortcuts where the shape changes, global average
pool, linear head) and VGG-16 for 32x32 (3x3 convs without bias + BatchNorm + ReLU, 2x2 max pools,
linear head on the flattened 512x1x1 map). Channel-pruned variants scale the inner width of every
block (ResNet: the first conv of each BasicBlock; VGG: every conv but the last), as Torch-Pruning or
ResRep leave a network, to the MAC ratios given by `--ratios` (by default the ratios of texprune's
compact models with 50 % and 75 % of the stripes removed: 2.03x and 4.19x for ResNet-56,
2.03x and 4.38x for VGG-16).

    python3 -m venv ~/torch && ~/torch/bin/pip install torch
    ~/torch/bin/python scripts/torch_anchor.py                 # ~2 minutes on 2 cores
    ~/torch/bin/python scripts/torch_anchor.py --quick --out torch.json

Prints one table (medians, ms) and writes the numbers as JSON (`--out`). Not run by the tests.
"""

import argparse
import json
import statistics
import time

import torch
from torch import nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, mid, out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut = None
        if stride != 1 or cin != out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    """ResNet-56 for CIFAR; `scale` multiplies every block's inner width."""

    def __init__(self, depth=56, scale=1.0, classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for stage, width in enumerate([16, 32, 64]):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                mid = max(1, round(width * scale))
                blocks.append(Block(cin, mid, width, stride))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Vgg(nn.Module):
    """VGG-16 for 32x32; `scale` multiplies every conv's width but the last."""

    def __init__(self, scale=1.0, classes=10):
        super().__init__()
        cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
        last = max(i for i, c in enumerate(cfg) if c != "M")
        layers, cin = [], 3
        for i, c in enumerate(cfg):
            if c == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = c if i == last else max(1, round(c * scale))
            layers += [nn.Conv2d(cin, out, 3, 1, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            cin = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def macs(model, size=32):
    """Conv and linear multiply-accumulates of one 3xsizexsize image."""
    total = 0

    def conv_hook(module, _, out):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += out.numel() * module.in_channels * k // module.groups

    def linear_hook(module, _, out):
        nonlocal total
        total += out.numel() * module.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return total


def scale_for(build, ratio):
    """The inner-width scale whose MAC ratio to the dense model is closest to `ratio`."""
    dense = macs(build(1.0))
    lo, hi = 0.01, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if dense / macs(build(mid)) > ratio:
            lo = mid
        else:
            hi = mid
    return hi


def median_ms(runs, f):
    f()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def inference_ms(model, batch, runs):
    model.eval()
    x = torch.randn(batch, 3, 32, 32)
    with torch.inference_mode():
        return median_ms(runs, lambda: model(x))


def train_step_ms(model, runs):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return median_ms(runs, step)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs per number")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--out", default="torch_anchor.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    runs_1, runs_64, steps = (20, 5, 3) if args.quick else (50, 10, 10)
    families = {
        "resnet56": (lambda s: ResNet(56, s), [2.03, 4.19]),
        "vgg16": (lambda s: Vgg(s), [2.03, 4.38]),
    }
    rows = []
    for name, (build, ratios) in families.items():
        dense = build(1.0)
        dense_macs = macs(dense)
        variants = [("dense", 1.0)] + [(f"channel-pruned {r:.2f}x", scale_for(build, r)) for r in ratios]
        for label, scale in variants:
            model = dense if scale == 1.0 else build(scale)
            row = {
                "model": name,
                "variant": label,
                "scale": scale,
                "mac_ratio": dense_macs / macs(model),
                "batch1_ms": inference_ms(model, 1, runs_1),
                "batch64_ms": inference_ms(model, 64, runs_64),
            }
            if name == "resnet56" and scale == 1.0:
                row["train_step_ms"] = train_step_ms(build(1.0), steps)
            rows.append(row)
            print(f"{name} {label}: {row}", flush=True)
    print(f"\nPyTorch {torch.__version__}, {torch.get_num_threads()} threads, CPU, 3x32x32\n")
    print("| model | variant | MAC ratio | batch 1 ms | batch 64 ms | training step ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        step = f"{r['train_step_ms']:.0f}" if "train_step_ms" in r else ""
        print(
            f"| {r['model']} | {r['variant']} | {r['mac_ratio']:.2f}x | {r['batch1_ms']:.1f} "
            f"| {r['batch64_ms']:.1f} | {step} |"
        )
    with open(args.out, "w") as f:
        json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
