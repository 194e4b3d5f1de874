"""Course-wide settings: run modes, device, seeds, paths and fallback notices.

Every chapter reads its knobs from here so the same code runs in three modes:

* **full** (default): the sizes used for the published site;
* **fast** (``CNN_TOPICS_FAST=1``): smaller images, fewer steps and epochs, so
  that every notebook runs in under a minute on two CPU cores (the tests);
* **offline** (``CNN_TOPICS_OFFLINE=1``, or any failed download): pretrained
  weights, images and datasets are replaced by local stand-ins, announced by
  one visible :func:`fallback_notice` each.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TypeVar

import numpy as np
import platformdirs
import torch

__all__ = [
    "fast_mode",
    "offline",
    "device",
    "seed_everything",
    "data_dir",
    "pick",
    "fallback_notice",
    "active_fallbacks",
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

T = TypeVar("T")


def _env_flag(name: str) -> bool:
    """Read a boolean environment variable, refusing values that mean neither."""
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"Environment variable {name}={os.environ[name]!r} is not a boolean; "
        f"use one of {sorted(_TRUE)} to switch it on or {sorted(_FALSE - {''})} to switch it off."
    )


def fast_mode() -> bool:
    """Whether the course runs in fast mode (env ``CNN_TOPICS_FAST``).

    Fast mode shrinks the work (image size, optimisation steps, epochs, sample
    counts) but runs exactly the same code paths as full mode.

    Examples
    --------
    >>> import os; os.environ["CNN_TOPICS_FAST"] = "1"
    >>> fast_mode()
    True
    """
    return _env_flag("CNN_TOPICS_FAST")


def offline() -> bool:
    """Whether downloads are switched off (env ``CNN_TOPICS_OFFLINE``).

    Offline, files already in the cache are still used (after their hash is
    checked); nothing new is downloaded and every missing asset falls back to a
    local stand-in with a :func:`fallback_notice`.
    """
    return _env_flag("CNN_TOPICS_OFFLINE")


def pick(full: T, fast: T) -> T:
    """Return ``fast`` in fast mode and ``full`` otherwise.

    The one place where a notebook's sizes depend on the mode, e.g.
    ``steps = pick(full=300, fast=20)``; notebooks print the value they got
    rather than hard-coding it in their text.
    """
    return fast if fast_mode() else full


def device() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python's, NumPy's and PyTorch's random generators (CPU and CUDA).

    Notebooks call this once, in their set-up cell, so that every figure is
    reproducible run after run.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}.")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must lie in [0, 2**32), got {seed}.")
    random.seed(int(seed))
    np.random.seed(int(seed))
    torch.manual_seed(int(seed))


def data_dir() -> Path:
    """Folder for downloads and cached course models (created if missing).

    ``CNN_TOPICS_DATA`` when set, else the user's cache directory
    (``~/.cache/cnn-topics`` on Linux).
    """
    root = os.environ.get("CNN_TOPICS_DATA") or platformdirs.user_cache_dir("cnn-topics")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


_FALLBACKS: dict[str, str] = {}


def fallback_notice(key: str, message: str) -> None:
    """Announce, once per ``key`` and process, that an asset was replaced.

    The message says what was replaced by what and how results differ; it is
    printed (so that it appears in the notebook's output and on the published
    page) and remembered for :func:`active_fallbacks`.
    """
    if key not in _FALLBACKS:
        _FALLBACKS[key] = message
        print(f"NOTICE (fallback) - {message}", flush=True)


def active_fallbacks() -> dict[str, str]:
    """The fallbacks announced so far in this process, ``{key: message}``."""
    return dict(_FALLBACKS)
