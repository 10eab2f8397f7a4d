#!/usr/bin/env python
"""Fine-tunes a checkpoint on a text file and writes a preset for scripts/export.py.

  python scripts/finetune.py --checkpoint DIR --train FILE [--validation FILE] --output DIR
      [--epochs N] [--batch-size B] [--learning-rate LR] [--optimizer adamw|adam]
      [--weight-decay W] [--schedule constant|linear|cosine] [--warmup-steps S]
      [--clipnorm C] [--freeze-backbone] [--checkpoint-dir DIR] [--seed N] [--no-xla]

The task is the checkpoint's own:
  masked LM (XLM-RoBERTa, ELECTRA generator): FILE holds one text a line (blank
    lines are skipped); 15 % of the tokens are masked on the fly.
  seq2seq (BART): FILE is JSON Lines, {"source": "...", "target": "..."} a line.
The result is a Hugging Face checkpoint directory (config.json,
model.safetensors, tokenizer files) written atomically to --output; its path is
printed last.  With --checkpoint-dir the run saves its state every
--checkpoint-every steps and the same command resumes an interrupted run.
A loss that becomes NaN or infinite stops the run with exit status 1 and nothing
written to --output; --checkpoint-dir keeps the last state saved before it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfhub_models.cli import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, number  # noqa: E402

TASKS = {"fill_mask": "text lines", "generate": "JSON Lines with source and target"}
COUNT = number(int, "an integer >= 0", lambda v: v >= 0)


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--checkpoint", required=True,
                      help="checkpoint directory, hf://ORG/NAME or a preset name")
  parser.add_argument("--train", required=True, help="training data (see above)")
  parser.add_argument("--validation", help="validation data, same format, scored each epoch")
  parser.add_argument("--output", required=True, help="preset directory to write (new or empty)")
  parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
  parser.add_argument("--epochs", type=AT_LEAST_ONE, default=1)
  parser.add_argument("--batch-size", type=AT_LEAST_ONE, default=16)
  parser.add_argument("--sequence-length", type=AT_LEAST_ONE,
                      help="longest input in tokens, specials included (default: the model's)")
  parser.add_argument("--optimizer", choices=["adamw", "adam"], default="adamw")
  parser.add_argument("--learning-rate", type=POSITIVE, default=None,
                      help="peak learning rate (default: the task's upstream default, 5e-5 for "
                           "masked LM, 2e-5 for seq2seq)")
  parser.add_argument("--weight-decay", type=NON_NEGATIVE, default=0.01, help="AdamW only")
  parser.add_argument("--schedule", choices=["constant", "linear", "cosine"], default="linear",
                      help="learning rate after --warmup-steps of linear warmup: constant, "
                           "linear decay to 0 or cosine decay to 0 at the last step")
  parser.add_argument("--warmup-steps", type=COUNT, default=0)
  parser.add_argument("--clipnorm", type=POSITIVE, help="clip the global gradient norm to this")
  parser.add_argument("--freeze-backbone", action="store_true",
                      help="train the head only (backbone.trainable = False)")
  parser.add_argument("--checkpoint-dir", help="training state, for resuming")
  parser.add_argument("--checkpoint-every", type=AT_LEAST_ONE, default=100,
                      help="steps between saves")
  parser.add_argument("--seed", type=int, default=0, help="the batches' order")
  parser.add_argument("--no-xla", action="store_true", help="do not compile steps with XLA")
  parser.add_argument("--verbose", type=int, choices=[0, 1, 2], default=None,
                      help="0 silent, 1 progress bar, 2 a line per epoch (default: bar on a "
                           "terminal)")
  return parser.parse_args(argv)


def read_texts(path: str) -> list:
  """One text a line; blank lines skipped.  ValueError naming an unusable file."""
  try:
    with open(path, encoding="utf-8") as f:
      texts = [line.rstrip("\n") for line in f if line.strip()]
  except OSError as e:
    raise ValueError(f"{path}: {e.strerror}") from None
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text ({e})") from None
  if not texts:
    raise ValueError(f"{path}: no text lines")
  return texts


def read_pairs(path: str) -> dict:
  """JSON Lines {"source", "target"} -> {"encoder_text": [...], "decoder_text": [...]}."""
  sources, targets = [], []
  try:
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("source"), str) or not isinstance(
            row.get("target"), str):
          raise ValueError(f"{path}:{number}: each line must be an object with string "
                           "\"source\" and \"target\"")
        sources.append(row["source"])
        targets.append(row["target"])
  except OSError as e:
    raise ValueError(f"{path}: {e.strerror}") from None
  if not sources:
    raise ValueError(f"{path}: no JSON lines")
  return {"encoder_text": sources, "decoder_text": targets}


def build_optimizer(args, default_rate: float, total_steps: int):
  from tfhub_models import optimizers
  from tfhub_models.optimizers import schedules
  peak = args.learning_rate if args.learning_rate is not None else default_rate
  if args.schedule == "linear":
    rate = schedules.LinearWarmupDecay(peak, args.warmup_steps, total_steps)
  elif args.schedule == "cosine":
    rate = schedules.CosineWarmupDecay(peak, args.warmup_steps, total_steps)
  elif args.warmup_steps:
    # Warmup, then constant: a decay that ends far past the run.
    rate = schedules.LinearWarmupDecay(peak, args.warmup_steps, 2**62)
  else:
    rate = peak
  if args.optimizer == "adam":
    return optimizers.Adam(rate, global_clipnorm=args.clipnorm)
  return optimizers.AdamW(rate, weight_decay=args.weight_decay, global_clipnorm=args.clipnorm)


def main(argv=None) -> int:
  args = parse_args(argv)
  import tfhub_models
  from tfhub_models.checkpoints import CheckpointError
  from tfhub_models.training import TrainingError

  try:
    task = tfhub_models.load(args.checkpoint, sequence_length=args.sequence_length)
    kind = getattr(task, "task", None)
    if kind not in TASKS or not hasattr(task, "fit"):
      raise ValueError(f"{args.checkpoint} is a {type(task).__name__}; finetune.py trains masked "
                       "LMs (XLM-RoBERTa, ELECTRA generator) and BART")
    read = read_texts if kind == "fill_mask" else read_pairs
    train = read(args.train)
    validation = read(args.validation) if args.validation else None
    rows = len(train) if kind == "fill_mask" else len(train["encoder_text"])
    total_steps = args.epochs * math.ceil(rows / args.batch_size)
    if args.freeze_backbone:
      task.backbone.trainable = False
    task.compile(optimizer=build_optimizer(args, task.default_learning_rate, total_steps),
                 jit_compile=not args.no_xla)
    history = task.fit(train, batch_size=args.batch_size, epochs=args.epochs,
                       validation_data=validation, seed=args.seed,
                       checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every,
                       verbose="auto" if args.verbose is None else args.verbose)
    path = task.save_to_preset(args.output, overwrite=args.overwrite)
  except (CheckpointError, TrainingError, FileExistsError, ValueError, TypeError) as e:
    print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line
    return 1
  except OSError as e:
    print(f"error: {e.strerror or e}: {e.filename or args.output}", file=sys.stderr)
    return 1
  print(json.dumps({"history": history, "steps": total_steps}), file=sys.stderr)
  print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
