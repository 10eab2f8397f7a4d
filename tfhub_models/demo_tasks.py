"""Demo models that answer correctly: tiny models trained here, from scratch,
on two synthetic tasks whose right answers anyone can check at a glance.

  arithmetic   an XLM-RoBERTa masked LM that knows its sums, in English and
               German: "three plus four is <mask>." -> "seven",
               "zwei plus <mask> ist fünf." -> "drei".  Every (A, B) with A, B
               in 0..9, any one of A, B or the sum masked.
  reverse      a BART that reverses the order of 3 to 8 words drawn from
               `data/demo_words.txt`: "red fox jumps" -> "jumps fox red".

Each is trained with the training API (`compile`, `fit` on raw strings:
dynamic masking for the first, teacher forcing for the second) on a
vocabulary trained on the task's own text, then written with
`save_to_preset` as a Hugging Face checkpoint directory.  Fixed seeds; about
a minute each on two CPU cores.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Callable

import numpy as np

from tfhub_models import atomic

ENGLISH = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
           "fourteen fifteen sixteen seventeen eighteen").split()
GERMAN = ("null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn "
          "vierzehn fünfzehn sechzehn siebzehn achtzehn").split()
# language -> (number words 0..18, the verb of "A plus B <verb> C.")
LANGUAGES = {"en": (tuple(ENGLISH), "is"), "de": (tuple(GERMAN), "ist")}
SLOTS = ("A", "B", "C")   # which number of "A plus B is C." a question masks

WORDS_FILE = pathlib.Path(__file__).parent / "data" / "demo_words.txt"
MIN_WORDS, MAX_WORDS = 3, 8   # words per reverse example


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How one demo model is trained: sizes, steps, batch, peak learning rate."""
  steps: int
  batch_size: int
  learning_rate: float
  hidden_dim: int = 64
  num_layers: int = 2
  num_heads: int = 4
  intermediate_dim: int = 128
  max_sequence_length: int = 32


ARITHMETIC = Recipe(steps=2000, batch_size=32, learning_rate=3e-3)
REVERSE = Recipe(steps=1500, batch_size=64, learning_rate=2e-3)
EPOCHS = 10   # each run is cut into this many epochs (one progress line each)


# --- the tasks' text ---------------------------------------------------------------

def arithmetic_words(a: int, b: int, language: str) -> list:
  """The five words of "A plus B is C" (without the period)."""
  numbers, verb = LANGUAGES[language]
  return [numbers[a], "plus", numbers[b], verb, numbers[a + b]]


def arithmetic_sentences() -> list:
  """Every training sentence: each sum in both languages, ending "C." as the task
  is written and "C ." as a request ending "<mask>." tokenizes (text after a
  special token starts a new piece, so its period is a word-initial "▁.")."""
  lines = []
  for language in LANGUAGES:
    for a, b in itertools.product(range(10), range(10)):
      sentence = " ".join(arithmetic_words(a, b, language))
      lines += [sentence + ".", sentence + " ."]
  return lines


def arithmetic_questions() -> list:
  """Every question with its answer: (text with one <mask>, the missing word), for
  each (A, B, masked slot, language): 10 * 10 * 3 * 2 = 600."""
  questions = []
  for language in LANGUAGES:
    for a, b in itertools.product(range(10), range(10)):
      words = arithmetic_words(a, b, language)
      for position in (0, 2, 4):
        masked = list(words)
        masked[position] = "<mask>"
        questions.append((" ".join(masked) + ".", words[position]))
  return questions


def demo_words() -> tuple:
  """The reverse task's word list (one lowercase word a line)."""
  words = tuple(w for w in WORDS_FILE.read_text(encoding="utf-8").split())
  if len(words) < 50 or len(set(words)) != len(words):
    raise ValueError(f"{WORDS_FILE} must list at least 50 distinct words")
  return words


def reverse_examples(count: int, seed: int) -> tuple:
  """(inputs, targets): `count` lines of MIN_WORDS..MAX_WORDS words drawn
  independently (repeats allowed), and the same words in reverse order."""
  words = demo_words()
  rng = np.random.default_rng(seed)
  inputs = [" ".join(rng.choice(words, int(rng.integers(MIN_WORDS, MAX_WORDS + 1))))
            for _ in range(count)]
  return inputs, [reverse(text) for text in inputs]


def reverse(text: str) -> str:
  return " ".join(text.split()[::-1])


# --- vocabularies trained on the tasks' text ---------------------------------------------

def _check_single(tokenize: Callable, words, what: str) -> None:
  split = [w for w in words if tokenize(w) != 1]
  if split:
    raise RuntimeError(f"the {what} vocabulary splits {split}: each must be one token")


def arithmetic_tokenizer():
  """A SentencePiece (unigram) vocabulary trained on the arithmetic sentences and
  their words, with every number word (and "plus", "is", "ist") a single piece,
  so one <mask> fills one word."""
  import sentencepiece

  from tfhub_models import demo
  from tfhub_models.tokenizers import XLMRobertaTokenizer

  words = sorted({w for numbers, verb in LANGUAGES.values() for w in (*numbers, verb)}) + ["plus"]
  # The words alone too: without them the trainer keeps "plus" and "ist" as
  # several pieces.
  proto = demo.train_sentencepiece(arithmetic_sentences() + words + ["."], vocab_size=80)
  pieces = sentencepiece.SentencePieceProcessor(model_proto=proto)
  _check_single(lambda w: len(pieces.encode(w)), words, "arithmetic")
  return XLMRobertaTokenizer(proto)


def reverse_tokenizer(lines, directory: str):
  """A byte-level BPE vocabulary trained (by the `tokenizers` library) on `lines`
  and the word list, every word one token at the start of a text and after a
  space; vocab.json and merges.txt are written to `directory`."""
  from tokenizers import ByteLevelBPETokenizer as Trainer

  from tfhub_models.tokenizers import ByteLevelBPETokenizer

  words = demo_words()
  trainer = Trainer()
  trainer.train_from_iterator(list(lines) + list(words) + [" ".join(words)], vocab_size=1000,
                              min_frequency=1, show_progress=False,
                              special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
  for form in (lambda w: w, lambda w: " " + w):
    _check_single(lambda w, form=form: len(trainer.encode(form(w)).ids), words, "reverse")
  trainer.save_model(directory)
  return ByteLevelBPETokenizer.from_files(os.path.join(directory, "vocab.json"),
                                          os.path.join(directory, "merges.txt"))


# --- training --------------------------------------------------------------------------

def _optimizer(recipe: Recipe, steps: int):
  from tfhub_models import optimizers
  schedule = optimizers.schedules.LinearWarmupDecay(recipe.learning_rate, max(1, steps // 10),
                                                    steps)
  return optimizers.AdamW(schedule, weight_decay=0.01)


def train_arithmetic(directory, *, seed: int = 0, recipe: Recipe = ARITHMETIC,
                     verbose="auto") -> tuple:
  """Trains the arithmetic masked LM and writes it to `directory` (a Hugging
  Face XLMRobertaForMaskedLM directory).  Returns (path, history)."""
  import tensorflow as tf

  from tfhub_models import XLMRobertaBackbone, XLMRobertaMaskedLM, XLMRobertaPreprocessor
  from tfhub_models.preprocessing import MaskedLMMasker

  tf.random.set_seed(seed)   # initial weights and the masker's draws
  tokenizer = arithmetic_tokenizer()
  r = recipe
  backbone = XLMRobertaBackbone(vocabulary_size=tokenizer.vocabulary_size, num_layers=r.num_layers,
                                num_heads=r.num_heads, hidden_dim=r.hidden_dim,
                                intermediate_dim=r.intermediate_dim, dropout=0.0,
                                max_sequence_length=r.max_sequence_length)
  task = XLMRobertaMaskedLM(backbone, XLMRobertaPreprocessor(tokenizer, r.max_sequence_length))
  # One masked token per sentence: two masked numbers would make a sum ambiguous.
  masker = task.masker
  task.masker = MaskedLMMasker(masker.vocabulary_size, masker.mask_token_id,
                               masker.unselectable_ids, mask_selection_length=1)
  sentences = arithmetic_sentences()
  per_epoch = max(1, r.steps * r.batch_size // (EPOCHS * len(sentences)))
  data = sentences * per_epoch
  steps = EPOCHS * (len(data) // r.batch_size)
  task.compile(optimizer=_optimizer(r, steps))
  history = task.fit(data, batch_size=r.batch_size, epochs=EPOCHS, seed=seed, verbose=verbose)
  return task.save_to_preset(directory), history


def train_reverse(directory, *, seed: int = 0, recipe: Recipe = REVERSE,
                  verbose="auto") -> tuple:
  """Trains the word-reversing BART and writes it to `directory` (a Hugging Face
  BartForConditionalGeneration directory whose generation_config.json decodes
  greedily with room for MAX_WORDS words and the end token).  Returns (path,
  history)."""
  import tensorflow as tf

  from tfhub_models import (BartBackbone, BartConfig, BartPreprocessor, BartSeq2SeqLM,
                            GenerationConfig)

  tf.random.set_seed(seed)
  r = recipe
  inputs, targets = reverse_examples(r.steps * r.batch_size // EPOCHS, seed)
  with tempfile.TemporaryDirectory() as scratch:
    tokenizer = reverse_tokenizer(inputs[:5000], scratch)
  # decoder start, <s> (forced), one token a word, </s>
  generation = GenerationConfig(max_length=MAX_WORDS + 3, forced_bos_token_id=0,
                                no_repeat_ngram_size=0, num_beams=1, do_sample=False)
  config = BartConfig(vocabulary_size=tokenizer.vocabulary_size, num_layers=r.num_layers,
                      num_heads=r.num_heads, hidden_dim=r.hidden_dim,
                      intermediate_dim=r.intermediate_dim, dropout=0.0,
                      max_sequence_length=r.max_sequence_length, generation=generation)
  task = BartSeq2SeqLM(BartBackbone(config), BartPreprocessor(tokenizer, r.max_sequence_length))
  steps = EPOCHS * (len(inputs) // r.batch_size)
  task.compile(optimizer=_optimizer(r, steps), sampler="greedy")
  history = task.fit({"encoder_text": inputs, "decoder_text": targets}, batch_size=r.batch_size,
                     epochs=EPOCHS, seed=seed, verbose=verbose)
  return task.save_to_preset(directory), history


DEMOS = {"arithmetic": train_arithmetic, "reverse": train_reverse}


def train_demos(output, *, seed: int = 0, scale: float = 1.0, verbose="auto",
                log: Callable = print) -> dict:
  """Trains both demo models into output/arithmetic and output/reverse (output
  new or empty).  scale < 1 trains with that share of the steps (quicker, and
  less sure to be right).  Returns {name: path}."""
  output = pathlib.Path(output)
  if output.exists() and (not output.is_dir() or any(output.iterdir())):
    raise FileExistsError(f"{output} is not an empty directory")
  if not 0 < scale <= 1:
    raise ValueError(f"scale must be in (0, 1], got {scale}")
  recipes = {"arithmetic": ARITHMETIC, "reverse": REVERSE}
  paths = {}
  for name, train in DEMOS.items():
    recipe = recipes[name]
    recipe = dataclasses.replace(recipe, steps=max(EPOCHS, int(recipe.steps * scale)))
    started = time.perf_counter()
    path, history = train(output / name, seed=seed, recipe=recipe, verbose=verbose)
    log(f"{name}: {recipe.steps} steps in {time.perf_counter() - started:.0f} s, final loss "
        f"{history['loss'][-1]:.3f}, accuracy {history['accuracy'][-1]:.3f}")
    paths[name] = str(path)
  return paths


def cache_key(seed: int) -> str:
  """The cache folder name of models trained by this recipe with `seed`: a new
  recipe (any change to this file) trains anew."""
  import hashlib
  digest = hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest()[:12]
  return f"seed-{seed}-{digest}"


def default_cache() -> pathlib.Path:
  """$XDG_CACHE_HOME/tfhub-models/demo (default ~/.cache/tfhub-models/demo)."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(root) / "tfhub-models" / "demo"


def cached_demos(cache, *, seed: int = 0, log: Callable = print) -> dict:
  """{name: checkpoint path} of the demo models in `cache`, trained first when
  missing.  Training writes a hidden sibling and renames it into place, so an
  interrupted run leaves no half-trained models behind."""
  cache = pathlib.Path(cache)
  final = cache / cache_key(seed)
  paths = {name: final / name for name in DEMOS}
  if all((p / "config.json").is_file() for p in paths.values()):
    log(f"using the demo models in {final}")
    return {name: str(p) for name, p in paths.items()}
  cache.mkdir(parents=True, exist_ok=True)
  log(f"training the demo models into {final} (once; about two minutes on two cores)")
  # (a run killed while training leaves its scratch folder; the next one removes it)
  with atomic.staging_directory(cache, ".training-") as scratch:
    try:
      train_demos(scratch / "models", seed=seed, verbose=0, log=log)
      if final.exists() and not all((p / "config.json").is_file() for p in paths.values()):
        shutil.rmtree(final)   # an incomplete folder (a model deleted by hand): replaced
      try:
        os.rename(scratch / "models", final)
      except OSError:   # another run finished first: use its models
        if not all((p / "config.json").is_file() for p in paths.values()):
          raise
    finally:
      shutil.rmtree(scratch, ignore_errors=True)
  return {name: str(p) for name, p in paths.items()}
