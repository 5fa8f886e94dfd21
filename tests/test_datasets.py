"""The dataset scan: what it lists, in which order, and what it skips (and says why)."""
import hashlib
import os

from pacs_embed.datasets import scan


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_scan_lists_images_in_sorted_order_and_names_every_skipped_entry_with_its_reason(tmp_path):
    root, outside = tmp_path / "ds", tmp_path / "outside.jpg"
    for d in ("sketch", "photo"):
        for c in ("dog", "cat"):
            for name in ("b.jpg", "a.JPEG"):
                _touch(root / d / c / name, os.urandom(20))
    _touch(outside)
    _touch(root / "photo" / "dog" / "notes.txt")
    _touch(root / "photo" / "dog" / ".DS_Store")                    # hidden: skipped silently
    _touch(root / "photo" / "dog" / "sub" / "deep" / "c.png", b"c")    # nested: the class's, as ImageFolder has it
    _touch(root / "photo" / "dog" / "sub" / "list.csv")
    _touch(root / "photo" / "readme.md")
    (root / "photo" / "dog" / "inside.png").symlink_to(root / "sketch" / "cat" / "b.jpg")
    (root / "photo" / "dog" / "out.jpg").symlink_to(outside)
    (root / "photo" / "dog" / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (root / "photo" / "dog" / "loop").symlink_to(root)
    (root / "zloop").symlink_to(root)
    _touch(root / ".cache" / "dog" / "a.jpg")                        # hidden domain
    _touch(root / "LICENSE.txt")                                       # beside the domains

    ds = scan(root, progress=False)

    assert ds.domains == ["photo", "sketch"] and ds.classes == ["cat", "dog"]
    assert [r.path for r in ds.records] == [
        "photo/cat/a.JPEG", "photo/cat/b.jpg", "photo/dog/a.JPEG", "photo/dog/b.jpg", "photo/dog/inside.png",
        "photo/dog/sub/deep/c.png", "sketch/cat/a.JPEG", "sketch/cat/b.jpg", "sketch/dog/a.JPEG", "sketch/dog/b.jpg"]
    assert ds.records[4].sha256 == ds.records[7].sha256            # a link inside the folder is followed
    assert ds.records[5].label == ds.classes.index("dog")
    assert sorted(ds.ignored) == sorted([
        "zloop (link to a folder, not followed)",
        "LICENSE.txt (not in a domain folder)",
        "photo/readme.md (not in a class folder)",
        "photo/dog/gone.jpg (broken link)",
        "photo/dog/loop (link to a folder, not followed)",
        "photo/dog/notes.txt (not an image: not .jpg/.jpeg/.png/.ppm/.bmp/.pgm/.tif/.tiff/.webp)",
        "photo/dog/sub/list.csv (not an image: not .jpg/.jpeg/.png/.ppm/.bmp/.pgm/.tif/.tiff/.webp)",
        "photo/dog/out.jpg (link to a file outside the data folder, not followed)"])


def test_a_rescan_with_known_records_reads_only_files_whose_size_or_mtime_changed(tmp_path):
    root = tmp_path / "ds"
    for c in ("cat", "dog"):
        _touch(root / "photo" / c / "a.jpg", c.encode())
    first = scan(root, progress=False)
    fake = {r.path: type(r)(r.path, r.domain, r.label, r.size, r.mtime_ns, "stored") for r in first.records}
    _touch(root / "photo" / "dog" / "a.jpg", b"a new dog")
    again = scan(root, known=fake, progress=False)
    assert again.records[0].sha256 == "stored"                           # unchanged: trusted, not read
    assert again.records[1].sha256 == hashlib.sha256(b"a new dog").hexdigest()   # changed: read again


def test_a_folder_without_images_is_no_domain_or_class_and_is_said(tmp_path):
    root = tmp_path / "ds"
    for d, c in [("photo", "dog"), ("photo", "cat"), ("sketch", "dog")]:
        _touch(root / d / c / "a.jpg", f"{d}{c}".encode())
    (root / "cartoon" / "dog").mkdir(parents=True)                    # an empty domain
    (root / "sketch" / "bird").mkdir(parents=True)                    # a class with no image anywhere
    _touch(root / "sketch" / "cow" / "readme.txt")                    # ... and one with no image, only a note
    ds = scan(root, progress=False)
    assert ds.domains == ["photo", "sketch"] and ds.classes == ["cat", "dog"]
    assert [(r.path, r.domain, r.label) for r in ds.records] == [
        ("photo/cat/a.jpg", 0, 0), ("photo/dog/a.jpg", 0, 1), ("sketch/dog/a.jpg", 1, 1)]
    assert {"cartoon (no images: not a domain)", "bird (a class folder with no images in any domain: not a class)",
            "cow (a class folder with no images in any domain: not a class)"} <= set(ds.ignored)


def test_a_data_path_that_is_a_file_or_missing_is_named(tmp_path):
    import pytest
    from pacs_embed.datasets import DatasetError
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(DatasetError, match="a.json' is a file"):
        scan(tmp_path / "a.json", progress=False)
    with pytest.raises(DatasetError, match="does not exist"):
        scan(tmp_path / "nowhere", progress=False)
