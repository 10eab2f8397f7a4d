"""The serving parts of generation (BART): `Generate` (serving_default,
generate_with_options, generate_ids) and `Detokenize`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from serving import contract
from tfhub_models import generation
from tfhub_models.export.parts import (Compiled, ExportOptions, checked_ids, id_checks,
                                       make_signature, text_spec)
from tfhub_models.export.warmup import predict_log, strings, text_of_length


class Detokenize(tf.Module):
  """detokenize: token_ids int32 [B, T] -> text string [B], special tokens dropped.

  An id outside 0..V-1 (V: the model's vocabulary size, whose ids generate_ids
  gives) is INVALID_ARGUMENT naming token_ids, as in generate_ids and logits.
  """

  def __init__(self, task, options: ExportOptions):
    super().__init__(name="detokenize")
    del options
    self.task = task

  @make_signature([tf.TensorSpec([None, None], tf.int32, name="token_ids")])
  def detokenize(self, token_ids):
    checks = id_checks(token_ids, "token_ids", self.task.backbone.config.vocabulary_size)
    with tf.control_dependencies(checks):    # plain graph ops: string ops never compile
      token_ids = tf.identity(token_ids)
    return {"text": self.task.tokenizer.detokenize(token_ids)}

  def signatures(self) -> dict:
    return {"detokenize": self.detokenize}

  def warmup(self, model_name: str, batch_sizes) -> list:
    del batch_sizes
    ids = [[self.task.tokenizer.bos_token_id, self.task.tokenizer.eos_token_id]]
    return [predict_log(model_name, "detokenize", {"token_ids": np.array(ids, np.int32)})]


# generate_with_options' per-row inputs after `text`, each [B], and their dtypes.
GENERATION_OPTIONS = tuple((name, tf.as_dtype(dtype))
                           for name, dtype in contract.GENERATION_OPTIONS)


class Generate(tf.Module):
  """BART: serving_default (text -> generated text), generate_with_options (each
  row with its own settings) and generate_ids.

  The whole generation (encoder, decoding loop, sampler) is one function,
  compiled with XLA unless jit_compile is off; the sampler is the task's
  (`task.compile(sampler=...)`).  A sampler that draws gets each request row's
  seed from a stateful random op in the signature, outside the compiled loop,
  unless the export fixes one.
  """

  def __init__(self, task, options: ExportOptions):
    super().__init__(name="generate")
    if options.pair:
      raise ValueError("--pair is for ELECTRA; BART takes one text")
    self.task = task
    self.jit_compile = options.jit_compile
    config, sampler = task.backbone.config.generation, task.sampler
    new_tokens = (config.max_length - 1 if options.max_new_tokens is None
                  else options.max_new_tokens)
    if new_tokens < 1:
      raise ValueError("max_new_tokens must be at least 1")
    if options.max_no_repeat_ngram_size < 0 or options.max_top_k < 0:
      raise ValueError("max_no_repeat_ngram_size and max_top_k must not be negative")
    self.max_length = int(new_tokens) + 1
    task.check_max_length(self.max_length)
    self.draws = sampler.draws
    self.seed = None if options.seed is None else generation.seed_int(options.seed)
    self.stops = config.eos_token_ids
    # The largest settings a row may ask for, and what the loop compiles in for them.
    self.maxima = {"max_new_tokens": self.max_length - 1, "min_new_tokens": self.max_length - 1,
                   "top_k": max(options.max_top_k, sampler.default_top_k),
                   "no_repeat_ngram_size": max(options.max_no_repeat_ngram_size,
                                               config.no_repeat_ngram_size)}
    self.option_limits = generation.Limits(
        self.max_length, self.maxima["no_repeat_ngram_size"], repetition_penalty=True,
        top_k=self.maxima["top_k"] if self.draws else 0, top_p=self.draws)
    # A request's settings default to the export's: these (serving_default's).
    self.defaults = {"max_new_tokens": self.max_length - 1,
                     "min_new_tokens": max(config.min_length - 1, 0),
                     "temperature": sampler.temperature, "top_k": sampler.default_top_k,
                     "top_p": sampler.default_top_p,
                     "repetition_penalty": config.repetition_penalty,
                     "no_repeat_ngram_size": config.no_repeat_ngram_size,
                     "seed": self.seed or 0}
    pad_id = task.tokenizer.pad_token_id
    rows = task.sampler.sequences_per_input
    self._core = Compiled(self._numeric, options.jit_compile, {"token_ids": pad_id},
                          rows_per_input=rows)
    self._options_core = Compiled(
        self._numeric_with_options, options.jit_compile,
        {"token_ids": pad_id, "max_new_tokens": 1, "temperature": 1.0, "top_p": 1.0,
         "repetition_penalty": 1.0}, rows_per_input=rows)
    self.generate_with_options = self._options_signature()

  def _numeric(self, inputs):
    return self.task.generate_ids(inputs["token_ids"], inputs["padding_mask"], self.max_length,
                                  inputs.get("seed", 0))

  def _numeric_with_options(self, inputs):
    new, least = inputs["max_new_tokens"], inputs["min_new_tokens"]
    settings = generation.RowSettings(
        max_length=new + 1, min_length=tf.where(least > 0, least + 1, 0),
        repetition_penalty=inputs["repetition_penalty"],
        no_repeat_ngram_size=inputs["no_repeat_ngram_size"], temperature=inputs["temperature"],
        top_k=inputs["top_k"], top_p=inputs["top_p"], seed=inputs["seed"])
    ids, scores = self.task.generate_ids(inputs["token_ids"], inputs["padding_mask"],
                                         self.max_length, settings=settings,
                                         limits=self.option_limits)
    rows = self.task.sampler.sequences_per_input
    counts = generation.num_generated(ids, self.stops, tf.repeat(settings.max_length, rows))
    return ids, scores, counts

  def _seeds(self, seeds):
    """Each row's seed: the export's, else a fresh one where a row has 0."""
    return generation.row_seeds(seeds) if self.draws else seeds

  @make_signature([text_spec("text")])
  def serving_default(self, text):
    """generated_text string [B·R], generated_ids int32 [B·R, T] (the decoder start
    id first, padding after the end), scores float32 [B·R] (what the sampler ranked
    by: summed log-probabilities, length-penalized for beam search); R is
    num_return_sequences (1 but for beam search), rows of one input adjacent."""
    inputs = self.task.preprocessor(text)
    if self.draws:
      inputs["seed"] = self._seeds(tf.fill(tf.shape(text), tf.constant(self.seed or 0,
                                                                        tf.int64)))
    ids, scores = self._core(inputs)
    return {"generated_text": self.task.tokenizer.detokenize(ids), "generated_ids": ids,
            "scores": scores}

  def _options_signature(self):
    """generate_with_options: text and every GENERATION_OPTIONS input, [B] each; a
    request that leaves one out gets the export's default (SignatureDef defaults,
    one value: for one text)."""
    names = [name for name, _ in GENERATION_OPTIONS]

    def generate_with_options(text, max_new_tokens, min_new_tokens, temperature, top_k, top_p,
                              repetition_penalty, no_repeat_ngram_size, seed):
      """As serving_default, each row generated with its own settings, and
      num_generated_tokens int32 [B·R] (the ids after the decoder start token, the
      forced BOS and the end id included)."""
      values = dict(zip(names, (max_new_tokens, min_new_tokens, temperature, top_k, top_p,
                                repetition_penalty, no_repeat_ngram_size, seed)))
      values = self._checked_options(text, values)
      values["seed"] = self._seeds(values["seed"])
      inputs = self.task.preprocessor(text)
      ids, scores, counts = self._options_core(dict(inputs, **values))
      return {"generated_text": self.task.tokenizer.detokenize(ids), "generated_ids": ids,
              "scores": scores, "num_generated_tokens": counts}

    generate_with_options.__defaults__ = tuple(
        tf.constant([self.defaults[name]], dtype) for name, dtype in GENERATION_OPTIONS)
    return make_signature([text_spec("text")] + [tf.TensorSpec([None], dtype, name=name)
                                              for name, dtype in GENERATION_OPTIONS])(
        generate_with_options)

  def _checked_options(self, text, values: dict) -> dict:
    """The settings checked before the compiled loop (XLA would clamp silently):
    one value per text, each in its range; INVALID_ARGUMENT naming the input."""
    checks = []
    for name, value in values.items():
      checks.append(tf.debugging.assert_equal(
          tf.shape(value), tf.shape(text),
          message=f"{name} must hold one value per text (shape [B], as text; a setting "
                  f"left out of a request takes the export's default, which is one value)"))
    with tf.control_dependencies(checks):
      values = {k: tf.identity(v) for k, v in values.items()}
    ranges = []
    for name, high in self.maxima.items():
      value = values[name]
      low = 1 if name == "max_new_tokens" else 0
      ranges.append((name, (value >= low) & (value <= high), f"in {low}..{high}"))
    finite = {k: tf.math.is_finite(values[k]) for k in ("temperature", "top_p",
                                                        "repetition_penalty")}
    ranges += [
        ("temperature", finite["temperature"] & (values["temperature"] > 0), "> 0 and finite"),
        ("top_p", finite["top_p"] & (values["top_p"] > 0) & (values["top_p"] <= 1), "in (0, 1]"),
        ("repetition_penalty",
         finite["repetition_penalty"] & (values["repetition_penalty"] > 0), "> 0 and finite")]
    checks = [tf.debugging.Assert(tf.reduce_all(ok), [f"{name} must be {allowed}; got",
                                                      values[name]], summarize=8)
              for name, ok, allowed in ranges]
    with tf.control_dependencies(checks):
      return {k: tf.identity(v) for k, v in values.items()}

  @make_signature([
      tf.TensorSpec([None, None], tf.int32, name="encoder_token_ids"),
      tf.TensorSpec([None, None], tf.int32, name="encoder_padding_mask")])
  def generate_ids(self, encoder_token_ids, encoder_padding_mask):
    """generated_ids int32 [B·R, T] for preprocessed encoder inputs (checked, then
    padded to a bucket length as serving_default's)."""
    token_ids, padding_mask = checked_ids(
        encoder_token_ids, encoder_padding_mask,
        names=("encoder_token_ids", "encoder_padding_mask"),
        vocabulary_size=self.task.backbone.config.vocabulary_size,
        buckets=self.task.preprocessor.bucket_lengths,
        pad_id=self.task.tokenizer.pad_token_id, bucketed=True)
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    if self.draws:
      inputs["seed"] = self._seeds(tf.fill(tf.shape(token_ids)[:1],
                                           tf.constant(self.seed or 0, tf.int64)))
    ids, _ = self._core(inputs)
    return {"generated_ids": ids}

  def signatures(self) -> dict:
    return {name: getattr(self, name)
            for name in ("serving_default", "generate_with_options", "generate_ids")}

  def option_values(self, batch: int) -> dict:
    """The export's default settings for `batch` texts, as request arrays."""
    return {name: np.full([batch], self.defaults[name], dtype.as_numpy_dtype)
            for name, dtype in GENERATION_OPTIONS}

  def warmup(self, model_name: str, batch_sizes: Sequence[int]) -> list:
    preprocessor = self.task.preprocessor
    logs = []
    for length in preprocessor.bucket_lengths:
      text, _ = text_of_length(preprocessor, length, mask=False, pair=False)
      for batch in batch_sizes:
        texts = {"text": strings([text] * batch)}
        logs.append(predict_log(model_name, "serving_default", texts))
        logs.append(predict_log(model_name, "generate_with_options",
                                dict(texts, **self.option_values(batch))))
      inputs = preprocessor(tf.constant([text]))
      logs.append(predict_log(model_name, "generate_ids", {
          "encoder_token_ids": inputs["token_ids"].numpy(),
          "encoder_padding_mask": inputs["padding_mask"].numpy()}))
    return logs
