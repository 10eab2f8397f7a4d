#!/usr/bin/env python
"""Fine-tunes a checkpoint on a labelled file and writes a preset for scripts/export.py.

  python scripts/finetune.py --checkpoint DIR --train FILE [--validation FILE] --output DIR
      [--task masked_lm|seq2seq|text_classification|token_classification] [--labels L1,L2,...]
      [--epochs N] [--batch-size B] [--learning-rate LR] [--optimizer adamw|adam]
      [--weight-decay W] [--schedule constant|linear|cosine] [--warmup-steps S]
      [--clipnorm C] [--freeze-backbone] [--checkpoint-dir DIR] [--seed N] [--no-xla]

The task (default: the checkpoint's own) and what FILE holds:
  masked_lm (XLM-RoBERTa, ELECTRA): one text a line (blank lines are skipped);
    15 % of the tokens are masked on the fly.
  seq2seq (BART): JSON Lines, {"source": "...", "target": "..."} a line.
  text_classification (XLM-RoBERTa, ELECTRA): CSV with a header, or JSON Lines
    (.jsonl), with `text`, optional `text_pair` and `label` (a name, or an id
    into --labels; --text-column, --pair-column, --label-column rename them);
    multi-label rows hold a list (JSON) or names joined by ";" (CSV) with
    --problem-type multi_label_classification; --problem-type regression takes
    numbers.
  token_classification (XLM-RoBERTa, ELECTRA): JSON Lines {"tokens": [words],
    "tags": [a tag per word]} ("ner_tags" too); each word's tag goes to its
    first sub-token (--label-all-tokens: to every one).
A classifier or tagger is fine-tuned from a checkpoint with its head (kept, or
a new one with --fresh-head) or from a backbone or masked LM (a new head of
len(labels) classes).  The class order is --labels, else the head's labels,
else the sorted labels of the training file (printed).  With --validation,
every epoch is scored (accuracy and macro F1 for classification; entity
precision, recall and F1, seqeval's IOB2 definition, and token accuracy for
tagging) and the best epoch's figures are written to --output as
eval_results.json.

Everything that can be checked is checked before the first step: the flags,
--output (new or empty, or --overwrite), the files (an error names the file,
the line and the value), every label, the checkpoint and the task.  The
result is a Hugging Face checkpoint directory written atomically to --output;
its path is printed last.  With --checkpoint-dir the run saves its state every
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

from tfhub_models.cli import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, number

# Command-line task -> the library's task name.
TASKS = {"masked_lm": "fill_mask", "seq2seq": "generate",
         "text_classification": "text_classification",
         "token_classification": "token_classification"}
CLASSIFIERS = ("text_classification", "token_classification")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
COUNT = number(int, "an integer >= 0", lambda v: v >= 0)
# What each history figure is called in eval_results.json, and which picks the best epoch.
BEST_BY = ("val_f1", "val_f1_macro", "val_accuracy")


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--checkpoint", required=True,
                      help="checkpoint directory, hf://ORG/NAME or a preset name")
  parser.add_argument("--train", required=True, help="training data (see above)")
  parser.add_argument("--validation", help="validation data, same format, scored each epoch")
  parser.add_argument("--output", required=True, help="preset directory to write (new or empty)")
  parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
  parser.add_argument("--task", choices=sorted(TASKS),
                      help="what to train (default: the checkpoint's own task)")
  parser.add_argument("--labels", help="classifiers: the class names, in order, comma-separated")
  parser.add_argument("--problem-type", choices=PROBLEM_TYPES, default=None,
                      help="text classification (default: the checkpoint's, else single-label)")
  parser.add_argument("--fresh-head", action="store_true",
                      help="classifiers: a new head even when the checkpoint has one")
  parser.add_argument("--text-column", default="text")
  parser.add_argument("--pair-column", default="text_pair")
  parser.add_argument("--label-column", default="label")
  parser.add_argument("--label-all-tokens", action="store_true",
                      help="tagging: every sub-token of a word gets its tag (default: the first)")
  parser.add_argument("--epochs", type=AT_LEAST_ONE, default=1)
  parser.add_argument("--batch-size", type=AT_LEAST_ONE, default=16)
  parser.add_argument("--sequence-length", type=AT_LEAST_ONE,
                      help="longest input in tokens, specials included (default: the model's)")
  parser.add_argument("--optimizer", choices=["adamw", "adam"], default="adamw")
  parser.add_argument("--learning-rate", type=POSITIVE, default=None,
                      help="peak learning rate (default: the task's upstream default, 5e-5 for "
                           "masked LM and classifiers, 2e-5 for seq2seq)")
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
  args = parser.parse_args(argv)
  if args.labels is not None:
    from tfhub_models import labelled
    try:
      args.labels = labelled.parse_label_list(args.labels)
    except ValueError as e:
      parser.error(f"argument --labels: {e}")
  return args


def check_output(path: str, overwrite: bool) -> None:
  """--output must be new or empty, or --overwrite given: checked before training."""
  if os.path.isdir(path) and os.listdir(path) and not overwrite:
    raise ValueError(f"--output {path} exists and is not empty; pass --overwrite to replace it")
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"--output {path} is a file, not a directory")


def build_optimizer(args, default_rate: float, total_steps: int):
  from tfhub_models import optimizers
  from tfhub_models.optimizers import schedules
  peak = args.learning_rate if args.learning_rate is not None else default_rate
  if args.warmup_steps > total_steps:
    raise ValueError(f"--warmup-steps {args.warmup_steps} is more than the run's "
                     f"{total_steps} steps")
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


class Plan:
  """What a run trains: the task module, the data fit takes, and what is reported."""

  def __init__(self, task, train, validation, rows: int, note: str = ""):
    self.task, self.train, self.validation, self.rows, self.note = (task, train, validation,
                                                                    rows, note)


def plan_language_model(args, task) -> Plan:
  from tfhub_models import labelled
  read = labelled.read_texts if task.task == "fill_mask" else labelled.read_pairs
  train = read(args.train)
  validation = read(args.validation) if args.validation else None
  rows = len(train) if task.task == "fill_mask" else len(train["encoder_text"])
  return Plan(task, (train, None), None if validation is None else (validation, None), rows)


def plan_classifier(args, kind: str, own) -> Plan:
  """A classifier or tagger: files read and labels checked before the model is built.

  own: the checkpoint described (loader.describe): its task and a head's labels.
  """
  from tfhub_models import labelled, models
  from tfhub_models.checkpoints import loader
  from tfhub_models.classification import head_options
  from tfhub_models.entities import check_scheme

  tagged = kind == "token_classification"
  flags = {"text": "--text-column", "label": "--label-column"}
  if tagged:
    read = labelled.read_token_classification
  else:
    def read(path):
      return labelled.read_text_classification(
          path, text_column=args.text_column, pair_column=args.pair_column,
          label_column=args.label_column,
          problem_type=args.problem_type or "single_label_classification", flag_of=flags)
  train = read(args.train)
  validation = read(args.validation) if args.validation else None
  # The checkpoint's own head (when it has one and it is kept): its labels and problem type.
  keeps_head = own.task == kind and not args.fresh_head
  head = own.options if keeps_head else {}
  head_labels = tuple(head.get("labels") or [f"LABEL_{i}" for i in range(
      head.get("num_classes", 0))]) if keeps_head else None
  problem_type = (args.problem_type or head.get("problem_type")
                  or "single_label_classification")
  if keeps_head and args.labels is not None and tuple(args.labels) != head_labels:
    raise ValueError(f"--labels {','.join(args.labels)} differ from the labels of the "
                     f"checkpoint's head ({','.join(head_labels)}): give those, in that order, "
                     "or pass --fresh-head for a new head")
  if not tagged and problem_type == "regression":
    order = list(args.labels or head_labels or ["LABEL_0"])
  else:
    order = labelled.label_order(args.labels, head_labels,
                                 [train] + ([validation] if validation else []), tagged=tagged)
  encoded = [labelled.encode_labels(data, order, problem_type, tagged=tagged)
             for data in [train] + ([validation] if validation else [])]
  if tagged and validation is not None:
    try:
      check_scheme(order, "simple")   # entity metrics read IOB2 tags
    except ValueError:
      raise ValueError(f"entity metrics (asked by --validation) read IOB2 tags ('O', 'B-X', "
                       f"'I-X'), but the labels are {', '.join(order)}") from None
  note = "" if args.labels or head_labels else f"labels (sorted): {','.join(order)}"
  options = head_options(None if keeps_head else len(order), order,
                         None if tagged else problem_type)
  task = loader.load(args.checkpoint, models.FAMILIES, task=kind,
                     sequence_length=args.sequence_length, options=options)
  if tagged:
    task.label_all_tokens = args.label_all_tokens

  def data(examples: labelled.Examples, labels):
    x = examples.inputs if examples.pairs is None else (examples.inputs, examples.pairs)
    return x, labels

  return Plan(task, data(train, encoded[0]),
              data(validation, encoded[1]) if validation else None, len(train.inputs), note)


def best_epoch(history: dict) -> dict:
  """The validation figures of the best epoch (the highest F1, macro F1 or
  accuracy, else the lowest loss), named as transformers' eval_results.json."""
  key = next((k for k in BEST_BY if history.get(k)), None)
  values = history[key] if key else history["val_loss"]
  best = (max if key else min)(range(len(values)), key=values.__getitem__)
  figures = {f"eval_{k[len('val_'):]}": v[best] for k, v in history.items()
             if k.startswith("val_") and len(v) > best}
  return {"epoch": best + 1, **figures}


def main(argv=None) -> int:
  args = parse_args(argv)
  from tfhub_models import atomic, models
  from tfhub_models.checkpoints import CheckpointError, loader
  from tfhub_models.training import TrainingError

  try:
    check_output(args.output, args.overwrite)
    own = loader.describe(args.checkpoint, models.FAMILIES)
    kind = TASKS[args.task] if args.task else own.task
    if kind in CLASSIFIERS:
      plan = plan_classifier(args, kind, own)
    else:
      if args.labels is not None or args.fresh_head:
        raise ValueError("--labels and --fresh-head are for text_classification and "
                         "token_classification")
      if kind not in ("fill_mask", "generate"):
        raise ValueError(f"{args.checkpoint} is a bare model (its task: {kind}): pass --task "
                         f"({', '.join(sorted(TASKS))})")
      task = models.load(args.checkpoint, kind, sequence_length=args.sequence_length)
      plan = plan_language_model(args, task)
    if plan.note:
      print(plan.note, file=sys.stderr)
    task = plan.task
    total_steps = args.epochs * math.ceil(plan.rows / args.batch_size)
    if args.freeze_backbone:
      task.backbone.trainable = False
    task.compile(optimizer=build_optimizer(args, task.default_learning_rate, total_steps),
                 jit_compile=not args.no_xla)
    history = task.fit(plan.train[0], plan.train[1], batch_size=args.batch_size,
                       epochs=args.epochs, validation_data=plan.validation, seed=args.seed,
                       checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every,
                       verbose="auto" if args.verbose is None else args.verbose)
    path = task.save_to_preset(args.output, overwrite=args.overwrite)
    if plan.validation is not None:
      atomic.write_json(os.path.join(path, "eval_results.json"), best_epoch(history))
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
