"""BART checkpoints: Hugging Face (`BartForConditionalGeneration`, with its
`generation_config.json`) and keras-hub (`BartBackbone` presets) names, config
keys and tokenizer files.  Duck-typed on `tfhub_models.models.bart`'s modules.
"""

from __future__ import annotations

import numpy as np

from tfhub_models.checkpoints import assign as a
from tfhub_models.checkpoints.sources import Checkpoint, CheckpointError
from tfhub_models.tokenizers import ByteLevelBPETokenizer

TASKS = ("generate", "backbone")
POSITION_OFFSET = 2   # upstream's learned positions start at row 2


def config_fields(checkpoint: Checkpoint) -> dict:
  """BartConfig keyword arguments from config.json (and generation_config.json);
  `generation` holds the generation settings by their Hugging Face names."""
  c = checkpoint.config
  try:
    if checkpoint.format == "keras_hub":
      c = c["config"]
      # keras-hub has no generation settings; its generate starts the decoder
      # with `</s><s>`, so `<s>` is forced first.
      return dict(a.keras_hub_sizes(c),
                  max_sequence_length=int(c.get("max_sequence_length", 1024)),
                  generation={"forced_bos_token_id": 0})
    if (c["encoder_attention_heads"] != c["decoder_attention_heads"]
        or c["encoder_ffn_dim"] != c["decoder_ffn_dim"]):
      raise ValueError("encoder and decoder with different head counts or feed-forward sizes "
                       "are not supported")
    generation = dict(c)
    generation.update(checkpoint.optional_json("generation_config.json"))
    return dict(vocabulary_size=int(c["vocab_size"]), num_layers=int(c["encoder_layers"]),
                num_decoder_layers=int(c["decoder_layers"]),
                num_heads=int(c["encoder_attention_heads"]), hidden_dim=int(c["d_model"]),
                intermediate_dim=int(c["encoder_ffn_dim"]), dropout=float(c.get("dropout", 0.1)),
                max_sequence_length=int(c.get("max_position_embeddings", 1024)),
                scale_embedding=bool(c.get("scale_embedding", False)),
                activation=str(c.get("activation_function", "gelu")),
                generation=generation)   # token ids too: generation_config.json's win
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"{checkpoint.directory}/config.json: {e}") from None


def tokenizer(checkpoint: Checkpoint, config) -> ByteLevelBPETokenizer:
  """The in-graph byte-level BPE; its ids must fit the config's vocabulary."""
  if checkpoint.format == "keras_hub":
    vocabulary, merges, added = ("assets/tokenizer/vocabulary.json", "assets/tokenizer/merges.txt",
                                 None)
  else:
    vocabulary, merges, added = "vocab.json", "merges.txt", "tokenizer.json"
  for name in (vocabulary, merges):
    if not checkpoint.exists(name):
      raise CheckpointError(f"{checkpoint.directory}: no {name} (the in-graph BPE is built "
                            "from it)")
  try:
    built = ByteLevelBPETokenizer.from_files(
        checkpoint.path(vocabulary), checkpoint.path(merges),
        checkpoint.path(added) if added and checkpoint.exists(added) else None)
  except ValueError as e:
    raise CheckpointError(str(e)) from None
  if built.vocabulary_size > config.vocabulary_size:
    raise CheckpointError(f"{checkpoint.directory}: {vocabulary} has ids up to "
                          f"{built.vocabulary_size - 1} but the config's vocab_size is "
                          f"{config.vocabulary_size}")
  return built


def task(checkpoint: Checkpoint, requested: str | None, load_weights: bool) -> str:
  del checkpoint, load_weights
  return requested or "generate"


def assign(module, checkpoint: Checkpoint, task: str) -> None:
  """Every variable of the backbone (the generation task has no other)."""
  del task
  if checkpoint.format == "keras_hub":
    _assign_keras_hub(a.backbone_of(module), checkpoint)
    return
  b = a.backbone_of(module)
  weights = {(k[len("model."):] if k.startswith("model.") else k): v
             for k, v in checkpoint.weights().items()}
  tied = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")
  for copy in tied:
    a.require_tied(weights, copy, "shared.weight", checkpoint.directory, what="embeddings")
    if copy in weights and "shared.weight" not in weights:
      weights["shared.weight"] = weights[copy]
  if "final_logits_bias" not in weights:  # upstream treats it as optional (zeros)
    weights["final_logits_bias"] = np.zeros([1, b.config.vocabulary_size], np.float32)
  out = [("shared.weight", b.token_embedding.embeddings, a.same),
         ("encoder.embed_positions.weight", b.encoder_position_embedding.embeddings, a.same),
         ("decoder.embed_positions.weight", b.decoder_position_embedding.embeddings, a.same),
         *a.hf_norm("encoder.layernorm_embedding", b.encoder_embeddings_layer_norm),
         *a.hf_norm("decoder.layernorm_embedding", b.decoder_embeddings_layer_norm),
         ("final_logits_bias", b.final_logits_bias, lambda x: x.reshape(-1))]
  for i, layer in enumerate(b.encoder_layers):
    p = f"encoder.layers.{i}."
    out += [*a.hf_attention(p + "self_attn", layer.self_attention),
            *a.hf_norm(p + "self_attn_layer_norm", layer.self_attention_layer_norm),
            *a.hf_dense(p + "fc1", layer.feedforward.intermediate),
            *a.hf_dense(p + "fc2", layer.feedforward.output),
            *a.hf_norm(p + "final_layer_norm", layer.feedforward_layer_norm)]
  for i, layer in enumerate(b.decoder_layers):
    p = f"decoder.layers.{i}."
    out += [*a.hf_attention(p + "self_attn", layer.self_attention),
            *a.hf_norm(p + "self_attn_layer_norm", layer.self_attention_layer_norm),
            *a.hf_attention(p + "encoder_attn", layer.cross_attention),
            *a.hf_norm(p + "encoder_attn_layer_norm", layer.cross_attention_layer_norm),
            *a.hf_dense(p + "fc1", layer.feedforward.intermediate),
            *a.hf_dense(p + "fc2", layer.feedforward.output),
            *a.hf_norm(p + "final_layer_norm", layer.feedforward_layer_norm)]
  a.assign_strict(out, weights, ignored=lambda k: k in tied or k.endswith("position_ids"),
                  where=str(checkpoint.directory), dtype=b.dtype)


def _assign_keras_hub(b, checkpoint: Checkpoint) -> None:
  positions = a.shift_positions(POSITION_OFFSET)
  out = [("token_embedding:0", b.token_embedding.embeddings, a.same),
         ("encoder_position_embedding:0", b.encoder_position_embedding.embeddings, positions),
         ("decoder_position_embedding:0", b.decoder_position_embedding.embeddings, positions),
         *a.kh_norm("encoder_embeddings_layer_norm", b.encoder_embeddings_layer_norm),
         *a.kh_norm("decoder_embeddings_layer_norm", b.decoder_embeddings_layer_norm),
         *a.kh_encoder_layers(b.encoder_layers, "transformer_encoder_layer_",
                              "self_attention_layer")]
  for i, layer in enumerate(b.decoder_layers):
    p = f"transformer_decoder_layer_{i}/"
    out += [*a.kh_attention(p + "self_attention", layer.self_attention),
            *a.kh_norm(p + "self_attention_layer_norm", layer.self_attention_layer_norm),
            *a.kh_attention(p + "cross_attention", layer.cross_attention),
            *a.kh_norm(p + "cross_attention_layer_norm", layer.cross_attention_layer_norm),
            *a.kh_dense(p + "feedforward_intermediate_dense", layer.feedforward.intermediate),
            *a.kh_dense(p + "feedforward_output_dense", layer.feedforward.output),
            *a.kh_norm(p + "feedforward_layer_norm", layer.feedforward_layer_norm)]
  a.assign_strict(out, checkpoint.keras_weights("model.weights.h5"), ignored=lambda k: False,
                  where=str(checkpoint.path("model.weights.h5")), dtype=b.dtype)
