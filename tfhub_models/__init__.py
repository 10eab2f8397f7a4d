"""tfhub_models: XLM-RoBERTa, ELECTRA and BART as text-in, text-out TF SavedModels."""

from tfhub_models.models.xlm_roberta import (XLMRobertaBackbone, XLMRobertaConfig,
                                             XLMRobertaMaskedLM)
from tfhub_models.tokenizers import XLMRobertaPreprocessor, XLMRobertaTokenizer

__all__ = ["XLMRobertaBackbone", "XLMRobertaConfig", "XLMRobertaMaskedLM",
           "XLMRobertaPreprocessor", "XLMRobertaTokenizer"]
__version__ = "0.1.0"
