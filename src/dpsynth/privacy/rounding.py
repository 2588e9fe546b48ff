"""Epsilon and delta as a person reads them: rounded up, so that a guarantee never reads stronger than the
one spent.  Its own module because the ledger's messages need it and the report imports the ledger."""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, Decimal


def round_up(x: float, digits: int = 4) -> str:
    """``x`` to ``digits`` significant figures, rounded up (towards +inf), as ``:g`` writes it.

    For epsilon and delta shown to a person: a guarantee must never read stronger than the one spent, and
    ``f"{2.69472:.3g}"`` gives 2.69 (rounded down); this gives 2.7.  Non-finite values as ``:g`` writes them.
    """
    if not math.isfinite(x) or x == 0:
        return f"{x:g}"
    # the shortest decimal that reads back as x: 1e-05 stays 1e-05 (the float's exact binary value,
    # 1.0000000000000000818e-05, would round up to 1.001e-05: float noise shown as a weaker delta)
    d = Decimal(repr(float(x)))
    up = d.quantize(Decimal(1).scaleb(d.adjusted() - digits + 1), rounding=ROUND_CEILING)
    # up has at most ``digits`` significant figures (9.9996 -> 10.00 is written 10), so :g writes it exactly
    return f"{float(up):.{digits}g}"
