"""Number types of order requests that cross the REST boundary: finite, bounded, no bool.

JSON allows ``true`` where a number is meant, ``1e308`` and ``5e-324``; none of them is a
quantity or a price anyone means to trade. ``MAX_AMOUNT`` and ``MIN_AMOUNT`` bound
magnitudes so that quantity x price always stays a finite number.
"""
from __future__ import annotations

import math
from typing import Annotated, Union

from pydantic import AfterValidator, BeforeValidator, StrictFloat, StrictInt

MAX_AMOUNT = 1e12
MIN_AMOUNT = 1e-9


def _bounded(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    if value != 0 and not MIN_AMOUNT <= abs(value) <= MAX_AMOUNT:
        raise ValueError(f"magnitude must be between {MIN_AMOUNT:g} and {MAX_AMOUNT:g}")
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _no_bool(value):
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


def _number_text(value):
    # Alert templates often quote their placeholders ("{{strategy.order.contracts}}").
    _no_bool(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError("must be a number") from None
    return value


#: A signed amount from the REST API: a JSON number, never a string or a bool.
StrictAmount = Annotated[Union[StrictInt, StrictFloat], AfterValidator(_bounded)]
#: A positive price or quantity from the REST API.
StrictPositive = Annotated[Union[StrictInt, StrictFloat], AfterValidator(_bounded), AfterValidator(_positive)]
#: A positive amount from an alert: a number, or a string holding one; never a bool.
AlertPositive = Annotated[float, BeforeValidator(_number_text), AfterValidator(_bounded), AfterValidator(_positive)]
