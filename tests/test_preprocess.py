"""``--processor device``: JPEG bytes read by the workers, decoded and preprocessed as a batch on the device — equal
to the PIL processor (the reference) on real and generated images, routed by what each file is."""
import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.clip import CLIPImageProcessorPil

from pacs_embed.extraction.images import read_for_device, read_rgb
from pacs_embed.extraction.preprocess import BatchTransform, decode


def cosines(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    return ((a * b).sum(1) / a.norm(dim=1) / b.norm(dim=1)).numpy()


def reference(processor, paths) -> torch.Tensor:
    return processor(images=[read_rgb(p) for p in paths], return_tensors="pt")["pixel_values"]


def on_device(processor, paths) -> torch.Tensor:
    images, errors = decode([read_for_device(p) for p in paths], "cpu")
    assert not errors
    return BatchTransform.from_processor(processor)(images)


def test_every_pacs_mini_image_matches_the_pil_processor(pacs_mini):
    """CLIP's own settings (shortest edge 224, bicubic, centre crop 224): cosine >= 0.9999 on every image."""
    processor = CLIPImageProcessorPil()
    paths = sorted(p for p in pacs_mini.glob("*/*/*") if p.suffix.lower() in (".jpg", ".png"))
    assert len(paths) == 224
    for lo in range(0, len(paths), 56):
        ref, mine = reference(processor, paths[lo:lo + 56]), on_device(processor, paths[lo:lo + 56])
        assert mine.shape == ref.shape == (len(paths[lo:lo + 56]), 3, 224, 224)
        assert cosines(mine, ref).min() >= 0.9999


def test_images_of_many_sizes_kinds_and_settings_match_the_pil_processor(tmp_path, pacs_mini):
    """pacs-mini photos saved larger, smaller than the crop, portrait and landscape, as grey and CMYK JPEGs and a PNG
    with alpha; the batch goes through one set of tensor ops per image size; a processor with bilinear resampling and
    one with an exact size too."""
    photos = sorted(pacs_mini.glob("photo/*/*.jpg"))
    paths = []
    for i, (w, h, mode, ext) in enumerate([(640, 480, "RGB", "jpg"), (300, 800, "RGB", "jpg"), (640, 480, "RGB", "jpg"),
                                           (120, 90, "RGB", "jpg"), (500, 500, "L", "jpg"), (400, 300, "CMYK", "jpg"),
                                           (333, 257, "RGBA", "png")]):
        image = Image.open(photos[5 * i]).convert("RGB").resize((w, h), Image.LANCZOS).convert(mode)
        paths.append(tmp_path / f"{i}.{ext}")
        image.save(paths[-1], quality=92)
    for processor in (CLIPImageProcessorPil(), CLIPImageProcessorPil(resample=2),
                      CLIPImageProcessorPil(size={"height": 160, "width": 200}, do_center_crop=False)):
        ref, mine = reference(processor, paths), on_device(processor, paths)
        assert mine.shape == ref.shape
        assert cosines(mine, ref).min() >= 0.9999, cosines(mine, ref)


def test_the_workers_send_jpeg_bytes_and_decode_everything_else(tmp_path, pacs_mini):
    jpeg = next(pacs_mini.glob("photo/*/*.jpg"))
    png = next(pacs_mini.glob("sketch/*/*.png"))
    Image.new("CMYK", (40, 30)).save(tmp_path / "cmyk.jpg")
    (tmp_path / "cut.jpg").write_bytes(jpeg.read_bytes()[:-400])           # no end marker: decoded by PIL, refused
    assert read_for_device(jpeg).ndim == 1 and read_for_device(jpeg).dtype == torch.uint8
    assert read_for_device(png).shape[0] == 3 and read_for_device(tmp_path / "cmyk.jpg").shape == (3, 30, 40)
    with pytest.raises(OSError):
        read_for_device(tmp_path / "cut.jpg")


def test_a_jpeg_no_decoder_can_read_is_an_unreadable_image_not_a_crash(pacs_mini):
    good = read_for_device(next(pacs_mini.glob("photo/*/*.jpg")))
    bad = torch.frombuffer(bytearray(b"\xff\xd8\xff\xe0" + b"\x00" * 100 + b"\xff\xd9"), dtype=torch.uint8)
    images, errors = decode([good, bad, good], "cpu")
    assert list(errors) == [1] and images[1] is None and images[0].shape[0] == 3
    assert torch.equal(images[0], images[2])


def test_extract_with_the_device_processor_records_it_and_matches_the_pil_processor(pacs_mini, tiny_clip, tmp_path,
                                                                                     mini_cache):
    from pacs_embed import extract
    from pacs_embed.cache import Cache
    out = tmp_path / "device.h5"
    extract(pacs_mini, str(tiny_clip), out, dtype="float32", batch_size=32, workers=2, processor="device",
            progress=False)
    device, pil = Cache.open(out), Cache.open(mini_cache)
    assert device.attrs["processor"] == "device" and pil.attrs["processor"] == "pil"
    assert device.attrs["processor_settings"] == pil.attrs["processor_settings"]
    a, b = device.image_vectors(), pil.image_vectors()
    assert cosines(torch.from_numpy(a), torch.from_numpy(b)).min() >= 0.9999
