"""The systems a case compares, each built in its own worker process
(`BUILDERS`, by name)."""

from __future__ import annotations

import os
import pathlib
import time

from benchmarks.models import Exporter, _our_bart, bart_config, sizes



def masked_ids(vocabulary: int, batch: int, length: int, seed: int = 0):
  """Random rows <s> ids </s> with one <mask> (the last id) at a random position."""
  import numpy as np

  rng = np.random.default_rng(seed)
  ids = rng.integers(4, vocabulary - 1, size=(batch, length)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 0, 2
  positions = rng.integers(1, length - 1, size=(batch, 1)).astype(np.int32)
  np.put_along_axis(ids, positions, vocabulary - 1, axis=1)
  return ids, np.ones_like(ids), positions


class OurSignature:
  """A signature of our export, loaded as TF Serving loads it (serving.servable's
  session loader), run on fixed inputs."""

  def __init__(self, path: str, signature: str, inputs: dict, outputs: tuple = ()):
    from serving.servable import Servable

    self.servable = Servable("benchmark", 1, pathlib.Path(path))
    self.signature = self.servable.signature(signature)
    self.inputs = {k: _array(v) for k, v in inputs.items()}
    self.outputs = self.signature.output_names(outputs)
    self.info = {}

  def run(self):
    return self.servable.run_session(self.signature, self.inputs, self.outputs)

  def answers(self, texts):
    """Top-1 fillers of serving_default for `texts`."""
    import numpy as np

    result = self.servable.run_session(self.servable.signature("serving_default"), {
        "text": np.array([t.encode() for t in texts], dtype=object)}, ("top_k_tokens",))
    return [row[0][0].decode() for row in result["top_k_tokens"]]

  def generated(self, texts):
    import numpy as np

    result = self.servable.run_session(self.servable.signature("serving_default"), {
        "text": np.array([t.encode() for t in texts], dtype=object)}, ("generated_text",))
    return [t.decode() for t in result["generated_text"]]


def _array(value):
  import numpy as np

  if isinstance(value, list) and value and isinstance(value[0], str):
    return np.array([v.encode() for v in value], dtype=object)
  return np.asarray(value)


class KerasHubEncoder:
  """keras-hub's XLMRobertaMaskedLM (TensorFlow backend, jit_compile) at the
  same sizes: the encoder and the LM head at the mask positions."""

  def __init__(self, quick: bool, batch: int, length: int):
    import keras_hub

    s = sizes(quick)
    self.model = keras_hub.models.XLMRobertaMaskedLM(keras_hub.models.XLMRobertaBackbone(
        vocabulary_size=s["vocabulary"], num_layers=s["layers"], num_heads=s["heads"],
        hidden_dim=s["hidden"], intermediate_dim=s["intermediate"], max_sequence_length=512),
        preprocessor=None)
    self.model.compile(jit_compile=True)
    ids, mask, positions = masked_ids(s["vocabulary"], batch, length)
    self.inputs = {"token_ids": ids, "padding_mask": mask, "mask_positions": positions}
    self.info = {"keras_hub_dtype": self.model.dtype_policy.name}

  def run(self):
    return self.model.predict_on_batch(self.inputs)


class TorchEncoder:
  """transformers' XLMRobertaForMaskedLM: the encoder, then the LM head at the mask
  positions only (as ours and keras-hub's)."""

  def __init__(self, checkpoint: str, batch: int, length: int):
    import torch
    import transformers

    self.torch = torch
    self.model = transformers.XLMRobertaForMaskedLM.from_pretrained(checkpoint).eval()
    ids, mask, positions = masked_ids(self.model.config.vocab_size, batch, length)
    self.inputs = (torch.tensor(ids).long(), torch.tensor(mask).long(),
                   torch.tensor(positions).long())
    self.info = {}

  def run(self):
    with self.torch.inference_mode():
      return masked_lm_at(self.model, *self.inputs)


def masked_lm_at(model, ids, mask, positions):
  import torch

  hidden = model.roberta(input_ids=ids, attention_mask=mask).last_hidden_state
  hidden = torch.gather(hidden, 1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
  return model.lm_head(hidden)


class OnnxEncoder:
  """ONNX Runtime on the PyTorch model exported with torch.onnx.export (TorchScript
  exporter), all graph optimizations, intra-op threads = cores."""

  def __init__(self, checkpoint: str, directory: str, batch: int, length: int):
    import onnxruntime
    import torch
    import transformers

    path = os.path.join(directory, "encoder.onnx")
    model = transformers.XLMRobertaForMaskedLM.from_pretrained(checkpoint).eval()
    ids, mask, positions = masked_ids(model.config.vocab_size, batch, length)

    class AtMasks(torch.nn.Module):
      def __init__(self):
        super().__init__()
        self.model = model

      def forward(self, ids, mask, positions):
        return masked_lm_at(self.model, ids, mask, positions)

    start = time.perf_counter()
    with torch.no_grad():
      torch.onnx.export(
          AtMasks().eval(), (torch.tensor(ids).long(), torch.tensor(mask).long(),
                             torch.tensor(positions).long()), path,
          input_names=["ids", "mask", "positions"], output_names=["logits"], dynamo=False,
          dynamic_axes={"ids": {0: "b", 1: "t"}, "mask": {0: "b", 1: "t"},
                        "positions": {0: "b", 1: "m"}})
    exported = time.perf_counter() - start
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = os.cpu_count() or 1
    self.session = onnxruntime.InferenceSession(path, options,
                                                providers=["CPUExecutionProvider"])
    self.inputs = {"ids": ids.astype("int64"), "mask": mask.astype("int64"),
                   "positions": positions.astype("int64")}
    self.info = {"onnx_export_s": exported}

  def run(self):
    return self.session.run(None, self.inputs)


class PipelineFillMask:
  """transformers' fill-mask pipeline (PyTorch), top-5, the 8 texts in one batch."""

  def __init__(self, checkpoint: str, texts: list):
    import transformers

    self.pipeline = transformers.pipeline("fill-mask", model=checkpoint, tokenizer=checkpoint,
                                          top_k=5, device="cpu")
    self.texts = texts
    self.info = {"tokens": [len(self.pipeline.tokenizer(t)["input_ids"]) for t in texts]}

  def run(self):
    return self.pipeline(self.texts, batch_size=len(self.texts))

  def answers(self, texts):
    return [rows[0]["token_str"] for rows in self.pipeline(texts, batch_size=8)]


class KerasHubFillMask:
  """keras-hub's tokenizer (the same SentencePiece model) + XLMRobertaMaskedLM:
  tokenize, pack, find the masks, predict, top-5, detokenize the fillers."""

  def __init__(self, checkpoint: str, quick: bool, texts: list):
    import keras
    import keras_hub
    import tensorflow as tf

    s = sizes(quick)
    with open(os.path.join(checkpoint, "sentencepiece.bpe.model"), "rb") as f:
      self.tokenizer = keras_hub.tokenizers.XLMRobertaTokenizer(proto=f.read())
    self.packer = keras_hub.layers.StartEndPacker(
        start_value=self.tokenizer.start_token_id, end_value=self.tokenizer.end_token_id,
        pad_value=self.tokenizer.pad_token_id, sequence_length=None, return_padding_mask=True)
    self.model = keras_hub.models.XLMRobertaMaskedLM(keras_hub.models.XLMRobertaBackbone(
        vocabulary_size=s["vocabulary"], num_layers=s["layers"], num_heads=s["heads"],
        hidden_dim=s["hidden"], intermediate_dim=s["intermediate"], max_sequence_length=512),
        preprocessor=None)
    self.model.compile(jit_compile=True)
    self.mask_id = self.tokenizer.mask_token_id
    self.tf, self.keras, self.texts = tf, keras, texts
    self.info = {}

  def run(self):
    tf = self.tf
    # keras-hub's tokenizer does not split "<mask>" out of text: the pieces on each
    # side are tokenized and the mask id put between them.
    parts = [text.split("<mask>") for text in self.texts]
    left, right = (self._ragged(self.tokenizer(tf.constant([p[i] for p in parts])))
                   for i in (0, 1))
    masks = tf.fill([len(parts), 1], self.mask_id)
    ids = tf.concat([left, tf.RaggedTensor.from_tensor(masks), right], axis=1)
    # Padded to the longest row (not the preprocessor's 512): the least work.
    ids, padding = self.packer(ids, sequence_length=int(ids.bounding_shape()[1]) + 2)
    positions = tf.cast(tf.where(tf.equal(ids, self.mask_id))[:, 1:], tf.int32)
    probabilities = self.model.predict_on_batch(
        {"token_ids": ids, "padding_mask": padding, "mask_positions": positions})
    scores, top = self.keras.ops.top_k(self.keras.ops.softmax(probabilities), k=5)
    return self.tokenizer.id_to_token(int(top[0, 0, 0])), scores

  def _ragged(self, ids):
    """keras-hub's tokenizer answers eager calls with Python lists of ids."""
    return self.tf.ragged.constant(ids, dtype=self.tf.int32) if isinstance(ids, list) else ids


class OurGeneration:
  """Our compiled generation loop (the one BART exports run), stop tokens off."""

  def __init__(self, quick: bool, batch: int, new_tokens: int, input_length: int,
               sampler: dict, dtype: str = "float32"):
    import numpy as np
    import tensorflow as tf

    from tfhub_models import generation

    self.model = _our_bart(quick, dtype, generation.Sampler(**sampler))
    self.function = self.model._function(new_tokens + 1, ())
    rng = np.random.default_rng(0)
    self.ids = rng.integers(4, 250, size=(batch, input_length)).astype(np.int32)
    self.mask = np.ones_like(self.ids)
    self.seed = tf.constant(1, tf.int64)   # every row from one seed
    self.info = {"weights_read_per_step_bytes": decoder_bytes_per_step(self.model)}

  def run(self):
    return self.function(self.ids, self.mask, self.seed)

  def generated_ids(self, ids):
    import numpy as np

    ids = np.asarray(ids, np.int32)
    out, _ = self.function(ids, np.ones_like(ids), self.seed)
    return out.numpy().tolist()


def decoder_bytes_per_step(model) -> int:
  """Bytes of weights one decoding step reads: each decoder layer's (but the
  cross-attention key and value projections, applied once to the encoder's output),
  the tied LM head's (the whole token embedding) and its bias; one row of the
  position embedding."""
  backbone = model.backbone

  def size(variables):
    return sum(v.shape.num_elements() * v.dtype.size for v in variables)

  total = 0
  for layer in backbone.decoder_layers:
    skipped = {id(v) for part in (layer.cross_attention.key, layer.cross_attention.value)
               for v in part.trainable_variables}
    total += size(v for v in layer.trainable_variables if id(v) not in skipped)
  total += size(backbone.decoder_embeddings_layer_norm.trainable_variables)
  total += size(backbone.token_embedding.trainable_variables)
  position = backbone.decoder_position_embedding.embeddings
  total += position.shape[-1] * position.dtype.size
  total += size([backbone.final_logits_bias])
  return int(total)


class KerasHubGeneration:
  def __init__(self, quick: bool, batch: int, new_tokens: int, input_length: int,
               sampler: dict):
    import keras_hub
    import numpy as np

    c = bart_config(quick)
    self.model = keras_hub.models.BartSeq2SeqLM(
        backbone=keras_hub.models.BartBackbone(
            vocabulary_size=c["vocab_size"], num_layers=c["encoder_layers"],
            num_heads=c["encoder_attention_heads"], hidden_dim=c["d_model"],
            intermediate_dim=c["encoder_ffn_dim"], max_sequence_length=1024),
        preprocessor=None)
    if sampler["name"] == "beam":
      self.model.compile(sampler=keras_hub.samplers.BeamSampler(num_beams=sampler["num_beams"]))
    else:
      self.model.compile(sampler="greedy")
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 250, size=(batch, input_length)).astype(np.int32)
    decoder = np.zeros((batch, new_tokens + 1), np.int32)
    decoder[:, 0] = 2
    self.inputs = {"encoder_token_ids": ids, "encoder_padding_mask": np.ones_like(ids),
                   "decoder_token_ids": decoder,
                   "decoder_padding_mask": (np.arange(new_tokens + 1) < 1)[None]
                   .repeat(batch, 0).astype(np.int32)}
    self.info = {}

  def run(self):
    return self.model.generate(self.inputs, stop_token_ids=None)


class TorchGeneration:
  def __init__(self, quick: bool, batch: int, new_tokens: int, input_length: int,
               sampler: dict):
    import numpy as np
    import torch
    import transformers

    torch.manual_seed(0)
    self.torch = torch
    self.model = transformers.BartForConditionalGeneration(
        transformers.BartConfig(**bart_config(quick))).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 250, size=(batch, input_length))
    self.ids, self.mask = torch.tensor(ids).long(), torch.ones(batch, input_length).long()
    beams = sampler["num_beams"] if sampler["name"] == "beam" else 1
    self.settings = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams,
                         do_sample=False, early_stopping=False, no_repeat_ngram_size=0,
                         forced_bos_token_id=None, forced_eos_token_id=None)
    self.info = {}

  def run(self):
    with self.torch.inference_mode():
      return self.model.generate(input_ids=self.ids, attention_mask=self.mask, **self.settings)


class ColdStart:
  """Loads an export as the server does and replays its warmup requests."""

  def __init__(self, path: str):
    from serving.servable import Servable

    start = time.perf_counter()
    servable = Servable("cold", 1, pathlib.Path(path))
    loaded = time.perf_counter()
    requests = servable.warmup()
    done = time.perf_counter()
    self.info = {"load_s": loaded - start, "warmup_s": done - loaded, "total_s": done - start,
                 "warmup_requests": requests}


class Several:
  """Several systems of one builder in one process (one import, one start-up); `run`
  runs the one chosen last with `select`."""

  def __init__(self, system: str, specs: dict):
    self.systems = {name: BUILDERS[system](**spec) for name, spec in specs.items()}
    self.info = {name: system.info for name, system in self.systems.items()}
    self.current = next(iter(self.systems.values()))

  def select(self, name: str):
    self.current = self.systems[name]

  def run(self):
    return self.current.run()

  def __getattr__(self, name):  # the chosen system's other methods
    return getattr(self.__dict__["current"], name)


BUILDERS = {
    "several": Several, "exporter": Exporter, "ours_signature": OurSignature,
    "keras_hub_encoder": KerasHubEncoder,
    "pytorch_encoder": TorchEncoder, "onnxruntime_encoder": OnnxEncoder,
    "pipeline_fill_mask": PipelineFillMask, "keras_hub_fill_mask": KerasHubFillMask,
    "ours_generation": OurGeneration, "keras_hub_generation": KerasHubGeneration,
    "pytorch_generation": TorchGeneration, "cold_start": ColdStart,
}
