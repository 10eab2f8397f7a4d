#!/usr/bin/env python
"""Exports a checkpoint as a versioned, text-in SavedModel for TF Serving.

  python scripts/export.py --checkpoint DIR|hf://ORG/NAME|kaggle://... --output BASE
      [--name NAME] [--version N] [--top-k K] [--sequence-length L] [--no-xla]
      [--task fill_mask|replaced_token_detection|text_classification|token_classification|embedding]
      [--pair] [--aggregation none|simple|first|average|max] [--format serving|hub]
  python scripts/export.py --preset xlm_roberta_base_multi --random-weights --output BASE

Writes BASE/NAME/VERSION atomically and prints its path.  With --format hub it
writes a TF Hub-style encoder and preprocessor instead (VERSION/encoder,
VERSION/preprocessor).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfhub_models.cli import AT_LEAST_ONE, FINITE, POSITIVE, number


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--checkpoint", help="checkpoint directory, hf://ORG/NAME or kaggle://HANDLE")
  source.add_argument("--preset", help="preset name (xlm_roberta_base_multi, ...)")
  parser.add_argument("--output", required=True, help="model base directory BASE")
  parser.add_argument("--name", help="model name (default: from the checkpoint)")
  parser.add_argument("--version", type=int, help="version number (default: next integer)")
  parser.add_argument("--top-k", type=int, default=None,
                      help="fill-mask: fillers per mask (default 5); BART: the k of top-k "
                           "(and top-p) sampling")
  parser.add_argument("--sequence-length", type=AT_LEAST_ONE,
                      help="longest input in tokens, specials included (default: the model's)")
  generation = parser.add_argument_group(
      "BART generation (defaults: the checkpoint's generation_config.json)")
  generation.add_argument("--sampler",
                          choices=["greedy", "random", "top_k", "top_p", "beam", "contrastive"])
  generation.add_argument("--alpha", type=number(float, "a number in [0, 1]",
                                                  lambda v: 0 <= v <= 1),
                          help="contrastive search's degeneration penalty")
  generation.add_argument("--num-beams", type=AT_LEAST_ONE)
  generation.add_argument("--max-new-tokens", type=AT_LEAST_ONE,
                          help="the most new tokens a request gets (default: the config's "
                               "max_length - 1); generate_with_options takes 1 to this")
  generation.add_argument("--max-no-repeat-ngram-size", type=int, default=4,
                          help="the largest no_repeat_ngram_size generate_with_options takes "
                               "(default 4)")
  generation.add_argument("--max-top-k", type=int, default=50,
                          help="the largest top_k generate_with_options takes (default 50)")
  generation.add_argument("--max-input-length", type=AT_LEAST_ONE,
                          help="encoder tokens, <s> and </s> included (truncated keeping </s>)")
  generation.add_argument("--top-p", type=number(float, "a number in (0, 1]",
                                                  lambda v: 0 < v <= 1))
  generation.add_argument("--temperature", type=POSITIVE)
  generation.add_argument("--length-penalty", type=FINITE)
  generation.add_argument("--num-return-sequences", type=AT_LEAST_ONE)
  generation.add_argument("--seed", type=int, default=None,
                          help="fixes serving_default's sampling seed: the same text always "
                               "gets the same output (default: a fresh seed per request row)")
  parser.add_argument("--task", choices=["fill_mask", "replaced_token_detection",
                                         "text_classification", "token_classification",
                                         "embedding"],
                      default=None, help="task to export (default: the checkpoint's own)")
  parser.add_argument("--aggregation", choices=["none", "simple", "first", "average", "max"],
                      default="simple",
                      help="token classification: how tokens become entities, as the "
                           "transformers pipeline's aggregation_strategy (default simple)")
  parser.add_argument("--normalize", action="store_true",
                      help="embedding exports: L2-normalize pooled_output and mean_output")
  parser.add_argument("--pair", action="store_true",
                      help="ELECTRA discriminator, text classification and embedding exports: "
                           "also take text_pair")
  parser.add_argument("--format", choices=["serving", "hub"], default="serving",
                      help="serving: signatures for TF Serving (default); hub: a TF Hub-style "
                           "encoder and preprocessor for fine-tuning")
  parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
  parser.add_argument("--no-xla", action="store_true",
                      help="do not compile with XLA (for servers started without "
                           "--xla_cpu_compilation_enabled / --xla_gpu_compilation_enabled)")
  parser.add_argument("--random-weights", action="store_true",
                      help="with --preset: random weights (no download)")
  parser.add_argument("--vocabulary",
                      help="with --random-weights: the SentencePiece model (XLM-RoBERTa) or "
                           "vocab.txt (ELECTRA) to use (default: a small embedded demo "
                           "vocabulary; vocabulary_size then follows it)")
  parser.add_argument("--warmup-batch-sizes", default="1,2,4,8",
                      help="batch sizes the warmup requests cover (default 1,2,4,8)")
  args = parser.parse_args(argv)
  if args.random_weights and not args.preset:
    parser.error("--random-weights needs --preset")
  if args.vocabulary and not args.random_weights:
    parser.error("--vocabulary is only used with --random-weights")
  if args.top_k is not None and args.top_k < 1:
    parser.error("--top-k must be at least 1")
  if args.max_no_repeat_ngram_size < 0 or args.max_top_k < 0:
    parser.error("--max-no-repeat-ngram-size and --max-top-k must not be negative")
  if args.max_input_length is not None:
    if args.sequence_length is not None and args.sequence_length != args.max_input_length:
      parser.error("--max-input-length and --sequence-length differ")
    args.sequence_length = args.max_input_length
  if args.version is not None and not 1 <= args.version <= 2 ** 63 - 1:
    parser.error("--version must be an integer from 1 to 2^63-1 (TF Serving reads versions "
                 "as int64)")
  try:
    args.warmup_batch_sizes = tuple(int(b) for b in args.warmup_batch_sizes.split(",") if b)
  except ValueError:
    parser.error("--warmup-batch-sizes must be integers separated by commas")
  if not args.warmup_batch_sizes or min(args.warmup_batch_sizes) < 1:
    parser.error("--warmup-batch-sizes must list positive integers")
  return args


def build_task(args):
  """(task module, model name) of the command line's checkpoint or preset."""
  from tfhub_models import demo, models
  from tfhub_models.checkpoints import CheckpointError

  # --format hub exports the encoder: any checkpoint's backbone will do.
  task = "embedding" if args.format == "hub" and args.task is None else args.task
  if args.checkpoint:
    model = models.load(args.checkpoint, task, dtype=args.dtype,
                        sequence_length=args.sequence_length)
    if task is None and getattr(model, "task", None) is None:
      raise CheckpointError(
          f"{args.checkpoint}: a bare {type(model).__name__} checkpoint (no task head, e.g. "
          "XLMRobertaModel): pass --task embedding to export sentence embeddings "
          "(pooled_output, mean_output)")
    name = args.name or os.path.basename(os.path.normpath(args.checkpoint.split("://")[-1]))
    return model, name
  if args.preset not in models.PRESETS:
    raise CheckpointError(f"unknown preset {args.preset!r}; known: "
                          f"{', '.join(sorted(models.PRESETS))}")
  if not args.random_weights:
    return (models.load(args.preset, task, dtype=args.dtype,
                        sequence_length=args.sequence_length), args.name or args.preset)
  family = models.family_of(args.preset)
  if task is not None and task not in family.tasks:
    raise CheckpointError(f"{family.name} has no {task} task")
  if args.vocabulary and not os.path.isfile(args.vocabulary):
    raise CheckpointError(f"--vocabulary: No such file: {args.vocabulary}")
  try:
    model = demo.random_model(args.preset, task, vocabulary_file=args.vocabulary,
                              dtype=args.dtype, sequence_length=args.sequence_length)
  except Exception as e:  # a vocabulary file the tokenizer ops reject
    if not args.vocabulary:
      raise
    reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
    raise CheckpointError(
        f"--vocabulary {args.vocabulary}: not a usable vocabulary ({reason[:200]})") from None
  return model, args.name or args.preset


def configure_generation(task, args) -> None:
  """BART: the checkpoint's generation settings, overridden by the flags."""
  from tfhub_models import generation

  flags = [args.sampler, args.num_beams, args.max_new_tokens, args.top_p, args.temperature,
           args.length_penalty, args.num_return_sequences, args.alpha, args.seed]
  if getattr(task, "task", None) != "generate":
    if any(f is not None for f in flags):
      raise ValueError("generation flags (--sampler, --num-beams, ...) are for BART")
    return
  sampler = generation.choose_sampler(
      task.backbone.config.generation, args.sampler, num_beams=args.num_beams, k=args.top_k,
      p=args.top_p, temperature=args.temperature, length_penalty=args.length_penalty,
      num_return_sequences=args.num_return_sequences, alpha=args.alpha)
  task.compile(sampler=sampler, jit_compile=not args.no_xla)


def main(argv=None) -> int:
  args = parse_args(argv)
  _say_what_is_cleaned()
  from tfhub_models import export, hub
  from tfhub_models.checkpoints import CheckpointError

  try:
    task, name = build_task(args)
    configure_generation(task, args)
    options = export.ExportOptions(top_k=args.top_k or 5, jit_compile=not args.no_xla,
                                   warmup_batch_sizes=args.warmup_batch_sizes, pair=args.pair,
                                   max_new_tokens=args.max_new_tokens, seed=args.seed,
                                   max_no_repeat_ngram_size=args.max_no_repeat_ngram_size,
                                   max_top_k=args.max_top_k,
                                   normalize=args.normalize, aggregation=args.aggregation)
    if args.format == "hub":
      path = hub.export_hub(task, args.output, name, args.version)
    else:
      path = export.export(task, args.output, name, args.version, options)
  except (CheckpointError, FileExistsError, ValueError, TypeError) as e:
    print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line
    return 1
  except OSError as e:
    print(f"error: {e.strerror or e}: {e.filename or args.output}", file=sys.stderr)
    return 1
  print(path)
  return 0


def _say_what_is_cleaned() -> None:
  """The export's warnings (staging directories of interrupted exports it removed)
  go to stderr, one line each."""
  logger = logging.getLogger("tfhub_models.export")
  if not any(getattr(h, "_export_cli", False) for h in logger.handlers):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("export: %(message)s"))
    handler._export_cli = True
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


if __name__ == "__main__":
  sys.exit(main())
