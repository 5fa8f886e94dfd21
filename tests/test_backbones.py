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


@pytest.fixture(scope="module")
def siglip2(tmp_path_factory):
    from tiny_clip import make_siglip2
    return make_siglip2(tmp_path_factory.mktemp("siglip2"))


def test_siglip2_extracts_with_its_patch_mask_and_grid_and_reads_prompts_lower_cased(siglip2, small_dataset, tmp_path):
    """SigLIP 2's processor gives patches, their mask and the patch grid: all reach the image tower (the vectors are
    those of the model called directly); it was trained on lower-cased text, so "A Photo" is "a photo" (SigLIP's is
    not: its tokenizer keeps case)."""
    from pacs_embed.extraction.images import read_rgb
    from pacs_embed.models import load_processor
    from transformers import Siglip2VisionModel
    out = tmp_path / "siglip2.h5"
    s = extract(small_dataset, str(siglip2), out, dtype="float32", batch_size=4, workers=0, progress=False)
    assert s.failures == [] and s.n_embedded == s.n_images
    with Cache.open(out) as c:
        assert c.attrs["backbone"] == "siglip2" and c.dim == 32
        first, stored = c.index["path"][0], c.image_vectors()[0]
    processor = load_processor(resolve(str(siglip2)), "pil")
    inputs = processor(images=read_rgb(small_dataset / first), return_tensors="pt")
    assert {"pixel_values", "pixel_attention_mask", "spatial_shapes"} <= set(inputs)
    model = Siglip2VisionModel.from_pretrained(siglip2).eval()
    with torch.no_grad():
        want = model(**inputs).pooler_output[0].numpy()
    assert np.allclose(stored, want, atol=1e-5)
    tower = load_text_tower(resolve(str(siglip2)), "cpu")
    assert np.allclose(*encode_text(tower, ["A Photo", "a photo"]), atol=1e-6)
    plain = load_text_tower(resolve(str(make_siglip_case(tmp_path))), "cpu")
    assert not np.allclose(*encode_text(plain, ["A Photo", "a photo"]), atol=1e-4)
    res = pa.evaluate(pa.load(out), ["none", "translate"], seeds=[0], progress=False, head_cache=False)
    assert len(res.table)


def make_siglip_case(tmp_path):
    return make_siglip(tmp_path / "siglip-case")


def test_the_device_processor_is_refused_for_a_backbone_it_does_not_reproduce(siglip2, small_dataset, tmp_path):
    from pacs_embed.errors import ExtractionError
    with pytest.raises(ExtractionError, match="--processor device reproduces the image processor of clip"):
        extract(small_dataset, str(siglip2), tmp_path / "x.h5", processor="device", progress=False)
    assert not (tmp_path / "x.h5.journal").exists()
