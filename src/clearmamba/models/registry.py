"""Model registry: ``@register_model`` on a factory function, then ``create_model(name, **kw)``.

Any model file can register its own factories (``from clearmamba.models.registry import register_model``);
the names become available once that file is imported by ``clearmamba.models``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

import torch.nn as nn

ModelFactory = Callable[..., nn.Module]

_MODELS: dict[str, ModelFactory] = {}


def register_model(fn: ModelFactory) -> ModelFactory:
    """Register ``fn`` under its ``__name__``; a second factory with the same name is an error."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"model name {name!r} is already registered by {_MODELS[name].__module__}")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered names matching a shell-style ``pattern`` (e.g. ``"medmamba_*"``)."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    return name in _MODELS


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; keyword arguments override the size's config fields."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(list_models())}")
    return _MODELS[name](**kwargs)
