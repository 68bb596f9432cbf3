#!/usr/bin/env python3
"""Rebuilds a texprune compact model in PyTorch from `compact.safetensors` and `compact.json`.

`texprune::pytorch::export` (and `examples/train.rs` at the end of a run) writes the compact
model's tensors under PyTorch names and a JSON layout: the prunable convs (stride, dilation, groups,
padding, live stripes) and, for the zoo's ResNets and VGGs, the architecture. This script turns them into a
PyTorch module whose convs compute only their live stripes, position by position (METHOD §5: a
stripe `W[f, :, i, j]` with skeleton entry 1 adds `W[f, :, i, j] · x[:, :, shifted by (i, j)]`
to output channel `f`), and, given `probe.safetensors` (images and texprune's logits on them),
prints how far PyTorch's logits are from texprune's.

    python3 -m venv ~/torch && ~/torch/bin/pip install torch safetensors
    ~/torch/bin/python scripts/read_compact.py target/train        # the folder of a run
    ~/torch/bin/python scripts/read_compact.py W.safetensors L.json --probe P.safetensors

For a model outside the zoo (`"architecture": null`), `load(weights, layout)` gives the state
dict and a `StripeConv2d` per conv, to call from your own forward. Not run by the tests.
"""

import argparse
import json
import pathlib

import torch
from safetensors.torch import load_file
from torch import nn
import torch.nn.functional as F


def padding_at(padding, kernel, stride, size):
    """`((top, bottom), (left, right))` of a layout's padding entry on an `(h, w)` input.

    `"same"` is Burn's: `ceil(size / stride)` outputs, `(o - 1) * s + k - size` zeros split
    evenly with the odd one after, `k` the undilated kernel size."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        def same(k, s, n):
            o = -(-n // s)
            total = max((o - 1) * s + k - n, 0) if o > 0 else 0
            return total // 2, total - total // 2
        return same(kernel[0], stride[0], size[0]), same(kernel[1], stride[1], size[1])
    top, left, bottom, right = padding["explicit"]
    return (top, bottom), (left, right)


class StripeConv2d(nn.Module):
    """A conv that computes only its live stripes: `weight` is `W * S`; a stripe is live where
    `skeleton` is not zero. A grouped conv runs as one `conv2d` of `W * S` (its dead stripes
    are zeros there)."""

    def __init__(self, weight, skeleton, bias, conv):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.stride, self.dilation = tuple(conv["stride"]), tuple(conv["dilation"])
        self.groups, self.padding = conv["groups"], conv["padding"]
        kh, kw = skeleton.shape[1:]
        # For each kernel position, the filters with a live stripe there.
        self.positions = [
            (i, j, torch.nonzero(skeleton[:, i, j] != 0).flatten())
            for i in range(kh)
            for j in range(kw)
        ]
        self.positions = [(i, j, f) for i, j, f in self.positions if len(f) > 0]

    def forward(self, x):
        cout, _, kh, kw = self.weight.shape
        (sh, sw), (dh, dw) = self.stride, self.dilation
        n, _, h, w = x.shape
        (top, bottom), (left, right) = padding_at(self.padding, (kh, kw), self.stride, (h, w))
        xp = F.pad(x, (left, right, top, bottom))
        if self.groups > 1:
            return F.conv2d(xp, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        hp, wp = xp.shape[2:]
        ho = max(hp - dh * (kh - 1) - 1, 0) // sh + 1
        wo = max(wp - dw * (kw - 1) - 1, 0) // sw + 1
        out = x.new_zeros(n, cout, ho, wo)
        for i, j, filters in self.positions:
            y0, x0 = i * dh, j * dw
            shifted = xp[:, :, y0 : y0 + sh * (ho - 1) + 1 : sh, x0 : x0 + sw * (wo - 1) + 1 : sw]
            stripes = self.weight[filters][:, :, i : i + 1, j : j + 1]
            out[:, filters] += F.conv2d(shifted, stripes)
        if self.bias is not None:
            out += self.bias.view(1, -1, 1, 1)
        return out


def load(weights, layout):
    """The state dict, the layout and a `StripeConv2d` per conv (by PyTorch module path)."""
    state = load_file(str(weights))
    layout = json.loads(pathlib.Path(layout).read_text())
    if layout.get("format") != "texprune-compact" or layout.get("version") != 2:
        raise ValueError(f"{layout}: not a texprune compact layout of version 2")
    convs = {}
    for conv in layout["convs"]:
        name = conv["name"]
        bias = state.get(f"{name}.bias") if conv["bias"] else None
        # A compact conv's weight is already W * S with S in {0, 1}; a dense one's is W.
        skeleton = state[f"{name}.FilterSkeleton"]
        weight = state[f"{name}.weight"] * skeleton.unsqueeze(1)
        convs[name] = StripeConv2d(weight, skeleton, bias, conv)
    return state, layout, convs


class Compact(nn.Module):
    """A zoo ResNet or VGG, rebuilt from an export."""

    def __init__(self, state, layout, convs):
        super().__init__()
        self.state, self.arch = state, layout["architecture"]
        if self.arch is None:
            raise ValueError("the layout has no architecture: write the forward with load()")
        self.convs = nn.ModuleDict({k.replace(".", "_"): v for k, v in convs.items()})

    def conv(self, name, x):
        return self.convs[name.replace(".", "_")](x)

    def bn(self, name, x):
        s = self.state
        return F.batch_norm(
            x, s[f"{name}.running_mean"], s[f"{name}.running_var"],
            s[f"{name}.weight"], s[f"{name}.bias"], training=False, eps=1e-5,
        )

    def linear(self, name, x):
        return F.linear(x, self.state[f"{name}.weight"], self.state.get(f"{name}.bias"))

    def forward(self, x):
        if self.arch["kind"] == "vgg":
            index = 0
            for layer in self.arch["layers"]:
                if layer == "MaxPool":
                    x, index = F.max_pool2d(x, 2), index + 1
                else:
                    name = f"features.{index}"
                    x = F.relu(self.bn(f"features.{index + 1}", self.conv(name, x)))
                    index += 3
            return self.linear("classifier", x.flatten(1))
        x = F.relu(self.bn("bn1", self.conv("conv1", x)))
        if self.arch["style"] == "ImageNet":
            x = F.max_pool2d(x, 3, 2, 1)
        for stage, blocks in enumerate(self.arch["stage_blocks"]):
            for b in range(blocks):
                path = f"layer{stage + 1}.{b}"
                k = 1
                while f"{path}.conv{k + 1}.weight" in self.state:
                    k += 1
                out = x
                for i in range(1, k + 1):
                    out = self.bn(f"{path}.bn{i}", self.conv(f"{path}.conv{i}", out))
                    if i < k:
                        out = F.relu(out)
                shortcut = x
                if f"{path}.downsample.0.weight" in self.state:
                    shortcut = self.bn(f"{path}.downsample.1", self.conv(f"{path}.downsample.0", x))
                x = F.relu(out + shortcut)
        return self.linear("fc", F.adaptive_avg_pool2d(x, 1).flatten(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", help="compact.safetensors, or the folder of a run")
    parser.add_argument("layout", nargs="?", help="compact.json")
    parser.add_argument("--probe", help="probe.safetensors: input and texprune's logits")
    args = parser.parse_args()
    weights = pathlib.Path(args.weights)
    if weights.is_dir():
        run = weights
        weights, layout = run / "compact.safetensors", run / "compact.json"
        probe = args.probe or run / "probe.safetensors"
    else:
        layout, probe = args.layout, args.probe
    state, layout, convs = load(weights, layout)
    model = Compact(state, layout, convs).eval()
    live = sum(c["live_stripes"] for c in layout["convs"])
    params = sum(v.numel() for v in state.values())
    print(f"{layout['architecture']['kind']}: {len(convs)} convs, {live} live stripes, "
          f"{params} values in the file")
    if probe is None:
        return
    probe = load_file(str(probe))
    with torch.no_grad():
        ours = model(probe["input"])
    theirs = probe["logits"]
    deviation = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    agree = (ours.argmax(1) == theirs.argmax(1)).float().mean().item()
    print(f"logits on {len(theirs)} probe images: max |PyTorch - texprune| = {deviation:.2e} "
          f"({deviation / scale:.2e} of the largest logit), same class on {100 * agree:.0f} %")


if __name__ == "__main__":
    main()
