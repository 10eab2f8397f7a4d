"""tfhub_models: XLM-RoBERTa, ELECTRA and BART as text-in, text-out TF SavedModels."""

from tfhub_models.generation import Sampler
from tfhub_models.models.bart import BartBackbone, BartConfig
from tfhub_models.models.bart_generation import BartSeq2SeqLM
from tfhub_models.models.electra import (ElectraBackbone, ElectraConfig, ElectraDiscriminator,
                                         ElectraEncoder, ElectraMaskedLM)
from tfhub_models.models.xlm_roberta import (XLMRobertaBackbone, XLMRobertaConfig,
                                             XLMRobertaEncoder, XLMRobertaMaskedLM)
from tfhub_models.tokenizers import (BartPreprocessor, BertPreprocessor, ByteLevelBPETokenizer,
                                     WordPieceTokenizer, XLMRobertaPreprocessor,
                                     XLMRobertaTokenizer)

__all__ = ["BartBackbone", "BartConfig", "BartSeq2SeqLM", "Sampler", "ElectraBackbone", "ElectraConfig", "ElectraDiscriminator", "ElectraEncoder",
           "ElectraMaskedLM", "XLMRobertaBackbone", "XLMRobertaConfig", "XLMRobertaEncoder",
           "XLMRobertaMaskedLM", "BertPreprocessor", "WordPieceTokenizer",
           "XLMRobertaPreprocessor", "XLMRobertaTokenizer", "BartPreprocessor",
           "ByteLevelBPETokenizer"]
__version__ = "0.1.0"
