"""Entities from per-token label probabilities, grouped as the `transformers`
token-classification pipeline groups them, in the graph.

One home for the pipeline's rules, shared by the exports and the Python API
(`TokenClassifier.tag`).  B texts, L tokens, C classes, E entities.

  pre-entities  every real token but the special tokens packing adds (a special
                token written in the text is one, as upstream); an unknown
                token's word is the text it covers, its own word.
  none          one entity per pre-entity: its best label and probability.
  simple        pre-entities grouped: a token continues the group before it
                when its tag (the label without "B-"/"I-") is the group's and
                its label does not start with "B-".
  first, average, max
                pre-entities first made words: a token continues the word
                before it when it is a subword (for a tokenizer with a
                continuing-subword prefix, WordPiece, when its length differs
                from that of the text it covers; for SentencePiece when neither
                the character before it nor its first one is a space).  A word
                takes its first token's probabilities, their mean, or those of
                its most confident token; words are then grouped as simple.
  groups        entity_group: the first member's label after its first "-";
                score: the mean of the members' scores; word: the members' words
                decoded as the tokenizer's convert_tokens_to_string; start: the
                first member's, end: the last member's.
  dropped       entities whose label ("none") or entity_group is "O".
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfhub_models.tokenizers.text import clean_utf8

STRATEGIES = ("none", "simple", "first", "average", "max")
OUTSIDE = "O"


def _bio(label: str) -> tuple:
  """The pipeline's get_tag: ("B" or "I", tag); a label without a prefix is an I."""
  if label.startswith(("B-", "I-")):
    return label[0], label[2:]
  return "I", label


def check_scheme(labels: Sequence[str], aggregation: str) -> None:
  """ValueError unless `aggregation` is a strategy whose grouping the labels fit:
  any labels for "none", BIO (IOB2) tags ("O", "B-X", "I-X") for the others."""
  if aggregation not in STRATEGIES:
    raise ValueError(f"unknown aggregation {aggregation!r} (one of {', '.join(STRATEGIES)})")
  if aggregation == "none":
    return
  bad = [label for label in labels
         if label != OUTSIDE and not (label[:2] in ("B-", "I-") and len(label) > 2)]
  if bad:
    raise ValueError(
        f"aggregation {aggregation!r} groups BIO (IOB2) tags: every label must be 'O', 'B-X' or "
        f"'I-X', but {', '.join(map(repr, bad))} of the labels ({', '.join(labels)}) are not; "
        "use aggregation 'none' (export.py --aggregation none) for one label per token")


class EntityGrouper:
  """The pipeline's postprocessing of one strategy, for one label set and tokenizer.

  The tokenizer gives `id_to_token`, `tokens_to_string`, `unk_token_id` and
  `subword_prefix` (None for SentencePiece).
  """

  def __init__(self, labels: Sequence[str], tokenizer, aggregation: str = "simple"):
    if aggregation not in STRATEGIES:
      raise ValueError(f"unknown aggregation {aggregation!r} (one of {', '.join(STRATEGIES)})")
    labels = [str(label) for label in labels]
    self.aggregation = aggregation
    self.tokenizer = tokenizer
    tags = [_bio(label) for label in labels]
    names = sorted({tag for _, tag in tags})
    self._labels = tf.constant(labels)
    self._tag_ids = tf.constant([names.index(tag) for _, tag in tags], tf.int32)
    self._begins = tf.constant([bi == "B" for bi, _ in tags])
    groups = labels if aggregation == "none" else [label.split("-", 1)[-1] for label in labels]
    self._group_names = tf.constant(groups)
    self._kept = tf.constant([group != OUTSIDE for group in groups])

  def token_labels(self, inputs: dict, offsets: dict, probabilities: tf.Tensor) -> dict:
    """Every token's best label: tokens, labels string [B, L], scores float32 [B, L],
    start, end, padding_mask int32 [B, L]; the special tokens packing adds and
    padding get label "", score 0 and offsets -1, padding the token ""."""
    real = inputs["padding_mask"] > 0
    labelled = real & (offsets["start"] >= 0)
    label = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return {"tokens": tf.where(real, self.tokenizer.id_to_token(inputs["token_ids"]), ""),
            "labels": tf.where(labelled, tf.gather(self._labels, label), ""),
            "scores": tf.where(labelled, tf.reduce_max(probabilities, axis=-1), 0.0),
            "start": tf.where(labelled, offsets["start"], -1),
            "end": tf.where(labelled, offsets["end"], -1),
            "padding_mask": inputs["padding_mask"]}

  def __call__(self, text: tf.Tensor, inputs: dict, offsets: dict,
               probabilities: tf.Tensor) -> dict:
    """The entities of each text.

    Args:
      text: string [B], what was tokenized.
      inputs, offsets: the preprocessor's `with_offsets(text)`.
      probabilities: float32 [B, L, C].

    Returns:
      entity_group, word string [B, E]; score float32 [B, E]; start, end int32
      [B, E] (character offsets into the UTF-8-cleaned text); index int32 [B, E]
      (the token's position, "none" only; -1 otherwise); num_entities int32 [B].
      E is the most entities a text has; slots past a text's entities hold "",
      0 and -1.
    """
    text = clean_utf8(text)
    labelled = (inputs["padding_mask"] > 0) & (offsets["start"] >= 0)          # [B, L]
    ragged = tf.ragged.boolean_mask(inputs["token_ids"], labelled)             # [B, (N)]
    row = tf.cast(ragged.value_rowids(), tf.int32)                              # [N]
    leads = tf.equal(tf.ragged.range(ragged.row_lengths()).flat_values, 0)     # [N]
    ids = ragged.flat_values
    index = tf.cast(tf.where(labelled)[:, 1], tf.int32)
    probs = tf.boolean_mask(probabilities, labelled)                            # [N, C]
    start = tf.boolean_mask(offsets["start"], labelled)
    end = tf.boolean_mask(offsets["end"], labelled)
    unknown = tf.equal(ids, self.tokenizer.unk_token_id)
    token = self.tokenizer.id_to_token(ids)
    covered = tf.strings.substr(tf.gather(text, row), tf.where(unknown, start, 0),
                                tf.where(unknown, end - start, 0), unit="UTF8_CHAR")
    word = tf.where(unknown, covered, token)
    if self.aggregation in ("first", "average", "max"):
      subword = self._subwords(text, row, token, start, end) & ~unknown
      unit = tf.cumsum(tf.cast(leads | ~subword, tf.int32)) - 1               # word of each
      probs, members = self._word_probabilities(probs, unit)
      word = self.tokenizer.tokens_to_string(_rows(word, unit))
      row, start, leads = (tf.gather(x, members[0]) for x in (row, start, leads))
      end = tf.gather(end, members[1])
      index = tf.fill(tf.shape(row), -1)
    label = tf.argmax(probs, axis=-1, output_type=tf.int32)
    score = tf.reduce_max(probs, axis=-1)
    if self.aggregation != "none":
      tag = tf.gather(self._tag_ids, label)
      previous = tf.concat([tag[:1], tag[:-1]], axis=0)
      starts_group = leads | tf.gather(self._begins, label) | tf.not_equal(tag, previous)
      group = tf.cumsum(tf.cast(starts_group, tf.int32)) - 1
      first, last = _ends(group)
      score = tf.math.segment_mean(score, group)
      word = self.tokenizer.tokens_to_string(_rows(word, group))
      row, start, label = (tf.gather(x, first) for x in (row, start, label))
      end = tf.gather(end, last)
      index = tf.fill(tf.shape(row), -1)
    kept = tf.gather(self._kept, label)
    rows = tf.boolean_mask(row, kept)
    batch = tf.shape(text, out_type=tf.int32)[0]

    def padded(values, default):
      return tf.RaggedTensor.from_value_rowids(tf.boolean_mask(values, kept), rows,
                                               nrows=batch).to_tensor(default)

    return {"entity_group": padded(tf.gather(self._group_names, label), ""),
            "score": padded(score, 0.0), "word": padded(word, ""),
            "start": padded(start, -1), "end": padded(end, -1), "index": padded(index, -1),
            "num_entities": tf.math.bincount(rows, minlength=batch, maxlength=batch,
                                             dtype=tf.int32)}

  def _subwords(self, text, row, token, start, end) -> tf.Tensor:
    """The pipeline's is_subword of each pre-entity [N]."""
    if self.tokenizer.subword_prefix:
      return tf.not_equal(tf.strings.length(token, unit="UTF8_CHAR"), end - start)
    characters = tf.strings.unicode_split(text, "UTF-8").to_tensor("")       # [B, C]
    characters = tf.concat([characters, tf.fill([tf.shape(text)[0], 1], "")], axis=1)
    last = tf.shape(characters)[1] - 1
    before = tf.gather_nd(characters, tf.stack([row, tf.clip_by_value(start - 1, 0, last)], 1))
    at = tf.gather_nd(characters, tf.stack([row, tf.clip_by_value(start, 0, last)], 1))
    return (start > 0) & tf.not_equal(before, " ") & tf.not_equal(at, " ")

  def _word_probabilities(self, probs, unit) -> tuple:
    """Each word's probabilities [W, C] by the strategy, and its (first, last) tokens."""
    first, last = _ends(unit)
    if self.aggregation == "first":
      return tf.gather(probs, first), (first, last)
    if self.aggregation == "average":
      return tf.math.segment_mean(probs, unit), (first, last)
    confidence = tf.reduce_max(probs, axis=-1)                                 # max
    best = tf.math.segment_max(confidence, unit)
    position = tf.range(tf.shape(unit)[0])
    candidate = tf.equal(confidence, tf.gather(best, unit))
    chosen = tf.math.segment_min(tf.where(candidate, position, tf.int32.max), unit)
    return tf.gather(probs, chosen), (first, last)


def _ends(segment: tf.Tensor) -> tuple:
  """First and last position of each segment of sorted ids [N]."""
  position = tf.range(tf.shape(segment)[0])
  return tf.math.segment_min(position, segment), tf.math.segment_max(position, segment)


def _rows(values: tf.Tensor, segment: tf.Tensor) -> tf.RaggedTensor:
  """values [N] as rows by sorted segment ids [N] -> [S, (n)]."""
  return tf.RaggedTensor.from_value_rowids(values, segment)


__all__ = ["STRATEGIES", "EntityGrouper", "check_scheme"]
