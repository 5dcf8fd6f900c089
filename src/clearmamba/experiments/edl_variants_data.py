"""Data and networks of the EDL-variants study: real MNIST (LeNet) or the built-in angiography data (CLEAR-Mamba).

A task is a dict of input tuples (so exams can carry frame times and masks next to the frames):
``train``, ``val``, ``test`` -> ``(inputs, labels)`` and ``ood`` -> ``{name: inputs}``, with ``inputs`` a tuple
of tensors indexed together along dim 0, plus ``build(kind, evidence, prior_weight)`` returning a fresh network
(``forward_features`` + ``head``) and ``classes``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

MNIST_OOD = ("fashion", "animal", "letters")


def _split_validation(images: np.ndarray, labels: np.ndarray, val_size: int, seed: int):
    """Hold the last ``val_size`` images of a seeded shuffle out for post-hoc fitting."""
    order = np.random.default_rng(seed).permutation(len(images))
    val, train = np.sort(order[:val_size]), np.sort(order[val_size:])
    return (images[train], labels[train]), (images[val], labels[val])


def mnist_task(config) -> dict:
    """MNIST train (minus a validation hold-out) / test and the OOD sets, LeNet networks."""
    from clearmamba.experiments.edl_mnist import _subset, load_ood_set
    from clearmamba.experiments.lenet import lenet
    from clearmamba.experiments.sources import load_source, require, to_tensor

    for name in ("mnist", *[s for s in config.ood_sets if s != "letters"]):
        require(name)  # fail before any work when a source is missing
    images, labels = load_source("mnist", "train")
    (train_x, train_y), (val_x, val_y) = _split_validation(images, labels, config.val_size, config.seed)
    train_x, train_y = _subset(train_x, train_y, config.train_size, config.seed)
    test_x, test_y = _subset(*load_source("mnist", "test"), config.test_size, config.seed + 1)
    ood = {}
    for i, name in enumerate(config.ood_sets):
        raw = load_ood_set(name, config.letters_per_class, config.seed)
        ood[name] = (to_tensor(_subset(raw, np.zeros(len(raw)), config.ood_size, config.seed + 2 + i)[0]),)

    def build(kind: str, evidence: str = "softplus", prior_weight: float = 1.0) -> nn.Module:
        return lenet(kind, evidence, prior_weight=prior_weight) if kind == "evidential" else lenet(kind)

    return {
        "train": ((to_tensor(train_x),), torch.from_numpy(train_y)),
        "val": ((to_tensor(val_x),), torch.from_numpy(val_y)),
        "test": ((to_tensor(test_x),), torch.from_numpy(test_y)),
        "ood": ood,
        "build": build,
        "classes": 10,
    }


def angiography_task(config) -> dict:
    """The built-in simulated FFA/ICGA exams of ``clearmamba demo`` and a small CLEAR-Mamba (the demo's)."""
    from clearmamba.data.sources import BuiltinData, load_builtin
    from clearmamba.models import create_model
    from clearmamba.training.demo import QUICK, DemoConfig

    demo = QUICK if config.quick else DemoConfig()
    # each set is simulated from its own seed, so larger test / OOD sets leave the training exams unchanged
    sets = load_builtin(BuiltinData(n_train=demo.n_train, n_val=demo.n_val, n_test=config.test_size or demo.n_test,
                                    n_heldout=demo.n_heldout, n_ood=config.ood_size or demo.n_ood, size=demo.size,
                                    frames=demo.frames, classes=demo.classes, seed=config.seed))  # fmt: skip

    def inputs(exams) -> tuple[torch.Tensor, ...]:
        return exams.frames, exams.frame_times, exams.mask

    in_chans = sets["train"].frames.shape[2]
    classes = len(sets["train"].class_names)

    def build(kind: str, evidence: str = "softplus", prior_weight: float = 1.0) -> nn.Module:
        options = {"evidence": evidence, "prior_weight": prior_weight} if kind == "evidential" else {}
        return create_model("clear_mamba_tiny", num_classes=classes, in_chans=in_chans, head=kind, temporal="mamba",
                            backbone_kwargs=dict(demo.backbone_kwargs), **options)

    ood = {name: inputs(sets[name]) for name in sets if name.startswith("ood")}
    return {
        "train": (inputs(sets["train"]), sets["train"].labels),
        "val": (inputs(sets["val"]), sets["val"].labels),
        "test": (inputs(sets["test"]), sets["test"].labels),
        "ood": ood,
        "build": build,
        "classes": classes,
    }


TASKS: dict[str, Callable[..., dict]] = {"mnist": mnist_task, "angiography": angiography_task}
