"""The one exception type users see. Messages say what was wrong and what to do."""

import math


class TlganError(ValueError):
    """Bad input or state that the user can fix; the CLI prints the message without a traceback."""


def finite_number(value, what: str, unit: str) -> float:
    """``value`` as a float; TlganError naming ``what`` if it is no number or not finite (``unit``: what it counts)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TlganError(f"{what} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise TlganError(f"{what} is {number}; give a finite number of {unit}")
    return number
