"""PEARL's generator and its training on the released sketch only (post-processing, no privacy cost).

The generator is trained to minimise the characteristic-function distance (CFD) to the noisy sketch
while a critic re-weights the frequencies to where the two differ most (the paper's adversarial
re-weighting, Sec. 3.3): the critic is a Gaussian frequency distribution
omega_a(t | h) = N(0, diag(e^{2a}) / h^2) relative to the public draw omega_0(t | h) = N(0, I / h^2);
because the frequencies are fixed by the release, omega_a acts through importance weights
w_j = omega_a(t_j) / omega_0(t_j) (self-normalised), and min_G max_a sum_j w_j |Phi_data(t_j) -
Phi_G(t_j)|^2 is the objective.  Two stabilisers (docs/pearl.md): |a_d| <= max_log_scale, and the
weights are mixed with uniform ones (uniform_mix).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpsynth.config import Config
from dpsynth.methods.pearl.encoding import ONEHOT_SCALE, Layout
from dpsynth.privacy import sketch as sk
from dpsynth.selection import allocate


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 2000
    batch: int = 128
    gen_lr: float = 1e-3
    critic_lr: float = 5e-3
    adversarial: bool = True
    uniform_mix: float = 0.5
    max_log_scale: float = 1.0
    hidden: int = 256
    latent: int = 32
    seed: int = 0
    threads: int = 0  # torch intra-op threads while training; 0 = torch's default

    @classmethod
    def from_config(cls, config: Config) -> TrainSettings:
        p = config.pearl
        return cls(
            p.train_steps,
            p.train_batch,
            p.gen_lr,
            p.critic_lr,
            p.adversarial,
            p.uniform_mix,
            p.max_log_scale,
            p.hidden_dim,
            p.latent_dim,
            config.seed if config.seed is not None else 0,
            p.train_threads,
        )


def _make_generator(layout: Layout, settings: TrainSettings) -> Any:
    import torch
    from torch import nn

    class ConditionalGenerator(nn.Module):
        """z ++ one-hot(class) -> MLP -> sigmoid (numeric) / straight-through Gumbel-softmax (categorical)."""

        def __init__(self) -> None:
            super().__init__()
            h = settings.hidden
            self.net = nn.Sequential(
                nn.Linear(settings.latent + layout.n_classes, h),
                nn.LeakyReLU(0.2),
                nn.Linear(h, h),
                nn.LeakyReLU(0.2),
                nn.Linear(h, layout.dim),
            )
            self.segments = layout.segments()

        def forward(self, z: Any, onehot: Any, tau: float = 0.5) -> Any:
            raw = self.net(torch.cat([z, onehot], dim=1))
            parts = []
            for start, end, numeric in self.segments:
                if numeric:
                    parts.append(torch.sigmoid(raw[:, start:end]))
                else:
                    g = nn.functional.gumbel_softmax(raw[:, start:end], tau=tau, hard=True)
                    parts.append(g * ONEHOT_SCALE)
            return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    return ConditionalGenerator()


@dataclass
class TrainedGenerator:
    """The trained generator with what sampling needs; holds no private data (only the release's shares)."""

    module: Any
    layout: Layout
    settings: TrainSettings
    class_shares: np.ndarray
    history: list[dict[str, float]]

    def sample(self, n: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """n encoded records with class indices in the noisy class proportions (largest remainder)."""
        import torch

        quota = allocate(n, dict(enumerate(self.class_shares.tolist())))
        per_class = np.array([quota[c] for c in range(len(self.class_shares))], dtype=np.int64)
        y = np.repeat(np.arange(len(per_class)), per_class)
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(self.settings.seed + 1 if seed is None else seed)
            z = torch.randn(n, self.settings.latent)
            onehot = torch.nn.functional.one_hot(torch.as_tensor(y), self.layout.n_classes).float()
            self.module.eval()
            x = self.module(z, onehot).double().numpy()
        return x, y


def train_generator(
    sketch: sk.NoisySketch,
    layout: Layout,
    settings: TrainSettings,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainedGenerator:
    """Train the generator on the released sketch only (post-processing: no privacy cost).

    Receives the ``NoisySketch`` and public facts (``layout``, ``settings``); it cannot reach
    the private data because it is never given it (``tests/test_pearl.py`` checks this).
    Objective per step, with B samples per class and per-class ECF targets Phi_c from the
    sketch: sum_j w_j sum_c pi_c |Phi_c(t_j) - Phi_G,c(t_j)|^2, where |Phi_G,c|^2 uses the
    unbiased estimate (B |mean|^2 - 1) / (B - 1) (each feature has modulus 1), pi_c are the
    noisy class shares, and w_j the critic's importance weights (uniform when not adversarial).
    """
    import torch

    if sketch.dim != layout.dim or len(sketch.classes) != layout.n_classes:
        raise ValueError("the sketch does not match the layout")
    threads = torch.get_num_threads()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    try:
        return _train(sketch, layout, settings, progress)
    finally:
        torch.set_num_threads(threads)


def _train(
    sketch: sk.NoisySketch,
    layout: Layout,
    settings: TrainSettings,
    progress: Callable[[int, int, float], None] | None,
) -> TrainedGenerator:
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        gen = _make_generator(layout, settings)
        freqs = torch.as_tensor(sketch.freqs[:, :-1], dtype=torch.float32)  # (m, D)
        bw = torch.as_tensor(sketch.freqs[:, -1:], dtype=torch.float32)  # (m, 1)
        g2 = (freqs * bw) ** 2  # standardised frequencies, squared: (m, D)
        target = torch.as_tensor(sketch.ecf(), dtype=torch.float32)  # (C, 2m)
        m, C, B = sketch.m, layout.n_classes, settings.batch
        t_re, t_im = target[:, :m], target[:, m:]
        t_mod2 = t_re**2 + t_im**2
        shares = torch.as_tensor(sketch.class_shares(), dtype=torch.float32)
        log_scale = torch.zeros(layout.dim, requires_grad=True)
        opt_g = torch.optim.Adam(gen.parameters(), lr=settings.gen_lr, betas=(0.5, 0.9))
        opt_c = torch.optim.Adam([log_scale], lr=settings.critic_lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, settings.steps, eta_min=settings.gen_lr * 0.1)
        labels = torch.arange(C).repeat_interleave(B)
        onehot = torch.nn.functional.one_hot(labels, C).float()
        history: list[dict[str, float]] = []

        def weights() -> Any:
            if not settings.adversarial:
                return torch.ones(m)
            a = log_scale
            # log omega_a(t_j | h_j) - log omega_0(t_j | h_j), up to a constant that softmax removes
            logw = -0.5 * (g2 @ (torch.exp(-2 * a) - 1.0))
            w = torch.softmax(logw, dim=0) * m
            return (1 - settings.uniform_mix) * w + settings.uniform_mix

        def per_frequency_distance() -> Any:
            z = torch.randn(C * B, settings.latent)
            x = gen(z, onehot)
            proj = x @ freqs.T  # (C*B, m)
            mc = torch.cos(proj).view(C, B, m).mean(1)
            ms = torch.sin(proj).view(C, B, m).mean(1)
            mod2 = (B * (mc**2 + ms**2) - 1.0) / (B - 1)
            resid = mod2 - 2 * (mc * t_re + ms * t_im) + t_mod2  # (C, m), unbiased |Phi_c - Phi_G,c|^2
            return (shares[:, None] * resid).sum(0)  # (m,)

        gen.train()
        t0 = time.monotonic()
        for step in range(settings.steps):
            r = per_frequency_distance()
            w = weights().detach()
            loss = (w * r).mean()
            opt_g.zero_grad()
            loss.backward()
            opt_g.step()
            sched.step()
            if settings.adversarial:
                crit = -(weights() * r.detach()).mean()  # the critic ascends the weighted distance
                opt_c.zero_grad()
                crit.backward()
                opt_c.step()
                with torch.no_grad():
                    log_scale.clamp_(-settings.max_log_scale, settings.max_log_scale)
            if step % 100 == 0 or step == settings.steps - 1:
                history.append({"step": step, "cfd2": float(r.mean().detach()), "weighted": float(loss.detach())})
                if progress is not None:
                    progress(step + 1, settings.steps, time.monotonic() - t0)
    return TrainedGenerator(gen, layout, settings, sketch.class_shares(), history)
