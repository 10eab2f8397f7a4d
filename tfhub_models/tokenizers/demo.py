"""The embedded demo vocabularies: built from the multilingual text shipped in
`tfhub_models/data/demo_corpus.txt` (a SentencePiece model trained on it, a
WordPiece vocabulary of its words, the 256 bytes for BPE); no downloads.  Each
family's row (`loader.Family.demo_tokenizer`) makes its tokenizer from one."""

from __future__ import annotations

import collections
import functools
import io
import pathlib
import unicodedata

from tfhub_models.tokenizers.bpe import bytes_to_unicode

CORPUS = pathlib.Path(__file__).parent.parent / "data" / "demo_corpus.txt"

def corpus_lines() -> list:
  return [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_sentencepiece(lines, vocab_size: int, model_type: str = "unigram") -> bytes:
  """Trains a SentencePiece model on `lines` (deterministic: one thread)."""
  import sentencepiece

  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(list(lines)), model_writer=model, vocab_size=vocab_size,
      model_type=model_type, character_coverage=1.0, num_threads=1, minloglevel=2,
      hard_vocab_limit=False, seed_sentencepiece_size=100000, shuffle_input_sentence=False)
  return model.getvalue()


@functools.lru_cache(maxsize=1)
def demo_sentencepiece() -> bytes:
  """The embedded demo vocabulary (trained on first use, then cached)."""
  return train_sentencepiece(corpus_lines(), vocab_size=1000)


@functools.lru_cache(maxsize=1)
def demo_wordpiece_vocabulary() -> tuple:
  """An uncased WordPiece vocabulary built from the demo corpus, no trainer needed.

  The specials, every character of the normalized corpus alone and as a
  `##` continuation (so every corpus word can be spelled), then the corpus
  words by frequency.
  """
  words = collections.Counter()
  for line in corpus_lines():
    text = "".join(c for c in unicodedata.normalize("NFD", line.lower())
                   if unicodedata.category(c) != "Mn")
    for word in text.split():
      token = ""
      for c in word:  # punctuation stands alone, as the pre-tokenizer splits it
        if unicodedata.category(c).startswith("P") or (c.isascii() and not c.isalnum()):
          if token:
            words[token] += 1
          words[c] += 1
          token = ""
        else:
          token += c
      if token:
        words[token] += 1
  characters = sorted({c for word in words for c in word})
  vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  vocabulary += characters + ["##" + c for c in characters]
  vocabulary += [w for w, _ in sorted(words.items(), key=lambda x: (-x[1], x[0]))
                 if len(w) > 1]
  return tuple(dict.fromkeys(vocabulary))


def demo_bpe_vocabulary() -> tuple:
  """A byte-level BPE vocabulary with no merges: the specials and the 256 bytes.

  Every text tokenizes (one id per byte); enough to try BART exports with
  random weights.  Returns (vocabulary dict, merges list).
  """
  vocabulary = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
  for code in sorted(bytes_to_unicode().values()):
    vocabulary[chr(code)] = len(vocabulary)
  vocabulary["<mask>"] = len(vocabulary)
  return vocabulary, []
