"""BART checkpoints: Hugging Face (`BartForConditionalGeneration`, with its
`generation_config.json`) and keras-hub (`BartBackbone` presets) names, config
keys and tokenizer files.  Duck-typed on `tfhub_models.models.bart`'s modules.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfhub_models.checkpoints import assign as a
from tfhub_models.checkpoints import save, tokenizer_files
from tfhub_models.checkpoints.sources import Checkpoint, CheckpointError
from tfhub_models.tokenizers import ByteLevelBPETokenizer

TASKS = ("generate", "backbone")
POSITION_OFFSET = 2   # upstream's learned positions start at row 2


def config_fields(checkpoint: Checkpoint) -> dict:
  """BartConfig keyword arguments from config.json (and generation_config.json);
  `generation` holds the generation settings by their Hugging Face names."""
  c = checkpoint.config
  where = checkpoint.path("config.json")
  try:
    if checkpoint.format == "keras_hub":
      c = c["config"]
      # keras-hub has no generation settings; its generate starts the decoder
      # with `</s><s>`, so `<s>` is forced first.
      fields = dict(a.keras_hub_sizes(c),
                    max_sequence_length=int(c.get("max_sequence_length", 1024)),
                    generation={"forced_bos_token_id": 0})
    else:
      if (c["encoder_attention_heads"] != c["decoder_attention_heads"]
          or c["encoder_ffn_dim"] != c["decoder_ffn_dim"]):
        raise ValueError("encoder and decoder with different head counts or feed-forward "
                         "sizes are not supported")
      generation = dict(c)
      generation.update(checkpoint.optional_json("generation_config.json"))
      fields = dict(vocabulary_size=int(c["vocab_size"]), num_layers=int(c["encoder_layers"]),
                    num_decoder_layers=int(c["decoder_layers"]),
                    num_heads=int(c["encoder_attention_heads"]), hidden_dim=int(c["d_model"]),
                    intermediate_dim=int(c["encoder_ffn_dim"]),
                    dropout=float(c.get("dropout", 0.1)),
                    max_sequence_length=int(c.get("max_position_embeddings", 1024)),
                    scale_embedding=bool(c.get("scale_embedding", False)),
                    activation=str(c.get("activation_function", "gelu")),
                    generation=generation)   # token ids too: generation_config.json's win
  except CheckpointError:   # generation_config.json's, naming it
    raise
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"{where}: {e}") from None
  a.check_config(where, fields, {} if checkpoint.format == "keras_hub" else
                 {"num_heads": "encoder_attention_heads", "hidden_dim": "d_model"})
  return fields


def tokenizer(checkpoint: Checkpoint, config) -> ByteLevelBPETokenizer:
  """The in-graph byte-level BPE (from tokenizer.json, vocab.json and merges.txt, or
  keras-hub's assets); its ids must fit the config's vocabulary."""
  if checkpoint.format == "keras_hub":
    vocabulary, merges = "assets/tokenizer/vocabulary.json", "assets/tokenizer/merges.txt"
    for name in (vocabulary, merges):
      if not checkpoint.exists(name):
        raise CheckpointError(f"{checkpoint.directory}: no {name} (the in-graph BPE is built "
                              "from it)")
    try:
      built = ByteLevelBPETokenizer.from_files(checkpoint.path(vocabulary),
                                               checkpoint.path(merges))
    except ValueError as e:
      raise CheckpointError(str(e)) from None
    source = checkpoint.path(vocabulary)
  else:
    built, source = tokenizer_files.build(
        checkpoint, ("vocab.json", "merges.txt"),
        from_json=ByteLevelBPETokenizer.from_tokenizer_json,
        from_legacy=lambda paths, settings: ByteLevelBPETokenizer.from_files(*paths),
        vocabulary=lambda t: [*sorted(t.vocabulary.items()), *t.merges])
  if built.vocabulary_size > config.vocabulary_size:
    raise CheckpointError(f"{source}: the tokenizer has ids up to {built.vocabulary_size - 1} "
                          f"but the config's vocab_size is {config.vocabulary_size}")
  return built


def task(checkpoint: Checkpoint, requested: str | None, load_weights: bool) -> str:
  del checkpoint, load_weights
  return requested or "generate"


def assign(module, checkpoint: Checkpoint, task: str, options: dict | None = None) -> None:
  """Every variable of the backbone (the generation task has no other)."""
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
  out = hf_assignments(module, task)
  a.assign_strict(out, weights, ignored=lambda k: k in tied or k.endswith("position_ids"),
                  where=str(checkpoint.directory), dtype=b.dtype)


def hf_assignments(module, task: str) -> list:
  """[(Hugging Face key without "model.", variable, transform)] of the backbone's
  variables: loading reads them, saving writes them back."""
  del task
  b = a.backbone_of(module)
  out = [("shared.weight", b.token_embedding.embeddings, a.same),
         ("encoder.embed_positions.weight", b.encoder_position_embedding.embeddings, a.same),
         ("decoder.embed_positions.weight", b.decoder_position_embedding.embeddings, a.same),
         *a.hf_norm("encoder.layernorm_embedding", b.encoder_embeddings_layer_norm),
         *a.hf_norm("decoder.layernorm_embedding", b.decoder_embeddings_layer_norm),
         ("final_logits_bias", b.final_logits_bias, a.flatten)]
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
  return out


def hf_files(module, task: str, tokenizer) -> save.PresetFiles:
  """config.json, weights, tokenizer_config.json and generation_config.json of a
  BartForConditionalGeneration, as transformers saves them."""
  b = a.backbone_of(module)
  c, g = b.config, b.config.generation
  generation = {k: v for k, v in dataclasses.asdict(g).items()
                if k not in ("num_return_sequences",)}
  generation["early_stopping"] = g.early_stopping
  if isinstance(g.eos_token_id, tuple):
    generation["eos_token_id"] = list(g.eos_token_id)
  generation["bos_token_id"] = tokenizer.bos_token_id
  config = {
      "architectures": ["BartForConditionalGeneration"], "model_type": "bart",
      "vocab_size": c.vocabulary_size, "d_model": c.hidden_dim,
      "encoder_layers": c.num_layers, "decoder_layers": b.config.num_decoder_layers or c.num_layers,
      "encoder_attention_heads": c.num_heads, "decoder_attention_heads": c.num_heads,
      "encoder_ffn_dim": c.intermediate_dim, "decoder_ffn_dim": c.intermediate_dim,
      "activation_function": c.activation, "dropout": c.dropout,
      # Our layers apply `dropout` only, as upstream does with these at 0.
      "attention_dropout": 0.0, "activation_dropout": 0.0,
      "max_position_embeddings": c.max_sequence_length, "scale_embedding": c.scale_embedding,
      "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
      "eos_token_id": tokenizer.eos_token_id, "decoder_start_token_id": g.decoder_start_token_id,
      "forced_eos_token_id": g.forced_eos_token_id, "is_encoder_decoder": True,
      "tie_word_embeddings": True, "init_std": 0.02, "torch_dtype": "float32"}
  tokenizer_config = {
      "tokenizer_class": "BartTokenizer", "bos_token": tokenizer.bos_token,
      "eos_token": tokenizer.eos_token, "sep_token": tokenizer.eos_token,
      "cls_token": tokenizer.bos_token, "unk_token": tokenizer.unk_token,
      "pad_token": tokenizer.pad_token,
      # As loaded: a tokenizer.json may have said that <mask> takes the space before it.
      "mask_token": {"content": tokenizer.mask_token,
                     "lstrip": tokenizer.mask_token in tokenizer.lstrip,
                     "rstrip": tokenizer.mask_token in tokenizer.rstrip,
                     "normalized": False, "single_word": False, "special": True,
                     "__type": "AddedToken"},
      "add_prefix_space": False, "model_max_length": c.max_sequence_length}
  return save.PresetFiles(config, save.state(hf_assignments(module, task), "model.",
                                             ("final_logits_bias",)),
                          tokenizer_config, generation)


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
