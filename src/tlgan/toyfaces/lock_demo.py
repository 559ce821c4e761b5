"""The toyfaces locking demonstration: removing a beard without making the face less male.

In the toy world the Beard direction leans on Male (cosine 0.850, see :mod:`tlgan.toyfaces.world`),
so "Beard -" along the raw axis also lowers P(Male); holding Male fixed removes that side effect.
The evaluation code knows nothing of beards: callers that want the demonstration (``tlgan demo``,
``tlgan report``) pass :data:`LOCK_DEMO` as ``lock_demo=`` to
:func:`tlgan.evaluation.report.write_report` or :func:`tlgan.evaluation.metrics.edit_effect`,
which add it whenever both attributes are axes and the classifier reads the lock.
"""

from __future__ import annotations

# (attribute moved, attribute locked): the report moves Beard by -max|step| with and without Male locked.
LOCK_DEMO: tuple[str, str] = ("Beard", "Male")

# The edit amounts of the demonstration grid of `tlgan demo` (Beard 0, -1, -2, -3).
DEMO_AMOUNTS: tuple[float, ...] = (0.0, -1.0, -2.0, -3.0)

__all__ = ["DEMO_AMOUNTS", "LOCK_DEMO"]
