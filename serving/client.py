"""A small typed client over the stock `tensorflow_serving.apis` stubs.

  with ServingClient("127.0.0.1:8500", "xlm_roberta") as client:
    client.fill_mask(["The capital of France is <mask>."])   # [text][mask][rank] Filler
    client.generate(["A long article ..."])                   # one string per text
    client.generate(["..."], max_new_tokens=20, temperature=0.7, seed=3)   # per request
    client.predict({"text": np.array([b"..."], dtype=object)}, signature="tokenize")

Works unchanged against TF Serving and `serving.server`.  Every call has a
deadline (`timeout` seconds, retries included); UNAVAILABLE, and only that, is
retried with exponential back-off, since it is the one code that says "try
again" (a full batching queue, a server starting or swapping); every other
error is the request's own and comes back as the `grpc.RpcError` it is.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Mapping, Sequence

import grpc
import numpy as np
from tensorflow import make_ndarray
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from serving import contract
from serving.tensors import to_proto

# generate_with_options' settings, each one value per text, and their dtypes.
GENERATION_OPTIONS = {name: np.dtype(dtype) for name, dtype in contract.GENERATION_OPTIONS}

# Generation answers (several sequences of ids and text per input) outgrow
# gRPC's 4 MB default; TF Serving itself accepts up to 2 GB.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def _to_proto(value):
  """A TensorProto with typed value fields, as TF Serving's own clients send."""
  return to_proto(np.asarray(value))


def _from_proto(proto):
  return make_ndarray(proto)


def _texts(texts: Sequence[str] | str) -> np.ndarray:
  if isinstance(texts, str):
    raise TypeError("pass a list of texts, not one string")
  return np.array([t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in texts],
                  dtype=object)


@dataclasses.dataclass(frozen=True)
class Filler:
  """One candidate for a mask."""
  token: str
  token_id: int
  score: float


@dataclasses.dataclass(frozen=True)
class TokenScore:
  """One token of a replaced-token detection answer."""
  token: str
  token_id: int
  replaced_probability: float


@dataclasses.dataclass(frozen=True)
class Embedding:
  """One text's embedding: `pooled` [D], `sequence` [tokens, D] (padding removed)
  and `mean` [D], the mean over its tokens (None from exports without mean_output)."""
  pooled: np.ndarray
  sequence: np.ndarray
  mean: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Label:
  """One class of a text-classification answer (the pipeline's {"label", "score"})."""
  label: str
  score: float


@dataclasses.dataclass(frozen=True)
class Entity:
  """One entity of a token-classification answer (the pipeline's {"entity_group",
  "score", "word", "start", "end"}); `text[start:end]` is what it covers."""
  entity_group: str
  score: float
  word: str
  start: int
  end: int


@dataclasses.dataclass(frozen=True)
class Generation:
  """One generated sequence."""
  text: str
  token_ids: tuple[int, ...]
  score: float


class ServingClient:
  """Predict, metadata and status calls for one model on one server.

  version / label: which version answers (default: the newest the server has).
  timeout: seconds for a whole call, retries included.
  retries, backoff: how often and how patiently UNAVAILABLE is retried.
  tls: use TLS; root_certificates (PEM bytes) replaces the system roots, and
  private_key / certificate_chain (PEM bytes) are the client's own for servers
  that verify clients.
  """

  def __init__(self, target: str, model: str, *, version: int | None = None,
               label: str | None = None, timeout: float = 30.0, retries: int = 3,
               backoff: float = 0.1, tls: bool = False, root_certificates: bytes | None = None,
               private_key: bytes | None = None, certificate_chain: bytes | None = None,
               max_message_bytes: int = MAX_MESSAGE_BYTES, options: Sequence = ()):
    if version is not None and label is not None:
      raise ValueError("give a version or a label, not both")
    if timeout <= 0 or retries < 0 or backoff < 0:
      raise ValueError("timeout must be positive, retries and backoff not negative")
    self.model, self.version, self.label = model, version, label
    self.timeout, self.retries, self.backoff = timeout, retries, backoff
    channel_options = [("grpc.max_receive_message_length", max_message_bytes),
                       ("grpc.max_send_message_length", max_message_bytes), *options]
    if tls or root_certificates or private_key:
      credentials = grpc.ssl_channel_credentials(root_certificates, private_key,
                                                 certificate_chain)
      self.channel = grpc.secure_channel(target, credentials, options=channel_options)
    else:
      self.channel = grpc.insecure_channel(target, options=channel_options)
    self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

  def close(self) -> None:
    self.channel.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def _spec(self, spec, signature: str | None = None) -> None:
    spec.name = self.model
    if self.version is not None:
      spec.version.value = self.version
    if self.label is not None:
      spec.version_label = self.label
    if signature is not None:
      spec.signature_name = signature

  def _call(self, method, request):
    deadline = time.monotonic() + self.timeout
    delay = self.backoff
    for attempt in range(self.retries + 1):
      left = deadline - time.monotonic()
      try:
        return method(request, timeout=max(left, 0.001))
      except grpc.RpcError as e:
        pause = delay * (0.5 + random.random())  # jitter spreads clients apart
        if (e.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries
            or time.monotonic() + pause >= deadline):
          raise
        time.sleep(pause)
        delay *= 2

  # --- raw calls -------------------------------------------------------------------

  def predict(self, inputs: Mapping[str, object], signature: str = contract.DEFAULT_SIGNATURE,
              output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Runs a signature; inputs and outputs are numpy arrays (strings as bytes)."""
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    self._spec(request.model_spec, signature)
    for key, value in inputs.items():
      request.inputs[key].CopyFrom(_to_proto(value))
    response = self._call(self.prediction.Predict, request)
    return {key: _from_proto(value) for key, value in response.outputs.items()}

  def metadata(self) -> get_model_metadata_pb2.SignatureDefMap:
    """The served version's signatures (`.signature_def[name].inputs/outputs`)."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    self._spec(request.model_spec)
    response = self._call(self.prediction.GetModelMetadata, request)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return signatures

  def status(self) -> get_model_status_pb2.GetModelStatusResponse:
    """Every version's state (and error, for one that failed to load)."""
    request = get_model_status_pb2.GetModelStatusRequest()
    self._spec(request.model_spec)
    return self._call(self.models.GetModelStatus, request)

  # --- by task -----------------------------------------------------------------------

  def fill_mask(self, texts: Sequence[str]) -> list[list[list[Filler]]]:
    """For each text, for each mask token, the fillers best first."""
    return fill_mask_answers(self.predict({"text": _texts(texts)}))

  def _with_pairs(self, texts, text_pairs) -> dict:
    inputs = {"text": _texts(texts)}
    if text_pairs is not None:
      if len(text_pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs")
      inputs["text_pair"] = _texts(text_pairs)
    return inputs

  def detect_replaced(self, texts: Sequence[str],
                      text_pairs: Sequence[str] | None = None) -> list[list[TokenScore]]:
    """For each text, its tokens with the probability that each was replaced."""
    return replaced_answers(self.predict(self._with_pairs(texts, text_pairs)))

  def classify(self, texts: Sequence[str],
               text_pairs: Sequence[str] | None = None) -> list[list[Label]]:
    """For each text (and pair, for a --pair export), its top labels, best first
    (as many as the export's --top-k, at most every class)."""
    return classification_answers(self.predict(self._with_pairs(texts, text_pairs)))

  def tag(self, texts: Sequence[str]) -> list[list[Entity]]:
    """For each text, its entities in order (grouped as the export's --aggregation)."""
    return entity_answers(self.predict({"text": _texts(texts)}))

  def embed(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None,
            signature: str = contract.DEFAULT_SIGNATURE) -> list[Embedding]:
    """Each text's pooled and per-token embeddings (`signature="embedding"` on ELECTRA
    discriminator and generator exports)."""
    return embedding_answers(self.predict(self._with_pairs(texts, text_pairs), signature))

  def generate(self, texts: Sequence[str], *, all_sequences: bool = False,
               max_new_tokens=None, min_new_tokens=None, temperature=None, top_k=None,
               top_p=None, repetition_penalty=None, no_repeat_ngram_size=None, seed=None):
    """The generated text for each input; with `all_sequences`, every returned
    sequence (num_return_sequences of the export) as `Generation`s, best first.

    The settings (one value for every text, or a sequence of one per text) are
    those of transformers' generate; a request with any goes to
    generate_with_options, the settings not given taking the export's defaults.
    seed: 0 or None draws a fresh one (sampling exports); another value makes the
    text reproducible, whatever else is batched with it.
    """
    options = {"max_new_tokens": max_new_tokens, "min_new_tokens": min_new_tokens,
               "temperature": temperature, "top_k": top_k, "top_p": top_p,
               "repetition_penalty": repetition_penalty,
               "no_repeat_ngram_size": no_repeat_ngram_size, "seed": seed}
    options = {k: v for k, v in options.items() if v is not None}
    if options:
      out = self.predict(self.generation_inputs(texts, **options), contract.GENERATE_WITH_OPTIONS)
    else:
      out = self.predict({"text": _texts(texts)})
    answers = generation_answers(out, len(texts))
    return answers if all_sequences else [a[0].text for a in answers]

  def generation_defaults(self) -> dict:
    """generate_with_options' default settings, as the served version's metadata
    records them (its SignatureDef defaults): {name: value}."""
    signature = self.metadata().signature_def.get(contract.GENERATE_WITH_OPTIONS)
    if signature is None:
      raise ValueError(f"model {self.model} has no generate_with_options signature (a BART "
                       "export made before it, or not a generation export)")
    missing = [k for k in GENERATION_OPTIONS if k not in signature.defaults]
    if missing:
      raise ValueError(f"model {self.model}'s generate_with_options records no default for "
                       f"{', '.join(missing)}: pass every setting")
    return {k: make_ndarray(signature.defaults[k]).reshape(-1)[0] for k in GENERATION_OPTIONS}

  def generation_inputs(self, texts: Sequence[str], **options) -> dict[str, np.ndarray]:
    """generate_with_options' request for `texts`: each setting given (one value, or
    one per text), the others the export's defaults."""
    unknown = sorted(set(options) - set(GENERATION_OPTIONS))
    if unknown:
      raise TypeError(f"unknown generation settings {', '.join(unknown)}; known: "
                      f"{', '.join(GENERATION_OPTIONS)}")
    inputs = {"text": _texts(texts)}
    given = {k: v for k, v in options.items() if v is not None}
    defaults = self.generation_defaults() if len(given) < len(GENERATION_OPTIONS) else {}
    for name, dtype in GENERATION_OPTIONS.items():
      value = np.asarray(given.get(name, defaults.get(name)))
      if value.ndim == 0:
        value = np.full([len(texts)], value)
      elif value.shape != (len(texts),):
        raise ValueError(f"{len(texts)} texts but {name} has shape {list(value.shape)}")
      with np.errstate(all="ignore"):
        cast = value.astype(dtype)
      if np.issubdtype(dtype, np.integer) and not np.array_equal(cast, value):
        raise ValueError(f"{name} must be integers that fit {np.dtype(dtype).name}, not "
                         f"{value.tolist()}")
      inputs[name] = cast
    return inputs


# --- outputs to typed answers --------------------------------------------------------

def _text(value: bytes) -> str:
  return value.decode("utf-8", "replace")


def fill_mask_answers(out: dict) -> list[list[list[Filler]]]:
  """A fill-mask signature's outputs as [text][mask][rank] Fillers."""
  answers = []
  for b, count in enumerate(out["num_masks"]):
    answers.append([[Filler(_text(out["top_k_tokens"][b, m, k]), int(out["top_k_ids"][b, m, k]),
                            float(out["top_k_scores"][b, m, k]))
                     for k in range(out["top_k_ids"].shape[2])] for m in range(int(count))])
  return answers


def replaced_answers(out: dict) -> list[list[TokenScore]]:
  return [[TokenScore(_text(token), int(token_id), float(p))
           for token, token_id, p, real in zip(out["tokens"][b], out["token_ids"][b],
                                               out["replaced_probability"][b],
                                               out["padding_mask"][b]) if real]
          for b in range(out["tokens"].shape[0])]


def classification_answers(out: dict) -> list[list[Label]]:
  return [[Label(_text(name), float(score))
           for name, score in zip(out["top_k_labels"][b], out["top_k_scores"][b])]
          for b in range(out["top_k_labels"].shape[0])]


def entity_answers(out: dict) -> list[list[Entity]]:
  return [[Entity(_text(out["entity_group"][b, e]), float(out["score"][b, e]),
                  _text(out["word"][b, e]), int(out["start"][b, e]), int(out["end"][b, e]))
           for e in range(int(count))]
          for b, count in enumerate(out["num_entities"])]


def embedding_answers(out: dict) -> list[Embedding]:
  mean = out.get("mean_output")
  return [Embedding(out["pooled_output"][b], out["sequence_output"][b][out["padding_mask"][b] > 0],
                    None if mean is None else mean[b])
          for b in range(out["pooled_output"].shape[0])]


def generation_answers(out: dict, num_texts: int) -> list[list[Generation]]:
  rows = out["generated_text"].shape[0]
  if num_texts == 0 or rows % num_texts:
    raise ValueError(f"{rows} generated sequences for {num_texts} texts")
  per_text = rows // num_texts
  answers = []
  for b in range(num_texts):
    answers.append([Generation(_text(out["generated_text"][r]),
                               tuple(int(i) for i in out["generated_ids"][r]),
                               float(out["scores"][r]))
                    for r in range(b * per_text, (b + 1) * per_text)])
  return answers


# --- tables for people -----------------------------------------------------------------

def format_fill_mask(texts: Sequence[str], answers: list) -> str:
  """A readable table of `fill_mask` answers."""
  lines = []
  for text, masks in zip(texts, answers):
    lines.append(text)
    if not masks:
      lines.append("  (no mask token in this text)")
    for m, fillers in enumerate(masks):
      lines.append(f"  mask {m + 1}:")
      width = max((len(f.token) for f in fillers), default=5)
      for rank, f in enumerate(fillers, 1):
        lines.append(f"    {rank:>2}. {f.token or repr(f.token):<{width}}  {f.score:.4f}  "
                     f"(id {f.token_id})")
  return "\n".join(lines)


def _per_text(heads: Sequence[str], answers: list, rows) -> str:
  """Each text's head line, then the lines `rows(its answer)` gives, indented."""
  lines = []
  for head, answer in zip(heads, answers):
    lines += [head, *(f"  {row}" for row in rows(answer))]
  return "\n".join(lines)


def format_replaced(texts: Sequence[str], answers: list[list[TokenScore]]) -> str:
  """A readable table of a replaced-token detection answer."""
  def rows(tokens):
    width = max((len(t.token) for t in tokens), default=5)
    return [f"{t.token:<{width}}  {t.replaced_probability:.4f}"
            + ("  replaced?" if t.replaced_probability > 0.5 else "") for t in tokens]
  return _per_text(texts, answers, rows)


def format_classifications(texts: Sequence[str], answers: list[list[Label]]) -> str:
  """A readable table of `classify` answers: each text, then its labels and scores."""
  def rows(labels):
    width = max((len(a.label) for a in labels), default=5)
    return [f"{rank:>2}. {a.label:<{width}}  {a.score:.4f}"
            for rank, a in enumerate(labels, 1)]
  return _per_text(texts, answers, rows)


def highlight(text: str, entities: Sequence[Entity]) -> str:
  """The text with each entity's span bracketed and labelled: `[Anna](PER) lives in ...`."""
  pieces, done = [], 0
  for e in sorted(entities, key=lambda e: e.start):
    if e.start < done or e.end > len(text):
      continue                              # overlapping or out of the text: not drawn
    pieces += [text[done:e.start], f"[{text[e.start:e.end]}]({e.entity_group})"]
    done = e.end
  return "".join(pieces + [text[done:]])


def format_entities(texts: Sequence[str], answers: list[list[Entity]]) -> str:
  """A readable table of `tag` answers: each text with its entities highlighted,
  then one line per entity."""
  def rows(entities):
    width = max((len(e.entity_group) for e in entities), default=5)
    return [f"{e.entity_group:<{width}}  {e.score:.4f}  {e.start:>4}-{e.end:<4}  {e.word!r}"
            for e in entities] or ["(no entities)"]
  return _per_text([highlight(t, e) for t, e in zip(texts, answers)], answers, rows)


def format_token_labels(texts: Sequence[str], out: dict) -> str:
  """A readable table of a `token_labels` answer: each real token, its label and score."""
  lines = []
  for b, text in enumerate(texts):
    lines.append(text)
    real = out["padding_mask"][b] > 0
    tokens = [_text(t) for t in out["tokens"][b][real]]
    width = max((len(t) for t in tokens), default=5)
    for token, label, score, start, end in zip(tokens, out["labels"][b][real],
                                               out["scores"][b][real], out["start"][b][real],
                                               out["end"][b][real]):
      span = f"{start:>4}-{end:<4}" if start >= 0 else " " * 9
      lines.append(f"  {token:<{width}}  {span}  {_text(label) or '(special)'}  {score:.4f}")
  return "\n".join(lines)


def format_generations(texts: Sequence[str], answers: list[list[Generation]]) -> str:
  def rows(generations):
    return [f"{f'{rank}.' if len(generations) > 1 else '→'} {g.text}  (score {g.score:.4f})"
            for rank, g in enumerate(generations, 1)]
  return _per_text(texts, answers, rows)


def format_embeddings(texts: Sequence[str], answers: list[Embedding]) -> str:
  lines = []
  for text, e in zip(texts, answers):
    lines.append(text)
    for name, vector in (("pooled", e.pooled), ("mean", e.mean)):
      if vector is not None:
        head = ", ".join(f"{v:.4f}" for v in vector[:4])
        lines.append(f"  {name} [{vector.shape[0]}]: {head}, ...  "
                     f"(norm {float(np.linalg.norm(vector)):.4f})")
    lines.append(f"  {e.sequence.shape[0]} tokens")
  return "\n".join(lines)
