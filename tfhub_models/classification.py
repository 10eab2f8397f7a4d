"""Sequence classification heads and the text-classification task they make.

`TextClassifier` composes a backbone (dict in, dict out, with
"sequence_output" [B, L, D]), a preprocessor and a `ClassificationHead` on the
first token, as Hugging Face's `*ForSequenceClassification`.  The families
name it (`XLMRobertaTextClassifier`, `ElectraTextClassifier`) and load it;
this module holds what they share: labels, problem types and their losses,
the training inputs, and pipeline-shaped answers.

Problem types, as `config.json`'s `problem_type`:
  single_label_classification: softmax; labels int [B]; cross-entropy.
  multi_label_classification:  sigmoid; labels float [B, C]; binary cross-entropy.
  regression:                  the raw value; labels float [B] or [B, C]; squared error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfhub_models import entities, labelled, layers, metrics, tasks, training

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


class ClassificationHead(layers.Module):
  """dropout, dense (D -> D), activation, dropout, dense (D -> C) on the first token.

  XLM-RoBERTa's `classifier` uses tanh, ELECTRA's GELU (exact, whatever the
  config's hidden_act), as upstream.
  """

  def __init__(self, hidden_dim: int, num_classes: int, activation: str, *, dropout: float = 0.1,
               dtype="float32", name: str = "classifier"):
    super().__init__(name=name)
    self.activation = layers.activation(activation)
    self.dropout = dropout
    with self.name_scope:
      self.dense = layers.Dense(hidden_dim, hidden_dim, dtype=dtype, name="dense")
      self.out_proj = layers.Dense(hidden_dim, num_classes, dtype=dtype, name="out_proj")

  def __call__(self, sequence_output: tf.Tensor, training: bool = False) -> tf.Tensor:
    """[B, L, D] -> float32 logits [B, C]."""
    x = layers.dropout(sequence_output[:, 0], self.dropout, training)
    x = layers.dropout(self.activation(self.dense(x)), self.dropout, training)
    return tf.cast(self.out_proj(x), tf.float32)


def label_names(labels, num_classes: int) -> tuple:
  """Names of the classes: `labels` (a sequence or an {id: name} dict), else LABEL_i."""
  if labels is None:
    return tuple(f"LABEL_{i}" for i in range(num_classes))
  if isinstance(labels, dict):
    labels = [labels.get(i, labels.get(str(i), f"LABEL_{i}")) for i in range(num_classes)]
  labels = tuple(str(name) for name in labels)
  if len(labels) != num_classes:
    raise ValueError(f"{len(labels)} label names for {num_classes} classes")
  return labels


def head_options(num_classes=None, labels=None, problem_type=None) -> dict:
  """The loader's options of a classifier's from_preset: num_classes asks for a
  new head (fresh_head), whose labels are not the checkpoint's."""
  options = {k: v for k, v in (("num_classes", num_classes), ("labels", labels),
                               ("problem_type", problem_type)) if v is not None}
  if num_classes is not None:
    options["fresh_head"] = True
    options.setdefault("labels", None)
  return options


def _multi_label_loss(labels, logits):
  return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
      labels=tf.cast(labels, tf.float32), logits=logits), axis=-1)


def _regression_loss(labels, logits):
  labels = tf.reshape(tf.cast(labels, tf.float32), tf.shape(logits))
  return tf.reduce_mean(tf.square(logits - labels), axis=-1)


LOSSES = {"single_label_classification": training.sparse_cross_entropy,
          "multi_label_classification": _multi_label_loss,
          "regression": _regression_loss}


def _preprocessed(x: dict) -> dict:
  """Preprocessed classifier inputs {"token_ids", "padding_mask"[, "segment_ids"]} as int32."""
  missing = [k for k in ("token_ids", "padding_mask") if k not in x]
  if missing:
    raise training.TrainingError(f"preprocessed inputs need {', '.join(missing)}")
  return {k: tf.cast(v, tf.int32) for k, v in x.items()}


class TextClassifier(tasks.Task, training.Trainable):
  """Text (or a text pair) in, one score per class out."""

  task = "text_classification"
  head_activation = "tanh"          # the dense layer's before out_proj (family classes set it)
  module_name = "text_classifier"

  def __init__(self, backbone, preprocessor, num_classes: int, *, labels=None,
               problem_type: str = "single_label_classification", activation: str | None = None,
               head: ClassificationHead | None = None, name: str | None = None):
    if int(num_classes) < 1:
      raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if problem_type not in PROBLEM_TYPES:
      raise ValueError(f"unknown problem_type {problem_type!r} ({', '.join(PROBLEM_TYPES)})")
    super().__init__(backbone, preprocessor, name=name or self.module_name)
    activation = activation or self.head_activation
    self.num_classes = int(num_classes)
    self.labels = label_names(labels, self.num_classes)
    self.problem_type = problem_type
    config = backbone.config
    self.head = head or ClassificationHead(config.hidden_dim, self.num_classes, activation,
                                           dropout=config.dropout, dtype=backbone.dtype.name)

  @property
  def default_loss(self):
    return LOSSES[self.problem_type]

  @property
  def default_metrics(self) -> tuple:
    return () if self.problem_type == "regression" else ("accuracy",)

  @property
  def collects_predictions(self) -> bool:
    return self.problem_type != "regression"

  def predicted_classes(self, logits: tf.Tensor) -> tf.Tensor:
    """Classes int32 [B] (argmax), or [B, C] 0/1 for multi-label (sigmoid > 0.5)."""
    if self.problem_type == "multi_label_classification":
      return tf.cast(logits > 0, tf.int32)
    return tf.argmax(logits, axis=-1, output_type=tf.int32)

  def evaluation_metrics(self, predicted, labels, weights) -> dict:
    """accuracy and f1_macro (see tfhub_models.metrics)."""
    return metrics.classification_metrics(predicted, np.rint(labels).astype(np.int64),
                                          self.num_classes, weights)

  def training_examples(self, x, y):
    """Labels may be class names (a list of names per row for multi-label): they
    become ids (or 0/1 rows) through `labels`; an unknown name is an error
    naming it and its row, before any step."""
    if y is None or isinstance(x, tf.data.Dataset) or not _has_names(y):
      return x, y
    rows = list(y)
    examples = labelled.Examples("y", [None] * len(rows), rows,
                                 [f"row {i}" for i in range(len(rows))])
    try:
      return x, labelled.encode_labels(examples, self.labels, self.problem_type)
    except ValueError as e:
      raise training.TrainingError(str(e)) from None

  @classmethod
  def build(cls, backbone, preprocessor, *, num_classes: int = 2, labels=None,
            problem_type: str = "single_label_classification", **options):
    """A classifier with a new head of `num_classes` (see __init__)."""
    del options
    return cls(backbone, preprocessor, num_classes, labels=labels, problem_type=problem_type)

  @classmethod
  def from_preset(cls, preset: str, load_weights: bool = True, preprocessor="auto", *,
                  num_classes: int | None = None, labels=None, problem_type: str | None = None,
                  **overrides):
    """A classifier checkpoint as it is, or a backbone checkpoint with a new head.

    num_classes: a new, randomly initialised head of this many classes (for
      fine-tuning); None: the checkpoint's own head (`*ForSequenceClassification`).
    labels: class names (default: the checkpoint's id2label, else LABEL_i).
    problem_type: see the module docstring (default: the checkpoint's, else
      single_label_classification).
    overrides: dtype, sequence_length.
    """
    return tasks.load_preset(cls.family, cls.task, preset, load_weights, preprocessor,
                             options=head_options(num_classes, labels, problem_type),
                             **overrides)

  def __call__(self, inputs: dict, training: bool = False) -> tf.Tensor:
    """Logits float32 [B, C] of {"token_ids", "padding_mask"[, "segment_ids"]} [B, L]."""
    outputs = self.backbone(inputs, training=training)
    return self.head(outputs["sequence_output"], training=training)

  def scores(self, logits: tf.Tensor) -> tf.Tensor:
    """What the pipeline reports: softmax, sigmoid (multi-label) or the raw value."""
    if self.problem_type == "multi_label_classification":
      return tf.sigmoid(logits)
    if self.problem_type == "regression":
      return logits
    return tf.nn.softmax(logits, axis=-1)

  def hits(self, labels, logits):
    """Per-example accuracy terms [B]: argmax = label, or for multi-label the share
    of classes whose sigmoid is on the label's side of 0.5."""
    if self.problem_type == "multi_label_classification":
      predicted = tf.cast(logits > 0, tf.float32)
      return tf.reduce_mean(tf.cast(tf.equal(predicted, tf.cast(labels, tf.float32)),
                                    tf.float32), axis=-1)
    return tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32),
                            tf.cast(labels, tf.int32)), tf.float32)

  def prepare(self, x, y=None, sample_weight=None, mode: str = "fit"):
    """Training inputs of one batch (see tfhub_models.training).

    x: texts string [B], a pair (texts, pairs), or preprocessed {"token_ids",
    "padding_mask"[, "segment_ids"]}; y: labels (see the module docstring);
    sample_weight [B] (default 1).
    """
    if isinstance(x, dict):
      inputs = _preprocessed(x)
    else:
      tasks.require_preprocessor(self, "raw text")
      texts, pairs = x if isinstance(x, tuple) else (x, None)
      inputs = self.preprocessor(texts, pairs) if pairs is not None else self.preprocessor(texts)
    if mode == "predict" or y is None:
      return inputs, y, sample_weight
    if self.problem_type == "single_label_classification":
      labels = tf.cast(y, tf.int32)
    else:
      labels = tf.cast(y, tf.float32)
    batch = tf.shape(inputs["token_ids"])[:1]
    weights = (tf.ones(batch, tf.float32) if sample_weight is None
               else tf.cast(sample_weight, tf.float32))
    checks = [tf.debugging.assert_equal(tf.shape(weights), batch,
                                        message="sample_weight must have one value per text")]
    if self.problem_type == "single_label_classification":
      checks.append(training.check_labels(labels, weights, self.num_classes, "classes"))
    elif self.problem_type == "multi_label_classification":
      checks.append(tf.debugging.assert_equal(
          tf.shape(labels), tf.stack([batch[0], self.num_classes]),
          message=f"multi-label y must be [B, {self.num_classes}] (0 or 1 per class)"))
    with tf.control_dependencies(checks):
      return inputs, tf.identity(labels), tf.identity(weights)

  def classify(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None,
               top_k: int | None = 1) -> list:
    """Pipeline-shaped answers (eager): for each text, [{"label", "score"}] sorted by
    score, `top_k` of them (None: every class)."""
    tasks.require_preprocessor(self, "classify")
    texts = tf.constant(list(texts))
    inputs = (self.preprocessor(texts) if text_pairs is None
              else self.preprocessor(texts, tf.constant(list(text_pairs))))
    scores = self.scores(self(inputs)).numpy()
    k = self.num_classes if top_k is None else min(int(top_k), self.num_classes)
    answers = []
    for row in scores:
      order = row.argsort()[::-1][:k]
      answers.append([{"label": self.labels[i], "score": float(row[i])} for i in order])
    return answers


def _has_names(y) -> bool:
  """Whether labels y hold a class name (a string, or a list with one)."""
  if isinstance(y, (tf.Tensor, np.ndarray)) and np.asarray(y).dtype.kind not in "OUS":
    return False
  values = list(np.asarray(y, dtype=object).ravel()) if isinstance(y, np.ndarray) else list(y)
  return any(isinstance(v, str) or (isinstance(v, (list, tuple))
                                    and any(isinstance(e, str) for e in v)) for v in values)


class TokenClassificationHead(layers.Module):
  """dropout, then one dense layer (D -> C) at every token (`*ForTokenClassification`)."""

  def __init__(self, hidden_dim: int, num_classes: int, *, dropout: float = 0.1,
               dtype="float32", name: str = "classifier"):
    super().__init__(name=name)
    self.dropout = dropout
    with self.name_scope:
      self.dense = layers.Dense(hidden_dim, num_classes, dtype=dtype, name="dense")

  def __call__(self, sequence_output: tf.Tensor, training: bool = False) -> tf.Tensor:
    """[B, L, D] -> float32 logits [B, L, C]."""
    return tf.cast(self.dense(layers.dropout(sequence_output, self.dropout, training)),
                   tf.float32)


IGNORED_LABEL = -100   # upstream's label of tokens that do not count (specials, padding)


class TokenClassifier(tasks.Task, training.Trainable):
  """One label per token (named-entity tagging)."""

  task = "token_classification"
  module_name = "token_classifier"
  default_metrics = ("accuracy",)
  collects_predictions = True
  # fit on words: every sub-token of a word gets the word's tag (else its first).
  label_all_tokens = False

  def __init__(self, backbone, preprocessor, num_classes: int, *, labels=None,
               head: TokenClassificationHead | None = None, name: str | None = None):
    if int(num_classes) < 1:
      raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    super().__init__(backbone, preprocessor, name=name or self.module_name)
    self.num_classes = int(num_classes)
    self.labels = label_names(labels, self.num_classes)
    self.problem_type = "single_label_classification"
    self.head = head or TokenClassificationHead(backbone.config.hidden_dim, self.num_classes,
                                                dropout=backbone.config.dropout,
                                                dtype=backbone.dtype.name)

  @classmethod
  def build(cls, backbone, preprocessor, *, num_classes: int = 2, labels=None, **options):
    """A tagger with a new head of `num_classes` (see __init__)."""
    del options   # problem_type: a tagger's is single-label
    return cls(backbone, preprocessor, num_classes, labels=labels)

  @classmethod
  def from_preset(cls, preset: str, load_weights: bool = True, preprocessor="auto", *,
                  num_classes: int | None = None, labels=None, **overrides):
    """A token-classification checkpoint as it is, or a backbone with a new head
    of `num_classes` (see TextClassifier.from_preset)."""
    return tasks.load_preset(cls.family, cls.task, preset, load_weights, preprocessor,
                             options=head_options(num_classes, labels), **overrides)

  def __call__(self, inputs: dict, training: bool = False) -> tf.Tensor:
    """Logits float32 [B, L, C] of {"token_ids", "padding_mask"[, "segment_ids"]} [B, L]."""
    outputs = self.backbone(inputs, training=training)
    return self.head(outputs["sequence_output"], training=training)

  def prepare(self, x, y=None, sample_weight=None, mode: str = "fit"):
    """Training inputs of one batch: preprocessed {"token_ids", "padding_mask"[,
    "segment_ids"]} [B, L] with labels y int [B, L] (-100, upstream's ignored
    label, or padding: weight 0), or raw texts for predict.  sample_weight [B, L]
    (default: 1 where the label is not -100 and the token is real)."""
    if isinstance(x, dict):
      inputs = _preprocessed(x)
    else:
      tasks.require_preprocessor(self, "raw text")
      if y is not None:
        raise training.TrainingError(
            "token labels must line up with the tokens: train on preprocessed inputs "
            "(task.preprocessor(texts)) with y [B, L]")
      inputs = self.preprocessor(x)
    if mode == "predict" or y is None:
      return inputs, y, sample_weight
    labels = tf.cast(y, tf.int32)
    counted = tf.cast((labels != IGNORED_LABEL) & (inputs["padding_mask"] > 0), tf.float32)
    weights = counted if sample_weight is None else tf.cast(sample_weight, tf.float32) * counted
    checks = [tf.debugging.assert_equal(tf.shape(labels), tf.shape(inputs["token_ids"]),
                                        message="y must have the shape of token_ids [B, L]"),
              training.check_labels(labels, weights, self.num_classes, "classes")]
    with tf.control_dependencies(checks):
      return inputs, tf.maximum(tf.identity(labels), 0), tf.identity(weights)

  def evaluation_metrics(self, predicted, labels, weights) -> dict:
    """Entity-level precision, recall and f1 over the counted tokens (the words'
    first sub-tokens), as seqeval computes them on IOB2 tags; nothing for label
    sets that are not IOB2 (token accuracy is the "accuracy" beside it)."""
    try:
      entities.check_scheme(self.labels, "simple")
    except ValueError:
      return {}
    names = np.array(self.labels, dtype=object)
    true, guessed = [], []
    for row_predicted, row_labels, row_weights in zip(predicted, labels, weights):
      counted = row_weights > 0
      true.append(list(names[row_labels[counted]]))
      guessed.append(list(names[row_predicted[counted]]))
    return metrics.entity_metrics(true, guessed)

  def align(self, words, tags=None, *, label_all_tokens: bool | None = None):
    """Words and their tags as token-level training inputs (transformers'
    token-classification recipe): the words are joined by spaces and tokenized
    (with offsets, in the graph); each word's tag goes to its first sub-token,
    the others (and the special tokens) get -100, which does not count.

    Args:
      words: a list of word lists (strings without surrounding spaces).
      tags: a list of tag lists, one per word (ids, or names of `labels`); None
        for inputs alone.
      label_all_tokens: every sub-token gets its word's tag (default: the
        task's `label_all_tokens`).

    Returns:
      ({"token_ids", "padding_mask"[, "segment_ids"]}: int32 [N, L], labels
      int32 [N, L] or None); words past the sequence length are cut.
    """
    tasks.require_preprocessor(self, "align")
    every = self.label_all_tokens if label_all_tokens is None else label_all_tokens
    rows = [list(w) for w in words]
    bad = next((i for i, w in enumerate(rows) if not w or not all(
        isinstance(t, str) and t.strip() and t == t.strip() for t in w)), None)
    if bad is not None:
      raise training.TrainingError(f"x row {bad}: a row is a non-empty list of words (strings "
                                   f"without surrounding spaces), got {str(rows[bad])[:80]}")
    ids = None
    if tags is not None:
      tags = [list(t) for t in tags]
      if len(tags) != len(rows):
        raise training.TrainingError(f"{len(tags)} tag lists for {len(rows)} rows of words")
      examples = labelled.Examples("y", rows, tags, [f"row {i}" for i in range(len(rows))])
      for i, (w, t) in enumerate(zip(rows, tags)):
        if len(w) != len(t):
          raise training.TrainingError(f"y row {i}: {len(t)} tags for {len(w)} words")
      try:
        ids = labelled.encode_labels(examples, self.labels, "", tagged=True)
      except ValueError as e:
        raise training.TrainingError(str(e)) from None
    texts = [" ".join(w) for w in rows]
    parts, labels = [], []
    for start in range(0, len(texts), 256):    # bounded graph inputs
      inputs, offsets = self.preprocessor.with_offsets(tf.constant(texts[start:start + 256]))
      parts.append({k: v.numpy() for k, v in inputs.items()})
      if ids is not None:
        starts = offsets["start"].numpy()
        for row in range(starts.shape[0]):
          labels.append(_token_labels(rows[start + row], ids[start + row], starts[row], every))
    width = max(p["token_ids"].shape[1] for p in parts)
    pad = {"token_ids": self.tokenizer.pad_token_id}
    merged = {k: np.concatenate([np.pad(p[k], [(0, 0), (0, width - p[k].shape[1])],
                                        constant_values=pad.get(k, 0)) for p in parts])
              for k in parts[0]}
    if ids is None:
      return merged, None
    return merged, np.array([row + [IGNORED_LABEL] * (width - len(row)) for row in labels],
                            np.int32)

  def training_examples(self, x, y):
    """Words (a list of word lists) with tags become token inputs and labels
    (see align); other inputs pass as they are."""
    if isinstance(x, tf.data.Dataset) or not _word_lists(x):
      return x, y
    return self.align(x, y)

  def entities(self, text: tf.Tensor, aggregation: str = "simple") -> dict:
    """The entities of texts string [B], grouped as the transformers pipeline's
    `aggregation_strategy` (see tfhub_models.entities for the outputs)."""
    tasks.require_preprocessor(self, "entities")
    inputs, offsets = self.preprocessor.with_offsets(text)
    probabilities = tf.nn.softmax(self(inputs), axis=-1)
    return entities.EntityGrouper(self.labels, self.tokenizer, aggregation)(
        text, inputs, offsets, probabilities)

  def tag(self, texts: Sequence[str], aggregation_strategy: str = "simple") -> list:
    """Pipeline-shaped answers (eager), as the transformers token-classification
    pipeline's: for each text, [{"entity_group", "score", "word", "start", "end"}]
    ({"entity", "score", "index", "word", "start", "end"} with "none"); start and
    end are character offsets, `text[start:end]`."""
    out = {k: v.numpy() for k, v in
           self.entities(tf.constant(list(texts)), aggregation_strategy).items()}
    key = "entity" if aggregation_strategy == "none" else "entity_group"
    answers = []
    for b, count in enumerate(out["num_entities"]):
      answers.append([])
      for e in range(int(count)):
        answer = {key: out["entity_group"][b, e].decode("utf-8"),
                  "score": float(out["score"][b, e])}
        if aggregation_strategy == "none":
          answer["index"] = int(out["index"][b, e])
        answer.update(word=out["word"][b, e].decode("utf-8"), start=int(out["start"][b, e]),
                      end=int(out["end"][b, e]))
        answers[-1].append(answer)
    return answers

  def token_labels(self, texts: Sequence[str]) -> list:
    """For each text, [(token, label, score)] of its real tokens, specials included (eager)."""
    tasks.require_preprocessor(self, "token_labels")
    inputs = self.preprocessor(tf.constant(list(texts)))
    probabilities = tf.nn.softmax(self(inputs), axis=-1).numpy()
    tokens = self.tokenizer.id_to_token(inputs["token_ids"]).numpy()
    lengths = inputs["padding_mask"].numpy().sum(axis=1)
    return [[(tokens[b, i].decode("utf-8"), self.labels[int(probabilities[b, i].argmax())],
              float(probabilities[b, i].max())) for i in range(n)]
            for b, n in enumerate(lengths)]


def _word_lists(x) -> bool:
  """Whether x is a list of word lists (what TokenClassifier.align takes)."""
  return (isinstance(x, (list, tuple)) and bool(x) and isinstance(x[0], (list, tuple))
          and bool(x[0]) and isinstance(x[0][0], str))


def _token_labels(words: list, tags: list, starts: np.ndarray, every: bool) -> list:
  """One row's token labels: the word each token starts in (by character
  offsets into the words joined by spaces) gives its tag, to its first token
  only unless `every`; -100 elsewhere.  starts: int [L], -1 at specials."""
  ends = np.cumsum([len(w) + 1 for w in words]) - 1        # each word's end (exclusive)
  labels, previous = [], -1
  for start in starts:
    if start < 0:
      labels.append(IGNORED_LABEL)
      continue
    word = int(np.searchsorted(ends, start, side="right"))
    if word >= len(words):
      labels.append(IGNORED_LABEL)
      continue
    labels.append(tags[word] if every or word != previous else IGNORED_LABEL)
    previous = word
  return labels


__all__ = ["ClassificationHead", "TextClassifier", "TokenClassificationHead", "TokenClassifier",
           "PROBLEM_TYPES", "LOSSES", "label_names", "IGNORED_LABEL"]
