"""The serving signatures, one part per capability, composed per task.

The only place that knows signature names.  A signature is tokenization in
plain graph mode, then a numeric core compiled with XLA (`jit_compile=True`,
unless exported without), then detokenization.  A `ServingModule` is the task
and the parts its task calls for (`PARTS`, keyed by the task's name):

  fill_mask                 FillMask (serving_default, logits) + Tokenize
  replaced_token_detection  ReplacedTokens (serving_default)
  text_classification       TextClassification (serving_default)
  token_classification      TokenClassification (serving_default, token_labels)
  embedding                 Embedding (serving_default)
  generate                  Generate (serving_default, generate_with_options, generate_ids)
                            + Tokenize + Detokenize
  + Embedding ("embedding") for a task whose `extra_signatures` has it (ELECTRA)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from serving import contract
from tfhub_models import entities, generation
from tfhub_models.export.warmup import predict_log, strings, text_of_length
from tfhub_models.preprocessing import POWERS_OF_TWO, pad_columns, pad_rows, round_up
from tfhub_models.tasks import find_masks


@dataclasses.dataclass(frozen=True)
class ExportOptions:
  top_k: int = 5
  jit_compile: bool = True
  # Batch sizes the warmup requests cover, per length bucket.  With XLA a batch
  # is padded to the next power of two, so powers of two cover every size up to
  # the largest one.
  warmup_batch_sizes: tuple = (1, 2, 4, 8)
  # Sentence-pair encoders and discriminators: a second input `text_pair`.
  pair: bool = False
  # Generation (BART): the most new tokens a request gets (None: the model's
  # max_length - 1), the largest no_repeat_ngram_size and top_k that
  # generate_with_options takes, and the seed of serving_default's samplers
  # (None: a fresh one for each request row; an int: the same text always gets
  # the same output).
  max_new_tokens: int | None = None
  max_no_repeat_ngram_size: int = 4
  max_top_k: int = 50
  seed: int | None = None
  # Embeddings: L2-normalize pooled_output and mean_output.
  normalize: bool = False
  # Token classification: how tokens become entities, the transformers
  # pipeline's aggregation_strategy (tfhub_models.entities.STRATEGIES).
  aggregation: str = "simple"


def _text_spec(name: str) -> tf.TensorSpec:
  return tf.TensorSpec([None], tf.string, name=name)


def _signature(input_signature):
  """A serving signature's tf.function.  No AutoGraph: the code has no Python
  control flow on tensors, and converting the whole call tree is most of the
  time an export takes to trace."""
  return functools.partial(tf.function, input_signature=input_signature, autograph=False)


def _text_signature(fn, pair: bool):
  """A tf.function of `text` (and `text_pair`) [B] strings calling fn(text, text_pair)."""
  if pair:
    return _signature([_text_spec("text"), _text_spec("text_pair")])(
        lambda text, text_pair: fn(text, text_pair))
  return _signature([_text_spec("text")])(lambda text: fn(text, None))


TPU_FUNCTION_ALIAS = contract.TPU_FUNCTION_ALIAS


class Compiled:
  """A numeric core on int inputs [B, ...], compiled with XLA (or not), whose batch
  is padded to a power of two under XLA so that a bounded set of shapes compiles.

  Not a tf.Module: the signatures that call it carry its graph, and its variables
  belong to the task.
  """

  def __init__(self, fn: Callable, jit_compile: bool, pad_values: dict, *,
               rows_per_input: int = 1):
    self.jit_compile = jit_compile
    self.pad_values = dict(pad_values)
    self.rows_per_input = rows_per_input
    self._fn = tf.function(fn, jit_compile=jit_compile, autograph=False)

  def __call__(self, inputs: dict):
    """inputs {name: [B, ...]} -> fn's outputs, B·rows_per_input rows each."""
    if not self.jit_compile:
      return self._fn(inputs)
    batch = tf.shape(next(iter(inputs.values())))[0]
    rows = round_up(batch, POWERS_OF_TWO)
    outputs = self._fn({k: pad_rows(v, rows, self.pad_values.get(k, 0))
                        for k, v in inputs.items()})
    return tf.nest.map_structure(lambda y: y[:batch * self.rows_per_input], outputs)


def id_checks(token_ids, name: str, vocabulary_size: int) -> list:
  """Assertions (INVALID_ARGUMENT naming the input `name`) that every id of
  token_ids is in 0..vocabulary_size - 1, to depend on."""
  return [
      tf.debugging.assert_non_negative(token_ids, message=f"{name} must be >= 0"),
      tf.debugging.assert_less(token_ids, vocabulary_size,
                               message=f"{name} must be < the vocabulary size "
                                       f"{vocabulary_size}"),
  ]


def checked_ids(token_ids, padding_mask, *, names: tuple, vocabulary_size: int,
                buckets: Sequence[int], pad_id: int, bucketed: bool):
  """Preprocessed ids [B, L] and mask checked (XLA would clamp bad indices
  silently), then padded to a bucket length when `bucketed`.

  Returns:
    (token_ids, padding_mask) int32 [B, L'], and the checks to depend on.
  """
  ids_name, mask_name = names
  shape = tf.shape(token_ids)
  checks = [
      tf.debugging.assert_equal(shape, tf.shape(padding_mask),
                                message=f"{ids_name} and {mask_name} must have the same shape"),
      tf.debugging.assert_less_equal(shape[1], buckets[-1],
                                     message=f"{ids_name} may hold at most {buckets[-1]} tokens"),
      *id_checks(token_ids, ids_name, vocabulary_size),
  ]
  with tf.control_dependencies(checks):
    token_ids, padding_mask = tf.identity(token_ids), tf.identity(padding_mask)
  if bucketed:
    length = round_up(shape[1], buckets)
    token_ids = pad_columns(token_ids, length, pad_id)
    padding_mask = pad_columns(padding_mask, length, 0)
  return token_ids, padding_mask


class Tokenize(tf.Module):
  """tokenize: text string [B] -> token_ids, padding_mask int32 [B, L], L a bucket."""

  def __init__(self, task, options: ExportOptions):
    super().__init__(name="tokenize")
    del options
    self.task = task

  @_signature([_text_spec("text")])
  def tokenize(self, text):
    inputs = self.task.preprocessor(text)
    return {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}

  def signatures(self) -> dict:
    return {"tokenize": self.tokenize}

  def warmup(self, model_name: str, batch_sizes) -> list:
    del batch_sizes
    mask = getattr(self.task.tokenizer, "mask_token", "") if self.task.task == "fill_mask" else ""
    text = f"Warm {mask} up." if mask else "Warm up."
    return [predict_log(model_name, "tokenize", {"text": strings([text])})]


class Embedding(tf.Module):
  """The backbone's outputs of text (and text_pair): sequence_output float32 [B, L, D]
  (0 at padding), pooled_output float32 [B, D], mean_output float32 [B, D] (the mean
  over real tokens, specials included: sentence-transformers' default pooling),
  padding_mask int32 [B, L]; with `normalize`, pooled and mean outputs have unit
  L2 norm."""

  def __init__(self, task, options: ExportOptions, *, names: tuple = ("embedding",),
               pair: bool | None = None):
    super().__init__(name="embedding")
    self.task = task
    self.names = names
    self.pair = options.pair if pair is None else pair
    self.normalize = options.normalize
    self._core = Compiled(self._numeric, options.jit_compile,
                          {"token_ids": task.tokenizer.pad_token_id})
    self.embedding = _text_signature(self._embedding, self.pair)

  def _numeric(self, inputs):
    outputs = self.task.backbone(inputs)
    sequence = tf.cast(outputs["sequence_output"], tf.float32)           # [B, L, D]
    pooled = tf.cast(outputs["pooled_output"], tf.float32)               # [B, D]
    real = tf.cast(inputs["padding_mask"], tf.float32)[..., None]        # [B, L, 1]
    mean = tf.reduce_sum(sequence * real, axis=1) / tf.maximum(tf.reduce_sum(real, axis=1), 1.0)
    if self.normalize:
      pooled, mean = tf.math.l2_normalize(pooled, axis=-1), tf.math.l2_normalize(mean, axis=-1)
    return sequence * real, pooled, mean

  def _embedding(self, text, text_pair):
    inputs = self.task.preprocessor(text, text_pair)
    sequence, pooled, mean = self._core(inputs)
    return {"sequence_output": sequence, "pooled_output": pooled, "mean_output": mean,
            "padding_mask": inputs["padding_mask"]}

  def signatures(self) -> dict:
    return {name: self.embedding for name in self.names}

  def warmup(self, model_name: str, batch_sizes) -> list:
    logs = []
    for name in self.names:
      sizes = batch_sizes if name == "serving_default" else (1,)
      logs += text_warmup(self.task.preprocessor, model_name, name, sizes, pair=self.pair)
    return logs


def text_warmup(preprocessor, model_name: str, signature: str, batch_sizes, *,
                pair: bool) -> list:
  """One request per length bucket and batch size, of texts of exactly that length."""
  logs = []
  for length in preprocessor.bucket_lengths:
    text, text_pair = text_of_length(preprocessor, length, mask=False, pair=pair)
    for batch in batch_sizes:
      inputs = {"text": strings([text] * batch)}
      if pair:
        inputs["text_pair"] = strings([text_pair] * batch)
      logs.append(predict_log(model_name, signature, inputs))
  return logs


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

  @_signature([_text_spec("text")])
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

  @_signature([
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


class ReplacedTokens(tf.Module):
  """ELECTRA's discriminator: serving_default, the probability that each token was replaced."""

  def __init__(self, task, options: ExportOptions):
    super().__init__(name="replaced_tokens")
    self.task = task
    self.pair = options.pair
    self._core = Compiled(lambda inputs: tf.sigmoid(task(inputs)), options.jit_compile,
                          {"token_ids": task.tokenizer.pad_token_id})
    self.serving_default = _text_signature(self._detect, self.pair)

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

  def signatures(self) -> dict:
    return {"serving_default": self.serving_default}

  def warmup(self, model_name: str, batch_sizes) -> list:
    return text_warmup(self.task.preprocessor, model_name, "serving_default", batch_sizes,
                       pair=self.pair)


class TextClassification(tf.Module):
  """Text classifiers: serving_default, the top label and scores of each text."""

  def __init__(self, task, options: ExportOptions):
    super().__init__(name="text_classification")
    self.task = task
    self.pair = options.pair
    self.top_k = max(1, min(int(options.top_k), task.num_classes))   # capped, not refused
    self.labels = tf.constant(list(task.labels))
    self._core = Compiled(self._numeric, options.jit_compile,
                          {"token_ids": task.tokenizer.pad_token_id})
    self.serving_default = _text_signature(self._classify, self.pair)

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

  def signatures(self) -> dict:
    return {"serving_default": self.serving_default}

  def warmup(self, model_name: str, batch_sizes) -> list:
    return text_warmup(self.task.preprocessor, model_name, "serving_default", batch_sizes,
                       pair=self.pair)


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

  @_signature([_text_spec("text")])
  def serving_default(self, text):
    """entity_group string [B, E], score float32 [B, E] (the mean of its tokens'
    probabilities), word string [B, E] (its tokens decoded as the pipeline
    decodes them), start, end int32 [B, E] (character offsets into the text,
    invalid UTF-8 replaced by U+FFFD), num_entities int32 [B]; slots past a
    text's entities hold "", 0 and -1."""
    out = self.grouper(text, *self._tagged(text))
    return {k: out[k] for k in ("entity_group", "score", "word", "start", "end", "num_entities")}

  @_signature([_text_spec("text")])
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


class Detokenize(tf.Module):
  """detokenize: token_ids int32 [B, T] -> text string [B], special tokens dropped.

  An id outside 0..V-1 (V: the model's vocabulary size, whose ids generate_ids
  gives) is INVALID_ARGUMENT naming token_ids, as in generate_ids and logits.
  """

  def __init__(self, task, options: ExportOptions):
    super().__init__(name="detokenize")
    del options
    self.task = task

  @_signature([tf.TensorSpec([None, None], tf.int32, name="token_ids")])
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

  @_signature([_text_spec("text")])
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
    return _signature([_text_spec("text")] + [tf.TensorSpec([None], dtype, name=name)
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

  @_signature([
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


# The parts of each task's export, by the task's name.
PARTS = {
    "fill_mask": lambda task, options: [FillMask(task, options), Tokenize(task, options)],
    "replaced_token_detection": lambda task, options: [ReplacedTokens(task, options)],
    "text_classification": lambda task, options: [TextClassification(task, options)],
    "token_classification": lambda task, options: [TokenClassification(task, options)],
    "embedding": lambda task, options: [
        Embedding(task, options, names=("serving_default", "embedding")
                  if "embedding" in getattr(task, "extra_signatures", ()) else
                  ("serving_default",))],
    "generate": lambda task, options: [Generate(task, options), Tokenize(task, options),
                                       Detokenize(task, options)],
}


class ServingModule(tf.Module):
  """What an export saves: the task and its signature parts."""

  def __init__(self, task, options: ExportOptions | None = None):
    name = getattr(task, "task", None)
    if name not in PARTS:
      raise TypeError(f"cannot export a {type(task).__name__} for serving (exports take a "
                      f"task module: {', '.join(PARTS)}; XLM-RoBERTa fill-mask exports need "
                      "the masked-LM head)")
    if getattr(task, "preprocessor", None) is None:
      raise ValueError(f"cannot export a {type(task).__name__} without a preprocessor (built "
                       "with preprocessor=None): serving signatures take raw text; load it "
                       "with preprocessor=\"auto\" or set task.preprocessor")
    super().__init__(name=f"{name}_serving")
    options = options or ExportOptions()
    self.task = task
    self.parts = PARTS[name](task, options)
    if "embedding" in getattr(task, "extra_signatures", ()) and name != "embedding":
      # The generator's embedding takes one text, as its fill-mask signatures.
      self.parts.append(Embedding(task, options, pair=options.pair and name != "fill_mask"))

  def signatures(self) -> dict:
    """{signature name: tf.function with an input signature}.  Left to
    tf.saved_model.save to trace: the save context is part of tf.function's cache
    key, so a function traced before the save would be traced again in it."""
    out = {}
    for part in self.parts:
      for key, function in part.signatures().items():
        if key in out:
          raise ValueError(f"two parts export a signature named {key}")
        out[key] = function
    return out

  def warmup(self, model_name: str, batch_sizes: Sequence[int]) -> list:
    return [log for part in self.parts for log in part.warmup(model_name, batch_sizes)]

  def numeric_cores(self) -> list:
    """The `Compiled` cores the signatures call, in the order of the parts."""
    return [value for part in self.parts for value in vars(part).values()
            if isinstance(value, Compiled)]

  def function_aliases(self) -> dict:
    """SaveOptions.function_aliases: TPU_FUNCTION_ALIAS for every traced numeric core."""
    return {TPU_FUNCTION_ALIAS: _TracedFunctions([core._fn for core in self.numeric_cores()])}


class _TracedFunctions:
  """The concrete functions of some tf.functions, listed when iterated: the save
  traces the signatures before it reads SaveOptions.function_aliases, so the cores'
  concrete functions are the ones the saved signatures call."""

  def __init__(self, functions):
    self.functions = functions

  def __iter__(self):
    # The listing tf.saved_model.save itself uses for a tf.function alias.
    return iter([concrete for function in self.functions
                 for concrete in function._list_all_concrete_functions()])
