"""tfhub_models: XLM-RoBERTa, ELECTRA and BART as text-in, text-out TF SavedModels."""

from tfhub_models.models.electra import (ElectraBackbone, ElectraConfig, ElectraDiscriminator,
                                         ElectraEncoder, ElectraMaskedLM)
from tfhub_models.models.xlm_roberta import (XLMRobertaBackbone, XLMRobertaConfig,
                                             XLMRobertaEncoder, XLMRobertaMaskedLM)
from tfhub_models.tokenizers import (BertPreprocessor, WordPieceTokenizer,
                                     XLMRobertaPreprocessor, XLMRobertaTokenizer)

__all__ = ["ElectraBackbone", "ElectraConfig", "ElectraDiscriminator", "ElectraEncoder",
           "ElectraMaskedLM", "XLMRobertaBackbone", "XLMRobertaConfig", "XLMRobertaEncoder",
           "XLMRobertaMaskedLM", "BertPreprocessor", "WordPieceTokenizer",
           "XLMRobertaPreprocessor", "XLMRobertaTokenizer"]
__version__ = "0.1.0"
