"""The three architectures of the paper (docs/method.md §2), each defined once as a plain ``torch.nn.Module``.

The deterministic network, every posterior draw of the Bayesian network and every explanation use the
same module: a Bayesian net is this module with priors on its parameters (:mod:`bayesrobust.models.bayesian`).

Every architecture records its *learnable layers* ("layer l" of the paper) and, for each, the module whose
output is that layer's post-activation output (for the last layer: the logits). Explanations seed relevance
there (docs/method.md §2.5); see :func:`explained_layers`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from zennit.layer import Sum

LEAK = 0.01


@dataclass(frozen=True)
class ArchConfig:
    """What builds a network: the architecture name, its hidden size and the input it takes."""

    name: str
    hidden: int = 512
    in_shape: tuple[int, int, int] = (1, 28, 28)
    n_classes: int = 10

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ArchConfig:
        """The config stored by :meth:`to_dict`; ``ValueError`` if a field is missing or not a number (the
        sizes are checked by :func:`check_arch`)."""
        try:
            return cls(str(d["name"]), _whole(d["hidden"]), tuple(_whole(v) for v in d["in_shape"]),
                       _whole(d["n_classes"]))
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise ValueError(f"not an architecture config (name, hidden, in_shape, n_classes): {d!r} "
                             f"({type(err).__name__}: {err})") from None


def _whole(value: object) -> int:
    """An integer stored in JSON (``3`` or ``3.0``), not a bool, text or fraction."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


class Network(nn.Sequential):
    """A sequential network that knows its learnable layers and where their outputs are read.

    ``layers`` is a list of ``(layer_name, output_module_name)`` in forward order: the learnable
    (Conv/Linear) module's qualified name and the qualified name of the module whose forward output is the
    layer's post-activation output.
    """

    def __init__(self, *modules: nn.Module, layers: list[tuple[str, str]], arch: ArchConfig):
        super().__init__(*modules)
        self.layers = layers
        self.arch = arch


def linear(cfg: ArchConfig) -> Network:
    """Flatten → Linear(d, classes): multinomial logistic (or, with one output, linear) regression.
    Not in the paper; the smallest member of the family, used to check inference against exact posteriors."""
    c, hgt, wid = cfg.in_shape
    return Network(nn.Flatten(), nn.Linear(c * hgt * wid, cfg.n_classes), layers=[("1", "1")], arch=cfg)


def fc2(cfg: ArchConfig) -> Network:
    """Flatten → Linear(d, h) → LeakyReLU → Linear(h, h) → LeakyReLU → Linear(h, classes)."""
    c, hgt, wid = cfg.in_shape
    h = cfg.hidden
    return Network(
        nn.Flatten(),
        nn.Linear(c * hgt * wid, h), nn.LeakyReLU(LEAK),
        nn.Linear(h, h), nn.LeakyReLU(LEAK),
        nn.Linear(h, cfg.n_classes),
        layers=[("1", "2"), ("3", "4"), ("5", "5")], arch=cfg)


def conv(cfg: ArchConfig) -> Network:
    """Conv(c→16, k5) → LeakyReLU → MaxPool2 → Conv(16→h, k5) → LeakyReLU → MaxPool(k2, s1) → Linear."""
    c, hgt, wid = cfg.in_shape
    h = cfg.hidden
    side_h = (hgt - 4) // 2 - 4 - 1
    side_w = (wid - 4) // 2 - 4 - 1
    return Network(
        nn.Conv2d(c, 16, kernel_size=5), nn.LeakyReLU(LEAK), nn.MaxPool2d(2),
        nn.Conv2d(16, h, kernel_size=5), nn.LeakyReLU(LEAK), nn.MaxPool2d(kernel_size=2, stride=1),
        nn.Flatten(),
        nn.Linear(side_h * side_w * h, cfg.n_classes),
        layers=[("0", "1"), ("3", "4"), ("7", "7")], arch=cfg)


class ShortcutA(nn.Module):
    """The parameter-free CIFAR shortcut (He et al. 2016, option A): subsample and zero-pad channels."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        pad = self.out_channels - x.shape[1]
        return nn.functional.pad(x, (0, 0, 0, 0, pad // 2, pad - pad // 2))


class BasicBlock(nn.Module):
    """conv3-BN-ReLU-conv3-BN, plus shortcut, then ReLU. The addition is a ``zennit.layer.Sum`` module
    so that LRP rules can treat it (Zennit's residual handling) and hooks can read the block output."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = (ShortcutA(out_channels) if stride != 1 or in_channels != out_channels
                         else nn.Identity())
        self.sum = Sum()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.sum(torch.stack([out, self.shortcut(x)], dim=-1)))


class Normalize(nn.Module):
    """Per-channel standardisation carried by the model, so attacks work in [0, 1] pixel space (docs/method.md §1.2)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def resnet20(cfg: ArchConfig) -> Network:
    """The CIFAR ResNet-20 (He et al. 2016): 3 stages × 3 basic blocks of 16/32/64 channels, option-A
    shortcuts, BatchNorm, global average pooling, Linear(64, classes). ``hidden`` is unused."""
    c = cfg.in_shape[0]
    modules: list[nn.Module] = [Normalize(CIFAR_MEAN[:c] if c == 3 else (0.5,) * c,
                                          CIFAR_STD[:c] if c == 3 else (0.5,) * c),
                                nn.Conv2d(c, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    layers = [("1", "3")]
    in_ch = 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            idx = str(len(modules))
            modules.append(BasicBlock(in_ch, width, stride))
            layers += [(f"{idx}.conv1", f"{idx}.relu1"), (f"{idx}.conv2", f"{idx}.relu2")]
            in_ch = width
    modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, cfg.n_classes)]
    last = str(len(modules) - 1)
    layers.append((last, last))
    net = Network(*modules, layers=layers, arch=cfg)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
    return net


ARCHITECTURES: dict[str, Callable[[ArchConfig], Network]] = {"linear": linear, "fc2": fc2, "conv": conv,
                                                             "resnet20": resnet20}


#: Sanity bounds of an architecture (a stored config beyond them is refused before anything is allocated).
MAX_HIDDEN = 65_536
MAX_CHANNELS = 64
MAX_SIDE = 4_096
MAX_CLASSES = 100_000
#: Largest number of learnable parameters of one network (4 GB of float32).
MAX_PARAMETERS = 10**9
#: Smallest image side of the ``conv`` architecture (two 5×5 convolutions and two poolings leave ≥ 1 pixel).
CONV_MIN_SIDE = 16


def check_arch(cfg: ArchConfig) -> ArchConfig:
    """``cfg`` if it describes a network that can be built and is not absurdly large; ``ValueError`` naming the
    field otherwise. Nothing is allocated (the parameter count is computed on the ``meta`` device).

    Raises
    ------
    ValueError
        Unknown name; hidden size outside [1, :data:`MAX_HIDDEN`]; ``in_shape`` not three sizes (channels
        ≤ :data:`MAX_CHANNELS`, sides ≤ :data:`MAX_SIDE`, ``conv``: sides ≥ :data:`CONV_MIN_SIDE`); classes
        outside [1, :data:`MAX_CLASSES`]; more than :data:`MAX_PARAMETERS` parameters.
    """
    if cfg.name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {cfg.name!r}; expected one of {', '.join(ARCHITECTURES)}")
    if isinstance(cfg.hidden, bool) or not isinstance(cfg.hidden, numbers.Integral):
        raise ValueError(f"hidden size must be an integer, got {cfg.hidden!r}")
    if cfg.hidden <= 0:
        raise ValueError(f"hidden size must be positive, got {cfg.hidden}")
    if cfg.hidden > MAX_HIDDEN:
        raise ValueError(f"hidden size must be at most {MAX_HIDDEN:,}, got {cfg.hidden:,}")
    shape = cfg.in_shape
    whole = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in shape) \
        if isinstance(shape, tuple) else False
    if not whole or len(shape) != 3:
        raise ValueError(f"in_shape must be three sizes (channels, height, width), got {shape!r}")
    if not 1 <= shape[0] <= MAX_CHANNELS or not all(1 <= v <= MAX_SIDE for v in shape[1:]):
        raise ValueError(f"in_shape {shape} is out of range: expected 1 to {MAX_CHANNELS} channels and sides of "
                         f"1 to {MAX_SIDE} pixels")
    if cfg.name == "conv" and min(shape[1:]) < CONV_MIN_SIDE:
        raise ValueError(f"the conv architecture needs images of at least {CONV_MIN_SIDE}x{CONV_MIN_SIDE} "
                         f"pixels, got in_shape {shape}")
    if isinstance(cfg.n_classes, bool) or not isinstance(cfg.n_classes, numbers.Integral) \
            or not 1 <= cfg.n_classes <= MAX_CLASSES:
        raise ValueError(f"n_classes must be an integer in [1, {MAX_CLASSES}], got {cfg.n_classes!r}")
    n = sum(size.numel() for size in expected_shapes(cfg, checked=True)[0].values())
    if n > MAX_PARAMETERS:
        raise ValueError(f"architecture {cfg.name} with hidden size {cfg.hidden} and in_shape {cfg.in_shape} has "
                         f"{n:,} parameters, more than {MAX_PARAMETERS:,}")
    return cfg


def expected_shapes(cfg: ArchConfig, *, checked: bool = False) -> tuple[dict[str, torch.Size],
                                                                        dict[str, torch.Size]]:
    """``(parameters, buffers)``: the state-dict names and shapes of a network of ``cfg``, computed on the
    ``meta`` device (no memory is allocated for the tensors). ``checked``: ``cfg`` passed :func:`check_arch`
    already (otherwise it is checked first)."""
    if not checked:
        check_arch(cfg)
    with torch.device("meta"):
        net = ARCHITECTURES[cfg.name](cfg)
    params = {k: v.shape for k, v in net.named_parameters()}
    buffers = {k: v.shape for k, v in net.state_dict().items() if k not in params}
    return params, buffers


def build(cfg: ArchConfig) -> Network:
    """A freshly initialised network of architecture ``cfg.name``.

    Raises
    ------
    ValueError
        An architecture that :func:`check_arch` refuses (unknown name, a hidden size outside
        [1, :data:`MAX_HIDDEN`], ...), before anything is allocated.
    """
    check_arch(cfg)
    return ARCHITECTURES[cfg.name](cfg)


def explained_layers(net: Network) -> list[tuple[str, nn.Module, nn.Module]]:
    """``(layer_name, learnable_module, output_module)`` for every learnable layer, in forward order."""
    named = dict(net.named_modules())
    return [(name, named[name], named[out]) for name, out in net.layers]
