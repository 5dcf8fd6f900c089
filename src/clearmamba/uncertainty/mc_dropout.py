"""MC Dropout (Gal & Ghahramani 2016): keep dropout on at inference and average T stochastic passes.

The T member probabilities ``[T, b, k]`` go into :meth:`Prediction.from_members`, so the usual split holds:
total entropy H[E_t p_t] = expected entropy E_t H[p_t] (aleatoric) + mutual information (epistemic).

Dropout is switched on through a ``TorchFunctionMode`` that rewrites ``training=False`` to ``True`` for
every dropout call, so ``F.dropout`` inside a ``forward`` is sampled too (torch-uncertainty's wrapper only
finds ``nn.Dropout`` modules and silently returns T identical passes for functional dropout).
Batch norm and everything else stay in eval mode.

Two modes:

- ``full``: T complete passes.
- ``head``: the deterministic trunk runs once, only the head (the part from the first dropout on) runs T
  times. By default the T head passes are one call on the head input repeated T times along the batch
  (``[T*b, ...]``): independent masks per row, so the same distribution, without T Python round trips, which
  cost more than a small head itself. With ``batched=False`` the head runs T times and draws the same masks
  in the same order as full mode, so under the same seed both modes return identical samples.
  The head is found in this order: an explicit ``head="module.name"``; an ``nn.Sequential`` split before
  its first child holding dropout; ``forward_features`` / ``forward_head`` (timm, clearmamba models); the
  smallest submodule holding every dropout module whose output is the model's output.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from clearmamba.uncertainty.outputs import as_prediction
from clearmamba.uncertainty.prediction import Prediction

# functions whose third argument / ``training`` keyword decides whether dropout is applied
_FUNCTIONAL_DROPOUT = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout}
_BUILTIN_DROPOUT = {torch.dropout, torch.feature_dropout, torch.alpha_dropout, torch.feature_alpha_dropout}


class _DropoutSwitch(TorchFunctionMode):
    """Force every dropout call on (``active=True``) or off, and count the calls."""

    def __init__(self, active: bool) -> None:
        super().__init__()
        self.active = active
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _FUNCTIONAL_DROPOUT or func in _BUILTIN_DROPOUT:
            p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
            self.calls += int(p > 0)  # a zero-rate dropout (timm/MedMamba default) samples nothing
        if func in _FUNCTIONAL_DROPOUT:
            if len(args) > 2:  # (input, p, training, ...) passed positionally
                args = (*args[:2], self.active, *args[3:])
            else:
                kwargs["training"] = self.active
        elif func in _BUILTIN_DROPOUT:
            args = (*args[:2], self.active, *args[3:])
        return func(*args, **kwargs)


def dropout_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> module for every dropout module with a rate p > 0 (``nn.Dropout``, ``Dropout2d``, ...)."""
    return {
        name: m for name, m in model.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
    }


def add_head_dropout(model: nn.Module, p: float = 0.2) -> nn.Module:
    """Put ``nn.Dropout(p)`` in front of the model's last ``nn.Linear`` (in place) and return the model."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear to put dropout in front of")
    name, linear = linears[-1]
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Sequential(nn.Dropout(p), linear))
    return model


def _members(outputs: list) -> Prediction:
    # stack T outputs into members [T, b, k]; method scores in ``extra`` are averaged over the passes
    predictions = [as_prediction(o) for o in outputs]
    extra = {k: torch.stack([p.extra[k] for p in predictions]).mean(0) for k in predictions[0].extra}
    return Prediction.from_members(torch.stack([p.probs for p in predictions]), extra=extra)


def _repeatable(head_input: tuple, batch: int) -> bool:
    # a hook-found head may take non-tensor arguments; only batch-first tensors can be repeated safely
    return all(isinstance(h, Tensor) and h.ndim >= 1 and len(h) == batch for h in head_input)


def _members_of_batched(output, t: int, batch: int) -> Prediction:
    # one head call on [(t b), ...] -> members [t, b, k]; method scores are averaged over the t passes
    prediction = as_prediction(output)
    members = prediction.probs.reshape(t, batch, *prediction.probs.shape[1:])
    extra = {k: v.reshape(t, batch, *v.shape[1:]).mean(0) for k, v in prediction.extra.items()}
    return Prediction.from_members(members, extra=extra)


class MCDropout(nn.Module):
    """Wrap a classifier so that eval-mode calls return a ``Prediction`` with ``T`` dropout samples.

    In training mode the wrapper is transparent (``model(x)``), so the same module is trained and sampled.
    """

    def __init__(
        self,
        model: nn.Module,
        num_samples: int = 16,
        mode: str = "full",
        head: str | None = None,
        functional: bool = True,
        batched: bool = True,
    ) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if mode not in ("full", "head"):
            raise ValueError(f"mode must be 'full' or 'head', got {mode!r}")
        if not functional and not dropout_modules(model):
            raise ValueError(f"{type(model).__name__} has no dropout module; add one (add_head_dropout) first")
        self.model = model
        self.num_samples = num_samples
        self.mode = mode
        self.head = head
        self.functional = functional
        self.batched = batched

    def forward(self, x: Tensor):
        if self.training:
            return self.model(x)
        return self.sample(x)

    def sample(self, x: Tensor, num_samples: int | None = None) -> Prediction:
        t = num_samples or self.num_samples
        if self.mode == "full":
            outputs = [self._stochastic(self.model, x) for _ in range(t)]
        else:
            head, head_input = self._run_trunk(x)
            batch = len(x)
            if self.batched and _repeatable(head_input, batch):
                repeated = [h.repeat(t, *[1] * (h.ndim - 1)) for h in head_input]  # (t b) ... in t-major order
                return _members_of_batched(self._stochastic(head, *repeated), t, batch)
            outputs = [self._stochastic(head, *head_input) for _ in range(t)]
        return _members(outputs)

    # ---- dropout switching -------------------------------------------------------------------------
    def _stochastic(self, fn: Callable, *args):
        modules = dropout_modules(self.model).values()
        was_training = [m.training for m in modules]
        for m in modules:  # the module path for functional=False; harmless under the mode
            m.train()
        try:
            if not self.functional:
                return fn(*args)
            with _DropoutSwitch(active=True) as switch:
                out = fn(*args)
            if switch.calls == 0:
                raise ValueError(
                    "MC Dropout ran a pass without any dropout call: the model (or its head, mode='head') has "
                    "no dropout, so every sample would be identical; add dropout (add_head_dropout)"
                )
            return out
        finally:
            for m, flag in zip(modules, was_training):
                m.train(flag)

    # ---- head-only mode ----------------------------------------------------------------------------
    def _run_trunk(self, x: Tensor) -> tuple[Callable, tuple]:
        """Run the deterministic part once; return the head and its input."""
        model = self.model
        if self.head is None and isinstance(model, nn.Sequential):
            split = next((i for i, child in enumerate(model) if dropout_modules(child)), None)
            if split is None:
                raise ValueError("mode='head': this nn.Sequential has no dropout module")
            features = self._deterministic(model[:split], x)
            return model[split:], (features,)
        if self.head is None and hasattr(model, "forward_features") and hasattr(model, "forward_head"):
            return model.forward_head, (self._deterministic(model.forward_features, x),)
        return self._run_trunk_by_hook(x)

    def _deterministic(self, fn: Callable, x: Tensor):
        with _DropoutSwitch(active=False) as switch:
            out = fn(x)
        if switch.calls:
            raise ValueError(
                f"mode='head' needs a deterministic trunk, but dropout ran {switch.calls} time(s) before the "
                "head; use mode='full' or name the head that holds all dropout (head='...')"
            )
        return out

    def _head_candidates(self) -> list[str]:
        if self.head is not None:
            self.model.get_submodule(self.head)  # clear AttributeError when the name is wrong
            return [self.head]
        names = [n.split(".") for n in dropout_modules(self.model)]
        if not names:
            raise ValueError("mode='head' found no dropout module to start the head at; name it with head='...'")
        common = []
        for parts in zip(*names):
            if len(set(parts)) > 1:
                break
            common.append(parts[0])
        # the common ancestor of all dropout modules and its ancestors, deepest first (root excluded)
        return [".".join(common[:i]) for i in range(len(common), 0, -1)]

    def _run_trunk_by_hook(self, x: Tensor) -> tuple[Callable, tuple]:
        seen: dict[str, dict] = {}
        handles = []
        switch = _DropoutSwitch(active=False)
        for name in self._head_candidates():

            def pre_hook(module, args, name=name):
                seen[name] = {"args": args, "trunk_calls": switch.calls}

            def post_hook(module, args, output, name=name):
                seen[name]["output"] = output

            module = self.model.get_submodule(name)
            handles += [module.register_forward_pre_hook(pre_hook), module.register_forward_hook(post_hook)]
        try:
            with switch:
                final = self.model(x)
        finally:
            for h in handles:
                h.remove()
        for name, record in seen.items():
            if record.get("output") is final:
                if record["trunk_calls"]:
                    raise ValueError(f"mode='head': dropout runs before the head {name!r}; use mode='full'")
                return self.model.get_submodule(name), record["args"]
        raise ValueError(
            "mode='head' could not find a head: no submodule holding all dropout returns the model's output "
            f"(tried {list(seen) or self._head_candidates()}); name it with head='...' or use mode='full'"
        )
