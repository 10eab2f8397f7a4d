"""What the command-line scripts share: argparse types that refuse values which
would break their own output, naming the flag (`argument --x: must be ...`)."""

from __future__ import annotations

import argparse
import math


def number(kind, allowed: str, ok):
  """An argparse type: a `kind` (int or float) that is finite and passes `ok`."""
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
    if not (math.isfinite(value) and ok(value)):
      raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
    return value
  return parse


POSITIVE = number(float, "a finite number > 0", lambda v: v > 0)
NON_NEGATIVE = number(float, "a finite number >= 0", lambda v: v >= 0)
FINITE = number(float, "a finite number", lambda v: True)
AT_LEAST_ONE = number(int, "an integer >= 1", lambda v: v >= 1)
