"""One protocol for every uncertainty method, so a training loop runs any of them without branching.

``METHODS`` maps ``mc_dropout | ensemble | swag | variational | heteroscedastic | evidential | softmax | cal``
to a :class:`Method` subclass; ``create_method(name, **options)`` builds one. A generic loop::

    method = create_method(name, **options)
    trained = []
    for member in range(method.num_members):              # 1, except for deep ensembles
        torch.manual_seed(seed + member)                  # independent members
        model = method.prepare(build_model(), num_classes=k, dataset_size=len(train_set))
        optimizer = make_optimizer(model.parameters())
        for epoch in range(num_epochs):
            model.train()
            for step, (x, y) in enumerate(train_loader):
                output = model(x)                          # method-specific training output
                loss = method.loss(output, y, epoch=epoch + step / len(train_loader))
                ...backward, step...
            method.on_epoch_end(model, epoch, num_epochs)  # SWAG collects snapshots here
        trained.append(method.finalize(model, train_loader))  # SWAG draws weight samples + BN refresh
    model = method.combine(trained)                        # DeepEnsemble for ensembles, else the model
    prediction = method.predict(model, x)                  # always a Prediction, same scores for all

Rules the loop can rely on:

- ``prepare`` returns an ``nn.Module`` whose parameters are the ones to optimise; it accepts a clearmamba
  model (head returning a ``Prediction``) or any classifier returning logits ``[b, k]``.
- In train mode the module returns whatever ``method.loss`` expects (a ``Prediction`` for softmax,
  evidential, MC dropout and ensembles; ``VariationalOutput``, ``HeteroscedasticOutput`` or ``CALOutput``
  otherwise); ``as_prediction(output)`` reads any of them for logging. In eval mode it returns a
  ``Prediction``; ``predict`` sets eval mode and ``no_grad``.
- ``loss(output, target, epoch=None)``, with ``epoch`` the fractional number of epochs done.
- To save, take ``model.state_dict()`` of the combined model; to load, rebuild it the same way
  (``combine([prepare(build_model(), ...) for _ in range(num_members)])``) and ``load_state_dict``.
- Post-hoc steps (temperature scaling, conformal sets) apply to any method's ``Prediction`` afterwards.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from clearmamba.uncertainty.cal import CALClassifier, CALLoss
from clearmamba.uncertainty.edl_losses import SoftmaxCrossEntropy
from clearmamba.uncertainty.edl_variants import create_evidential_loss
from clearmamba.uncertainty.ensemble import DeepEnsemble
from clearmamba.uncertainty.evidence import get_evidence_fn
from clearmamba.uncertainty.heads import RaPHead
from clearmamba.uncertainty.heteroscedastic import HeteroscedasticClassifier, HeteroscedasticLoss
from clearmamba.uncertainty.mc_dropout import MCDropout, add_head_dropout, dropout_modules
from clearmamba.uncertainty.outputs import as_prediction
from clearmamba.uncertainty.prediction import Prediction
from clearmamba.uncertainty.swag import SWAG, refresh_batchnorm
from clearmamba.uncertainty.variational import ELBOLoss, VariationalClassifier, to_variational

PREDICTION_KINDS = ("softmax", "evidential")


class PredictionAdapter(nn.Module):
    """Make a classifier return a ``Prediction`` of the wanted kind (``softmax`` or ``evidential``)."""

    def __init__(
        self, model: nn.Module, kind: str = "softmax", evidence: str = "softplus", prior_weight: float = 1.0
    ) -> None:
        super().__init__()
        if kind not in PREDICTION_KINDS:
            raise ValueError(f"kind must be one of {PREDICTION_KINDS}, got {kind!r}")
        self.model = model
        self.kind = kind
        self.evidence_name = evidence
        self.evidence_fn = get_evidence_fn(evidence)
        self.prior_weight = prior_weight  # R-EDL: evidence in units of the prior weight, e / lambda

    @classmethod
    def wrap(cls, model: nn.Module, kind: str, evidence: str = "softplus", prior_weight: float = 1.0) -> nn.Module:
        """``model`` itself when it already returns ``kind`` predictions (it declares ``prediction_kind``, as
        clearmamba models do), else the adapter around it; a model of the other kind is an error."""
        declared = getattr(model, "prediction_kind", None)
        if declared is None:
            return cls(model, kind, evidence, prior_weight)
        if declared != kind:
            raise ValueError(f"the model returns {declared} predictions but the method trains {kind} ones; build the "
                             f"model with head={kind!r}")
        return model

    def forward(self, *inputs: Tensor) -> Prediction:
        prediction = as_prediction(self.model(*inputs))
        if self.kind == "evidential" and prediction.evidence is None:
            if prediction.logits is None:
                raise ValueError("an evidential method needs logits to turn into evidence")
            evidence = self.evidence_fn(prediction.logits) / self.prior_weight
            return Prediction.from_evidence(evidence, logits=prediction.logits)
        return prediction


class Method(ABC):
    """Defaults shared by all methods: one member, no epoch hook, nothing to finalise.

    Each method must say how it wraps the model (``prepare``); everything else has a default."""

    name = "base"
    num_members = 1
    head = "softmax"  # the kind of head a clearmamba model trained by this method is built with

    @abstractmethod
    def prepare(self, model: nn.Module, num_classes: int | None = None, dataset_size: int | None = None) -> nn.Module:
        """Wrap or convert ``model`` before training."""

    def loss(self, output, target: Tensor, epoch: float | None = None) -> Tensor:
        return self.criterion(output, target, epoch)

    def on_epoch_end(self, model: nn.Module, epoch: int, num_epochs: int) -> None:
        return None

    def finalize(self, model: nn.Module, train_loader: Iterable | None = None) -> nn.Module:
        return model

    def combine(self, models: Sequence[nn.Module]) -> nn.Module:
        if len(models) != self.num_members:
            raise ValueError(f"{self.name} expects {self.num_members} trained model(s), got {len(models)}")
        return models[0]

    @torch.no_grad()
    def predict(self, model: nn.Module, *inputs: Tensor) -> Prediction:
        model.eval()
        return as_prediction(model(*inputs))

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "criterion")
        return f"{type(self).__name__}({options})"


class SoftmaxMethod(Method):
    name = "softmax"
    head = "softmax"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.criterion = SoftmaxCrossEntropy(label_smoothing)

    def prepare(self, model, num_classes=None, dataset_size=None):
        return PredictionAdapter.wrap(model, "softmax")


class EvidentialMethod(Method):
    """RaP's training objective. The loss is built here, once, by :func:`create_evidential_loss`."""

    name = "evidential"
    head = "evidential"

    def __init__(
        self,
        evidence: str = "softplus",
        loss: str = "mll",
        kl_weight: float = 0.05,  # RaP's recipe (docs/edl-variants.md): fixed weight, target evidence kept
        anneal_epochs: float = 0.0,
        objective: str = "edl",
        prior_weight: float = 1.0,
        fisher_weight: float = 0.005,
        remove_target: bool = False,
        annealing: Callable[[float], float] | None = None,
        adaptive_kl: bool = False,
    ):
        """``objective``: ``edl`` (``loss`` mll / ce / sse), ``redl`` (R-EDL, ``prior_weight`` lambda) or
        ``iedl`` (I-EDL, ``fisher_weight``) or ``public`` (the public CLEAR-Mamba code's loss: KL on the full
        alpha at ``kl_weight``, or ``adaptive_kl``). The KL weight follows ``annealing(epoch)`` when given (e.g.
        labml's ``PiecewiseLinear``), else rises linearly over ``anneal_epochs`` (<= 0: fixed)."""
        self.evidence, self.objective, self.prior_weight = evidence, objective, prior_weight
        if objective == "public":
            self.criterion = create_evidential_loss("public", kl_weight=kl_weight, adaptive=adaptive_kl)
            return
        options: dict = {"kl_weight": kl_weight, "remove_target": remove_target}
        if annealing is not None:
            options["annealing"] = annealing
        else:
            options["kl_anneal_epochs"] = anneal_epochs
        if objective == "edl":
            options["loss"] = loss
        elif objective == "redl":
            options["prior_weight"] = prior_weight
        elif objective == "iedl":
            options["fisher_weight"] = fisher_weight
        if objective != "redl" and prior_weight != 1.0:
            raise ValueError(f"prior_weight is R-EDL's (objective='redl'); got it with objective={objective!r}")
        self.criterion = create_evidential_loss(objective, **options)

    def prepare(self, model, num_classes=None, dataset_size=None):
        for rap in model.modules():  # R-EDL: the head returns evidence in units of the prior weight
            if isinstance(rap, RaPHead) and rap.prior_weight != self.prior_weight:
                raise ValueError(f"objective {self.objective!r} needs RaPHead(prior_weight={self.prior_weight}); the "
                                 f"model's head has prior_weight={rap.prior_weight}: build it with that option")
        return PredictionAdapter.wrap(model, "evidential", self.evidence, self.prior_weight)


class MCDropoutMethod(Method):
    name = "mc_dropout"

    def __init__(self, num_samples: int = 16, mode: str = "full", p: float = 0.2, head: str | None = None):
        self.num_samples, self.mode, self.p, self.head = num_samples, mode, p, head
        self.criterion = SoftmaxCrossEntropy()

    def prepare(self, model, num_classes=None, dataset_size=None):
        if not dropout_modules(model):
            add_head_dropout(model, self.p)
        return MCDropout(model, self.num_samples, self.mode, self.head)


class EnsembleMethod(Method):
    name = "ensemble"

    def __init__(self, num_members: int = 5, vectorize: bool = True):
        if num_members < 1:
            raise ValueError(f"num_members must be >= 1, got {num_members}")
        self.num_members, self.vectorize = num_members, vectorize
        self.criterion = SoftmaxCrossEntropy()

    def prepare(self, model, num_classes=None, dataset_size=None):
        return PredictionAdapter.wrap(model, "softmax")

    def combine(self, models):
        if len(models) != self.num_members:
            raise ValueError(f"ensemble expects {self.num_members} members, got {len(models)}")
        return DeepEnsemble(list(models), vectorize=self.vectorize)


class SWAGMethod(Method):
    name = "swag"

    def __init__(self, collect_from: float = 0.5, max_rank: int = 20, scale: float = 0.5, num_samples: int = 16):
        if not 0 <= collect_from < 1:
            raise ValueError(f"collect_from is a fraction of the epochs in [0, 1), got {collect_from}")
        self.collect_from, self.max_rank, self.scale, self.num_samples = collect_from, max_rank, scale, num_samples
        self.criterion = SoftmaxCrossEntropy()

    def prepare(self, model, num_classes=None, dataset_size=None):
        return SWAG(model, self.max_rank, self.scale, self.num_samples)

    def on_epoch_end(self, model, epoch, num_epochs):
        # collect once per epoch over the last (1 - collect_from) of training; the last epoch always counts
        if epoch >= int(self.collect_from * num_epochs) or epoch == num_epochs - 1:
            model.collect()

    def finalize(self, model, train_loader=None):
        model.prepare_samples(self.num_samples, loader=train_loader)
        return model


class VariationalMethod(Method):
    name = "variational"

    def __init__(self, scope: str = "head", kl_weight: float = 1.0, prior_sigma: float = 1.0, num_samples: int = 16):
        self.scope, self.kl_weight, self.prior_sigma, self.num_samples = scope, kl_weight, prior_sigma, num_samples
        self.criterion = None

    def prepare(self, model, num_classes=None, dataset_size=None):
        if dataset_size is None:
            raise ValueError("variational: prepare() needs dataset_size to weigh the KL term (ELBO)")
        self.criterion = ELBOLoss(dataset_size, self.kl_weight)
        return VariationalClassifier(to_variational(model, self.scope, self.prior_sigma), self.num_samples)

    def loss(self, output, target, epoch=None):
        if self.criterion is None:
            raise RuntimeError("variational: call prepare() before loss()")
        return self.criterion(output, target, epoch)


class HeteroscedasticMethod(Method):
    name = "heteroscedastic"

    def __init__(self, num_samples: int = 32, mc_dropout: int = 0, p: float = 0.2):
        """``mc_dropout=T > 0`` also samples T dropout passes, giving the epistemic part too."""
        self.num_samples, self.mc_dropout, self.p = num_samples, mc_dropout, p
        self.criterion = HeteroscedasticLoss(num_samples)

    def prepare(self, model, num_classes=None, dataset_size=None):
        if self.mc_dropout and not dropout_modules(model):
            add_head_dropout(model, self.p)
        classifier = HeteroscedasticClassifier(model, num_samples=self.num_samples)
        return MCDropout(classifier, self.mc_dropout) if self.mc_dropout else classifier


class CALMethod(Method):
    name = "cal"

    def __init__(
        self, num_attentions: int = 32, spatial_dims: int = 2, raw_weight: float = 1 / 3, effect_weight: float = 1.0
    ):
        self.num_attentions, self.spatial_dims = num_attentions, spatial_dims
        self.criterion = CALLoss(raw_weight, effect_weight)

    def prepare(self, model, num_classes=None, dataset_size=None):
        if num_classes is None:
            raise ValueError("cal: prepare() needs num_classes for the counterfactual attention head")
        return CALClassifier(model, num_classes, num_attentions=self.num_attentions, spatial_dims=self.spatial_dims)

    def finalize(self, model, train_loader=None):
        # the attention maps go through BN + ReLU and the pooled features are scaled by 100, so running
        # statistics that lag the weights (short runs) flip predictions; recompute them exactly once
        if train_loader is not None:
            refresh_batchnorm(model, train_loader)
        return model


METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        MCDropoutMethod,
        EnsembleMethod,
        SWAGMethod,
        VariationalMethod,
        HeteroscedasticMethod,
        EvidentialMethod,
        SoftmaxMethod,
        CALMethod,
    )
}


def create_method(name: str, **options) -> Method:
    """Build a method by name with its options (e.g. ``create_method("ensemble", num_members=3)``)."""
    if name not in METHODS:
        raise ValueError(f"unknown uncertainty method {name!r}; expected one of {sorted(METHODS)}")
    try:
        return METHODS[name](**options)
    except TypeError as error:
        raise ValueError(f"bad options for method {name!r}: {error}") from None
