"""Fine-tuning: parity of fit with a torch AdamW loop, freezing, resuming, bad input.

The parity checks train a transformers checkpoint (dropout 0) and our load of
it on the same batches in the same order with the same AdamW settings; the
losses must agree step by step, and the weights after the steps must agree
with a float64 torch run within float32 rounding.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, write_bart_checkpoint, write_hf_checkpoint
from tfhub_models import BartSeq2SeqLM, XLMRobertaMaskedLM, optimizers, training

LEARNING_RATE, WEIGHT_DECAY = 1e-3, 0.01
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
BART_NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory, sp_file, vocab_size):
  return write_hf_checkpoint(tmp_path_factory.mktemp("train_xlmr"), sp_file, vocab_size,
                             seed=3, **NO_DROPOUT)


@pytest.fixture(scope="module")
def bart_dir(tmp_path_factory, bpe_dir):
  return write_bart_checkpoint(tmp_path_factory.mktemp("train_bart"), bpe_dir, seed=4,
                               **BART_NO_DROPOUT)


def _masked_lm_batches(vocab_size, steps=3, batch=4, length=12, masks=3, seed=0):
  """Preprocessed masked-LM rows: <s> ids </s> <pad>..., masks at real positions."""
  rng = np.random.default_rng(seed)
  rows = steps * batch
  token_ids = np.full((rows, length), 1, np.int32)
  padding_mask = np.zeros((rows, length), np.int32)
  positions = np.zeros((rows, masks), np.int32)
  labels = np.zeros((rows, masks), np.int32)
  weights = np.zeros((rows, masks), np.float32)
  for r in range(rows):
    n = int(rng.integers(5, length - 1))
    token_ids[r, 0], token_ids[r, n + 1] = 0, 2
    token_ids[r, 1:n + 1] = rng.integers(4, vocab_size - 1, n)
    padding_mask[r, :n + 2] = 1
    chosen = rng.choice(np.arange(1, n + 1), size=int(rng.integers(1, masks + 1)), replace=False)
    positions[r, :len(chosen)] = chosen
    labels[r, :len(chosen)] = token_ids[r, chosen]
    weights[r, :len(chosen)] = 1.0
    token_ids[r, chosen] = vocab_size - 1   # <mask>
  x = {"token_ids": token_ids, "padding_mask": padding_mask, "mask_positions": positions}
  return x, labels, weights


def _rows(structure, start, stop):
  return {k: v[start:stop] for k, v in structure.items()} if isinstance(structure, dict) \
      else structure[start:stop]


def _torch_steps(model, batches, loss_of, dtype):
  """A torch.optim.AdamW loop over `batches`; returns the step losses."""
  import torch
  model = model.to(dtype).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY,
                                betas=(0.9, 0.999), eps=1e-8)
  losses = []
  for batch in batches:
    optimizer.zero_grad()
    loss = loss_of(model, batch)
    loss.backward()
    optimizer.step()
    losses.append(float(loss.detach()))
  return losses


def _weighted_cross_entropy(logits, labels, weights):
  import torch
  per = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
  return (per * weights).sum() / weights.sum()


def _our_steps(task, x, y, w, steps, batch):
  task.compile(optimizer=optimizers.AdamW(LEARNING_RATE, weight_decay=WEIGHT_DECAY))
  losses = []
  for s in range(steps):   # one fit per step: the optimizer's state carries over
    history = task.fit(_rows(x, s * batch, (s + 1) * batch), y[s * batch:(s + 1) * batch],
                       w[s * batch:(s + 1) * batch], batch_size=batch, shuffle=False, verbose=0)
    losses.append(history["loss"][0])
  return losses


def _compare_weights(ours, reference, *, zero_gradient=("self_attention/key/bias",)):
  """Every variable of `ours` against the float64 reference loaded into our modules."""
  worst = 0.0
  for mine, theirs in zip(ours.variables, reference.variables):
    assert mine.name == theirs.name
    if any(part in mine.name for part in zero_gradient):
      continue   # true gradient 0: float32 and float64 runs differ by rounding alone
    difference = np.abs(mine.numpy() - theirs.numpy()).max()
    worst = max(worst, difference)
    assert difference < 2e-5, mine.name
  return worst


def test_masked_lm_fit_equals_torch_adamw(xlmr_dir, vocab_size, tmp_path):
  import torch
  from transformers import XLMRobertaForMaskedLM
  steps, batch = 3, 4
  x, y, w = _masked_lm_batches(vocab_size, steps, batch)
  task = XLMRobertaMaskedLM.from_preset(str(xlmr_dir), preprocessor=None)
  ours = _our_steps(task, x, y, w, steps, batch)

  def loss_of(model, s):
    rows = slice(s * batch, (s + 1) * batch)
    logits = model(input_ids=torch.tensor(x["token_ids"][rows], dtype=torch.long),
                   attention_mask=torch.tensor(x["padding_mask"][rows])).logits
    index = torch.tensor(x["mask_positions"][rows], dtype=torch.long)
    at_masks = torch.gather(logits, 1, index[..., None].expand(-1, -1, logits.shape[-1]))
    return _weighted_cross_entropy(at_masks, torch.tensor(y[rows], dtype=torch.long),
                                   torch.tensor(w[rows], dtype=logits.dtype))

  torch.manual_seed(0)
  float32 = _torch_steps(XLMRobertaForMaskedLM.from_pretrained(str(xlmr_dir)), range(steps),
                         loss_of, torch.float32)
  np.testing.assert_allclose(ours, float32, rtol=1e-5)
  truth = XLMRobertaForMaskedLM.from_pretrained(str(xlmr_dir))
  _torch_steps(truth, range(steps), loss_of, torch.float64)
  truth.float().save_pretrained(str(tmp_path / "truth"))
  for name in ("tokenizer.json", "tokenizer_config.json"):
    os.link(xlmr_dir / name, tmp_path / "truth" / name)
  reference = XLMRobertaMaskedLM.from_preset(str(tmp_path / "truth"))
  _compare_weights(task, reference)
  # One variable for the word embeddings and the decoder, trained as one.
  assert task.head.token_embedding.embeddings is task.backbone.token_embedding.embeddings
  assert sum("token_embedding" in v.name for v in task.trainable_variables) == 1


def _bart_batches(vocab_size, steps=3, batch=4, source=10, target=8, seed=1):
  rng = np.random.default_rng(seed)
  rows = steps * batch
  x = {k: np.zeros((rows, n), np.int32) for k, n in (
      ("encoder_token_ids", source), ("encoder_padding_mask", source),
      ("decoder_token_ids", target), ("decoder_padding_mask", target))}
  x["encoder_token_ids"][:] = 1
  x["decoder_token_ids"][:] = 1
  y = np.ones((rows, target), np.int32)
  for r in range(rows):
    n = int(rng.integers(3, source - 1))
    x["encoder_token_ids"][r, :n + 2] = [0, *rng.integers(5, vocab_size, n), 2]
    x["encoder_padding_mask"][r, :n + 2] = 1
    m = int(rng.integers(2, target - 1))
    labels = [0, *rng.integers(5, vocab_size, m), 2]
    y[r, :m + 2] = labels
    x["decoder_token_ids"][r, :m + 2] = [2, *labels[:-1]]
    x["decoder_padding_mask"][r, :m + 2] = 1
  return x, y, x["decoder_padding_mask"].astype(np.float32)


def test_seq2seq_fit_equals_torch_adamw(bart_dir, tmp_path):
  import shutil
  import torch
  from transformers import BartForConditionalGeneration
  steps, batch = 3, 4
  task = BartSeq2SeqLM.from_preset(str(bart_dir))
  vocab_size = task.backbone.config.vocabulary_size
  x, y, w = _bart_batches(vocab_size, steps, batch)
  bias_before = task.backbone.final_logits_bias.numpy().copy()
  ours = _our_steps(task, x, y, w, steps, batch)

  def loss_of(model, s):
    rows = slice(s * batch, (s + 1) * batch)
    t = {k: torch.tensor(v[rows], dtype=torch.long) for k, v in x.items()}
    logits = model(input_ids=t["encoder_token_ids"], attention_mask=t["encoder_padding_mask"],
                   decoder_input_ids=t["decoder_token_ids"],
                   decoder_attention_mask=t["decoder_padding_mask"]).logits
    return _weighted_cross_entropy(logits, torch.tensor(y[rows], dtype=torch.long),
                                   torch.tensor(w[rows], dtype=logits.dtype))

  float32 = _torch_steps(BartForConditionalGeneration.from_pretrained(str(bart_dir)),
                         range(steps), loss_of, torch.float32)
  np.testing.assert_allclose(ours, float32, rtol=1e-5)
  truth = BartForConditionalGeneration.from_pretrained(str(bart_dir))
  _torch_steps(truth, range(steps), loss_of, torch.float64)
  truth.float().save_pretrained(str(tmp_path / "truth"))
  for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(bart_dir / name, tmp_path / "truth" / name)
  reference = BartSeq2SeqLM.from_preset(str(tmp_path / "truth"))
  _compare_weights(task, reference,
                   zero_gradient=("self_attention/key/bias", "cross_attention/key/bias"))
  np.testing.assert_array_equal(task.backbone.final_logits_bias.numpy(), bias_before)
  assert "final_logits_bias" not in {v.name.split("/")[-1].split(":")[0]
                                     for v in task.trainable_variables}


def test_frozen_backbone_stays_bit_for_bit(xlmr_dir, vocab_size):
  task = XLMRobertaMaskedLM.from_preset(str(xlmr_dir), preprocessor=None)
  x, y, w = _masked_lm_batches(vocab_size, 2, 4, seed=5)
  task.backbone.trainable = False
  assert task.backbone.trainable_variables == ()
  assert {v.name.split("/")[0] for v in task.trainable_variables} == {"masked_lm_head"}
  backbone = [v.numpy().copy() for v in task.backbone.variables]
  head = [v.numpy().copy() for v in task.trainable_variables]
  task.compile(optimizer=optimizers.AdamW(1e-2))
  task.fit(x, y, w, batch_size=4, verbose=0)
  for before, variable in zip(backbone, task.backbone.variables):
    np.testing.assert_array_equal(before, variable.numpy(), err_msg=variable.name)
  assert all(np.abs(b - v.numpy()).max() > 0 for b, v in zip(head, task.trainable_variables))
  task.backbone.trainable = True
  assert len(task.trainable_variables) == len(task.variables)
  with pytest.raises(TypeError, match="True or False"):
    task.backbone.trainable = "no"


def _fresh_lm(xlmr_dir):
  task = XLMRobertaMaskedLM.from_preset(str(xlmr_dir), preprocessor=None)
  task.compile(optimizer=optimizers.AdamW(optimizers.schedules.LinearWarmupDecay(5e-3, 2, 12)))
  return task


def test_resumed_fit_equals_uninterrupted(xlmr_dir, vocab_size, tmp_path, monkeypatch):
  x, y, w = _masked_lm_batches(vocab_size, 3, 4, seed=7)
  arguments = dict(batch_size=4, epochs=2, seed=11, verbose=0, checkpoint_every=1)
  whole = _fresh_lm(xlmr_dir)
  expected = whole.fit(x, y, w, **arguments)

  interrupted = _fresh_lm(xlmr_dir)
  train = interrupted._train_function()
  calls = []

  def stop_after_four(*args):
    calls.append(1)
    if len(calls) == 5:
      raise KeyboardInterrupt
    return train(*args)
  monkeypatch.setattr(interrupted, "_train_function", lambda: stop_after_four)
  with pytest.raises(KeyboardInterrupt):
    interrupted.fit(x, y, w, checkpoint_dir=str(tmp_path), **arguments)
  # 3 steps an epoch, a checkpoint after each: the last is epoch 2 after its first step.
  latest = tf.train.latest_checkpoint(str(tmp_path))
  side = json.loads((tmp_path / f"history-{latest.rsplit('-', 1)[1]}.json").read_text())
  assert len(list(tmp_path.glob("history-*.json"))) == 3     # one per kept checkpoint
  assert side["epoch"] == 1 and len(side["losses"]) == 1 and len(side["history"]["loss"]) == 1

  resumed = _fresh_lm(xlmr_dir)
  history = resumed.fit(x, y, w, checkpoint_dir=str(tmp_path), **arguments)
  for mine, theirs in zip(resumed.variables, whole.variables):
    np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-7,
                               err_msg=mine.name)
  np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-6)
  assert int(resumed.optimizer.iterations) == 6
  # The same call once more has nothing left to do and returns the history.
  again = resumed.fit(x, y, w, checkpoint_dir=str(tmp_path), **arguments)
  assert again["loss"] == history["loss"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(xlmr_dir, vocab_size, tmp_path):
  x, y, w = _masked_lm_batches(vocab_size, 3, 4, seed=8)
  w = w.copy()
  w[8, 0] = np.nan                               # the third batch
  task = _fresh_lm(xlmr_dir)
  with pytest.raises(training.TrainingError, match=r"loss is nan at step 3 of epoch 1"):
    task.fit(x, y, w, batch_size=4, shuffle=False, verbose=0, checkpoint_dir=str(tmp_path),
             checkpoint_every=1)
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")
  assert int(task.optimizer.iterations) == 2    # the NaN step changed nothing
  restored = _fresh_lm(xlmr_dir)
  tf.train.Checkpoint(model=restored).restore(tf.train.latest_checkpoint(str(tmp_path))) \
      .expect_partial()
  for mine, saved in zip(task.variables, restored.variables):
    np.testing.assert_array_equal(mine.numpy(), saved.numpy())


@pytest.fixture(scope="module")
def raw_lm(xlmr_dir):
  return XLMRobertaMaskedLM.from_preset(str(xlmr_dir))


TEXTS = ["the cat sat on the mat", "a dog ran in the park", "birds sing in the morning",
         "the sun is hot today", "we read books at night", "rain falls on the roof",
         "she plays the piano well", "he drinks coffee every day"]


def test_masked_lm_loss_falls_on_raw_strings(raw_lm):
  # Without XLA: each batch's padded length would be a compile of its own; XLA steps
  # are checked against torch in test_masked_lm_fit_equals_torch_adamw.
  raw_lm.compile(optimizer=optimizers.AdamW(3e-3, weight_decay=0.0), jit_compile=False)
  history = raw_lm.fit(TEXTS * 4, batch_size=8, epochs=12, seed=0, verbose=0)
  assert len(history["loss"]) == 12
  assert np.mean(history["loss"][-3:]) < 0.7 * np.mean(history["loss"][:2]), history["loss"]
  scores = raw_lm.evaluate(TEXTS)
  assert set(scores) == {"loss", "accuracy"} and np.isfinite(scores["loss"])
  logits = raw_lm.predict(["the cat <mask> on the mat", "no masks here", "a <mask> <mask>"])
  assert logits.shape == (3, 2, raw_lm.backbone.config.vocabulary_size)


def test_seq2seq_loss_falls_on_raw_pairs(bart_dir):
  task = BartSeq2SeqLM.from_preset(str(bart_dir))
  # Without XLA: each new pair of padded lengths would be a compile of its own
  # (minutes here); XLA steps are checked against torch in test_seq2seq_fit_equals_torch_adamw.
  task.compile(optimizer=optimizers.AdamW(3e-3, weight_decay=0.0), jit_compile=False)
  pairs = {"encoder_text": TEXTS * 2,
           "decoder_text": [" ".join(t.split()[::-1]) for t in TEXTS] * 2}
  history = task.fit(pairs, batch_size=8, epochs=25, seed=0, verbose=0,
                     validation_data=({"encoder_text": TEXTS[:4],
                                       "decoder_text": TEXTS[:4]},))
  assert np.mean(history["loss"][-3:]) < 0.6 * np.mean(history["loss"][:2]), history["loss"]
  assert len(history["val_loss"]) == 25
  logits = task.predict({"encoder_text": TEXTS[:2], "decoder_text": ["a b", "c"]})
  assert logits.shape[0] == 2 and logits.shape[2] == task.backbone.config.vocabulary_size


def test_bad_training_input_is_named(raw_lm, vocab_size):
  raw_lm.compile()
  with pytest.raises(training.TrainingError, match="empty"):
    raw_lm.fit([], verbose=0)
  with pytest.raises(training.TrainingError, match="empty strings"):
    raw_lm.fit(["fine", "  "], verbose=0)
  with pytest.raises(training.TrainingError, match="nothing to mask"):
    raw_lm.fit(["<pad>", "fine text"], verbose=0)
  # A bad row in the last batch is found before the first step.
  steps_before = int(raw_lm.optimizer.iterations)
  with pytest.raises(training.TrainingError, match="nothing to mask"):
    raw_lm.fit(TEXTS * 2 + ["<pad>"], batch_size=4, verbose=0)
  assert int(raw_lm.optimizer.iterations) == steps_before
  x, y, w = _masked_lm_batches(vocab_size, 1, 4)
  with pytest.raises(training.TrainingError, match="same number of rows"):
    raw_lm.fit(x, y[:3], verbose=0)
  bad = y.copy()
  bad[0, 0] = vocab_size
  with pytest.raises(training.TrainingError, match="outside the vocabulary"):
    raw_lm.fit(x, bad, w, verbose=0)
  with pytest.raises(training.TrainingError, match="masked on the fly"):
    raw_lm.fit(TEXTS[:4], y, verbose=0)
  with pytest.raises(training.TrainingError, match="dataset is empty"):
    raw_lm.fit(tf.data.Dataset.from_tensor_slices(tf.constant([], tf.string)).batch(2),
               verbose=0)
  with pytest.raises(ValueError, match="unknown optimizer"):
    raw_lm.compile(optimizer="sgd")
  unprocessed = XLMRobertaMaskedLM(raw_lm.backbone, None)
  with pytest.raises(ValueError, match="no preprocessor"):
    unprocessed.fit(TEXTS, verbose=0)


def test_dataset_input_and_order(raw_lm):
  raw_lm.compile(optimizer=optimizers.AdamW(1e-3))
  dataset = tf.data.Dataset.from_tensor_slices(tf.constant(TEXTS)).batch(4)
  history = raw_lm.fit(dataset, epochs=1, verbose=0)
  assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])
  batches = training.Batches(list(range(10)), batch_size=4)
  in_order = [b["x"].numpy().tolist() for b in batches.epoch(None, 0)]
  assert in_order == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
  shuffled = [b["x"].numpy().tolist() for b in batches.epoch(5, 0)]
  again = [b["x"].numpy().tolist() for b in batches.epoch(5, 0)]
  assert shuffled == again and sorted(sum(shuffled, [])) == list(range(10))
  assert shuffled != [b["x"].numpy().tolist() for b in batches.epoch(5, 1)]


def test_bart_compile_takes_the_sampler_as_keras_hub_does(bart_dir):
  task = BartSeq2SeqLM.from_preset(str(bart_dir))
  with pytest.raises(ValueError, match=r"first argument is the optimizer.*sampler='greedy'"):
    task.compile("greedy")
  task.compile(sampler="greedy")
  assert task.sampler.name == "greedy" and isinstance(task.optimizer, optimizers.Adam)
  assert task.optimizer.learning_rate == 2e-5
  task.compile(optimizer="adamw", sampler="beam")
  assert task.sampler.name == "beam" and task.optimizer.weight_decay == 0.01
  # Every BART weight is in the backbone: frozen, nothing is left to train.
  task.backbone.trainable = False
  with pytest.raises(training.TrainingError, match="no trainable variables"):
    task.fit({"encoder_text": ["a b"], "decoder_text": ["b a"]}, verbose=0)


DISTRIBUTED = r"""
import sys, numpy as np, tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from tfhub_models import XLMRobertaMaskedLM, optimizers
data = np.load(sys.argv[2])
x = {k: data[k] for k in ("token_ids", "padding_mask", "mask_positions")}
def run():
  task = XLMRobertaMaskedLM.from_preset(sys.argv[1], preprocessor=None)
  task.compile(optimizer=optimizers.AdamW(1e-3))
  history = task.fit(x, data["y"], data["w"], batch_size=4, shuffle=False, verbose=0)
  return task, history
single, single_history = run()
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
  mirrored, mirrored_history = run()
assert strategy.num_replicas_in_sync == 2
worst = max(float(np.abs(a.numpy() - b.numpy()).max())
            for a, b in zip(single.variables, mirrored.variables))
print("RESULT", single_history["loss"][0], mirrored_history["loss"][0], worst)
"""


def test_mirrored_strategy_equals_one_device(xlmr_dir, vocab_size, tmp_path):
  x, y, w = _masked_lm_batches(vocab_size, 3, 4, seed=9)
  np.savez(tmp_path / "data.npz", y=y, w=w, **x)
  script = tmp_path / "distributed.py"
  script.write_text(DISTRIBUTED)
  done = subprocess.run([sys.executable, str(script), str(xlmr_dir), str(tmp_path / "data.npz")],
                        capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert done.returncode == 0, done.stderr[-3000:]
  line = [text for text in done.stdout.splitlines() if text.startswith("RESULT")][-1]
  single_loss, mirrored_loss, worst = map(float, line.split()[1:])
  assert abs(single_loss - mirrored_loss) <= 1e-5 * abs(single_loss)
  assert worst < 1e-5


def test_electra_generator_trains_on_raw_strings(tmp_path, wordpiece_dir, wordpiece_vocab):
  from conftest import write_electra_checkpoint
  from tfhub_models import ElectraMaskedLM
  source = write_electra_checkpoint(tmp_path / "generator", wordpiece_dir, len(wordpiece_vocab),
                                    "generator", seed=3)
  task = ElectraMaskedLM.from_preset(str(source))
  task.backbone.trainable = False
  backbone = [v.numpy().copy() for v in task.backbone.variables]
  task.compile(optimizer=optimizers.AdamW(1e-2))
  history = task.fit(TEXTS, batch_size=4, epochs=2, seed=1, verbose=0)
  assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
  for before, variable in zip(backbone, task.backbone.variables):
    np.testing.assert_array_equal(before, variable.numpy(), err_msg=variable.name)
  assert task.predict(["the [MASK] sat"]).shape == (1, 1, len(wordpiece_vocab))
