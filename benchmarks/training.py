"""The training case: one XLA training step of ours, keras-hub's and
PyTorch's on the same batch, timed in turns."""

from __future__ import annotations

import os

from benchmarks.harness import TRAINING_TARGET_VS_KERAS_HUB, median_ms_in_turns


def _masked_lm_batch(vocabulary: int, batch: int, length: int, masks: int, seed: int = 0):
  """One preprocessed masked-LM batch: rows <s> ids </s> <pad>... of length*3/4 to
  length real tokens, `masks` positions of each masked (the last id is <mask>).

  Returns (token_ids, padding_mask, mask_positions, labels: int32, weights: float32).
  """
  import numpy as np

  rng = np.random.default_rng(seed)
  token_ids = np.full((batch, length), 1, np.int32)                  # <pad>
  padding_mask = np.zeros((batch, length), np.int32)
  positions = np.zeros((batch, masks), np.int32)
  for r in range(batch):
    real = int(rng.integers(length * 3 // 4, length + 1))
    token_ids[r, 0], token_ids[r, real - 1] = 0, 2                      # <s>, </s>
    token_ids[r, 1:real - 1] = rng.integers(4, vocabulary - 1, real - 2)
    padding_mask[r, :real] = 1
    positions[r] = np.sort(rng.choice(np.arange(1, real - 1), size=masks, replace=False))
  labels = np.take_along_axis(token_ids, positions, axis=1)
  np.put_along_axis(token_ids, positions, vocabulary - 1, axis=1)
  return token_ids, padding_mask, positions, labels, np.ones((batch, masks), np.float32)


def training_results(*, quick: bool, repeats: int, vocabulary_size: int | None) -> dict:
  """Real tokens per second of one training step: ours (XLA) vs keras-hub (XLA) vs
  transformers (PyTorch), on the same batch, timed in turns."""
  os.environ.setdefault("KERAS_BACKEND", "tensorflow")
  import tensorflow as tf
  import torch
  import transformers

  import tfhub_models
  from tfhub_models import demo, optimizers

  torch.set_num_threads(os.cpu_count() or 1)
  learning_rate, weight_decay = 5e-5, 0.01
  vocabulary = vocabulary_size or demo.tiny_xlm_roberta().tokenizer.vocabulary_size
  if quick:
    sizes = dict(vocabulary_size=vocabulary, num_layers=demo.TINY.num_layers,
                 num_heads=demo.TINY.num_heads, hidden_dim=demo.TINY.hidden_dim,
                 intermediate_dim=demo.TINY.intermediate_dim)
    repeats = 2
  else:
    sizes = dict(vocabulary_size=vocabulary, num_layers=12, num_heads=12, hidden_dim=768,
                 intermediate_dim=3072)
    repeats = min(repeats, 5)
  batch, length, masks = 8, 128, 20
  config = tfhub_models.XLMRobertaConfig(**sizes)
  token_ids, padding_mask, positions, labels, weights = _masked_lm_batch(
      config.vocabulary_size, batch, length, masks)
  tokens = int(padding_mask.sum())
  results = {"model": {**sizes, "max_sequence_length": config.max_sequence_length},
             "batch": batch, "length": length, "masks_per_row": masks, "real_tokens": tokens,
             "repeats": repeats, "quick": quick}
  steps = {}

  # Ours: the compiled step fit runs, called directly on the batch.
  ours = tfhub_models.XLMRobertaMaskedLM(tfhub_models.XLMRobertaBackbone(config), None)
  ours.compile(optimizer=optimizers.AdamW(learning_rate, weight_decay=weight_decay),
               jit_compile=True)
  ours_step = ours._train_function()
  ours_inputs = ({"token_ids": tf.constant(token_ids), "padding_mask": tf.constant(padding_mask),
                  "mask_positions": tf.constant(positions)},
                 tf.constant(labels), tf.constant(weights))
  counted = []

  def ours_run():
    counted.append(int(ours_step(*ours_inputs)[3]))    # the step's own count of real tokens
  steps["ours"] = ours_run

  # keras-hub (a peer, not a dependency): Keras 3 on the TensorFlow backend.
  try:
    import keras
    import keras_hub
    if keras.backend.backend() != "tensorflow":
      raise RuntimeError(f"KERAS_BACKEND is {keras.backend.backend()!r}, not tensorflow")
    keras_model = keras_hub.models.XLMRobertaMaskedLM(
        keras_hub.models.XLMRobertaBackbone(
            vocabulary_size=config.vocabulary_size, num_layers=config.num_layers,
            num_heads=config.num_heads, hidden_dim=config.hidden_dim,
            intermediate_dim=config.intermediate_dim, dropout=config.dropout,
            max_sequence_length=config.max_sequence_length), preprocessor=None)
    keras_model.compile(optimizer=keras.optimizers.AdamW(learning_rate,
                                                         weight_decay=weight_decay),
                        jit_compile=True)
    keras_x = dict(ours_inputs[0])
    steps["keras_hub"] = lambda: keras_model.train_on_batch(
        keras_x, ours_inputs[1], sample_weight=ours_inputs[2])
  except Exception as e:
    results["keras_hub_error"] = f"{type(e).__name__}: {e}"

  # transformers: the same sizes, dropout on, the LM head at the mask positions.
  reference = transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(
      vocab_size=config.vocabulary_size, hidden_size=config.hidden_dim,
      num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
      intermediate_size=config.intermediate_dim, hidden_dropout_prob=config.dropout,
      attention_probs_dropout_prob=config.dropout,
      max_position_embeddings=config.num_positions, type_vocab_size=1)).train()
  torch_optimizer = torch.optim.AdamW(reference.parameters(), lr=learning_rate,
                                      weight_decay=weight_decay)
  torch_ids, torch_mask = torch.tensor(token_ids).long(), torch.tensor(padding_mask)
  torch_positions = torch.tensor(positions).long()
  torch_labels, torch_weights = torch.tensor(labels).long(), torch.tensor(weights)

  def torch_step():
    torch_optimizer.zero_grad()
    hidden = reference.roberta(input_ids=torch_ids, attention_mask=torch_mask).last_hidden_state
    at_masks = torch.gather(hidden, 1, torch_positions[..., None].expand(-1, -1,
                                                                         hidden.shape[-1]))
    logits = reference.lm_head(at_masks)                                 # [B, M, V]
    per = torch.nn.functional.cross_entropy(logits.transpose(1, 2), torch_labels,
                                            reduction="none")
    loss = (per * torch_weights).sum() / torch_weights.sum()
    loss.backward()
    torch_optimizer.step()
    return float(loss.detach())
  steps["pytorch"] = torch_step

  for name, ms in median_ms_in_turns(steps, repeats).items():
    results[f"{name}_ms"] = ms
    results[f"{name}_tokens_per_s"] = tokens / (ms / 1000)
  if set(counted) != {tokens}:
    raise RuntimeError(f"our step counted {sorted(set(counted))} real tokens, the batch has "
                       f"{tokens}")
  results["ours_vs_pytorch"] = results["ours_tokens_per_s"] / results["pytorch_tokens_per_s"]
  results["target_vs_keras_hub"] = TRAINING_TARGET_VS_KERAS_HUB
  if "keras_hub_tokens_per_s" in results:
    results["ours_vs_keras_hub"] = (results["ours_tokens_per_s"]
                                    / results["keras_hub_tokens_per_s"])
    results["meets_target"] = results["ours_vs_keras_hub"] >= TRAINING_TARGET_VS_KERAS_HUB
  return results
