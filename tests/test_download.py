"""PACS download: Hub parquet rows -> <domain>/<class>/<file> with the image bytes unchanged."""
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pacs_embed.download import DownloadError, convert_parquet, download_pacs


def encoded(fmt, color):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def parquet(tmp_path):
    rows = [  # (image bytes, original path, domain, label)
        (encoded("JPEG", "red"), "pic_001.jpg", "photo", 0),
        (encoded("JPEG", "blue"), "pic_002.jpg", "art_painting", 1),
        (encoded("PNG", "white"), "sketch_7.png", "sketch", 6),
        (encoded("PNG", "gray"), None, "sketch", 6),
        (encoded("JPEG", "green"), "pic_001.jpg", "photo", 0),   # same name in one folder
    ]
    table = pa.table({
        "image": pa.array([{"bytes": b, "path": p} for b, p, _, _ in rows],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "domain": [d for _, _, d, _ in rows], "label": pa.array([l for *_, l in rows], pa.int64())})
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(table, path, row_group_size=2)
    return path, rows


def test_rows_become_files_in_the_domainbed_layout_bytes_unchanged(parquet, tmp_path):
    path, rows = parquet
    dest = convert_parquet([path], tmp_path / "PACS", expected={"photo": 2, "art_painting": 1, "sketch": 2})
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == ["art_painting/elephant/pic_002.jpg", "photo/dog/pic_001.jpg", "photo/dog/pic_001_000004.jpg",
                     "sketch/person/000003.png", "sketch/person/sketch_7.png"]
    assert (dest / "sketch/person/sketch_7.png").read_bytes() == rows[2][0]
    assert (dest / "photo/dog/pic_001_000004.jpg").read_bytes() == rows[4][0]


def test_the_extension_comes_from_the_real_format(tmp_path):
    png_named_jpg = encoded("PNG", "red")
    table = pa.table({"image": [{"bytes": png_named_jpg, "path": "x.jpg"}], "domain": ["sketch"], "label": [0]})
    pq.write_table(table, tmp_path / "t.parquet")
    dest = convert_parquet([tmp_path / "t.parquet"], tmp_path / "out", expected=None)
    assert (dest / "sketch/dog/x.png").read_bytes() == png_named_jpg


def test_wrong_counts_are_an_error_and_a_rerun_resumes(parquet, tmp_path):
    path, _ = parquet
    with pytest.raises(DownloadError, match="differ from the expected"):
        convert_parquet([path], tmp_path / "PACS")  # PACS counts expected
    target = tmp_path / "PACS" / "photo/dog/pic_001.jpg"
    mtime = target.stat().st_mtime_ns
    convert_parquet([path], tmp_path / "PACS", expected=None)
    assert target.stat().st_mtime_ns == mtime  # already there: not written again
    assert not list((tmp_path / "PACS").rglob("*.partial"))


def test_offline_download_fails_fast_saying_how_to_place_the_data(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="by hand"):
        download_pacs(tmp_path / "PACS")


def test_a_row_without_image_bytes_is_a_clear_error(tmp_path):
    table = pa.table({"image": pa.array([{"bytes": None, "path": "a.jpg"}],
                                        pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                      "domain": ["photo"], "label": [0]})
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(DownloadError, match="row 0 has no image bytes"):
        convert_parquet([tmp_path / "t.parquet"], tmp_path / "out", expected=None)
