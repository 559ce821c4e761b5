"""``logistic``: logistic regression of each attribute's label on [z, 1], all attributes in one L-BFGS run."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from tlgan.axes.finders.common import FINDERS, AxisFinder, check_fit_inputs
from tlgan.errors import TlganError

log = logging.getLogger(__name__)


@FINDERS.register("logistic", "logistic regression of the label (logit > 0) on z; L-BFGS, light L2")
class LogisticFinder(AxisFinder):
    """L2-regularised logistic regression of the binary label (logit > 0) on [z, 1].

    All attributes are fitted together: one L-BFGS run (strong-Wolfe line search) over a
    (D, A) weight matrix, in standardised latent coordinates (so the L2 penalty treats every
    latent dimension alike and the problem is well conditioned); the result is mapped back to
    the original coordinates. A seeded random ``val_fraction`` of the samples is held out.

    Args:
        l2: penalty ``l2 / 2 * |w|^2`` added to the mean log-loss (standardised units; bias free).
        val_fraction: fraction of samples held out for ``val_accuracy`` (0 for none).
        max_iter: L-BFGS iterations at most.
        tol: stop when the largest gradient entry is below this (the loss is float32: much
            smaller values only add iterations).
        seed: seed of the train/validation split.
        device: where the optimisation runs.

    Metrics per attribute: ``train_accuracy``, ``val_accuracy`` (when val_fraction > 0), ``n_train``.
    """

    name = "logistic"

    def __init__(
        self,
        l2: float = 1e-3,
        val_fraction: float = 0.2,
        max_iter: int = 200,
        tol: float = 1e-5,
        seed: int = 0,
        device: str = "cpu",
    ):
        self.l2 = l2
        self.val_fraction = val_fraction
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed
        self.device = device

    def fit(self, latents, scores, attributes: Sequence[str] | None = None) -> LogisticFinder:
        latents, scores, names = check_fit_inputs(latents, scores, attributes)
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise TlganError(f"val_fraction must be in [0, 1) (got {self.val_fraction})")
        if not float(self.l2) >= 0:
            raise TlganError(f"l2 must be >= 0 (got {self.l2})")
        n, dim = latents.shape
        labels = scores > 0
        positives = labels.sum(0)
        one_class = [(names[i], int(positives[i])) for i in range(len(names)) if positives[i] in (0, n)]
        if one_class:
            desc = ", ".join(f"{a!r} ({'all' if p == n else 'no'} samples positive)" for a, p in one_class)
            raise TlganError(
                f"logistic regression needs both classes (logit > 0 and <= 0) for every attribute: {desc}; "
                f"sample more latents, or use the glm finder"
            )
        device = torch.device(self.device)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.seed)))
        n_val = int(round(n * float(self.val_fraction)))
        val_idx, train_idx = order[:n_val], order[n_val:]
        if len(train_idx) < 2:
            raise TlganError(
                f"too few samples to fit: {n} samples leave {len(train_idx)} for training "
                f"with val_fraction={self.val_fraction}"
            )
        x = latents[train_idx].to(device, torch.float32)
        y = labels[train_idx].to(device, torch.float32)
        single = [names[i] for i in range(len(names)) if y[:, i].min() == y[:, i].max()]
        if single:
            raise TlganError(
                f"the training split holds only one class for {', '.join(map(repr, single))}; "
                f"sample more latents or lower val_fraction"
            )
        mean = x.mean(0)
        std = x.std(0).clamp_min(1e-12)
        weight, bias = self._optimise(x, y, mean, std)
        coef = (weight / std[:, None]).T.to(torch.float64)  # (A, D) in original coordinates
        intercept = (bias - (mean / std) @ weight).to(torch.float64)

        coef32, intercept32 = coef.to(device, torch.float32), intercept.to(device, torch.float32)

        def accuracy(xs: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
            correct = torch.zeros(len(names), dtype=torch.float64, device=device)
            for start in range(0, len(xs), 65536):  # chunks bound the memory of the (rows, A) products
                pred = xs[start : start + 65536].to(device, torch.float32) @ coef32.T + intercept32
                correct += ((pred > 0) == truth[start : start + 65536].to(device)).sum(0)
            return (correct / len(xs)).cpu()

        train_acc = accuracy(x, y > 0.5)
        val_acc = accuracy(latents[val_idx], labels[val_idx]) if n_val else None
        metrics = {}
        for i, a in enumerate(names):
            metrics[a] = {"train_accuracy": float(train_acc[i]), "n_train": int(len(train_idx))}
            if val_acc is not None:
                metrics[a]["val_accuracy"] = float(val_acc[i])
        self._set_fitted(coef, intercept, names, metrics, n)
        return self

    def _optimise(
        self, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Minimise mean log-loss + l2/2 |W|^2 over W (D, A) in standardised units and bias (A,)."""
        dim, n_attr = x.shape[1], y.shape[1]
        prior = y.mean(0).clamp(1e-6, 1 - 1e-6)
        weight = torch.zeros(dim, n_attr, dtype=torch.float32, device=x.device, requires_grad=True)
        bias = torch.logit(prior).detach().clone().requires_grad_(True)
        scale = (1.0 / std)[:, None]
        shift = mean / std
        l2 = float(self.l2)
        optimizer = torch.optim.LBFGS(
            [weight, bias],
            lr=1.0,
            max_iter=int(self.max_iter),
            tolerance_grad=float(self.tol),
            tolerance_change=1e-12,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure():
            optimizer.zero_grad()
            # Standardisation is folded into the weights instead of making a standardised copy of x.
            logits = x @ (weight * scale) + (bias - shift @ weight)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(x)
            loss = loss + 0.5 * l2 * (weight * weight).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        iterations = optimizer.state[weight].get("n_iter", 0)
        if iterations >= int(self.max_iter):
            log.warning(
                "logistic: L-BFGS stopped after max_iter=%d iterations before reaching tol=%g; "
                "the axes may be slightly off (raise max_iter or l2)",
                self.max_iter,
                self.tol,
            )
        return weight.detach(), bias.detach()
