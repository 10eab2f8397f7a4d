"""Labelled files for fine-tuning classifiers and taggers, and their labels.

  read_texts(path)                    -> [text]       one a line (masked LM)
  read_pairs(path)                    -> {"encoder_text", "decoder_text"}  (seq2seq)
  read_text_classification(path, ...) -> Examples   CSV with a header, or JSON Lines
  read_token_classification(path)     -> Examples   JSON Lines {"tokens", "tags"}
  label_order(given, checkpoint, examples...)       the class order, checked
  encode_labels(examples, order, problem_type)      names or ids -> what fit takes

Every problem is a ValueError naming the file, the line and the value, raised
before any training step.  A label is a name (a string) or an integer id
(into the class order); a multi-label row holds a list (JSON) or names joined
by ";" (CSV); a regression label is a number.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

MULTI_LABEL_SEPARATOR = ";"


@dataclasses.dataclass
class Examples:
  """What a labelled file holds, row by row (`lines`: each row's line number)."""
  path: str
  inputs: list           # texts, or lists of words
  labels: list           # a label per row (classification) or a list per row (tags)
  lines: list
  pairs: list | None = None

  def where(self, row: int) -> str:
    return f"{self.path}:{self.lines[row]}"


def _open(path: str):
  try:
    return open(path, encoding="utf-8", newline="")
  except OSError as e:
    raise ValueError(f"{path}: {e.strerror}") from None


def _json_lines(path: str):
  """(line number, object) of each non-blank line of a JSON Lines file."""
  with _open(path) as f:
    try:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
          raise ValueError(f"{path}:{number}: each line must be a JSON object, not "
                           f"{type(row).__name__}")
        yield number, row
    except UnicodeDecodeError as e:
      raise ValueError(f"{path}: not UTF-8 text ({e})") from None


def read_texts(path: str) -> list:
  """One text a line (a masked LM's data); blank lines skipped."""
  try:
    with _open(path) as f:
      texts = [line.rstrip("\r\n") for line in f if line.strip()]
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text ({e})") from None
  if not texts:
    raise ValueError(f"{path}: no text lines")
  return texts


def read_pairs(path: str) -> dict:
  """JSON Lines {"source", "target"} (a seq2seq model's data) ->
  {"encoder_text": [...], "decoder_text": [...]}."""
  sources, targets = [], []
  for number, row in _json_lines(path):
    if not isinstance(row.get("source"), str) or not isinstance(row.get("target"), str):
      raise ValueError(f"{path}:{number}: each line must be an object with string "
                       "\"source\" and \"target\"")
    sources.append(row["source"])
    targets.append(row["target"])
  if not sources:
    raise ValueError(f"{path}: no JSON lines")
  return {"encoder_text": sources, "decoder_text": targets}


def _is_json_lines(path: str) -> bool:
  """JSON Lines by its extension (.jsonl, .json), else CSV (.csv, .tsv, anything)."""
  return os.path.splitext(path)[1].lower() in (".jsonl", ".json", ".ndjson")


def read_text_classification(path: str, *, text_column: str = "text",
                             pair_column: str = "text_pair", label_column: str = "label",
                             problem_type: str = "single_label_classification",
                             flag_of: dict | None = None) -> Examples:
  """Texts (and pairs, when the column is there) and their labels.

  flag_of: {column role: command-line flag} for messages ("text" -> "--text-column").
  """
  flag_of = flag_of or {}
  multi = problem_type == "multi_label_classification"
  texts, pairs, labels, lines = [], [], [], []
  if _is_json_lines(path):
    rows = _json_lines(path)
  else:
    rows = _csv_rows(path, text_column, label_column, flag_of)
  has_pairs = None
  for number, row in rows:
    where = f"{path}:{number}"
    for column, role in ((text_column, "text"), (label_column, "label")):
      if column not in row:
        raise ValueError(f"{where}: no {column!r} field" + (
            f" (name it with {flag_of[role]})" if role in flag_of else ""))
    text = row[text_column]
    if not isinstance(text, str) or not text.strip():
      raise ValueError(f"{where}: {text_column!r} must be a non-empty string, got {text!r}")
    pair = row.get(pair_column)
    if has_pairs is None:
      has_pairs = pair_column in row and pair not in (None, "")
    if has_pairs and (not isinstance(pair, str) or not pair.strip()):
      raise ValueError(f"{where}: {pair_column!r} must be a non-empty string on every line "
                       f"when the first has one, got {pair!r}")
    label = row[label_column]
    if multi and isinstance(label, str):
      label = [part.strip() for part in label.split(MULTI_LABEL_SEPARATOR) if part.strip()]
    if multi and not isinstance(label, list):
      raise ValueError(f"{where}: a multi-label row's {label_column!r} is a list (JSON) or "
                       f"names joined by {MULTI_LABEL_SEPARATOR!r} (CSV), got {label!r}")
    if label is None or label == "":
      raise ValueError(f"{where}: no label in {label_column!r}")
    texts.append(text)
    pairs.append(pair if has_pairs else None)
    labels.append(label)
    lines.append(number)
  if not texts:
    raise ValueError(f"{path}: no examples (an empty file)")
  return Examples(path, texts, labels, lines, pairs if has_pairs else None)


def _csv_rows(path: str, text_column: str, label_column: str, flag_of: dict):
  with _open(path) as f:
    try:
      delimiter = "\t" if path.lower().endswith(".tsv") else ","
      reader = csv.DictReader(f, delimiter=delimiter)
      header = reader.fieldnames
      if not header:
        raise ValueError(f"{path}: no examples (an empty file)")
      missing = [(c, r) for c, r in ((text_column, "text"), (label_column, "label"))
                 if c not in header]
      if missing:
        raise ValueError(
            f"{path}:1: the header ({', '.join(header)}) has no column "
            + " or ".join(f"{c!r}" + (f" (name it with {flag_of[r]})" if r in flag_of else "")
                          for c, r in missing))
      for row in reader:
        if None in row:   # more fields than the header
          raise ValueError(f"{path}:{reader.line_num}: more fields than the header has")
        if all(v in (None, "") for v in row.values()):
          continue
        yield reader.line_num, {k: v for k, v in row.items() if v is not None}
    except csv.Error as e:
      raise ValueError(f"{path}: not a readable CSV file ({e})") from None
    except UnicodeDecodeError as e:
      raise ValueError(f"{path}: not UTF-8 text ({e})") from None


def read_token_classification(path: str) -> Examples:
  """JSON Lines {"tokens": [words], "tags": [one per word]} ("ner_tags", the
  Hugging Face datasets name, is read too)."""
  words, tags, lines = [], [], []
  for number, row in _json_lines(path):
    where = f"{path}:{number}"
    tokens = row.get("tokens")
    row_tags = row.get("tags", row.get("ner_tags"))
    if not isinstance(tokens, list) or not tokens or not all(
        isinstance(t, str) and t.strip() and t == t.strip() for t in tokens):
      raise ValueError(f"{where}: \"tokens\" must be a non-empty list of words (non-empty "
                       f"strings without surrounding spaces), got {str(tokens)[:80]}")
    if not isinstance(row_tags, list):
      raise ValueError(f"{where}: no \"tags\" (or \"ner_tags\") list")
    if len(row_tags) != len(tokens):
      raise ValueError(f"{where}: {len(row_tags)} tags for {len(tokens)} tokens")
    words.append(tokens)
    tags.append(row_tags)
    lines.append(number)
  if not words:
    raise ValueError(f"{path}: no examples (an empty file)")
  return Examples(path, words, tags, lines)


def _names_in(examples: Examples, tagged: bool):
  for row, label in enumerate(examples.labels):
    for value in (label if tagged or isinstance(label, list) else [label]):
      yield row, value


def parse_label_list(text: str) -> list:
  """--labels L1,L2,...: the class order; duplicates are an error."""
  labels = [part.strip() for part in text.split(",")]
  if any(not part for part in labels):
    raise ValueError(f"--labels has an empty name: {text!r}")
  duplicates = sorted({label for label in labels if labels.count(label) > 1})
  if duplicates:
    raise ValueError(f"--labels names {', '.join(duplicates)} more than once")
  return labels


def label_order(given: Sequence[str] | None, checkpoint: Sequence[str] | None,
                examples: Sequence[Examples], *, tagged: bool) -> list:
  """The class order: `given` (--labels), else the checkpoint head's, else the
  sorted distinct names of the examples (integer ids need one of the first two)."""
  if given is not None:
    return list(given)
  if checkpoint is not None:
    return list(checkpoint)
  names = set()
  for data in examples:
    for row, value in _names_in(data, tagged):
      if not isinstance(value, str):
        raise ValueError(f"{data.where(row)}: the label {value!r} is an id, so the class "
                         "order must be given: pass --labels")
      names.add(value)
  return sorted(names)


def _label_id(value, order: Sequence[str], index: dict, where: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (str, int)):
    raise ValueError(f"{where}: a label is a name or an integer id, got {value!r}")
  if isinstance(value, int):
    if not 0 <= value < len(order):
      raise ValueError(f"{where}: label id {value} is outside 0..{len(order) - 1} "
                       f"({', '.join(order)})")
    return value
  if value not in index:
    raise ValueError(f"{where}: unknown label {value!r} (the labels: {', '.join(order)})")
  return index[value]


def encode_labels(examples: Examples, order: Sequence[str], problem_type: str, *,
                  tagged: bool = False) -> list:
  """The labels as fit takes them: class ids (single-label), 0/1 rows of
  len(order) (multi-label), floats (regression), or a list of ids per row (tags)."""
  index = {name: i for i, name in enumerate(order)}
  out = []
  for row, label in enumerate(examples.labels):
    where = examples.where(row)
    if tagged:
      out.append([_label_id(value, order, index, where) for value in label])
    elif problem_type == "regression":
      try:
        out.append(float(label))
      except (TypeError, ValueError):
        raise ValueError(f"{where}: a regression label is a number, got {label!r}") from None
      if not np.isfinite(out[-1]):
        raise ValueError(f"{where}: a regression label must be finite, got {label!r}")
    elif problem_type == "multi_label_classification":
      hot = [0.0] * len(order)
      for value in label:
        hot[_label_id(value, order, index, where)] = 1.0
      out.append(hot)
    else:
      out.append(_label_id(label, order, index, where))
  return out
