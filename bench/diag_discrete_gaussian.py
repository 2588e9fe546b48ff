"""What a discrete-Gaussian vote costs in epsilon, against the float Gaussian it replaced (docs/privacy.md).

WASP's Top-Q vote added float Gaussian noise to histograms whose entries are multiples of 2^-(Q-1) (each
private record gives weights 1, 1/2, ..., 2^-(Q-1)).  Floating-point samplers have low-order-bit effects
(Mironov, CCS 2012); the discrete Gaussian of Canonne, Kamath and Steinke (NeurIPS 2020) has none.  On
the histogram's own grid it is natural: scale by 2^(Q-1), add integer noise of scale sigma * 2^(Q-1), and
scale back (exact in float64).

Its accounting differs.  One record moves Q coordinates of the near histogram by 2^(Q-1-r) grid steps
(and Q of the far one), each noised independently, so the release's privacy loss is the sum of the
coordinates' losses: dp-accounting's discrete-Gaussian PLD of each coordinate (integer sensitivity),
composed over the 2Q coordinates and then over the T rounds.  A record whose class has fewer than Q
candidates moves fewer coordinates, which composition dominates.

This script compares, at the float plan's sigma, that epsilon with the continuous Gaussian's, and finds how
much larger a run's discrete calibration (``GaussianPlan.calibrate_discrete``) makes sigma.  Where the
histogram's grid is coarse against the noise (Q = 1: integer counts, sigma about 2), the discrete privacy loss takes
few values and its profile is not the continuous one's; a finer grid (``extra_grid_bits`` more, so that
sigma spans at least ``MIN_GRID_STEPS`` steps) is measured too.  No private data, no run.

    python bench/diag_discrete_gaussian.py
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from dpsynth.privacy.accountant import PLD_INTERVAL, GaussianPlan  # noqa: E402
from dpsynth.privacy.voting import MIN_GRID_STEPS, top_q_moves, top_q_sensitivity  # noqa: E402

SETTINGS = (  # (epsilon, rounds T, Q, far votes): the default plan first, then the extremes users set
    (4.0, 4, 8, True),
    (1.0, 4, 8, True),
    (4.0, 4, 1, False),
    (10.0, 10, 8, True),
    (4.0, 20, 8, True),
    (0.1, 4, 8, True),
)
DELTA = 1e-5


def discrete_epsilon(
    sigma: float, rounds: int, q: int, use_far: bool, delta: float, interval: float, extra_bits: int = 0
) -> float:
    """Epsilon of T discrete-Gaussian Top-Q votes at noise sigma (in vote units), by dp-accounting's PLD, on
    the grid 2^-(Q-1+extra_bits): the histogram's own grid, or a finer one."""
    from dp_accounting.pld import privacy_loss_distribution as pld

    scale = 2 ** (q - 1 + extra_bits)
    one = None
    for _ in range(2 if use_far else 1):
        for r in range(q):
            coord = pld.from_discrete_gaussian_mechanism(
                sigma * scale, sensitivity=2 ** (q - 1 - r + extra_bits), value_discretization_interval=interval
            )
            one = coord if one is None else one.compose(coord)
    assert one is not None
    return float(one.self_compose(rounds).get_epsilon_for_delta(delta))


def main() -> None:
    rows: list[dict[str, Any]] = []
    for eps, rounds, q, far in SETTINGS:
        plan = GaussianPlan.calibrate(eps, DELTA, rounds, top_q_sensitivity(q, far))
        t0 = time.time()
        at_plan = discrete_epsilon(plan.sigma, rounds, q, far, DELTA, PLD_INTERVAL)
        seconds = time.time() - t0
        fine = discrete_epsilon(plan.sigma, rounds, q, far, DELTA, PLD_INTERVAL / 10)
        # a grid finer than the histogram's, so that the noise spans at least ~100 grid steps
        extra = max(0, math.ceil(math.log2(MIN_GRID_STEPS / (plan.sigma * 2 ** (q - 1)))))
        finer = discrete_epsilon(plan.sigma, rounds, q, far, DELTA, PLD_INTERVAL / 10, extra) if extra else fine
        # what a run plans: the discrete calibration (to within 0.1%, rounded up), against the float plan
        discrete = GaussianPlan.calibrate_discrete(eps, DELTA, rounds, top_q_moves(q, far), q - 1, MIN_GRID_STEPS)
        factor = discrete.noise_multiplier / plan.noise_multiplier
        rows.append(
            {
                "epsilon": eps,
                "rounds": rounds,
                "q": q,
                "use_far": far,
                "delta": DELTA,
                "sigma": round(plan.sigma, 5),
                "continuous_epsilon": round(plan.epsilon_after(rounds), 5),
                "discrete_epsilon": round(at_plan, 5),
                "discrete_epsilon_fine_pld": round(fine, 5),
                "grid_sigma": round(plan.sigma * 2 ** (q - 1), 2),
                "extra_grid_bits": extra,
                "discrete_epsilon_finer_grid_fine_pld": round(finer, 5),
                "sigma_factor_for_budget": round(factor, 5),
                "calibrated_grid_bits": discrete.grid_bits,
                "calibrated_discrete_epsilon": round(discrete.epsilon_after(rounds), 5),
                "discrete_pld_seconds": round(seconds, 2),
            }
        )
        print(rows[-1], flush=True)
    write_result(
        "diag_discrete_gaussian",
        {
            "command": "python bench/diag_discrete_gaussian.py",
            "pld_interval": PLD_INTERVAL,
            "fine_pld_interval": PLD_INTERVAL / 10,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
