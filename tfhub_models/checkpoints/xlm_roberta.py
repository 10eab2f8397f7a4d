"""XLM-RoBERTa checkpoints: Hugging Face (`XLMRobertaModel`, `XLMRobertaForMaskedLM`)
and keras-hub (`XLMRobertaBackbone` presets, `task.weights.h5` for the masked-LM
head) names, config keys and tokenizer files.  Duck-typed on the modules of
`tfhub_models.models.xlm_roberta`; imports none of them.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfhub_models.checkpoints import assign as a
from tfhub_models.checkpoints import save, tokenizer_files
from tfhub_models.checkpoints.sources import Checkpoint, CheckpointError
from tfhub_models.tokenizers import XLMRobertaTokenizer

TASKS = ("fill_mask", "text_classification", "token_classification", "backbone", "embedding")
HEAD_TASKS = ("fill_mask",)
# The tasks of transformers' XLMRobertaModel, which has the pooler; the others'
# classes have none (transformers leaves a checkpoint's pooler unused too).
POOLER_TASKS = ("backbone", "embedding")


def config_fields(checkpoint: Checkpoint) -> dict:
  """XLMRobertaConfig keyword arguments from the checkpoint's config.json."""
  def hugging_face(c):
    pad = int(c.get("pad_token_id", 1))
    return dict(vocabulary_size=int(c["vocab_size"]), num_layers=int(c["num_hidden_layers"]),
                num_heads=int(c["num_attention_heads"]), hidden_dim=int(c["hidden_size"]),
                intermediate_dim=int(c["intermediate_size"]),
                dropout=float(c.get("hidden_dropout_prob", 0.1)),
                max_sequence_length=int(c["max_position_embeddings"]) - pad - 1,
                layer_norm_epsilon=float(c.get("layer_norm_eps", 1e-5)),
                type_vocabulary_size=int(c.get("type_vocab_size", 1)), pad_token_id=pad,
                hidden_activation=str(c.get("hidden_act", "gelu")))

  return a.bert_config_fields(
      checkpoint, lambda c: dict(a.keras_hub_sizes(c),
                                 max_sequence_length=int(c.get("max_sequence_length", 512))),
      hugging_face)


def tokenizer(checkpoint: Checkpoint, config) -> XLMRobertaTokenizer:
  """The in-graph SentencePiece tokenizer (from tokenizer.json, sentencepiece.bpe.model
  or keras-hub's vocabulary.spm), its id count checked against the config."""
  if checkpoint.format == "keras_hub":
    name = "assets/tokenizer/vocabulary.spm"
    if not checkpoint.exists(name):
      raise CheckpointError(f"{checkpoint.directory}: no SentencePiece model {name} "
                            "(the in-graph tokenizer is built from it)")
    try:
      built, source = XLMRobertaTokenizer.from_file(checkpoint.path(name)), checkpoint.path(name)
    except ValueError as e:
      raise CheckpointError(str(e)) from None
  else:
    built, source = tokenizer_files.build(
        checkpoint, ("sentencepiece.bpe.model",),
        from_json=XLMRobertaTokenizer.from_tokenizer_json,
        from_legacy=lambda paths, settings: XLMRobertaTokenizer.from_file(paths[0]),
        vocabulary=lambda t: [(p, float(np.float32(s))) for p, s in t.pieces()])
  if built.vocabulary_size != config.vocabulary_size:
    raise CheckpointError(
        f"{source}: the tokenizer gives {built.vocabulary_size} ids but the config's vocabulary "
        f"size is {config.vocabulary_size}")
  return built


def _hf_weights(checkpoint: Checkpoint) -> dict:
  """The safetensors weights by their names without the model prefix."""
  return a.hf_bert_weights(checkpoint.weights())


def task(checkpoint: Checkpoint, requested: str | None, load_weights: bool) -> str:
  """text_classification / token_classification for a classifier, fill_mask when
  the checkpoint has the masked-LM head, else backbone."""
  architectures = checkpoint.config.get("architectures") or []
  if checkpoint.format == "keras_hub":
    has_head = checkpoint.exists("task.weights.h5")
    classifier = None
  elif load_weights:   # the weights are read once, here, and assigned later
    keys = _hf_weights(checkpoint)
    has_head = any(k.startswith("lm_head.") for k in keys)
    classifier = a.classifier_kind(keys, ())
  else:
    has_head = "XLMRobertaForMaskedLM" in architectures
    classifier = a.classifier_kind((), architectures)
  if requested is None:
    return classifier or ("fill_mask" if has_head else "backbone")
  if requested in HEAD_TASKS and load_weights and not has_head:
    if checkpoint.format == "keras_hub":
      raise CheckpointError(
          f"{checkpoint.directory}: no task.weights.h5; fill-mask needs the masked-LM head that "
          "keras-hub saves with an XLMRobertaMaskedLM preset")
    raise CheckpointError(
        f"{checkpoint.directory}: no masked-LM head (lm_head.*) in the weights; fill-mask needs "
        "an XLMRobertaForMaskedLM checkpoint")
  return requested


def options(checkpoint: Checkpoint, task: str, load_weights: bool) -> dict:
  """A classifier's num_classes, labels and problem_type from config.json; a
  pooler for the backbone and embedding when the weights have one."""
  if checkpoint.format == "keras_hub":
    return {}
  if task in POOLER_TASKS:
    return {"pooler": load_weights and any(k.startswith("pooler.")
                                           for k in _hf_weights(checkpoint))}
  if task not in a.CLASSIFIER_TASKS:
    return {}
  return a.hf_classifier_options(checkpoint.config,
                                 _hf_weights(checkpoint) if load_weights else None)


def _ignored_hf(key: str, task: str) -> bool:
  """Buffers, tied copies, and a pooler where the task's class has none."""
  return ((key.startswith("pooler.") and task not in POOLER_TASKS) or key.endswith("position_ids")
          or key in ("lm_head.decoder.weight", "lm_head.decoder.bias"))


def assign(module, checkpoint: Checkpoint, task: str, options: dict | None = None) -> None:
  """Every variable of `module` (a backbone, encoder or masked LM) from the checkpoint."""
  if checkpoint.format == "keras_hub":
    if task in a.CLASSIFIER_TASKS and not (options or {}).get("fresh_head"):
      raise CheckpointError(f"{checkpoint.directory}: a keras-hub backbone preset has no "
                            "classifier head; pass num_classes=N for a new head to fine-tune")
    _assign_keras_hub(module, checkpoint, task)
    return
  weights = _hf_weights(checkpoint)
  if "lm_head.decoder.bias" in weights:  # upstream ties it to lm_head.bias
    if "lm_head.bias" not in weights:
      weights["lm_head.bias"] = weights["lm_head.decoder.bias"]
    elif not np.array_equal(weights["lm_head.bias"], weights["lm_head.decoder.bias"]):
      raise CheckpointError(f"{checkpoint.directory}: lm_head.decoder.bias differs from "
                            "lm_head.bias")
  a.require_tied(weights, "lm_head.decoder.weight", "embeddings.word_embeddings.weight",
                 checkpoint.directory)
  b = a.backbone_of(module)
  heads = () if task in HEAD_TASKS else ("lm_head.",)
  assignments = hf_assignments(module, task, with_classifier=False)
  if task in a.CLASSIFIER_TASKS:
    assignments = a.assign_classifier_or_fresh(assignments, module, weights, options,
                                               checkpoint.directory)
    heads += (a.CLASSIFIER_PREFIX,)   # a fresh head leaves the checkpoint's unused
  a.assign_strict(assignments, weights,
                  ignored=lambda k: _ignored_hf(k, task) or k.startswith(heads),
                  where=str(checkpoint.directory), dtype=b.dtype)


def hf_assignments(module, task: str, with_classifier: bool = True) -> list:
  """[(Hugging Face key without the model prefix, variable, transform)] of every
  variable of `module`: loading reads them, saving writes them back."""
  b = a.backbone_of(module)
  assignments = a.hf_bert_encoder(b, b.type_embedding)
  if task in HEAD_TASKS:
    h = module.head
    assignments += [*a.hf_dense("lm_head.dense", h.dense),
                    *a.hf_norm("lm_head.layer_norm", h.layer_norm),
                    ("lm_head.bias", h.bias, a.same)]
  if task in a.CLASSIFIER_TASKS and with_classifier:
    assignments += a.hf_classifier(module.head)
  return assignments


# Hugging Face class and weight-name prefix of each task's saved preset.
_ARCHITECTURES = {"fill_mask": ("XLMRobertaForMaskedLM", "roberta."),
                  "text_classification": ("XLMRobertaForSequenceClassification", "roberta."),
                  "token_classification": ("XLMRobertaForTokenClassification", "roberta."),
                  "backbone": ("XLMRobertaModel", ""), "embedding": ("XLMRobertaModel", "")}


def hf_files(module, task: str, tokenizer) -> save.PresetFiles:
  """config.json, weights and tokenizer_config.json of `module` as transformers saves them."""
  del tokenizer   # XLM-RoBERTa's special tokens are fixed
  architecture, prefix = _ARCHITECTURES[task]
  c = a.backbone_of(module).config
  config = a.hf_bert_config(c, architecture, "xlm-roberta",
                            max_position_embeddings=c.num_positions,
                            type_vocab_size=c.type_vocabulary_size, bos_token_id=0,
                            eos_token_id=2)
  if task in a.CLASSIFIER_TASKS:
    config.update(a.hf_classifier_config(module))
  tokenizer_config = {
      "tokenizer_class": "XLMRobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
      "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
      # Upstream's <mask> takes the space before it.
      "mask_token": {"content": "<mask>", "lstrip": True, "rstrip": False, "normalized": False,
                     "single_word": False, "special": True, "__type": "AddedToken"},
      "add_prefix_space": True, "model_max_length": c.max_sequence_length}
  return save.PresetFiles(config, save.state(hf_assignments(module, task), prefix,
                                             ("lm_head.", a.CLASSIFIER_PREFIX)),
                          tokenizer_config)


def _assign_keras_hub(module, checkpoint: Checkpoint, task: str) -> None:
  b = a.backbone_of(module)
  assignments = [
      ("embeddings/token_embedding:0", b.token_embedding.embeddings, a.same),
      ("embeddings/position_embedding:0", b.position_embedding.embeddings,
       a.shift_positions(b.config.pad_token_id + 1)),
      *a.kh_norm("embeddings_layer_norm", b.embeddings_layer_norm),
      *a.kh_encoder_layers(b.transformer_layers, "transformer_layer_", "self_attention_layer")]
  a.assign_strict(assignments, checkpoint.keras_weights("model.weights.h5"),
                  ignored=lambda k: False, where=str(checkpoint.path("model.weights.h5")),
                  dtype=b.dtype)
  b.type_embedding.embeddings.assign(tf.zeros_like(b.type_embedding.embeddings))
  if task in HEAD_TASKS:
    head = {k: v for k, v in checkpoint.keras_weights("task.weights.h5").items()
            if k.split("/")[0].split(":")[0] == "mlm_head"}
    h = module.head
    a.assign_strict([*a.kh_dense("mlm_head/intermediate_dense", h.dense),
                     *a.kh_norm("mlm_head/intermediate_layer_norm", h.layer_norm),
                     ("mlm_head:0", h.bias, a.same)], head, ignored=lambda k: False,
                    where=str(checkpoint.path("task.weights.h5")), dtype=b.dtype)
