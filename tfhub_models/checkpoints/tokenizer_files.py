"""Which files a Hugging Face checkpoint's tokenizer is built from.

`transformers` 5 saves `tokenizer.json` and `tokenizer_config.json` alone;
older versions, and many Hub repositories, also (or only) have the legacy
files (`sentencepiece.bpe.model`, `vocab.json` + `merges.txt`, `vocab.txt`).
As `transformers` does, tokenizer.json wins when both are there; then the two
must hold the same vocabulary, or the checkpoint is refused naming both files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tfhub_models.checkpoints.sources import Checkpoint, CheckpointError
from tfhub_models.tokenizers import tokenizer_json


def build(checkpoint: Checkpoint, legacy: Sequence[str], *, from_json: Callable,
          from_legacy: Callable, vocabulary: Callable):
  """The in-graph tokenizer of a Hugging Face checkpoint directory.

  Args:
    legacy: the legacy file names (all needed).
    from_json: (tokenizer.json path, tokenizer_config dict) -> tokenizer.
    from_legacy: ([legacy paths], tokenizer_config dict) -> tokenizer.
    vocabulary: tokenizer -> a sequence comparing the two sources (tokens,
      scores, merges: whatever changes the ids).

  Returns:
    (tokenizer, the path it was built from, for messages).
  """
  has_json = checkpoint.exists(tokenizer_json.TOKENIZER_JSON)
  has_legacy = all(checkpoint.exists(name) for name in legacy)
  if not has_json and not has_legacy:
    raise CheckpointError(
        f"{checkpoint.directory}: no tokenizer files: neither {tokenizer_json.TOKENIZER_JSON} "
        f"(transformers 5) nor {' and '.join(legacy)} (the in-graph tokenizer is built from "
        "either)")
  settings = checkpoint.optional_json(tokenizer_json.TOKENIZER_CONFIG)
  json_path = checkpoint.path(tokenizer_json.TOKENIZER_JSON)
  legacy_paths = [checkpoint.path(name) for name in legacy]
  try:
    built = from_json(json_path, settings) if has_json else from_legacy(legacy_paths, settings)
    if not (has_json and has_legacy):
      return built, json_path if has_json else legacy_paths[0]
    old = from_legacy(legacy_paths, settings)
  except ValueError as e:
    raise CheckpointError(str(e)) from None
  difference = tokenizer_json.vocabulary_disagreement(vocabulary(old), vocabulary(built))
  if difference:
    raise CheckpointError(
        f"{' and '.join(map(str, legacy_paths))} and {json_path} disagree on the vocabulary "
        f"({difference}); remove the stale one (transformers reads {json_path.name})")
  return built, json_path

