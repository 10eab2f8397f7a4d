"""ELECTRA checkpoints: Hugging Face (`ElectraModel`, `ElectraForPreTraining`,
`ElectraForMaskedLM`) and keras-hub (`ElectraBackbone` presets) names, config
keys and tokenizer files.  Duck-typed on the modules of
`tfhub_models.models.electra`; imports none of them.
"""

from __future__ import annotations

from tfhub_models.checkpoints import assign as a
from tfhub_models.checkpoints import save, tokenizer_files
from tfhub_models.checkpoints.sources import Checkpoint, CheckpointError
from tfhub_models.tokenizers import WordPieceTokenizer, tokenizer_json

TASKS = ("replaced_token_detection", "fill_mask", "text_classification", "token_classification",
         "embedding", "backbone")
# The weights of each task's head, by their Hugging Face prefix.
_HEADS = {"replaced_token_detection": "discriminator_predictions.", "fill_mask": "generator_"}


def config_fields(checkpoint: Checkpoint) -> dict:
  """ElectraConfig keyword arguments from the checkpoint's config.json."""
  def keras_hub(c):
    return dict(a.keras_hub_sizes(dict(c, vocabulary_size=c.get("vocab_size",
                                                              c.get("vocabulary_size")))),
                embedding_dim=int(c.get("embedding_dim", c["hidden_dim"])),
                max_sequence_length=int(c.get("max_sequence_length", 512)),
                num_segments=int(c.get("num_segments", 2)),
                # Fixed in keras-hub's ElectraBackbone, not in its config.
                layer_norm_epsilon=1e-12, hidden_activation="gelu_new")

  def hugging_face(c):
    hidden = int(c["hidden_size"])
    return dict(vocabulary_size=int(c["vocab_size"]), num_layers=int(c["num_hidden_layers"]),
                num_heads=int(c["num_attention_heads"]), hidden_dim=hidden,
                embedding_dim=int(c.get("embedding_size", hidden)),
                intermediate_dim=int(c["intermediate_size"]),
                dropout=float(c.get("hidden_dropout_prob", 0.1)),
                max_sequence_length=int(c.get("max_position_embeddings", 512)),
                num_segments=int(c.get("type_vocab_size", 2)),
                layer_norm_epsilon=float(c.get("layer_norm_eps", 1e-12)),
                hidden_activation=str(c.get("hidden_act", "gelu")),
                pad_token_id=int(c.get("pad_token_id", 0) or 0))

  return a.bert_config_fields(checkpoint, keras_hub, hugging_face)


def _legacy_options(settings: dict) -> dict:
  """WordPieceTokenizer options of a vocab.txt checkpoint's tokenizer_config.json."""
  options = dict(lowercase=bool(settings.get("do_lower_case", True)),
                 strip_accents=settings.get("strip_accents"),
                 split_cjk=bool(settings.get("tokenize_chinese_chars", True)))
  for name in ("unk_token", "cls_token", "sep_token", "pad_token", "mask_token"):
    if tokenizer_json.token_content(settings.get(name)):
      options[name] = tokenizer_json.token_content(settings.get(name))
  return options


def tokenizer(checkpoint: Checkpoint, config) -> WordPieceTokenizer:
  """The in-graph WordPiece tokenizer (from tokenizer.json, vocab.txt or keras-hub's
  vocabulary.txt), its size checked against the config."""
  if checkpoint.format == "keras_hub":
    name = "assets/tokenizer/vocabulary.txt"
    # keras-hub's ElectraTokenizer: lowercase and strip_accents default to False,
    # and lowercasing does not strip accents.  (Its tokenizer.json is keras-hub's
    # own config, not the tokenizers library's.)
    settings = checkpoint.optional_json("tokenizer.json").get("config", {})
    options = dict(lowercase=bool(settings.get("lowercase", False)),
                   strip_accents=bool(settings.get("strip_accents", False)))
    if not checkpoint.exists(name):
      raise CheckpointError(f"{checkpoint.directory}: no {name} (the in-graph WordPiece "
                            "tokenizer is built from it)")
    try:
      built, source = (WordPieceTokenizer.from_files(checkpoint.path(name), **options),
                       checkpoint.path(name))
    except ValueError as e:
      raise CheckpointError(str(e)) from None
  else:
    built, source = tokenizer_files.build(
        checkpoint, ("vocab.txt",), from_json=WordPieceTokenizer.from_tokenizer_json,
        from_legacy=lambda paths, settings: WordPieceTokenizer.from_files(
            paths[0], **_legacy_options(settings)),
        vocabulary=lambda t: t.vocabulary[:t.base_vocabulary_size])
  if built.vocabulary_size != config.vocabulary_size:
    raise CheckpointError(f"{source}: the tokenizer has {built.vocabulary_size} entries "
                          f"but the config's vocab_size is {config.vocabulary_size}")
  return built


def _weights(checkpoint: Checkpoint) -> dict:
  return a.hf_bert_weights(checkpoint.weights())


def _keys(checkpoint: Checkpoint) -> set:
  return set(_weights(checkpoint))


def task(checkpoint: Checkpoint, requested: str | None, load_weights: bool) -> str:
  """The checkpoint's own task: replaced_token_detection (a discriminator),
  fill_mask (a generator) or embedding (a bare model)."""
  keys = _keys(checkpoint) if load_weights and checkpoint.format == "hf" else set()
  architectures = checkpoint.config.get("architectures") or []
  classifier = a.classifier_kind(keys, architectures)
  if classifier:
    own = classifier
  elif "ElectraForPreTraining" in architectures or any(
      k.startswith("discriminator_predictions.") for k in keys):
    own = "replaced_token_detection"
  elif "ElectraForMaskedLM" in architectures or any(k.startswith("generator_") for k in keys):
    own = "fill_mask"
  else:
    own = "embedding"
  requested = requested or own
  head = _HEADS.get(requested)
  if head and load_weights and not any(k.startswith(head) for k in keys):
    raise CheckpointError(
        f"{checkpoint.directory}: task {requested} needs the {head.rstrip('._')} head, which this "
        f"checkpoint ({own}) does not have")
  return requested


def options(checkpoint: Checkpoint, task: str, load_weights: bool) -> dict:
  """A pooler when the checkpoint has one: keras-hub's ElectraBackbone always
  (`pooled_dense`), a Hugging Face checkpoint when it has pooler weights (no
  public one has)."""
  if checkpoint.format == "keras_hub":
    return {"pooler": True}
  out = {"pooler": load_weights and any(k.startswith("pooler.") for k in _keys(checkpoint))}
  if task in a.CLASSIFIER_TASKS:
    out.update(a.hf_classifier_options(checkpoint.config,
                                       _weights(checkpoint) if load_weights else None))
  return out


def assign(module, checkpoint: Checkpoint, task: str, options: dict | None = None) -> None:
  """Every variable of `module` (backbone, encoder, discriminator or generator)."""
  if checkpoint.format == "keras_hub":
    if task in a.CLASSIFIER_TASKS and not (options or {}).get("fresh_head"):
      raise CheckpointError(f"{checkpoint.directory}: a keras-hub backbone preset has no "
                            "classifier head; pass num_classes=N for a new head to fine-tune")
    _assign_keras_hub(module, checkpoint)
    return
  weights = _weights(checkpoint)
  a.require_tied(weights, "generator_lm_head.weight", "embeddings.word_embeddings.weight",
                 checkpoint.directory)
  unused_heads = tuple(h for t, h in _HEADS.items() if t != task)

  def ignored(key: str) -> bool:
    # Tied copies, buffers, and the head of another task than the one built.
    return (key.endswith("position_ids") or key.endswith("token_type_ids")
            or key == "generator_lm_head.weight" or key.startswith(unused_heads))

  assignments = hf_assignments(module, task, with_classifier=False)
  if task in a.CLASSIFIER_TASKS:
    assignments = a.assign_classifier_or_fresh(assignments, module, weights, options,
                                               checkpoint.directory)
    unused_heads += (a.CLASSIFIER_PREFIX,)   # a fresh head leaves the checkpoint's unused
  a.assign_strict(assignments, weights, ignored=ignored,
                  where=str(checkpoint.directory), dtype=a.backbone_of(module).dtype)


def hf_assignments(module, task: str, with_classifier: bool = True) -> list:
  """[(Hugging Face key without the model prefix, variable, transform)] of every
  variable of `module`: loading reads them, saving writes them back."""
  b = a.backbone_of(module)
  out = a.hf_bert_encoder(b, b.segment_embedding)
  if b.embeddings_projection is not None:
    out += a.hf_dense("embeddings_project", b.embeddings_projection)
  if task == "replaced_token_detection":
    out += [*a.hf_dense("discriminator_predictions.dense", module.head.dense),
            *a.hf_dense("discriminator_predictions.dense_prediction", module.head.prediction)]
  elif task == "fill_mask":
    out += [*a.hf_dense("generator_predictions.dense", module.head.dense),
            *a.hf_norm("generator_predictions.LayerNorm", module.head.layer_norm),
            ("generator_lm_head.bias", module.head.bias, a.same)]
  elif task in a.CLASSIFIER_TASKS and with_classifier:
    out += a.hf_classifier(module.head)
  return out


# Hugging Face class of each task's saved preset (the model sits under "electra.").
_ARCHITECTURES = {"fill_mask": "ElectraForMaskedLM",
                  "text_classification": "ElectraForSequenceClassification",
                  "token_classification": "ElectraForTokenClassification",
                  "replaced_token_detection": "ElectraForPreTraining",
                  "embedding": "ElectraModel", "backbone": "ElectraModel"}


def hf_files(module, task: str, tokenizer) -> save.PresetFiles:
  """config.json, weights and tokenizer_config.json of `module` as transformers saves them."""
  b = a.backbone_of(module)
  c = b.config
  if b.pooler is not None:
    raise ValueError("a pooler (keras-hub's pooled_dense) has no place in a Hugging Face "
                     "ELECTRA checkpoint")
  architecture = _ARCHITECTURES[task]
  prefix = "" if architecture == "ElectraModel" else "electra."
  config = a.hf_bert_config(c, architecture, "electra", embedding_size=c.embedding_dim,
                            max_position_embeddings=c.max_sequence_length,
                            type_vocab_size=c.num_segments)
  if task in a.CLASSIFIER_TASKS:
    config.update(a.hf_classifier_config(module))
  tokenizer_config = {
      "tokenizer_class": "ElectraTokenizer", "do_lower_case": tokenizer.lowercase,
      "strip_accents": tokenizer.strip_accents, "tokenize_chinese_chars": tokenizer.split_cjk,
      "unk_token": tokenizer.unk_token, "cls_token": tokenizer.cls_token,
      "sep_token": tokenizer.sep_token, "pad_token": tokenizer.pad_token,
      "mask_token": tokenizer.mask_token, "model_max_length": c.max_sequence_length}
  heads = ("discriminator_predictions.", "generator_", a.CLASSIFIER_PREFIX)
  return save.PresetFiles(config, save.state(hf_assignments(module, task), prefix, heads),
                          tokenizer_config)


def _assign_keras_hub(module, checkpoint: Checkpoint) -> None:
  b = a.backbone_of(module)
  out = [("token_embedding:0", b.token_embedding.embeddings, a.same),
         ("position_embedding:0", b.position_embedding.embeddings, a.same),   # from 0, as ours
         ("segment_embedding:0", b.segment_embedding.embeddings, a.same),
         *a.kh_norm("embeddings_layer_norm", b.embeddings_layer_norm),
         *a.kh_encoder_layers(b.transformer_layers, "transformer_layer_", "self_attention_layer"),
         *a.kh_dense("pooled_dense", b.pooler)]
  if b.embeddings_projection is not None:
    out += a.kh_dense("embeddings_projection", b.embeddings_projection)
  a.assign_strict(out, checkpoint.keras_weights("model.weights.h5"), ignored=lambda k: False,
                  where=str(checkpoint.path("model.weights.h5")), dtype=b.dtype)
