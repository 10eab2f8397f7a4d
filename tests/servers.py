"""Helpers of the serving tests: server processes on loopback, waiting, comparing."""

from __future__ import annotations

import time

import numpy as np


def wait_until(condition, timeout: float, what: str, interval: float = 0.2):
  """Polls `condition()` until it returns a truthy value, or fails naming `what`."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    value = condition()
    if value:
      return value
    time.sleep(interval)
  raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def assert_same_fillers(got, want, atol=1e-5):
  """Client fillers equal in-process `fill_mask` answers; ranks may swap only on ties."""
  assert len(got) == len(want)
  for got_masks, want_masks in zip(got, want):
    assert len(got_masks) == len(want_masks)
    for g, w in zip(got_masks, want_masks):
      np.testing.assert_allclose([f.score for f in g], [x["score"] for x in w], atol=atol)
      for rank, (f, x) in enumerate(zip(g, w)):
        if f.token_id != x["token_id"]:  # only a tie may reorder
          tied = [y["score"] for y in w if y["token_id"] == f.token_id]
          assert tied and abs(tied[0] - x["score"]) <= atol, (rank, f, x)
        else:
          assert f.token == x["token"]
