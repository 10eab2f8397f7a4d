"""Model files of a run: random checkpoints at the public configs, built once,
and exports made in a child process."""

from __future__ import annotations

import dataclasses
import os
import time



def sizes(quick: bool) -> dict:
  if quick:  # the demo model's
    return dict(layers=2, hidden=64, heads=4, intermediate=128, vocabulary=250002 // 50)
  return dict(layers=12, hidden=768, heads=12, intermediate=3072, vocabulary=250002)


def large_sentencepiece(pieces: int, seed: int = 0) -> bytes:
  """A SentencePiece unigram model of `pieces` pieces (XLM-R's has 250,000; the
  fairseq offset and <mask> make its 250,002 ids): the demo vocabulary's pieces,
  then word-like pieces of random letters with lower scores, so that tokenizing
  searches a trie of the public size and text still splits as the demo's does."""
  import numpy as np
  from sentencepiece import sentencepiece_model_pb2

  from tfhub_models import demo

  model = sentencepiece_model_pb2.ModelProto()
  model.ParseFromString(demo.demo_sentencepiece())
  seen = {piece.piece for piece in model.pieces}
  lowest = min(piece.score for piece in model.pieces if piece.type == 1)
  rng = np.random.default_rng(seed)
  letters = np.array(list("abcdefghijklmnopqrstuvwxyzäöüéèàçñßøå"))
  while len(model.pieces) < pieces:
    length = int(rng.integers(2, 12))
    text = ("\u2581" if rng.random() < 0.5 else "") + "".join(rng.choice(letters, length))
    if text in seen:
      continue
    seen.add(text)
    piece = model.pieces.add()
    piece.piece, piece.score, piece.type = text, lowest - 1 - float(rng.random()) * 10, 1
  model.trainer_spec.vocab_size = len(model.pieces)
  return model.SerializeToString()


def xlm_roberta_checkpoint(directory: str, quick: bool) -> str:
  """A random XLMRobertaForMaskedLM at base size (transformers' safetensors) with a
  SentencePiece model of the public vocabulary's size."""
  import torch
  import transformers

  path = os.path.join(directory, "xlm-roberta")
  if os.path.exists(os.path.join(path, "config.json")):
    return path
  s = sizes(quick)
  torch.manual_seed(0)
  model = transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(
      vocab_size=s["vocabulary"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
      num_attention_heads=s["heads"], intermediate_size=s["intermediate"],
      max_position_embeddings=514, type_vocab_size=1)).eval()
  model.save_pretrained(path)
  with open(os.path.join(path, "sentencepiece.bpe.model"), "wb") as f:
    f.write(large_sentencepiece(s["vocabulary"] - 2))
  # transformers reads the SentencePiece file beside the weights (and converts it
  # to its fast tokenizer), as it does a public checkpoint's.
  transformers.XLMRobertaTokenizer.from_pretrained(path).save_pretrained(path)
  return path


def bart_config(quick: bool) -> dict:
  if quick:
    return dict(vocab_size=50265, d_model=64, encoder_layers=2, decoder_layers=2,
                encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                decoder_ffn_dim=128)
  return dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6,
              encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
              decoder_ffn_dim=3072)


def _our_bart(quick: bool, dtype: str = "float32", sampler="greedy"):
  """Our BART at base size with random weights: the full 50,265-row embedding and
  LM head over the demo byte-level vocabulary (which names 260 of them)."""
  from tfhub_models import demo
  from tfhub_models.models import bart
  from tfhub_models.tokenizers import ByteLevelBPETokenizer

  c = bart_config(quick)
  preset = bart.PRESETS["bart_base_en"]
  # The same work as the peers' generate: no n-gram ban (bart-base's config bans
  # repeated 3-grams), no forced first or last token.
  generation = dataclasses.replace(preset.generation, no_repeat_ngram_size=0,
                                   forced_bos_token_id=None, forced_eos_token_id=None)
  config = dataclasses.replace(
      preset, vocabulary_size=c["vocab_size"], hidden_dim=c["d_model"],
      num_layers=c["encoder_layers"], num_heads=c["encoder_attention_heads"],
      intermediate_dim=c["encoder_ffn_dim"], generation=generation)
  vocabulary, merges = demo.demo_bpe_vocabulary()
  model = bart.build(config, ByteLevelBPETokenizer(vocabulary, merges), dtype=dtype,
                     sequence_length=64 if quick else 128)
  model.compile(sampler=sampler)
  return model


class Exporter:
  """Builds a model (`kind`) and exports it; its info is the export's cost."""

  def __init__(self, kind: str, directory: str, name: str, quick: bool = False,
               dtype: str = "float32", jit_compile: bool = True, checkpoint: str = ""):
    import resource

    from tfhub_models import export, models

    start = time.perf_counter()
    if kind == "xlm_roberta":
      # --quick: a shorter sequence, so fewer length buckets to compile and warm up.
      task = models.load(checkpoint, "fill_mask", dtype=dtype,
                         sequence_length=encoder_length(quick))
      options = export.ExportOptions(top_k=5, jit_compile=jit_compile,
                                     warmup_batch_sizes=(1,) if quick else (1, 8))
    elif kind == "preset":  # a saved model as it is, e.g. a trained demo
      task = models.load(checkpoint, dtype=dtype)
      options = export.ExportOptions(jit_compile=jit_compile, warmup_batch_sizes=(1,))
    else:
      task = _our_bart(quick, dtype)
      options = export.ExportOptions(jit_compile=jit_compile, max_new_tokens=32,
                                     warmup_batch_sizes=(1,))
    built = time.perf_counter()
    path = export.export(task, directory, name, options=options)
    seconds = time.perf_counter() - built
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    self.info = {"path": str(path), "build_s": built - start, "export_s": seconds,
                 "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                 "size_mb": size / 1e6, "dtype": dtype, "xla": jit_compile}


ENCODER_LENGTH = 128


def encoder_length(quick: bool) -> int:
  return 32 if quick else ENCODER_LENGTH
