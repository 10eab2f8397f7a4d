"""TF Hub-style text encoders, for people who reuse an encoder rather than serve it.

Writes two SavedModels in one version directory, following TF Hub's BERT
conventions and its Reusable SavedModel API:

  VERSION/encoder       obj(inputs, training=False) on {"input_word_ids",
                        "input_mask", "input_type_ids"} (int32 [B, L]) ->
                        {"sequence_output" [B, L, D], "pooled_output" [B, D],
                        "default" (= pooled_output)}, float32; obj.variables,
                        obj.trainable_variables, obj.regularization_losses.
  VERSION/preprocessor  obj.tokenize(text [B]) -> int32 RaggedTensor [B, (tokens)];
                        obj.bert_pack_inputs([segment] or [first, second],
                        seq_length=128) -> the encoder's inputs, int32 [B, seq_length];
                        obj(text) = bert_pack_inputs([tokenize(text)], 128 or the
                        encoder's maximum if smaller); seq_length is checked
                        against the special tokens and the encoder's maximum;
                        obj.vocab_file, the vocabulary as an asset.

Loading the encoder with `tf.saved_model.load` and training its
`trainable_variables` with a `tf.GradientTape` fine-tunes it.
"""

from __future__ import annotations

import pathlib
import tempfile

import tensorflow as tf

from tfhub_models.export.versioned import write_atomically
from tfhub_models.preprocessing import pack, special_count, truncate_longest_first
from tfhub_models.tasks import Task

DEFAULT_SEQ_LENGTH = 128
_INPUT_SPECS = {name: tf.TensorSpec([None, None], tf.int32, name=name)
                for name in ("input_word_ids", "input_mask", "input_type_ids")}


class HubEncoder(tf.Module):
  """The Reusable SavedModel API around a backbone."""

  # Plain saved attributes in place of tf.Module's computed properties, as the
  # Reusable SavedModel API asks for lists a loaded object carries.
  variables = None
  trainable_variables = None

  def __init__(self, backbone):
    super().__init__(name="encoder")
    self.backbone = backbone
    self.variables = list(backbone.variables)
    self.trainable_variables = list(backbone.trainable_variables)
    self.regularization_losses = []

  @tf.function
  def __call__(self, inputs, training=False):
    """Encodes packed inputs; see the module docstring."""
    outputs = self.backbone({"token_ids": inputs["input_word_ids"],
                             "segment_ids": inputs["input_type_ids"],
                             "padding_mask": inputs["input_mask"]}, training=training)
    sequence = tf.cast(outputs["sequence_output"], tf.float32)
    pooled = tf.cast(outputs["pooled_output"], tf.float32)
    return {"sequence_output": sequence, "pooled_output": pooled, "default": pooled}


class HubPreprocessor(tf.Module):
  """tokenize and bert_pack_inputs, as TF Hub's BERT preprocessing models."""

  def __init__(self, preprocessor, vocab_file: str, max_seq_length: int):
    """Packs as `preprocessor` does (its special tokens and segment ids)."""
    super().__init__(name="preprocessor")
    self.tokenizer = preprocessor.tokenizer
    self.max_seq_length = max_seq_length
    self.vocab_file = tf.saved_model.Asset(vocab_file)
    self._start, self._end = preprocessor.start_id, preprocessor.end_id
    self._middle, self._second_segment_id = preprocessor.middle_ids, preprocessor.second_segment_id
    self._pad = self.tokenizer.pad_token_id

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def tokenize(self, text):
    """string [B] -> int32 RaggedTensor [B, (tokens)], no special tokens added."""
    return self.tokenizer.tokenize(text)

  @tf.function
  def bert_pack_inputs(self, segments, seq_length=DEFAULT_SEQ_LENGTH):
    """Packs one or two tokenized segments into the encoder's inputs.

    Args:
      segments: list of 1 or 2 int32 RaggedTensors [B, (tokens)] (or [B, (words),
        (pieces)]).
      seq_length: int32 scalar, the padded length.

    Returns:
      {"input_word_ids", "input_mask", "input_type_ids"}: int32 [B, seq_length].
    """
    segments = [s.merge_dims(1, 2) if s.ragged_rank == 2 else s for s in segments]
    batch = segments[0].nrows()
    shortest = special_count(len(segments), self._middle)
    tf.debugging.assert_greater_equal(
        tf.cast(seq_length, tf.int32), shortest,
        message=f"seq_length must leave room for the {shortest} special tokens")
    tf.debugging.assert_less_equal(
        tf.cast(seq_length, tf.int32), self.max_seq_length,
        message=f"seq_length may be at most the encoder's {self.max_seq_length} positions")
    seq_length = tf.cast(seq_length, tf.int64)
    if len(segments) == 1:
      segments = [segments[0][:, : seq_length - shortest]]
    else:
      segments = list(truncate_longest_first(segments[0], segments[1], seq_length - shortest))
    ids, types = pack(segments, self._start, self._end, middle=self._middle,
                      second_segment_id=self._second_segment_id)
    shape = tf.stack([tf.cast(batch, tf.int64), seq_length])
    return {"input_word_ids": ids.to_tensor(self._pad, shape=shape),
            "input_mask": tf.ones_like(ids).to_tensor(0, shape=shape),
            "input_type_ids": types.to_tensor(0, shape=shape)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def __call__(self, text):
    return self.bert_pack_inputs([self.tokenize(text)],
                                 min(DEFAULT_SEQ_LENGTH, self.max_seq_length))


def _parts(model):
  """(backbone, preprocessor) of a task module or encoder."""
  if not isinstance(model, Task):
    raise TypeError(f"--format hub needs a model with a backbone and a preprocessor, "
                    f"not a {type(model).__name__}")
  if model.preprocessor is None:
    raise ValueError(f"--format hub needs a preprocessor; this {type(model).__name__} was built "
                     "with preprocessor=None")
  return model.backbone, model.preprocessor


def export_hub(model, base, name: str, version: int | None = None) -> pathlib.Path:
  """Writes BASE/NAME/VERSION/{encoder,preprocessor} atomically; returns the version dir."""
  backbone, preprocessor = _parts(model)
  encoder = HubEncoder(backbone)
  ragged = tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1)
  length = tf.TensorSpec([], tf.int32)

  def write(staging: pathlib.Path):
    for training in (False, True):
      encoder.__call__.get_concrete_function(_INPUT_SPECS, training=training)
    tf.saved_model.save(encoder, str(staging / "encoder"))
    with tempfile.TemporaryDirectory() as scratch:
      hub_preprocessor = HubPreprocessor(preprocessor,
                                         preprocessor.tokenizer.save_assets(scratch),
                                         backbone.config.max_sequence_length)
      hub_preprocessor.bert_pack_inputs.get_concrete_function([ragged], length)
      hub_preprocessor.bert_pack_inputs.get_concrete_function([ragged, ragged], length)
      tf.saved_model.save(hub_preprocessor, str(staging / "preprocessor"))

  return write_atomically(base, name, version, write)


__all__ = ["HubEncoder", "HubPreprocessor", "export_hub"]
