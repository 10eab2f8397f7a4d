"""In-graph tokenizers built only from core TensorFlow and tensorflow-text ops.

Strings in, ids out; every op here is one that the stock `tensorflow/serving`
image links, and the tokenizer models are graph constants, so they travel
inside the SavedModel.  One file per tokenizer; `text` holds what they share.
"""

from tfhub_models.tokenizers.bpe import ByteLevelBPETokenizer, bytes_to_unicode
from tfhub_models.tokenizers.sentencepiece import XLMRobertaTokenizer
from tfhub_models.tokenizers.wordpiece import WordPieceTokenizer

__all__ = ["ByteLevelBPETokenizer", "WordPieceTokenizer", "XLMRobertaTokenizer",
           "bytes_to_unicode"]
