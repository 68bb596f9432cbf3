#!/usr/bin/env python3
"""Writes the PyTorch fixtures of `tests/pretrained.rs` into `tests/data/torch/`.

Two randomly initialised networks, saved by PyTorch itself, with the logits PyTorch computes on
the first four CIFAR-10 images of `tests/data/foolbox/`:

- `resnet20_reference.pth` and `.safetensors`: a CIFAR ResNet-20 in the layout of the authors'
  code (`models/resnet56.py` of wangyuzhe27/CDP-and-DTC with three blocks per stage): `FilterStripe`
  convs that carry a `FilterSkeleton` parameter, 1x1 projection shortcuts `downsample.{0,1}`,
  `fc`. The skeletons are random (not ones) so that a loader which ignores them is caught.
- `resnet18_torchvision.pth`: a torchvision ResNet-18 (`torchvision.models.resnet.BasicBlock`,
  the keys of `torchvision.models.resnet18()`) at an eighth of the width (stem 8, stages
  8/16/32/64), 10 classes, no skeleton.
- `state_dict_shapes.json`: the key and shape of every tensor (`num_batches_tracked` aside) of
  torchvision's `resnet18()`, `resnet34()`, `resnet50()` and `mobilenet_v2()` (1000 classes, no
  weights downloaded)
  and of the reference's `ResNet56()` and `VGG()` (VGG-16), for checking the zoo's names at full
  size without multi-megabyte files.
- `mobilenet_v2_torchvision.pth`: torchvision's `mobilenet_v2(width_mult=0.25, num_classes=10)`
  (its keys: `features.N.conv.K.…`, `classifier.1`), ImageNet strides on the 32x32 images.
- `vgg_small_reference.pth` and `.safetensors`: the reference's `VGG` (`models/vgg.py`) with
  `cfg = [4, 'M', 6, 'M']` on 32x32 (`features.N`, `classifier`): small enough (20 kB) to seed
  the mutated-file corpus of `tests/malformed_inputs.rs`.

BatchNorm weights, biases and running statistics are random too, and the models run in eval
mode, so the running statistics matter. Input: pixels / 255, normalised with the CIFAR
statistics of `texprune_data::Normalization::cifar()`, `[4, 3, 32, 32]`.

    python3 -m venv ~/torch && ~/torch/bin/pip install torch torchvision safetensors pillow
    ~/torch/bin/python scripts/torch_fixtures.py

Not run by the tests; its outputs are committed.
"""

import json
import pathlib

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock as TorchvisionBasicBlock
from torchvision.models.resnet import ResNet as TorchvisionResNet
from torchvision import models as torchvision_models

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "torch"
IMAGES = sorted((ROOT / "tests" / "data" / "foolbox").glob("cifar10_0[0-3]_*.png"))
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
MEAN = [0.4914, 0.4822, 0.4465]
STD = [0.2023, 0.1994, 0.2010]


class FilterStripe(nn.Conv2d):
    """The reference's conv: `conv2d(x, weight * FilterSkeleton[:, None])`, no bias."""

    def __init__(self, cin, cout, kernel_size=3, stride=1):
        super().__init__(cin, cout, kernel_size, stride, kernel_size // 2, bias=False)
        self.FilterSkeleton = nn.Parameter(torch.ones(cout, kernel_size, kernel_size))

    def forward(self, x):
        weight = self.weight * self.FilterSkeleton.unsqueeze(1)
        return F.conv2d(x, weight, stride=self.stride, padding=self.padding)


class ReferenceBlock(nn.Module):
    def __init__(self, cin, planes, out, stride):
        super().__init__()
        self.conv1 = FilterStripe(cin, planes, 3, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = FilterStripe(planes, out, 3, 1)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = nn.Sequential()
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(
                FilterStripe(cin, out, 1, stride), nn.BatchNorm2d(out)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class ReferenceResNet(nn.Module):
    """`ResNet56` of the reference with `n` blocks per stage (n = 3: ResNet-20)."""

    def __init__(self, n=3, num_classes=10):
        super().__init__()
        self.in_planes = 16
        self.conv1 = FilterStripe(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, n, 1)
        self.layer2 = self._make_layer(32, n, 2)
        self.layer3 = self._make_layer(64, n, 2)
        self.fc = nn.Linear(64, num_classes)

    def _make_layer(self, out, n, stride):
        blocks = []
        for s in [stride] + [1] * (n - 1):
            blocks.append(ReferenceBlock(self.in_planes, out, out, s))
            self.in_planes = out
        return nn.Sequential(*blocks)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(F.adaptive_avg_pool2d(out, (1, 1)).flatten(1))


class ReferenceVgg(nn.Module):
    """The reference's `VGG`: conv + BatchNorm + ReLU per width, 'M' a 2x2 max pool."""

    def __init__(self, cfg, num_classes=10, size=32):
        super().__init__()
        layers, cin = [], 3
        for x in cfg:
            if x == "M":
                layers.append(nn.MaxPool2d(2, 2))
                size //= 2
            else:
                layers += [FilterStripe(cin, x), nn.BatchNorm2d(x), nn.ReLU(inplace=True)]
                cin = x
        layers.append(nn.AvgPool2d(kernel_size=1, stride=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin * size * size, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class NarrowResNet18(TorchvisionResNet):
    """torchvision's ResNet-18 with every width divided by `shrink` (its keys unchanged)."""

    def __init__(self, shrink=8, num_classes=10):
        super().__init__(TorchvisionBasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        base = 64 // shrink
        self.inplanes = base
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.layer1 = self._make_layer(TorchvisionBasicBlock, base, 2)
        self.layer2 = self._make_layer(TorchvisionBasicBlock, 2 * base, 2, stride=2)
        self.layer3 = self._make_layer(TorchvisionBasicBlock, 4 * base, 2, stride=2)
        self.layer4 = self._make_layer(TorchvisionBasicBlock, 8 * base, 2, stride=2)
        self.fc = nn.Linear(8 * base, num_classes)


def randomise(model, generator):
    """Random skeletons, BatchNorm parameters and running statistics; a head of useful scale."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FilterStripe):
                module.FilterSkeleton.uniform_(0.5, 1.5, generator=generator)
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.num_batches_tracked.fill_(100)
    return model.eval()


def images():
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in IMAGES])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(7)
    generator = torch.Generator().manual_seed(11)
    x = images()
    logits = {}
    resnet20 = randomise(ReferenceResNet(3), generator)
    resnet18 = randomise(NarrowResNet18(8), generator)
    vgg = randomise(ReferenceVgg([4, "M", 6, "M"]), generator)
    mobilenet = randomise(
        torchvision_models.mobilenet_v2(width_mult=0.25, num_classes=10), generator
    )
    with torch.no_grad():
        logits["resnet20_reference"] = resnet20(x).tolist()
        logits["resnet18_torchvision"] = resnet18(x).tolist()
        logits["vgg_small_reference"] = vgg(x).tolist()
        logits["mobilenet_v2_torchvision"] = mobilenet(x).tolist()
    torch.save(resnet20.state_dict(), OUT / "resnet20_reference.pth")
    save_file(
        {k: v.contiguous() for k, v in resnet20.state_dict().items()},
        OUT / "resnet20_reference.safetensors",
    )
    torch.save(resnet18.state_dict(), OUT / "resnet18_torchvision.pth")
    torch.save(vgg.state_dict(), OUT / "vgg_small_reference.pth")
    torch.save(mobilenet.state_dict(), OUT / "mobilenet_v2_torchvision.pth")
    save_file(vgg.state_dict(), OUT / "vgg_small_reference.safetensors")
    shapes = {
        name: {k: list(v.shape) for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
        for name, model in [
            ("torchvision_resnet18", torchvision_models.resnet18()),
            ("torchvision_resnet34", torchvision_models.resnet34()),
            ("torchvision_resnet50", torchvision_models.resnet50()),
            ("torchvision_mobilenet_v2", torchvision_models.mobilenet_v2()),
            ("reference_resnet56", ReferenceResNet(9)),
            ("reference_vgg16", ReferenceVgg(VGG16, size=32)),
        ]
    }
    (OUT / "state_dict_shapes.json").write_text(json.dumps(shapes) + "\n")
    meta = {
        "written_by": f"scripts/torch_fixtures.py, torch {torch.__version__}",
        "images": [p.name for p in IMAGES],
        "input": "pixels / 255, normalised with mean "
        f"{MEAN} and std {STD}, shape [4, 3, 32, 32]",
        "logits": logits,
    }
    (OUT / "logits.json").write_text(json.dumps(meta, indent=1) + "\n")
    for path in sorted(OUT.iterdir()):
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
