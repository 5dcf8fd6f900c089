"""Deep ensembles (Lakshminarayanan et al. 2017): M members trained independently, predictions averaged.

Members are trained one after the other with their own seed (:func:`train_members`), each saved as soon as
it is done, so an interrupted run resumes at the first missing member. At inference the members run
vectorised: ``torch.func.stack_module_state`` stacks their weights and ``vmap`` evaluates one
``functional_call`` over the member axis; members that cannot be stacked (different architectures) or
whose ops ``vmap`` does not support fall back to a plain loop, with the same result.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from clearmamba.uncertainty.outputs import as_prediction
from clearmamba.uncertainty.prediction import Prediction


def _same_architecture(members: Sequence[nn.Module]) -> bool:
    def signature(m: nn.Module):
        tensors = {**dict(m.named_parameters()), **dict(m.named_buffers())}
        return type(m), {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}

    first = signature(members[0])
    return all(signature(m) == first for m in members[1:])


class DeepEnsemble(nn.Module):
    """Average M member classifiers; eval-mode calls return ``Prediction.from_members`` ``[M, b, k]``."""

    def __init__(self, members: Sequence[nn.Module], vectorize: bool = True) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.vectorize = vectorize and len(members) > 1 and _same_architecture(members)
        self._stacked_key = None
        self._stacked = None

    def forward(self, x: Tensor) -> Prediction:
        if self.training:
            raise RuntimeError("train ensemble members one by one (train_members); DeepEnsemble is for inference")
        if self.vectorize:
            try:
                return self.forward_vectorized(x)
            except (RuntimeError, NotImplementedError, TypeError, ValueError) as error:
                warnings.warn(f"vmap over ensemble members failed ({error}); using the member loop", stacklevel=2)
                self.vectorize = False
        return self.forward_loop(x)

    def forward_loop(self, x: Tensor) -> Prediction:
        return _combine([as_prediction(member(x)) for member in self.members])

    def forward_vectorized(self, x: Tensor) -> Prediction:
        params, buffers, base = self._stack()

        def one_member(p, b, inputs):
            prediction = as_prediction(functional_call(base, (p, b), (inputs,)))
            return prediction.probs, dict(prediction.extra)

        probs, extra = vmap(one_member, in_dims=(0, 0, None))(params, buffers, x)
        return Prediction.from_members(probs, extra={k: v.mean(0) for k, v in extra.items()})

    def _stack(self):
        # restack only when a member's weights changed (optimizer steps bump the tensor versions)
        tensors = [t for m in self.members for t in (*m.parameters(), *m.buffers())]
        key = tuple((id(t), t._version) for t in tensors)
        if key != self._stacked_key:
            params, buffers = stack_module_state(list(self.members))
            base = copy.deepcopy(self.members[0]).to("meta")
            base.eval()
            self._stacked = (params, buffers, base)
            self._stacked_key = key
        return self._stacked


def _combine(predictions: list[Prediction]) -> Prediction:
    extra = {k: torch.stack([p.extra[k] for p in predictions]).mean(0) for k in predictions[0].extra}
    return Prediction.from_members(torch.stack([p.probs for p in predictions]), extra=extra)


def _save_state(model: nn.Module, path: Path) -> None:
    # atomic: write a temporary file, then rename over the target
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)


def _load_state(model: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as error:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"cannot load ensemble member {path}: {error}") from error


def train_members(
    build: Callable[[int], nn.Module],
    train_one: Callable[[nn.Module, int], None],
    num_members: int,
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> list[nn.Module]:
    """Train ``num_members`` models independently and resumably.

    For member ``m`` the global RNG is seeded with ``seed + m``, ``build(m)`` makes a fresh model and
    ``train_one(model, m)`` trains it (vary augmentation with ``m`` if wanted). With ``out_dir`` each member
    is saved as ``member_{m}.pt`` (state dict, loaded with ``weights_only=True``) and members already on
    disk are loaded instead of retrained.
    """
    if num_members < 1:
        raise ValueError(f"num_members must be >= 1, got {num_members}")
    directory = Path(out_dir) if out_dir is not None else None
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    members = []
    for m in range(num_members):
        torch.manual_seed(seed + m)
        model = build(m)
        path = directory / f"member_{m}.pt" if directory is not None else None
        if path is not None and path.exists():
            _load_state(model, path)
        else:
            train_one(model, m)
            if path is not None:
                _save_state(model, path)
        members.append(model.eval())
    return members
