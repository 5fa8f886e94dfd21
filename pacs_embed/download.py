"""Fetch PACS from the Hugging Face Hub (``flwrlabs/pacs``) into the DomainBed layout.

Usage::

    download_pacs("data/PACS")                         # hub -> parquet -> data/PACS/<domain>/<class>/
    convert_parquet(["train.parquet"], "data/PACS")    # the conversion alone
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from .files import atomic_write
from .registry import registry
from .errors import PacsEmbedError

PACS_REPO = "flwrlabs/pacs"
PACS_CLASSES = list(registry()["PACS"].classes)    # the registry's, one source of truth
PACS_COUNTS = dict(registry()["PACS"].domains)

MANUAL_HELP = (
    "Place PACS by hand instead: copy the images into {dest}/<domain>/<class>/<image> "
    "(domains photo, art_painting, cartoon, sketch; classes dog, elephant, giraffe, guitar, horse, "
    "house, person), or download the parquet files of the Hub dataset flwrlabs/pacs on a machine "
    "with internet and run `pacs-embed download --parquet FILE.parquet ...`. Then embed what is there (all of PACS or "
    "any part of it, or any dataset in that layout) with `pacs-embed extract --data {dest} --model MODEL` — offline, "
    "MODEL is a CLIP checkpoint folder (or a model in the local Hugging Face cache); `make extract` does the same with "
    "NO_DOWNLOAD=1 MODEL=FOLDER.")


class DownloadError(PacsEmbedError, RuntimeError):
    pass


def image_extension(data: bytes) -> str:
    """The file extension of encoded image bytes, from their magic number."""
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    raise DownloadError(f"image bytes of unknown format (starts with {data[:8]!r})")


def download_pacs(dest="data/PACS", revision: str | None = None, check_counts: bool = True) -> Path:
    """Download the parquet files of ``flwrlabs/pacs`` and convert them; safe to re-run."""
    from huggingface_hub import snapshot_download
    have = count_images(dest)
    if check_counts and have == PACS_COUNTS:
        print(f"{dest} already holds all {sum(PACS_COUNTS.values())} PACS images; nothing to download.")
        return Path(dest)
    try:
        folder = snapshot_download(PACS_REPO, repo_type="dataset", revision=revision,
                                   allow_patterns=["data/*.parquet", "*.parquet"])
    except Exception as e:  # offline, no network, no such revision
        held = (f"{dest} holds {sum(have.values()):,} images now ({', '.join(f'{d} {n:,}' for d, n in have.items())}); "
                f"PACS has {sum(PACS_COUNTS.values()):,}. " if sum(have.values()) else "")
        raise DownloadError(f"could not download {PACS_REPO} from the Hugging Face Hub "
                            f"({type(e).__name__}: {str(e).splitlines()[0]}).\n{held}"
                            + MANUAL_HELP.format(dest=dest)) from e
    files = sorted(Path(folder).rglob("*.parquet"))
    if not files:
        raise DownloadError(f"no parquet files in the downloaded {PACS_REPO}.\n" + MANUAL_HELP.format(dest=dest))
    return convert_parquet(files, dest, expected=PACS_COUNTS if check_counts else None)


def count_images(root) -> dict[str, int]:
    """Images per domain folder under ``root`` (empty if it does not exist)."""
    root = Path(root)
    if not root.is_dir():
        return {}
    return {d.name: sum(1 for p in d.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            for d in sorted(root.iterdir()) if d.is_dir() and not d.is_symlink()}


def convert_parquet(files, dest, classes=PACS_CLASSES, expected: dict[str, int] | None = PACS_COUNTS) -> Path:
    """Write every row's image bytes, unchanged, to ``dest/<domain>/<class>/<name><ext>``.

    Rows need columns ``image`` (struct of ``bytes`` and ``path``), ``domain`` and ``label``
    (an index into ``classes``). Files already present with the same size are skipped, so an
    interrupted conversion resumes. Raises DownloadError if per-domain counts differ from ``expected``.
    """
    import pyarrow.parquet as pq

    dest = Path(dest)
    counts: Counter = Counter()
    used: set[str] = set()
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    row = 0
    for f in files:  # every domain name is checked before anything is written
        if "domain" in pq.ParquetFile(f).schema_arrow.names:
            for i, value in enumerate(pq.read_table(f, columns=["domain"]).column("domain").to_pylist()):
                safe_name(value, f"{f}: row {row + i}: domain")
        row += pq.ParquetFile(f).metadata.num_rows
    row = 0
    with tqdm(total=total, desc="writing images", unit="img") as bar:
        for f in files:
            pf = pq.ParquetFile(f)
            missing = {"image", "domain", "label"} - set(pf.schema_arrow.names)
            if missing:
                raise DownloadError(f"{f}: parquet file lacks column(s) {sorted(missing)}")
            for batch in pf.iter_batches(batch_size=256, columns=["image", "domain", "label"]):
                for item in batch.to_pylist():
                    data = (item["image"] or {}).get("bytes")
                    if not data:
                        raise DownloadError(f"{f}: row {row} has no image bytes")
                    domain, label = safe_name(item["domain"], f"{f}: row {row}: domain"), int(item["label"])
                    if not 0 <= label < len(classes):
                        raise DownloadError(f"{f}: row {row} has label {label}, outside 0..{len(classes) - 1}")
                    stem = PurePosixPath(item["image"].get("path") or f"{row:06d}").stem or f"{row:06d}"
                    ext = image_extension(data)
                    rel = f"{domain}/{classes[label]}/{stem}{ext}"
                    if rel in used:  # two rows with one file name: keep both
                        rel = f"{domain}/{classes[label]}/{stem}_{row:06d}{ext}"
                    used.add(rel)
                    target = (dest / rel).resolve()
                    if not target.is_relative_to(dest.resolve()):  # e.g. a domain folder that is a link elsewhere
                        raise DownloadError(f"{f}: row {row}: {rel} would be written outside {dest}; refusing")
                    _write_once(dest / rel, data)
                    counts[domain] += 1
                    row += 1
                    bar.update()
    if expected is not None and dict(counts) != expected:
        raise DownloadError(f"image counts per domain {dict(sorted(counts.items()))} differ from the "
                            f"expected {expected}; the download may be incomplete. Re-run to resume.")
    return dest


def safe_name(value, what: str) -> str:
    """``value`` as one path component, or a DownloadError naming ``what``: never empty, '.', '..', a
    path with separators, an absolute path or a name with control characters."""
    name = "" if value is None else str(value)
    if (not name.strip() or name in (".", "..") or "/" in name or "\\" in name or name.startswith("~")
            or any(ord(ch) < 32 for ch in name)):
        raise DownloadError(f"{what} is {name!r}, which is not a plain folder name; refusing to write outside "
                            f"the destination. Fix the parquet file (each domain must be a plain name).")
    return name


def _write_once(path: Path, data: bytes) -> None:
    if not (path.is_file() and path.stat().st_size == len(data)):
        atomic_write(path, data)
