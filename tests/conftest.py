"""Shared fixtures: tiny random checkpoints and SentencePiece models made here.

Nothing is downloaded: the SentencePiece model is trained on text the package
carries, and checkpoints are written by `transformers` / keras-hub themselves
with random weights.  Their tokenizers are saved as `transformers` 5 saves
them (tokenizer.json and tokenizer_config.json only, see save_tokenizer),
what users bring today; tests of the legacy files ask for them.
"""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["HF_HUB_OFFLINE"] = "1"          # tests never use the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest

from tfhub_models import demo

CORPUS = [line for line in demo.CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


# The files that take minutes, longest first: run first, so that the two
# workers of `-n 2 --dist loadfile --no-loadscope-reorder` (.ci/run; xdist
# would otherwise order files by their number of tests) finish together instead
# of one waiting out the benchmark alone at the end.  The rest keep their order.
SLOW_FILES = ("deploy/test_benchmark.py", "export/test_demo.py", "serving/test_server.py",
              "models/test_conformance.py", "models/test_electra.py", "export/test_export.py",
              "models/test_classification.py", "models/test_token_classification.py",
              "models/test_generation_options.py", "training/test_finetune_classifiers.py",
              "models/test_bart.py", "training/test_training.py", "serving/test_adversarial.py")


def pytest_collection_modifyitems(session, config, items):
  rank = {name: i for i, name in enumerate(SLOW_FILES)}
  tests = pathlib.Path(__file__).parent

  def file_rank(item):
    return rank.get(pathlib.Path(item.fspath).relative_to(tests).as_posix(), len(rank))

  items.sort(key=file_rank)


# The legacy tokenizer files of each family, and the transformers class that reads them.
LEGACY_TOKENIZER_FILES = {"XLMRobertaTokenizer": ("sentencepiece.bpe.model",),
                          "ElectraTokenizer": ("vocab.txt",),
                          "BartTokenizer": ("vocab.json", "merges.txt")}


def _load_upstream(source: pathlib.Path):
  import transformers
  for name, files in LEGACY_TOKENIZER_FILES.items():
    if all((source / f).exists() for f in files):
      return getattr(transformers, name).from_pretrained(str(source))
  raise FileNotFoundError(f"{source}: no legacy tokenizer files")


@functools.cache
def upstream_tokenizer(source: pathlib.Path):
  """transformers' tokenizer of a folder of legacy tokenizer files (loaded once,
  shared by the tests that compare with it)."""
  return _load_upstream(source)


@functools.cache
def _saved_tokenizer(source: pathlib.Path) -> tuple:
  """(name, bytes) of the files transformers 5 saves for the tokenizer of
  `source`, from a tokenizer of their own: a shared one may have been called
  with truncation, which a fast tokenizer keeps and would save."""
  import tempfile
  with tempfile.TemporaryDirectory() as scratch:
    _load_upstream(source).save_pretrained(scratch)
    return tuple((p.name, p.read_bytes()) for p in sorted(pathlib.Path(scratch).iterdir()))


def save_tokenizer(directory: pathlib.Path, source: pathlib.Path, *, legacy: bool = False) -> None:
  """Puts the tokenizer of `source` (a legacy tokenizer file, or the folder of
  them) in a checkpoint directory: as transformers 5's save_pretrained writes it
  (tokenizer.json and tokenizer_config.json only), or with legacy=True as the
  legacy files themselves."""
  source = pathlib.Path(source)
  source = source if source.is_dir() else source.parent
  pathlib.Path(directory).mkdir(parents=True, exist_ok=True)   # as save_pretrained does
  if legacy:
    for files in LEGACY_TOKENIZER_FILES.values():
      for name in files:
        if (source / name).exists():
          shutil.copy(source / name, pathlib.Path(directory) / name)
    return
  for name, data in _saved_tokenizer(source):
    (pathlib.Path(directory) / name).write_bytes(data)


@pytest.fixture(scope="session")
def sp_proto() -> bytes:
  """A unigram SentencePiece model (~700 pieces) trained on the demo corpus."""
  return demo.train_sentencepiece(CORPUS, vocab_size=700)


@pytest.fixture(scope="session")
def sp_file(sp_proto, tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp("spm") / "sentencepiece.bpe.model"
  path.write_bytes(sp_proto)
  return path


@pytest.fixture(scope="session")
def hf_tokenizer(sp_file):
  """transformers' XLMRobertaTokenizer built from the same SentencePiece model."""
  return upstream_tokenizer(sp_file.parent)


def write_hf_checkpoint(directory: pathlib.Path, sp_file: pathlib.Path, vocab_size: int, *,
                        masked_lm: bool = True, seed: int = 0, legacy: bool = False,
                        **overrides) -> pathlib.Path:
  """Saves a random transformers XLM-RoBERTa checkpoint with its tokenizer
  (see save_tokenizer)."""
  import torch
  from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM, XLMRobertaModel

  settings = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=4, intermediate_size=37, max_position_embeddings=130,
                  type_vocab_size=1, layer_norm_eps=1e-5)
  settings.update(overrides)
  torch.manual_seed(seed)
  config = XLMRobertaConfig(**settings)
  model = (XLMRobertaForMaskedLM if masked_lm else XLMRobertaModel)(config).eval()
  # Random init leaves biases and layer norms at 0/1; perturb every weight so a
  # wrong mapping of any of them shows up in the outputs.
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(torch.randn_like(parameter) * 0.05)
  model.save_pretrained(str(directory))
  save_tokenizer(directory, sp_file, legacy=legacy)
  return directory


@pytest.fixture(scope="session")
def vocab_size(sp_proto) -> int:
  from tfhub_models.tokenizers import XLMRobertaTokenizer
  return XLMRobertaTokenizer(sp_proto).vocabulary_size


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory, sp_file, vocab_size) -> pathlib.Path:
  """The default tiny XLMRobertaForMaskedLM checkpoint directory."""
  return write_hf_checkpoint(tmp_path_factory.mktemp("hf_xlmr"), sp_file, vocab_size)


@pytest.fixture(scope="session")
def wordpiece_vocab() -> list:
  """An uncased WordPiece vocabulary (~800 entries) trained here on the demo corpus."""
  from tokenizers import BertWordPieceTokenizer
  trainer = BertWordPieceTokenizer(lowercase=True, clean_text=True, handle_chinese_chars=True)
  trainer.train_from_iterator(CORPUS * 3, vocab_size=800, min_frequency=1, show_progress=False,
                              special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
  vocab = trainer.get_vocab()
  return [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]


@pytest.fixture(scope="session")
def wordpiece_dir(wordpiece_vocab, tmp_path_factory) -> pathlib.Path:
  directory = tmp_path_factory.mktemp("wordpiece")
  (directory / "vocab.txt").write_text("\n".join(wordpiece_vocab) + "\n", encoding="utf-8")
  return directory


@pytest.fixture(scope="session")
def hf_electra_tokenizer(wordpiece_dir):
  """transformers' ElectraTokenizer (uncased) built from the same vocabulary."""
  return upstream_tokenizer(wordpiece_dir)


ELECTRA_CLASSES = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM",
                   "model": "ElectraModel"}


def write_electra_checkpoint(directory: pathlib.Path, wordpiece_dir: pathlib.Path,
                             vocab_size: int, kind: str, *, seed: int = 0, legacy: bool = False,
                             **overrides) -> pathlib.Path:
  """Saves a random transformers ELECTRA checkpoint (kind: discriminator, generator,
  model) with its tokenizer (see save_tokenizer)."""
  import torch
  import transformers

  settings = dict(vocab_size=vocab_size, embedding_size=24, hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
                  type_vocab_size=2, layer_norm_eps=1e-12)
  settings.update(overrides)
  torch.manual_seed(seed)
  config = transformers.ElectraConfig(**settings)
  model = getattr(transformers, ELECTRA_CLASSES[kind])(config).eval()
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(torch.randn_like(parameter) * 0.05)
  model.save_pretrained(str(directory))
  save_tokenizer(directory, wordpiece_dir, legacy=legacy)
  return directory


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory) -> pathlib.Path:
  """A byte-level BPE vocabulary (vocab.json, merges.txt) trained here on the demo corpus."""
  from tokenizers import ByteLevelBPETokenizer
  directory = tmp_path_factory.mktemp("bpe")
  trainer = ByteLevelBPETokenizer()
  trainer.train_from_iterator(CORPUS * 3, vocab_size=1200, min_frequency=1, show_progress=False,
                              special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
  trainer.save_model(str(directory))
  return directory


@pytest.fixture(scope="session")
def hf_bart_tokenizer(bpe_dir):
  """transformers' BART tokenizer built from the same vocab.json and merges.txt."""
  return upstream_tokenizer(bpe_dir)


def write_bart_checkpoint(directory: pathlib.Path, bpe_dir: pathlib.Path, *, seed: int = 0,
                          generation: dict | None = None, eos_bias: float = 0.0,
                          legacy: bool = False, **overrides) -> pathlib.Path:
  """Saves a random transformers BartForConditionalGeneration with its tokenizer
  (see save_tokenizer)."""
  import json
  import torch
  import transformers

  vocab_size = len(json.loads((bpe_dir / "vocab.json").read_text()))
  settings = dict(vocab_size=vocab_size, d_model=32, encoder_layers=2, decoder_layers=2,
                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37,
                  decoder_ffn_dim=37, max_position_embeddings=64)
  settings.update(overrides)
  torch.manual_seed(seed)
  model = transformers.BartForConditionalGeneration(transformers.BartConfig(**settings)).eval()
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(torch.randn_like(parameter) * 0.05)
    model.final_logits_bias[0, model.config.eos_token_id] += eos_bias   # rows end early
  for key, value in (generation or {}).items():
    setattr(model.generation_config, key, value)
  model.save_pretrained(str(directory))
  save_tokenizer(directory, bpe_dir, legacy=legacy)
  return directory


CNN_STYLE = dict(forced_bos_token_id=0, forced_eos_token_id=2, no_repeat_ngram_size=3,
                 min_length=6, max_length=24, num_beams=4, length_penalty=2.0,
                 early_stopping=True)


@pytest.fixture(scope="session")
def hf_bart_checkpoint(tmp_path_factory, bpe_dir) -> pathlib.Path:
  """A tiny BART with CNN-style generation settings in generation_config.json."""
  return write_bart_checkpoint(tmp_path_factory.mktemp("bart"), bpe_dir, generation=CNN_STYLE)
