"""The serving parts of the encoder tasks: fill-mask, replaced-token detection,
text and token classification."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfhub_models import entities
from tfhub_models.export.parts import (Compiled, ExportOptions, TextPart, checked_ids, text_warmup,
                                       make_signature, text_signature, text_spec)
from tfhub_models.export.warmup import predict_log, strings, text_of_length
from tfhub_models.preprocessing import POWERS_OF_TWO, pad_columns, round_up
from tfhub_models.tasks import find_masks


class FillMask(tf.Module):
  """Fill-mask (XLM-RoBERTa, ELECTRA's generator): serving_default and logits."""

  def __init__(self, task, options: ExportOptions):
    super().__init__(name="fill_mask")
    if options.pair:
      raise ValueError("fill-mask exports take one text; --pair is for ELECTRA discriminators "
                       "and encoders")
    self.task = task
    self.jit_compile = options.jit_compile
    self.top_k = max(1, min(int(options.top_k), task.backbone.config.vocabulary_size))
    pads = {"token_ids": task.tokenizer.pad_token_id}
    self._top_k_core = Compiled(self._top_k_numeric, options.jit_compile, pads)
    self._logits_core = Compiled(lambda inputs: task(inputs), options.jit_compile, pads)

  def _top_k_numeric(self, inputs):
    logits = self.task(inputs)                                           # [B, M, V]
    scores, ids = tf.math.top_k(tf.nn.softmax(logits, axis=-1), k=self.top_k)
    return ids, scores

  def _pad_masks(self, mask_positions):
    """Under XLA the mask count, too, is rounded up to a power of two."""
    if not self.jit_compile:
      return mask_positions
    return pad_columns(mask_positions, round_up(tf.shape(mask_positions)[1], POWERS_OF_TWO), 0)

  @make_signature([text_spec("text")])
  def serving_default(self, text):
    """Top-k fillers of every mask token in each text.

    Returns:
      top_k_ids int32 [B, M, K] (-1 past a row's masks), top_k_scores float32
      [B, M, K] (probabilities, 0 past a row's masks), top_k_tokens string
      [B, M, K] (each filler detokenized alone, "" past a row's masks),
      num_masks int32 [B]; M is the largest number of masks in the batch.
    """
    inputs = self.task.preprocessor(text)
    mask_positions, num_masks = find_masks(inputs["token_ids"], self.task.tokenizer.mask_token_id)
    most = tf.shape(mask_positions)[1]
    ids, scores = self._top_k_core({"token_ids": inputs["token_ids"],
                                    "padding_mask": inputs["padding_mask"],
                                    "mask_positions": self._pad_masks(mask_positions)})
    ids, scores = ids[:, :most], scores[:, :most]
    valid = (tf.range(most)[None, :] < num_masks[:, None])[..., None]    # [B, M, 1]
    ids = tf.where(valid, ids, -1)
    return {
        "top_k_ids": ids,
        "top_k_scores": tf.where(valid, scores, 0.0),
        "top_k_tokens": tf.where(valid, self.task.tokenizer.id_to_text(tf.maximum(ids, 0)), ""),
        "num_masks": num_masks,
    }

  @make_signature([
      tf.TensorSpec([None, None], tf.int32, name="token_ids"),
      tf.TensorSpec([None, None], tf.int32, name="padding_mask"),
      tf.TensorSpec([None, None], tf.int32, name="mask_positions"),
  ])
  def logits(self, token_ids, padding_mask, mask_positions):
    """Vocabulary logits float32 [B, M, V] at preprocessed mask positions.

    The inputs are checked (XLA would clamp bad indices silently), then padded
    like serving_default's: L to a bucket length, B and M to powers of two.
    """
    length = tf.shape(token_ids)[1]
    checks = [
        tf.debugging.assert_equal(tf.shape(token_ids)[0], tf.shape(mask_positions)[0],
                                  message="mask_positions must have one row per token_ids row"),
        tf.debugging.assert_non_negative(mask_positions, message="mask_positions must be >= 0"),
        tf.debugging.assert_less(mask_positions, length,
                                 message="mask_positions must be < the length of token_ids"),
    ]
    with tf.control_dependencies(checks):
      mask_positions = tf.identity(mask_positions)
    token_ids, padding_mask = checked_ids(
        token_ids, padding_mask, names=("token_ids", "padding_mask"),
        vocabulary_size=self.task.backbone.config.vocabulary_size,
        buckets=self.task.preprocessor.bucket_lengths,
        pad_id=self.task.tokenizer.pad_token_id, bucketed=self.jit_compile)
    most = tf.shape(mask_positions)[1]
    logits = self._logits_core({"token_ids": token_ids, "padding_mask": padding_mask,
                                "mask_positions": self._pad_masks(mask_positions)})
    return {"logits": logits[:, :most]}

  def signatures(self) -> dict:
    return {"serving_default": self.serving_default, "logits": self.logits}

  def warmup(self, model_name: str, batch_sizes: Sequence[int]) -> list:
    logs = []
    preprocessor = self.task.preprocessor
    tokenizer = preprocessor.tokenizer
    for length in preprocessor.bucket_lengths:
      text, _ = text_of_length(preprocessor, length, mask=True, pair=False)
      for batch in batch_sizes:
        logs.append(predict_log(model_name, "serving_default", {"text": strings([text] * batch)}))
      for masks in (2, 4):  # mask counts round up to powers of two; more compile on first use
        if masks + 2 <= length:
          several = text.replace(tokenizer.unk_token, tokenizer.mask_token, masks - 1)
          logs.append(predict_log(model_name, "serving_default", {"text": strings([several])}))
      inputs = preprocessor(tf.constant([text]))
      positions, _ = find_masks(inputs["token_ids"], tokenizer.mask_token_id)
      logs.append(predict_log(model_name, "logits", {
          "token_ids": inputs["token_ids"].numpy(), "padding_mask": inputs["padding_mask"].numpy(),
          "mask_positions": positions.numpy()}))
    return logs


class ReplacedTokens(TextPart):
  """ELECTRA's discriminator: serving_default, the probability that each token was replaced."""

  def __init__(self, task, options: ExportOptions):
    super().__init__(name="replaced_tokens")
    self.task = task
    self.pair = options.pair
    self._core = Compiled(lambda inputs: tf.sigmoid(task(inputs)), options.jit_compile,
                          {"token_ids": task.tokenizer.pad_token_id})
    self.serving_default = text_signature(self._detect, self.pair)

  def _detect(self, text, text_pair):
    """token_ids, padding_mask int32 [B, L], tokens string [B, L] ("" at padding),
    replaced_probability float32 [B, L] (sigmoid of the discriminator logit, 0 at padding)."""
    inputs = self.task.preprocessor(text, text_pair)
    probability = self._core(inputs)
    real = inputs["padding_mask"] > 0
    return {"token_ids": inputs["token_ids"],
            "tokens": tf.where(real, self.task.tokenizer.id_to_token(inputs["token_ids"]), ""),
            "padding_mask": inputs["padding_mask"],
            "replaced_probability": tf.where(real, probability, 0.0)}


class TextClassification(TextPart):
  """Text classifiers: serving_default, the top label and scores of each text."""

  def __init__(self, task, options: ExportOptions):
    super().__init__(name="text_classification")
    self.task = task
    self.pair = options.pair
    self.top_k = max(1, min(int(options.top_k), task.num_classes))   # capped, not refused
    self.labels = tf.constant(list(task.labels))
    self._core = Compiled(self._numeric, options.jit_compile,
                          {"token_ids": task.tokenizer.pad_token_id})
    self.serving_default = text_signature(self._classify, self.pair)

  def _numeric(self, inputs):
    logits = self.task(inputs)                                           # [B, C]
    scores, ids = tf.math.top_k(self.task.scores(logits), k=self.top_k)  # [B, K]
    return logits, scores, ids

  def _classify(self, text, text_pair):
    """label string [B] (the top class's name), score float32 [B] (its probability:
    softmax, sigmoid for multi-label, the raw value for regression),
    top_k_labels string [B, K], top_k_scores float32 [B, K] (descending), logits
    float32 [B, C]."""
    logits, scores, ids = self._core(self.task.preprocessor(text, text_pair))
    names = tf.gather(self.labels, ids)
    return {"label": names[:, 0], "score": scores[:, 0], "top_k_labels": names,
            "top_k_scores": scores, "logits": logits}


class TokenClassification(tf.Module):
  """Taggers: serving_default (entities, grouped as the transformers pipeline's
  `aggregation_strategy`) and token_labels (every token's best label)."""

  def __init__(self, task, options: ExportOptions):
    super().__init__(name="token_classification")
    if options.pair:
      raise ValueError("token classification exports take one text; --pair is for text "
                       "classifiers, embeddings and ELECTRA discriminators")
    entities.check_scheme(task.labels, options.aggregation)
    self.task = task
    self.grouper = entities.EntityGrouper(task.labels, task.tokenizer, options.aggregation)
    self._core = Compiled(lambda inputs: tf.nn.softmax(task(inputs), axis=-1),
                          options.jit_compile, {"token_ids": task.tokenizer.pad_token_id})

  def _tagged(self, text):
    inputs, offsets = self.task.preprocessor.with_offsets(text)
    return inputs, offsets, self._core(inputs)

  @make_signature([text_spec("text")])
  def serving_default(self, text):
    """entity_group string [B, E], score float32 [B, E] (the mean of its tokens'
    probabilities), word string [B, E] (its tokens decoded as the pipeline
    decodes them), start, end int32 [B, E] (character offsets into the text,
    invalid UTF-8 replaced by U+FFFD), num_entities int32 [B]; slots past a
    text's entities hold "", 0 and -1."""
    out = self.grouper(text, *self._tagged(text))
    return {k: out[k] for k in ("entity_group", "score", "word", "start", "end", "num_entities")}

  @make_signature([text_spec("text")])
  def token_labels(self, text):
    """tokens, labels string [B, L], scores float32 [B, L], start, end,
    padding_mask int32 [B, L]: every input token, the special tokens (label "",
    score 0, offsets -1) and padding (token "" too) included."""
    return self.grouper.token_labels(*self._tagged(text))

  def signatures(self) -> dict:
    return {name: getattr(self, name) for name in ("serving_default", "token_labels")}

  def warmup(self, model_name: str, batch_sizes) -> list:
    return (text_warmup(self.task.preprocessor, model_name, "serving_default", batch_sizes,
                        pair=False)
            + text_warmup(self.task.preprocessor, model_name, "token_labels", (1,), pair=False))
