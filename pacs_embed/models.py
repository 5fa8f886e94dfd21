"""Hugging Face CLIP-family checkpoints (``BACKBONES``: CLIP, SigLIP): resolve, load one tower at a time, pick device
and dtype, encode.

Usage::

    spec = resolve("openai/clip-vit-base-patch32")       # hub id or local folder
    tower = load_text_tower(spec, device="cpu")
    vectors = encode_text(tower, ["a photo", "a cartoon"])  # raw projected, float32 numpy
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from . import DEFAULT_MODEL  # noqa: F401 (re-exported)
from .errors import ArgumentError, ArgumentTypeError, PacsEmbedError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                    "added_tokens.json", "tokenizer.model")


class ModelError(PacsEmbedError, RuntimeError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    """Where a checkpoint's files are, and what identifies its weights."""
    model_id: str      # as the user named it: hub id, or absolute local path
    folder: str        # local folder holding config.json and weights
    revision: str      # hub commit hash, or 'sha256:<...>' of a local folder's weights
    tokenizer: str = ""   # sha256 of the tokenizer files (names and bytes): prompt vectors depend on them too


def resolve(model: str, revision: str | None = None, local_only: bool = False) -> ModelSpec:
    """Find ``model`` as a local folder or in the Hugging Face cache/Hub (honours HF_HUB_OFFLINE;
    ``local_only``: never download)."""
    local = Path(model).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(f"model folder {str(local)!r} has no config.json; is it a Hugging Face checkpoint?")
        if not any((local / w).is_file() for w in _WEIGHT_FILES):
            raise ModelError(f"model folder {str(local)!r} has no weights (model.safetensors or pytorch_model.bin)")
        return ModelSpec(str(local.resolve()), str(local.resolve()), "sha256:" + _weights_sha256(local),
                         _tokenizer_sha256(local))
    if model.startswith(("/", ".", "~")):
        raise ModelError(f"model folder {model!r} does not exist. If it moved, pass its new location "
                         f"(a folder with the same weights is accepted).")
    from huggingface_hub import snapshot_download
    try:
        folder = snapshot_download(model, revision=revision, local_files_only=local_only, allow_patterns=[
            "*.json", "*.txt", "model.safetensors", "pytorch_model.bin"])
    except Exception as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        raise ModelError(
            f"model {model!r} is not a local folder and could not be found "
            f"{'in the local Hugging Face cache (HF_HUB_OFFLINE is set)' if offline else 'on the Hugging Face Hub'}: "
            f"{type(e).__name__}. Pass a local checkpoint folder (`pacs-embed extract --data DATASET --model FOLDER`; "
            f"a folder `CLIPModel.save_pretrained` wrote, with its tokenizer and preprocessor files), or fetch it once "
            f"where there is internet (`hf download {model}`) and copy the cache (~/.cache/huggingface) here.") from e
    folder = Path(folder)
    if not any((folder / w).is_file() for w in _WEIGHT_FILES):
        raise ModelError(f"model {model!r}: no model.safetensors or pytorch_model.bin in {folder}")
    return ModelSpec(model, str(folder), folder.name, _tokenizer_sha256(folder))  # snapshots: named by commit


def _weights_sha256(folder: Path) -> str:
    """Hash of a local checkpoint's config and weights; re-read only when a file's size or mtime changed
    (a notebook resolves the model at every prompt edit)."""
    return _files_sha256(_present(folder, ("config.json",) + _WEIGHT_FILES))


def _tokenizer_sha256(folder: Path) -> str:
    """Hash of the tokenizer files in ``folder`` ("" if none): a local folder's revision covers only its config
    and weights, so without this an edited tokenizer would add prompt vectors that do not match the cached ones."""
    files = _present(folder, _TOKENIZER_FILES)
    return _files_sha256(files, named=True) if files else ""


def _present(folder: Path, names) -> tuple:
    """(path, size, mtime) of the files ``names`` that ``folder`` holds: the cache key of their hash."""
    stats = [(p, p.stat()) for p in (folder / n for n in names) if p.is_file()]
    return tuple((str(p), st.st_size, st.st_mtime_ns) for p, st in stats)


@functools.lru_cache(maxsize=16)
def _files_sha256(files: tuple, named: bool = False) -> str:
    """sha256 of the files' bytes in order (``named``: each preceded by its file name)."""
    h = hashlib.sha256()
    for path, _, _ in files:
        if named:
            h.update(f"{Path(path).name}\n".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:40]


def check_device(device: str | None) -> None:
    """Fail with a clear ModelError for a device string torch does not know, or CUDA where there is none."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ModelError(f"--device {device!r} is not a device (try cpu, cuda, cuda:1): {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"--device {device!r}: CUDA is not available on this machine (torch {torch.__version__}); "
                         f"use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "meta":
        raise ModelError(f"--device {device!r} holds shapes, not data: nothing can be embedded on it; use --device cpu")
    if dev.type not in ("cpu", "cuda"):   # mps, xpu, ...: usable only if this torch and machine have it
        try:
            torch.empty(1, device=dev)
        except Exception as e:  # noqa: BLE001 - torch says why in its own words
            raise ModelError(f"--device {device!r} is not usable here (torch {torch.__version__}): "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; use --device cpu") from None


def choose_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_fast_bf16() -> bool:
    """True where the CPU has AMX or AVX512-BF16 instructions."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()
                or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())


def choose_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    """Explicit ``dtype`` if given; else CUDA -> bf16 (fp16 without bf16), CPU -> bf16 if fast, else fp32."""
    if dtype:
        if dtype not in DTYPES:
            raise ArgumentError(f"--dtype {dtype!r}: choose one of {sorted(set(DTYPES))}")
        return DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Backbone:
    """How one family of checkpoints loads and encodes: its towers' transformers classes and how its text is padded —
    as the model was trained, or its text embeddings are wrong (``embedding_dim`` gives a tower's vector size)."""
    vision: str              # transformers class of the image tower (with its projection or pooling head)
    text: str                # ... of the text tower
    padding: object          # True: to the batch's longest, with an attention mask (CLIP); "max_length" (SigLIP)
    text_inputs: tuple       # what the text tower is given
    projection_at_top: bool  # a CLIPModel keeps projection_dim at the top level of its config
    lowercase: bool = False  # trained on lower-cased text (SigLIP 2): prompts are lower-cased before tokenizing


BACKBONES = {
    "clip": Backbone("CLIPVisionModelWithProjection", "CLIPTextModelWithProjection", True,
                     ("input_ids", "attention_mask"), True),
    # SigLIP (Zhai et al., ICCV 2023): trained on text padded to max_length (64 tokens), with no attention mask; its
    # towers' pooled outputs are the joint embedding (the model card: padding="max_length")
    "siglip": Backbone("SiglipVisionModel", "SiglipTextModel", "max_length", ("input_ids",), False),
    # SigLIP 2 (Tschannen et al., 2025): as SigLIP, on lower-cased text; its image processor gives patches, their
    # mask and the patch grid (NaFlex), all passed to the image tower
    "siglip2": Backbone("Siglip2VisionModel", "Siglip2TextModel", "max_length", ("input_ids",), False, lowercase=True),
}


def backbone_name(spec: ModelSpec) -> str:
    """The family of ``spec`` (its config's ``model_type``: a key of ``BACKBONES``), or a ModelError naming those
    that load. The cache records it (``backbone``)."""
    return _clip_config(spec).model_type


def check_clip(spec: ModelSpec) -> None:
    """Fail with a clear ModelError unless ``spec`` is a checkpoint of a family in ``BACKBONES`` (before anything
    else is loaded)."""
    _clip_config(spec)


def _clip_config(spec: ModelSpec):
    from transformers import AutoConfig
    try:
        cfg = AutoConfig.from_pretrained(spec.folder)
    except Exception as e:  # noqa: BLE001 - unreadable or unknown config.json
        raise ModelError(f"model {spec.model_id!r}: cannot read its config.json ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from e
    if getattr(cfg, "model_type", None) not in BACKBONES:
        raise ModelError(f"model {spec.model_id!r} is a {cfg.model_type!r} checkpoint; pacs_embed loads "
                         f"{', '.join(BACKBONES)} checkpoints.")
    return cfg


def _tower_config(cfg, part: str):
    sub = getattr(cfg, part)
    if BACKBONES[cfg.model_type].projection_at_top:
        sub.projection_dim = cfg.projection_dim  # a CLIPModel checkpoint keeps it at the top level
    return sub


def embedding_dim(model) -> int:
    """The size of the vectors a loaded tower returns (a CLIP tower's projection, a SigLIP tower's width)."""
    cfg = model.config
    return int(getattr(cfg, "projection_dim", None) or cfg.hidden_size)


def _transformers_class(name: str):
    import transformers
    return getattr(transformers, name)


def _attention(device) -> str:
    """Eager attention on CPUs: PyTorch's fused CPU attention splits its work by thread count, so its results
    depend (in the last bits) on how many threads ran it; eager attention's do not, and it is as fast at
    CLIP's sequence lengths. So a cache is bit-identical whatever the threads (torchrun gives each rank one)."""
    return "eager" if torch.device(device).type == "cpu" else "sdpa"


def _quiet_load(cls, folder, config, dtype, device="cpu"):
    from transformers.utils import logging
    level = logging.get_verbosity()
    logging.set_verbosity_error()  # the other tower's weights are "unexpected": expected here
    logging.disable_progress_bar()
    try:
        return cls.from_pretrained(folder, config=config, dtype=dtype, attn_implementation=_attention(device)).eval()
    except Exception as e:  # noqa: BLE001 - truncated or damaged weights
        raise ModelError(f"cannot load the weights in {folder} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); the file may be truncated — fetch it again") from e
    finally:
        logging.set_verbosity(level)
        logging.enable_progress_bar()


def load_image_tower(spec: ModelSpec, device, dtype=torch.float32):
    """The vision model with its projection (or pooling head), on ``device`` in ``dtype``; the text weights are not
    loaded."""
    cfg = _clip_config(spec)
    cls = _transformers_class(BACKBONES[cfg.model_type].vision)
    model = _quiet_load(cls, spec.folder, _tower_config(cfg, "vision_config"), dtype, device)
    return model.to(device)


PROCESSORS = ("auto", "fast", "pil", "device")


@functools.lru_cache(maxsize=1)
def has_torchvision() -> bool:
    """True where torchvision imports beside this torch (it does not beside the CPU-only torch wheel here)."""
    try:
        import torchvision  # noqa: F401
        from torchvision.io import decode_image  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a torch/torchvision mismatch (RuntimeError on ops)
        return False
    return True


def choose_processor(processor: str = "auto", device=None) -> str:
    """'pil' (the reference: PIL processor, per image, in the DataLoader workers), 'fast' (the checkpoint's
    torchvision processor, a batch at a time on ``device``) or 'device' (JPEGs decoded on ``device`` — nvJPEG on
    CUDA — and the PIL processor's steps as batched tensor ops there: ``preprocess.py``; opt-in, any device).
    ``auto``: fast on CUDA where torchvision imports, else pil."""
    if processor not in PROCESSORS:
        raise ModelError(f"--processor {processor!r}: choose one of {', '.join(PROCESSORS)}")
    if processor == "auto":
        return "fast" if torch.device(device or "cpu").type == "cuda" and has_torchvision() else "pil"
    if processor == "fast" and not has_torchvision():
        raise ModelError(f"--processor fast needs torchvision, which does not import beside torch {torch.__version__} "
                         f"here; install the torchvision that matches your torch, or use --processor pil")
    return processor


def is_fast(image_processor) -> bool:
    """True for transformers' torchvision-backed image processors (named ``...Fast`` before v5.2x)."""
    if type(image_processor).__name__.endswith("Fast"):
        return True
    for module, name in (("transformers.image_processing_backends", "TorchvisionBackend"),
                         ("transformers.image_processing_utils_fast", "BaseImageProcessorFast")):
        try:
            cls = getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(image_processor, cls) and not type(image_processor).__name__.endswith("Pil"):
            return True
    return False


def load_processor(spec: ModelSpec, processor: str = "pil"):
    """The checkpoint's image processor: ``pil`` (reference; also what ``device`` reproduces) or ``fast``
    (torchvision). Which one ran is recorded in the cache (``processor``, ``processor_class``,
    ``processor_settings``)."""
    from transformers import AutoImageProcessor
    from transformers.utils import logging
    level = logging.get_verbosity()
    logging.set_verbosity_error()  # silence the "falling back to the PIL processor" warning
    try:
        fast = processor == "fast"   # "device" reproduces the PIL processor's settings
        try:  # transformers >= 5.2x names a backend; earlier releases take use_fast
            loaded = AutoImageProcessor.from_pretrained(spec.folder, backend="torchvision" if fast else "pil")
        except (TypeError, ValueError):
            loaded = None
        if loaded is None or is_fast(loaded) != fast:
            loaded = AutoImageProcessor.from_pretrained(spec.folder, use_fast=fast)
        if is_fast(loaded) != fast:
            raise ModelError(f"model {spec.model_id!r}: transformers gave {type(loaded).__name__} when asked for the "
                             f"{'fast' if fast else 'pil'} image processor; use --processor {'pil' if fast else 'fast'}")
        return loaded
    finally:
        logging.set_verbosity(level)


def processor_settings(processor) -> str:
    return json.dumps(processor.to_dict(), sort_keys=True, default=str)


@dataclass
class TextTower:
    model: object
    tokenizer: object
    device: torch.device
    backbone: Backbone = BACKBONES["clip"]


def load_text_tower(spec: ModelSpec, device=None) -> TextTower:
    """Text model with projection and tokenizer, float32 (cheap; keeps prompt vectors comparable)."""
    from transformers import AutoTokenizer
    check_device(device)
    device = choose_device(device)
    cfg = _clip_config(spec)
    family = BACKBONES[cfg.model_type]
    model = _quiet_load(_transformers_class(family.text), spec.folder, _tower_config(cfg, "text_config"),
                        torch.float32, device)
    return TextTower(model.to(device), AutoTokenizer.from_pretrained(spec.folder), device, family)


def features(output) -> torch.Tensor:
    """The projected embedding from whatever a transformers call returned (tensor or output object)."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    raise ArgumentTypeError(f"cannot find embeddings in {type(output).__name__}")


@torch.inference_mode()
def embed_images(model, pixel_values) -> torch.Tensor:
    """Projected image embeddings, left on the model's device (on CUDA the call returns before they are done).
    ``pixel_values``: a tensor, or the dict of inputs a processor gave (SigLIP 2: patches, mask, patch grid)."""
    p = next(model.parameters())
    if isinstance(pixel_values, dict):
        inputs = {k: v.to(p.device, p.dtype if v.is_floating_point() else v.dtype, non_blocking=True)
                  for k, v in pixel_values.items()}
        return features(model(**inputs))
    return features(model(pixel_values=pixel_values.to(p.device, p.dtype, non_blocking=True)))


@torch.inference_mode()
def encode_text(tower: TextTower, prompts: list[str], batch_size: int = 256) -> np.ndarray:
    max_len = getattr(tower.model.config, "max_position_embeddings", 77)
    for p, ids in zip(prompts, tower.tokenizer(list(prompts), truncation=False)["input_ids"]):
        if len(ids) > max_len:
            warnings.warn(f"prompt {p[:60]!r}{'...' if len(p) > 60 else ''} has {len(ids)} tokens; the text tower "
                          f"reads only the first {max_len}, so prompts that differ after that get the same vector",
                          stacklevel=2)
    chunks, family = [], tower.backbone
    if family.lowercase:
        prompts = [p.lower() for p in prompts]
    for i in range(0, len(prompts), batch_size):
        tok = tower.tokenizer(list(prompts[i:i + batch_size]), padding=family.padding, truncation=True,
                              max_length=max_len, return_tensors="pt").to(tower.device)
        chunks.append(features(tower.model(**{k: v for k, v in tok.items() if k in family.text_inputs})).float()
                      .cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, embedding_dim(tower.model)), np.float32)
