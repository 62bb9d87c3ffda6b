"""Which layers are explained, and where their outputs are read (docs/method.md §2.5, §5.1).

Layer ``l`` is the ``l``-th learnable (Linear/Conv) module of a
:class:`~bayesrobust.models.architectures.Network`, counted from 0 in forward order. Its *explained
output* is the output of the module listed next to it in ``net.layers``: the post-activation output of the
layer, or the logits for the last layer. Every explanation method seeds its backward pass at the argmax unit
of that output (over all of its units, e.g. ``C·H·W`` for a conv layer) and returns relevance at the input
pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..models.architectures import Network, explained_layers

#: ``None`` or ``'all'`` (every learnable layer) or layer indices.
LayerSelection = None | str | int | Sequence[int]

INITIALS = ("one_hot", "value")


def resolve_layers(net: Network, layers: LayerSelection = None) -> list[int]:
    """The sorted, de-duplicated layer indices selected by ``layers``.

    Parameters
    ----------
    net
        The network whose learnable layers are counted (``len(net.layers)`` of them).
    layers
        ``None`` or ``'all'`` for every layer, an int, or a sequence of ints; negative indices count from
        the last layer (``-1`` is the logits).

    Raises
    ------
    ValueError
        An index out of range or a value that is not an index; the message lists the valid indices and
        the layer names.
    """
    n = len(net.layers)
    valid = ", ".join(f"{i} ({name})" for i, (name, _) in enumerate(net.layers))
    if layers is None or (isinstance(layers, str) and layers == "all"):
        return list(range(n))
    if isinstance(layers, (int, str)):
        layers = [layers]  # type: ignore[list-item]
    out = set()
    for item in layers:  # type: ignore[union-attr]
        try:
            idx = int(item)
        except (TypeError, ValueError):
            raise ValueError(f"unknown layer {item!r}; expected 'all' or indices among {valid}") from None
        if not -n <= idx < n:
            raise ValueError(f"layer {idx} out of range; this {net.arch.name} network has layers {valid}")
        out.add(idx % n)
    if not out:
        raise ValueError(f"no layer selected; expected 'all' or indices among {valid}")
    return sorted(out)


def layer_names(net: Network, layers: Sequence[int]) -> list[str]:
    """The qualified module names of the learnable layers ``layers``."""
    return [net.layers[i][0] for i in layers]


def output_modules(net: Network, layers: Sequence[int]) -> list[nn.Module]:
    """The module whose forward output is the explained output of each layer in ``layers``."""
    found = explained_layers(net)
    return [found[i][2] for i in layers]


@contextmanager
def capture_outputs(net: Network, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Record the explained output of each layer during the forward passes run inside the context.

    Yields a dict ``layer index → output tensor`` (of the latest forward pass). The forward hooks are
    removed on exit, also after an exception.
    """
    captured: dict[int, torch.Tensor] = {}
    handles = []
    try:
        for idx, module in zip(layers, output_modules(net, layers)):
            def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor, idx: int = idx) -> None:
                captured[idx] = output
            handles.append(module.register_forward_hook(hook))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def check_initial(initial: str) -> str:
    """``initial`` if it is one of :data:`INITIALS`; ``ValueError`` listing them otherwise."""
    if initial not in INITIALS:
        raise ValueError(f"unknown initial relevance {initial!r}; expected one of {', '.join(INITIALS)}")
    return initial


def argmax_seed(output: torch.Tensor, initial: str = "one_hot") -> tuple[torch.Tensor, torch.Tensor]:
    """The initial relevance at the argmax unit of each image's output.

    Parameters
    ----------
    output
        Explained output (N, ...) of one layer.
    initial
        ``'one_hot'`` (the reference: 1 at the argmax unit) or ``'value'`` (the output value there).

    Returns
    -------
    seed : torch.Tensor
        Same shape as ``output``: zero except at each image's argmax unit.
    unit : torch.Tensor
        (N,) int64, the argmax unit of each image over the flattened output (first maximum on ties).
    """
    flat = output.detach().reshape(output.shape[0], -1)
    unit = flat.argmax(dim=1)
    value = flat.gather(1, unit[:, None]) if initial == "value" else torch.ones_like(flat[:, :1])
    seed = torch.zeros_like(flat).scatter_(1, unit[:, None], value).reshape(output.shape)
    if not output.is_contiguous():  # e.g. channels_last: keep the backward pass in the output's format
        seed = torch.empty_like(output).copy_(seed)
    return seed, unit
