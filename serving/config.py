"""What a `ModelServerConfig` may say, and which versions a version policy serves.

Shared by the registry (which serves the config) and
scripts/make_serving_config.py (which writes one), so both apply TF Serving's
rules the same way.  Protos in, plain values out; nothing here reads files.
"""

from __future__ import annotations

from collections.abc import Iterable

from tensorflow_serving.config import model_server_config_pb2

from serving.errors import shown

INT64_MAX = 2 ** 63 - 1


def version_of(directory_name: str) -> int | None:
  """The version a directory under a base path holds, as TF Serving parses its name
  (an int64; leading zeros allowed: `0007` is version 7), or None: not a version."""
  if not (directory_name.isascii() and directory_name.isdigit()) or len(directory_name) > 40:
    return None
  version = int(directory_name)
  return version if version <= INT64_MAX else None


def check_config(config: model_server_config_pb2.ModelServerConfig) -> None:
  """Rejects configs TF Serving would reject, naming the problem; raises ValueError."""
  if config.WhichOneof("config") == "custom_model_config":
    raise ValueError("custom_model_config is not supported; use model_config_list")
  names = set()
  for model in config.model_config_list.config:
    name = shown(model.name)
    if not model.name:
      raise ValueError("a model config has no name")
    if model.name in names:
      raise ValueError(f"model {name} is configured twice")
    names.add(model.name)
    if not model.base_path:
      raise ValueError(f"model {name} has no base_path")
    if model.model_platform not in ("", "tensorflow"):
      raise ValueError(f"model {name}: model_platform {shown(repr(model.model_platform))} is "
                       "not supported (only tensorflow)")
    policy = model.model_version_policy
    if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
      raise ValueError(f"model {name}: a specific version policy lists no versions")
    if policy.WhichOneof("policy_choice") == "specific" and min(policy.specific.versions) < 0:
      raise ValueError(f"model {name}: a specific version policy lists a negative version")
    if policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions < 0:
      raise ValueError(f"model {name}: latest.num_versions must be positive")
    for label, version in model.version_labels.items():
      if version <= 0:
        raise ValueError(f"model {name}: label {shown(label)} points to version {version}")


def wanted_versions(policy, on_disk: Iterable[int]) -> set[int]:
  """The versions a `ServableVersionPolicy` serves among `on_disk` (latest 1 when unset)."""
  on_disk = sorted(set(on_disk))
  kind = policy.WhichOneof("policy_choice")
  if kind == "all":
    return set(on_disk)
  if kind == "specific":
    return set(policy.specific.versions) & set(on_disk)
  count = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions else 1
  return set(on_disk[-count:])
