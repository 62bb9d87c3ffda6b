"""Checks of input values, written once: every stage, attack and explanation function calls these before any
work, so a bad value is a one-line ``ValueError`` naming it and what was expected, never a silent default or
a result computed from NaN.

- counts (:func:`count`): ``None`` means "the default", ``0`` or a negative number is an error — never read
  as the default;
- real numbers (:func:`real`): finite, inside an interval;
- images (:func:`check_images`): floating point, finite (no NaN or ±inf pixel), in [0, 1].
"""

from __future__ import annotations

import math
import numbers
from typing import Any

#: Largest Linf radius that means anything on images with pixels in [0, 1].
MAX_LINF_EPSILON = 1.0


def count(name: str, value: Any, *, minimum: int = 1, allow_none: bool = True) -> int | None:
    """``value`` as an int ``>= minimum`` (``None`` passes when ``allow_none``: the caller's default).

    Raises
    ------
    ValueError
        Not an integer (a bool, a float with a fraction, text) or below ``minimum``.
    """
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, numbers.Real)) \
            or not math.isfinite(value) or int(value) != value:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        what = {1: "positive", 0: "non-negative"}.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"{name} must be {what}, got {value}")
    return int(value)


def real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False, allow_none: bool = True) -> float | None:
    """``value`` as a finite float in the interval given by ``low``/``high`` (open ends with ``*_open``).

    Raises
    ------
    ValueError
        Not a number, NaN, ±inf, or outside the interval (the message gives it).
    """
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    interval = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number in {interval}, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be in {interval}, got {value:g}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be in {interval}, got {value:g}")
    return value


def positive(name: str, value: Any, allow_none: bool = True) -> float | None:
    """A finite number ``> 0`` (``None`` passes when ``allow_none``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite positive number, got {float(value)}")
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value:g}")
    return float(value)


def epsilon(value: Any, norm: str, name: str = "epsilon") -> float:
    """An attack radius: finite, ``>= 0``, and ``<= 1`` in Linf (pixels are in [0, 1])."""
    high = MAX_LINF_EPSILON if norm == "linf" else None
    return real(f"{name} ({norm})" if norm == "linf" else name, value, low=0, high=high,
                allow_none=False)  # type: ignore[return-value]


def seed(name: str, value: Any) -> int:
    """A random seed: an integer ``>= 0`` (NumPy's seeding refuses negative ones)."""
    return count(name, value, minimum=0, allow_none=False)  # type: ignore[return-value]


def check_images(x: Any, name: str = "x") -> None:
    """Check a batch of images: a floating-point tensor (N, ...) whose pixels are all finite and in [0, 1].

    Raises
    ------
    ValueError
        Not floating point, no batch dimension, a NaN or ±inf pixel (the message counts them), or pixels
        outside [0, 1] (the message gives the range).
    """
    import torch
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of pixels in [0, 1], got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a floating-point tensor of pixels in [0, 1], got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have a leading batch dimension, e.g. (N, C, H, W); "
                         f"got shape {tuple(x.shape)}")
    if not x.numel():
        return
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        nan = int(torch.isnan(x).sum())
        inf = int((~finite).sum()) - nan
        raise ValueError(f"{name} holds {nan} NaN and {inf} infinite pixel(s); expected finite pixels in [0, 1]")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        raise ValueError(f"{name} must hold pixels in [0, 1] (normalisation belongs in the model, "
                         f"docs/method.md §1.2); got values in [{low:.4g}, {high:.4g}]")
