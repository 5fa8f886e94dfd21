"""Other backbones, one cache format: a SigLIP checkpoint extracts and reports like a CLIP one, its text padded to
64 tokens as SigLIP was trained (padded to the batch's longest, its vectors would be wrong)."""
import numpy as np
import pytest
import torch

from pacs_embed import analysis as pa
from pacs_embed import extract
from pacs_embed.cache import Cache
from pacs_embed.models import encode_text, load_text_tower, resolve
from tiny_clip import make_siglip


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    return make_siglip(tmp_path_factory.mktemp("siglip"))


def test_siglip_text_is_padded_to_max_length_so_a_prompt_has_one_vector_whatever_its_batch(siglip):
    tower = load_text_tower(resolve(str(siglip)), "cpu")
    alone = encode_text(tower, ["a photo"])[0]
    beside = encode_text(tower, ["a photo", "a much longer prompt about a photo of a dog in a field"])[0]
    assert np.allclose(alone, beside, atol=1e-5)                 # the same vector, up to the batch's rounding
    ids = tower.tokenizer(["a photo"], padding="max_length", max_length=64, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = tower.model(input_ids=ids).pooler_output[0].numpy()
    assert np.allclose(alone, want, atol=1e-6)                   # the model card's way: padding="max_length"
    short = tower.tokenizer(["a photo"], padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        wrong = tower.model(input_ids=short).pooler_output[0].numpy()
    assert not np.allclose(alone, wrong, atol=1e-4)              # padded to the batch's longest: another vector


def test_a_siglip_cache_extracts_records_its_model_and_reports(siglip, small_dataset, tmp_path):
    out = tmp_path / "siglip.h5"
    s = extract(small_dataset, str(siglip), out, dtype="float32", batch_size=4, workers=0, progress=False)
    assert s.failures == [] and s.n_embedded == s.n_images
    with Cache.open(out) as c:
        assert c.dim == 32 and c.attrs["processor_class"].startswith("Siglip") and c.attrs["backbone"] == "siglip"
    emb = pa.load(out)
    res = pa.evaluate(emb, ["none", "translate", "zeroshot"], seeds=[0], progress=False, head_cache=False)
    assert set(res.table.method) >= {"none", "translate", "zeroshot"}
    pa.prompt_similarity(emb, ["a watercolor"])                  # a new prompt, encoded by the SigLIP text tower
    with Cache.open(out) as c:
        assert "a watercolor" in c.prompts
