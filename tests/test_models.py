"""Device and dtype choice, and loading one tower at a time."""
import numpy as np
import pytest
import torch

from pacs_embed import models
from pacs_embed.models import choose_dtype, encode_text, features, load_text_tower, resolve


def test_cuda_gets_bf16_or_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose_dtype(torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert choose_dtype(torch.device("cuda")) == torch.float16


def test_cpu_gets_bf16_only_where_it_is_fast(monkeypatch):
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: True)
    assert choose_dtype(torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: False)
    assert choose_dtype(torch.device("cpu")) == torch.float32


def test_explicit_dtype_wins_and_a_wrong_one_is_named():
    assert choose_dtype(torch.device("cuda"), "float32") == torch.float32
    with pytest.raises(ValueError, match="--dtype 'float8'"):
        choose_dtype(torch.device("cpu"), "float8")


def test_features_accepts_a_tensor_or_an_output_object():
    from transformers.modeling_outputs import BaseModelOutputWithPooling
    t = torch.ones(2, 3)
    assert features(t) is t
    assert features(BaseModelOutputWithPooling(pooler_output=t)) is t


def test_local_revision_is_the_hash_of_the_weights(tiny_clip, other_clip):
    a, b = resolve(str(tiny_clip)), resolve(str(other_clip))
    assert a.revision.startswith("sha256:") and a.revision != b.revision
    assert resolve(str(tiny_clip)).revision == a.revision


def test_a_folder_that_is_not_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(models.ModelError, match="config.json"):
        resolve(str(tmp_path))


def test_text_tower_encodes_in_float32(tiny_clip):
    tower = load_text_tower(resolve(str(tiny_clip)), "cpu")
    out = encode_text(tower, ["a photo", "a cartoon of a dog"] * 3, batch_size=4)
    assert out.shape == (6, 16) and out.dtype == np.float32
    assert np.allclose(out[0], out[2], atol=1e-6)  # batching does not change a prompt's vector
