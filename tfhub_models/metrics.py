"""The figures people report for classifiers and taggers, from predictions and labels.

  classification_metrics(predicted, labels, num_classes) -> {"accuracy", "f1_macro"}
  entity_metrics(true_tags, predicted_tags) -> {"precision", "recall", "f1"}

Entities are read from IOB2 tags as seqeval reads them by default (its
conlleval-compatible mode: an `I-X` after `O` or after another type starts an
entity, as conlleval does), and counted over the whole data set (micro
average): precision = correct / predicted entities, recall = correct / true
entities, F1 their harmonic mean, 0 where a count is 0.  Plain numpy and
Python: these run once per evaluation, not in the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classification_metrics(predicted: np.ndarray, labels: np.ndarray, num_classes: int,
                           weights: np.ndarray | None = None) -> dict:
  """Accuracy and macro F1 (the unweighted mean of each class's F1, classes with
  neither a label nor a prediction left out, as scikit-learn's f1_score(average=
  "macro") with zero_division=0 over the classes present).

  Args:
    predicted, labels: int [N] class ids (or [N, C] 0/1 for multi-label, whose
      accuracy is the share of correct (row, class) decisions and whose F1 is
      per class).
    weights: float [N], rows with weight 0 left out (default: every row).
  """
  predicted, labels = np.asarray(predicted), np.asarray(labels)
  keep = np.ones(len(labels), bool) if weights is None else np.asarray(weights) > 0
  predicted, labels = predicted[keep], labels[keep]
  if labels.ndim == 2:                       # multi-label: one binary problem a class
    accuracy = float((predicted == labels).mean()) if labels.size else 0.0
    pairs = [(predicted[:, c] > 0, labels[:, c] > 0) for c in range(labels.shape[1])]
  else:
    accuracy = float((predicted == labels).mean()) if labels.size else 0.0
    pairs = [(predicted == c, labels == c) for c in range(num_classes)]
  scores = []
  for guessed, true in pairs:
    if not guessed.any() and not true.any():
      continue
    scores.append(_f1(int((guessed & true).sum()), int(guessed.sum()), int(true.sum())))
  return {"accuracy": accuracy, "f1_macro": float(np.mean(scores)) if scores else 0.0}


def _f1(correct: int, guessed: int, true: int) -> float:
  precision = correct / guessed if guessed else 0.0
  recall = correct / true if true else 0.0
  return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _split(tag: str) -> tuple:
  """("B" | "I" | "O" | ..., type) of a tag, as seqeval splits it."""
  if tag in ("O", ""):
    return "O", ""
  prefix, _, kind = tag.partition("-")
  return (prefix, kind) if kind else (tag[0], tag[1:] or "_")


def _ends(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
  """Whether the chunk before ends here (conlleval's rules)."""
  return (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
          or (prev_tag not in ("O", ".") and prev_type != kind))


def _starts(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
  """Whether a chunk starts here (conlleval's rules)."""
  return (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
          or (tag not in ("O", ".") and prev_type != kind))


def entities(tags: Sequence[str]) -> list:
  """[(type, first, last)] of one sequence of tags (positions inclusive)."""
  found, start, prev_tag, prev_type = [], None, "O", ""
  for i, tag in enumerate(list(tags) + ["O"]):
    prefix, kind = _split(tag)
    if start is not None and _ends(prev_tag, prefix, prev_type, kind):
      found.append((prev_type, start, i - 1))
      start = None
    if _starts(prev_tag, prefix, prev_type, kind):
      start = i
    prev_tag, prev_type = prefix, kind
  return found


def entity_counts(true_tags: Sequence[Sequence[str]],
                  predicted_tags: Sequence[Sequence[str]]) -> tuple:
  """(correct, predicted, true) entity counts over sequences of tags (equal
  lengths, sequence by sequence); an entity is correct when its type and its
  first and last positions are a true one's."""
  true_count = guessed_count = correct = 0
  for true, guessed in zip(true_tags, predicted_tags, strict=True):
    if len(true) != len(guessed):
      raise ValueError(f"a sequence of {len(true)} true tags has {len(guessed)} predicted")
    true_entities, guessed_entities = set(entities(true)), set(entities(guessed))
    true_count += len(true_entities)
    guessed_count += len(guessed_entities)
    correct += len(true_entities & guessed_entities)
  return correct, guessed_count, true_count


def entity_metrics(true_tags: Sequence[Sequence[str]],
                   predicted_tags: Sequence[Sequence[str]]) -> dict:
  """Entity-level precision, recall and F1 over sequences of IOB2 tags,
  micro-averaged, as seqeval's defaults (0 where a count is 0)."""
  correct, guessed_count, true_count = entity_counts(true_tags, predicted_tags)
  precision = correct / guessed_count if guessed_count else 0.0
  recall = correct / true_count if true_count else 0.0
  return {"precision": precision, "recall": recall,
          "f1": _f1(correct, guessed_count, true_count)}
