"""tfhub_models: XLM-RoBERTa, ELECTRA and BART as text-in, text-out TF SavedModels."""

from tfhub_models import optimizers, training
from tfhub_models.generation import GenerationConfig, Sampler
from tfhub_models.models import load
from tfhub_models.models.bart import BartBackbone, BartConfig, BartSeq2SeqLM
from tfhub_models.models.electra import (ElectraBackbone, ElectraConfig, ElectraDiscriminator,
                                         ElectraEncoder, ElectraMaskedLM, ElectraTextClassifier,
                                         ElectraTokenClassifier)
from tfhub_models.models.xlm_roberta import (XLMRobertaBackbone, XLMRobertaConfig,
                                             XLMRobertaEncoder, XLMRobertaMaskedLM,
                                             XLMRobertaTextClassifier, XLMRobertaTokenClassifier)
from tfhub_models.preprocessing import BartPreprocessor, BertPreprocessor, XLMRobertaPreprocessor
from tfhub_models.tokenizers import ByteLevelBPETokenizer, WordPieceTokenizer, XLMRobertaTokenizer

__all__ = ["BartBackbone", "BartConfig", "BartSeq2SeqLM", "GenerationConfig", "Sampler",
           "ElectraBackbone", "ElectraConfig", "ElectraDiscriminator", "ElectraEncoder",
           "ElectraMaskedLM", "ElectraTextClassifier", "ElectraTokenClassifier",
           "XLMRobertaBackbone", "XLMRobertaConfig", "XLMRobertaEncoder",
           "XLMRobertaMaskedLM", "XLMRobertaTextClassifier", "XLMRobertaTokenClassifier",
           "BertPreprocessor", "WordPieceTokenizer",
           "XLMRobertaPreprocessor", "XLMRobertaTokenizer", "BartPreprocessor",
           "ByteLevelBPETokenizer", "load", "optimizers", "training"]
__version__ = "0.1.0"
