"""From token ids to model inputs: truncate, pack with special tokens, pad to a bucket.

One home for the rules every preprocessor and export shares: `truncate` and
`truncate_longest_first` (the upstream truncation rules), `pack` (`[CLS] a [SEP]
b [SEP]` or `<s> a </s></s> b </s>`, by tensorflow-text's `combine_segments`),
`round_up` (a length to its bucket, a batch to a power of two) and
`pad_to_bucket`.  The preprocessors compose a tokenizer with these.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tensorflow_text as tf_text

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512)
POWERS_OF_TWO = tuple(2 ** i for i in range(31))


def round_up(n, sizes: Sequence[int]) -> tf.Tensor:
  """The smallest of the sorted `sizes` >= n (the largest if none is), int32 scalar."""
  sizes = tf.constant(list(sizes), tf.int32)
  index = tf.reduce_sum(tf.cast(sizes < tf.cast(n, tf.int32), tf.int32))
  return tf.gather(sizes, tf.minimum(index, tf.size(sizes) - 1))


def bucket_lengths_for(sequence_length: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> tuple:
  """The padded lengths a batch may take: buckets below sequence_length, then it."""
  if sequence_length < 3:
    raise ValueError(f"sequence_length must be at least 3, got {sequence_length}")
  return tuple(sorted({b for b in buckets if b < sequence_length} | {sequence_length}))


def check_sequence_length(sequence_length: int, max_sequence_length: int) -> None:
  """ValueError unless 3 <= sequence_length <= the model's max_sequence_length."""
  if not 3 <= sequence_length <= max_sequence_length:
    raise ValueError(f"sequence length {sequence_length} is outside 3..{max_sequence_length}")


def pad_rows(x: tf.Tensor, rows, value) -> tf.Tensor:
  """Pads x [B, ...] with `value` up to `rows` rows."""
  extra = rows - tf.shape(x)[0]
  paddings = tf.concat([[[0, extra]], tf.zeros([tf.rank(x) - 1, 2], tf.int32)], axis=0)
  return tf.pad(x, paddings, constant_values=value)


def pad_columns(x: tf.Tensor, columns, value) -> tf.Tensor:
  """Pads x [B, L] with `value` up to `columns` columns."""
  return tf.pad(x, [[0, 0], [0, columns - tf.shape(x)[1]]], constant_values=value)


def pad_to_bucket(ids: tf.RaggedTensor, pad_id: int, buckets: Sequence[int],
                  segment_ids: tf.RaggedTensor | None = None) -> dict:
  """Pads ragged ids [B, (n)] to the smallest bucket >= the longest row.

  Rows must already be at most buckets[-1] long.

  Returns:
    {"token_ids", "padding_mask"} (and "segment_ids" when given): int32 [B, L],
    L one of `buckets`.
  """
  longest = tf.reduce_max(tf.concat([ids.row_lengths(), [0]], axis=0))
  shape = tf.stack([ids.nrows(), tf.cast(round_up(longest, buckets), tf.int64)])
  out = {"token_ids": tf.cast(ids.to_tensor(default_value=pad_id, shape=shape), tf.int32),
         "padding_mask": tf.ones_like(ids, tf.int32).to_tensor(shape=shape)}
  if segment_ids is not None:
    out["segment_ids"] = tf.cast(segment_ids.to_tensor(0, shape=shape), tf.int32)
  return out


def truncate(ids: tf.RaggedTensor, length) -> tf.RaggedTensor:
  """The first `length` ids of each row of ragged [B, (n)]."""
  return ids[:, :length]


def _keep_first_n(rows: tf.RaggedTensor, keep: tf.Tensor) -> tf.RaggedTensor:
  """Keeps the first keep[i] items of row i (all of it if shorter)."""
  mask = tf.ragged.range(rows.row_lengths()) < tf.expand_dims(keep, 1)
  return tf.ragged.boolean_mask(rows, mask)


def truncate_longest_first(first: tf.RaggedTensor, second: tf.RaggedTensor, budget):
  """The upstream "longest_first" rule for a pair, row by row.

  The shorter row keeps what it has if the longer one can make room; otherwise
  both get budget // 2 and the longer one the odd token (the second row on a tie).

  Args:
    first, second: ragged [B, (n)].
    budget: tokens both may keep together (specials excluded), int scalar.

  Returns:
    (first, second) truncated.
  """
  budget = tf.cast(budget, tf.int64)
  n_first, n_second = first.row_lengths(), second.row_lengths()
  swap = n_first > n_second
  short = tf.minimum(n_first, n_second)
  long_keep = tf.where(short > budget, short, tf.maximum(short, budget - short))
  short_keep = short
  over = short_keep + long_keep > budget
  short_keep = tf.where(over, budget // 2, short_keep)
  long_keep = tf.where(over, budget // 2 + budget % 2, long_keep)
  keep_first = tf.where(swap, long_keep, short_keep)
  keep_second = tf.where(swap, short_keep, long_keep)
  return _keep_first_n(first, keep_first), _keep_first_n(second, keep_second)


def special_count(num_segments: int, middle: Sequence[int] = ()) -> int:
  """Special tokens `pack` adds to `num_segments` segments."""
  return 2 + (num_segments - 1) * (1 + len(middle))


def pack(segments: Sequence[tf.RaggedTensor], start_id: int, end_id: int, *,
         middle: Sequence[int] = (), second_segment_id: int = 1):
  """One or two segments with their special tokens, as tensorflow-text's combine_segments.

  `start a end` or `start a end [middle] b end`: BERT's `[CLS] a [SEP] b [SEP]`
  (segment ids 0 then 1), RoBERTa's `<s> a </s></s> b </s>` (middle `</s>`,
  every segment id 0).

  Args:
    segments: 1 or 2 int RaggedTensors [B, (n)], already truncated.

  Returns:
    (ids int32 RaggedTensor [B, (n)], segment_ids int32 RaggedTensor [B, (n)]).
  """
  segments = [tf.cast(s, tf.int64) for s in segments]
  if len(segments) == 2 and middle:
    batch = segments[1].nrows()
    extra = tf.RaggedTensor.from_tensor(
        tf.tile(tf.constant([list(middle)], tf.int64), tf.stack([batch, 1])))
    segments[1] = tf.concat([extra, segments[1]], axis=1)
  ids, segment_ids = tf_text.combine_segments(segments, start_id, end_id)
  segment_ids = segment_ids * second_segment_id
  return tf.cast(ids, tf.int32), tf.cast(segment_ids, tf.int32)


class _SegmentPreprocessor(tf.Module):
  """Tokenize, truncate (keeping the closing special token), pack, pad to a bucket."""

  _outputs = ("token_ids", "padding_mask")   # what __call__ returns

  def __init__(self, tokenizer, sequence_length: int, bucket_lengths: Sequence[int] | None,
               default_buckets: Sequence[int], *, start_id: int, end_id: int,
               middle: Sequence[int], second_segment_id: int, name: str | None):
    super().__init__(name=name)
    self.tokenizer = tokenizer
    self.sequence_length = int(sequence_length)
    self.bucket_lengths = bucket_lengths_for(
        self.sequence_length, default_buckets if bucket_lengths is None else bucket_lengths)
    # How segments are packed: start a end [middle] b end (see `pack`).
    self.start_id, self.end_id, self.middle_ids = start_id, end_id, tuple(middle)
    self.second_segment_id = second_segment_id

  def special_count(self, num_segments: int) -> int:
    """Special tokens added to `num_segments` (1 or 2) segments."""
    return special_count(num_segments, self.middle_ids)

  def _pack(self, text, text_pair, *, segment_ids: bool, first=None) -> dict:
    first = self.tokenizer.tokenize(text) if first is None else first
    if text_pair is None:
      segments = [truncate(first, self.sequence_length - special_count(1))]
    else:
      if self.sequence_length < special_count(2, self.middle_ids):
        raise ValueError(f"sequence_length {self.sequence_length} leaves no room for a pair's "
                         f"{special_count(2, self.middle_ids)} special tokens")
      text_pair = tf.convert_to_tensor(text_pair, tf.string)
      tf.debugging.assert_equal(tf.shape(text_pair), tf.shape(tf.convert_to_tensor(text)),
                                message="text_pair must have the same shape as text")
      segments = truncate_longest_first(
          first, self.tokenizer.tokenize(text_pair),
          self.sequence_length - special_count(2, self.middle_ids))
    ids, segments = pack(segments, self.start_id, self.end_id, middle=self.middle_ids,
                         second_segment_id=self.second_segment_id)
    return pad_to_bucket(ids, self.tokenizer.pad_token_id, self.bucket_lengths,
                         segments if segment_ids else None)


  def with_offsets(self, text: tf.Tensor) -> tuple:
    """What calling the preprocessor on one text [B] gives, with where each token is.

    Returns:
      (inputs, offsets): inputs as __call__'s; offsets {"start", "end"} int32
      [B, L], each token's character offsets into clean_utf8(text) (see the
      tokenizer's tokenize_with_offsets), -1 at the special tokens packing adds
      and at padding.  Truncation cuts the offsets with the tokens.
    """
    ids, starts, ends = self.tokenizer.tokenize_with_offsets(text)
    inputs = self._pack(text, None, segment_ids="segment_ids" in self._outputs, first=ids)
    shape = tf.shape(inputs["token_ids"], out_type=tf.int64)
    offsets = {}
    for name, values in (("start", starts), ("end", ends)):
      packed, _ = tf_text.combine_segments(
          [tf.cast(truncate(values, self.sequence_length - special_count(1)), tf.int64)], -1, -1)
      offsets[name] = tf.cast(packed.to_tensor(default_value=-1, shape=shape), tf.int32)
    return inputs, offsets


class XLMRobertaPreprocessor(_SegmentPreprocessor):
  """Text -> `<s> a </s>` (or `<s> a </s></s> b </s>`), truncated and padded to a bucket.

  Truncation keeps `</s>`: a row keeps its first sequence_length - 2 tokens, a
  pair is cut by the "longest first" rule.  The batch is padded to its longest
  row rounded up to one of `bucket_lengths`, not to sequence_length.
  """

  def __init__(self, tokenizer, sequence_length: int = 512,
               bucket_lengths: Sequence[int] | None = None, *, name: str | None = None):
    super().__init__(tokenizer, sequence_length, bucket_lengths, DEFAULT_BUCKETS,
                     start_id=tokenizer.bos_token_id, end_id=tokenizer.eos_token_id,
                     middle=(tokenizer.eos_token_id,), second_segment_id=0, name=name)

  def __call__(self, text: tf.Tensor, text_pair: tf.Tensor | None = None) -> dict:
    """string [B] (and [B]) -> {"token_ids", "padding_mask"}: int32 [B, L], L a bucket."""
    return self._pack(text, text_pair, segment_ids=False)


class BertPreprocessor(_SegmentPreprocessor):
  """`[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` with segment ids, bucket-padded.

  Truncation as upstream: a single text keeps its first sequence_length - 2
  tokens; a pair is cut with the "longest first" rule.
  """

  def __init__(self, tokenizer, sequence_length: int = 512,
               bucket_lengths: Sequence[int] | None = None, *, name: str | None = None):
    super().__init__(tokenizer, sequence_length, bucket_lengths, DEFAULT_BUCKETS,
                     start_id=tokenizer.cls_token_id, end_id=tokenizer.sep_token_id,
                     middle=(), second_segment_id=1, name=name)

  def __call__(self, text: tf.Tensor, text_pair: tf.Tensor | None = None) -> dict:
    """string [B] (and [B]) -> {"token_ids", "segment_ids", "padding_mask"}: int32 [B, L]."""
    return self._pack(text, text_pair, segment_ids=True)

  _outputs = ("token_ids", "segment_ids", "padding_mask")


class BartPreprocessor(_SegmentPreprocessor):
  """Encoder inputs `<s> ids </s>`, truncated keeping `</s>`, padded to a bucket."""

  def __init__(self, tokenizer, sequence_length: int = 1024,
               bucket_lengths: Sequence[int] | None = None, *, name: str | None = None):
    super().__init__(tokenizer, sequence_length, bucket_lengths, DEFAULT_BUCKETS + (1024,),
                     start_id=tokenizer.bos_token_id, end_id=tokenizer.eos_token_id,
                     middle=(tokenizer.eos_token_id,), second_segment_id=0, name=name)

  def __call__(self, text: tf.Tensor) -> dict:
    """string [B] -> {"token_ids", "padding_mask"}: int32 [B, L], L a bucket length."""
    return self._pack(text, None, segment_ids=False)

  def text_pairs(self, encoder_text: tf.Tensor, decoder_text: tf.Tensor,
                 decoder_start_token_id: int):
    """Seq2seq training inputs of source and target strings [B].

    The labels are `<s> target </s>` (truncated to sequence_length) and the
    decoder input the same shifted right from decoder_start_token_id, both
    padded to a bucket; the weights are the labels' padding mask.

    Returns:
      ({"encoder_token_ids", "encoder_padding_mask": int32 [B, S],
        "decoder_token_ids", "decoder_padding_mask": int32 [B, T]},
       labels int32 [B, T], weights float32 [B, T]).
    """
    encoded = self(encoder_text)
    tokenizer = self.tokenizer
    target = truncate(tokenizer.tokenize(decoder_text), self.sequence_length - 2)
    labels, _ = pack([target], tokenizer.bos_token_id, tokenizer.eos_token_id)
    shifted = tf.concat([tf.fill([labels.nrows(), 1], decoder_start_token_id), labels],
                        axis=1)[:, :-1]
    padded_labels = pad_to_bucket(labels, tokenizer.pad_token_id, self.bucket_lengths)
    decoder = pad_to_bucket(shifted, tokenizer.pad_token_id, self.bucket_lengths)
    inputs = {"encoder_token_ids": encoded["token_ids"],
              "encoder_padding_mask": encoded["padding_mask"],
              "decoder_token_ids": decoder["token_ids"],
              "decoder_padding_mask": decoder["padding_mask"]}
    return inputs, padded_labels["token_ids"], tf.cast(padded_labels["padding_mask"], tf.float32)


class MaskedLMMasker:
  """Dynamic masking of packed ids for masked-LM training, with keras-hub's
  `MaskedLMMaskGenerator` semantics, by tensorflow-text's `mask_language_model`.

  Of each row's selectable ids (not in `unselectable_ids`: the specials),
  ceil(mask_selection_rate · n), at most mask_selection_length, are chosen;
  of those, mask_token_rate become the mask token, random_token_rate a random
  id, the rest stay.  Random draws come from TensorFlow's stateful RNG (the
  global seed), as upstream's do.
  """

  def __init__(self, vocabulary_size: int, mask_token_id: int, unselectable_ids, *,
               mask_selection_rate: float = 0.15, mask_selection_length: int = 96,
               mask_token_rate: float = 0.8, random_token_rate: float = 0.1):
    if not 0.0 < mask_selection_rate <= 1.0:
      raise ValueError(f"mask_selection_rate must be in (0, 1], got {mask_selection_rate}")
    if mask_selection_length < 1:
      raise ValueError(f"mask_selection_length must be >= 1, got {mask_selection_length}")
    if mask_token_rate < 0 or random_token_rate < 0 or mask_token_rate + random_token_rate > 1:
      raise ValueError("mask_token_rate and random_token_rate must be >= 0 with a sum <= 1, got "
                       f"{mask_token_rate} and {random_token_rate}")
    self.vocabulary_size, self.mask_token_id = int(vocabulary_size), int(mask_token_id)
    self.unselectable_ids = tuple(sorted({int(i) for i in unselectable_ids}))
    self.mask_selection_rate = float(mask_selection_rate)
    self.mask_selection_length = int(mask_selection_length)
    self.mask_token_rate, self.random_token_rate = float(mask_token_rate), float(random_token_rate)

  def mask_slots(self, length) -> tf.Tensor:
    """M for rows padded to `length`: the most ids a row of that length can have chosen."""
    most = tf.math.ceil(tf.cast(length, tf.float32) * self.mask_selection_rate)
    return tf.minimum(tf.cast(most, tf.int32), self.mask_selection_length)

  def __call__(self, inputs: dict) -> tuple:
    """Masks a packed batch.

    Args:
      inputs: {"token_ids", "padding_mask": int32 [B, L], ...}.

    Returns:
      (inputs with masked "token_ids" and "mask_positions" int32 [B, M],
       labels int32 [B, M] (the original ids), weights float32 [B, M] (1 at a
      chosen id, 0 in padding slots)); M = mask_slots(L).  InvalidArgumentError
      naming the problem when a row has nothing to mask.
    """
    token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
    lengths = tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=1)
    ragged = tf.RaggedTensor.from_tensor(token_ids, lengths=lengths)
    selector = tf_text.RandomItemSelector(
        max_selections_per_batch=self.mask_selection_length,
        selection_rate=self.mask_selection_rate, unselectable_ids=list(self.unselectable_ids))
    chooser = tf_text.MaskValuesChooser(self.vocabulary_size, self.mask_token_id,
                                        mask_token_rate=self.mask_token_rate,
                                        random_token_rate=self.random_token_rate)
    masked, positions, labels = tf_text.mask_language_model(ragged, selector, chooser)
    slots = self.mask_slots(tf.shape(token_ids)[1])
    check = tf.debugging.assert_positive(
        positions.row_lengths(),
        message="a text has nothing to mask (only special tokens, or empty)")
    with tf.control_dependencies([check]):
      shape = tf.stack([tf.shape(token_ids, out_type=tf.int64)[0], tf.cast(slots, tf.int64)])
      masked_ids = masked.to_tensor(0, shape=tf.shape(token_ids, out_type=tf.int64))
      out = dict(inputs)
      out["token_ids"] = tf.where(tf.cast(padding_mask, tf.bool), tf.cast(masked_ids, tf.int32),
                                  token_ids)
      out["mask_positions"] = tf.cast(positions.to_tensor(0, shape=shape), tf.int32)
      weights = tf.ones_like(positions, tf.float32).to_tensor(0.0, shape=shape)
      return out, tf.cast(labels.to_tensor(0, shape=shape), tf.int32), weights
