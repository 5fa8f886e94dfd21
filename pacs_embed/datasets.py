"""Datasets in the DomainBed folder layout ``<root>/<domain>/<class>/<image>``.

Usage::

    ds = scan("data/PACS")          # stable sorted order, hashes every file
    ds.domains, ds.classes, ds.records[0].path
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .errors import PacsEmbedError

# the image files of a dataset: torchvision ImageFolder's (DomainBed reads datasets with it), any letter case
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGE_KINDS = "/".join(IMAGE_EXTENSIONS)


class DatasetError(PacsEmbedError, ValueError):
    """The data folder is missing or not in the ``<domain>/<class>/<image>`` layout."""


@dataclass(frozen=True)
class Record:
    path: str          # relative to the dataset root, '/'-separated
    domain: int
    label: int
    size: int
    mtime_ns: int
    sha256: str = ""


@dataclass
class Dataset:
    root: Path
    domains: list[str]
    classes: list[str]
    records: list[Record]
    ignored: list[str] = field(default_factory=list)   # "path (why)" of everything skipped: not images, links, ...

    @property
    def name(self) -> str:
        """The dataset folder's own name (``--data ..`` is the parent folder's name, never "..")."""
        return self.root.resolve().name or "dataset"

    def manifest_sha256(self) -> str:
        """One hash over every (path, content hash): changes when any file is added, removed or edited."""
        h = hashlib.sha256()
        for r in self.records:
            h.update(f"{r.path}\t{r.sha256}\n".encode())
        return h.hexdigest()


# Links: a link to a file inside the data folder is followed; a link to a folder is never followed (a
# loop such as `ln -s . data/zloop` would make phantom domains), nor a link to a file outside the data
# folder. What is skipped is listed, with the reason.
LINK_TO_FOLDER = "link to a folder, not followed"
LINK_OUTSIDE = "link to a file outside the data folder, not followed"
BROKEN_LINK = "broken link"


def _entries(folder) -> list[os.DirEntry]:
    """The visible entries of ``folder``, sorted by name (one directory read; types come with the listing)."""
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _visible_dirs(folder: Path, skipped: list[str] | None = None, root: Path | None = None) -> list[Path]:
    out = []
    for e in _entries(folder):
        if not e.is_dir():
            continue
        if e.is_symlink():
            if skipped is not None:
                skipped.append(f"{Path(e.path).relative_to(root).as_posix()} ({LINK_TO_FOLDER})")
            continue
        out.append(Path(e.path))
    return out


def _files(folder: Path, prefix: str):
    """(entry, relative path) of everything in a class folder but its sub-folders, which are walked: their
    images belong to the class, as torchvision's ImageFolder (DomainBed's loader) has it. Links to folders
    are entries (skipped by the caller, and listed)."""
    for e in _entries(folder):
        if e.is_dir() and not e.is_symlink():
            yield from _files(Path(e.path), f"{prefix}{e.name}/")
        else:
            yield e, prefix + e.name


def _file_problem(f: Path, root: Path) -> str | None:
    """Why a file is skipped (a link pointing outside the data folder, or nowhere), or None."""
    if not f.is_symlink():
        return None
    target = f.resolve()
    if not target.exists():
        return BROKEN_LINK
    return None if target.is_relative_to(root.resolve()) else LINK_OUTSIDE


def scan(root, known: dict[str, Record] | None = None, progress: bool = True) -> Dataset:
    """List and hash every image under ``root`` in sorted (domain, class, file) order.

    ``known`` maps paths to records from an earlier scan: a file whose size and mtime are
    unchanged keeps its stored hash instead of being read again (so checking a 10,000-image
    dataset for changes takes a directory listing and one ``stat`` per file).
    """
    root = _check_root(Path(root))
    ignored: list[str] = []
    domain_dirs, class_dirs, classes = _layout(root, ignored)
    found = _images(root, domain_dirs, class_dirs, classes, ignored)
    domains, classes, found = _without_empty([d.name for d in domain_dirs], classes, found, ignored)
    return Dataset(root, domains, classes, _hashed(root, found, known or {}, progress), ignored)


def check_layout(root) -> None:
    """The quick part of ``scan``: ``root`` is a folder of <domain>/<class>/ folders (no file is read) — an error saying
    what is wrong otherwise. The command line runs it before it loads torch, so a wrong --data fails at once."""
    _layout(_check_root(Path(root)), [])


def _check_root(root: Path) -> Path:
    """``root`` when it is a folder; else an error saying how to get one."""
    if root.exists() and not root.is_dir():
        raise DatasetError(f"data folder {str(root)!r} is a file; point --data at a folder laid out as "
                           f"<domain>/<class>/<image>.")
    if not root.is_dir():
        raise DatasetError(
            f"data folder {str(root)!r} does not exist. Run `pacs-embed download` to fetch PACS into "
            f"data/PACS (offline it says how to place it by hand), or point --data at a folder laid out as "
            f"<domain>/<class>/<image>: `pacs-embed extract --data FOLDER --model MODEL`.")
    return root


def _layout(root: Path, ignored: list[str]) -> tuple[list[Path], dict[Path, list[Path]], list[str]]:
    """The domain folders, each one's class folders, and every class name (sorted); links to folders and files
    outside class folders join ``ignored``."""
    domain_dirs = _visible_dirs(root, ignored, root)
    if not domain_dirs:
        raise DatasetError(f"data folder {str(root)!r} has no domain sub-folders; expected <domain>/<class>/<image>.")
    class_dirs = {d: _visible_dirs(d, ignored, root) for d in domain_dirs}
    classes = sorted({c.name for cs in class_dirs.values() for c in cs})
    if not classes:
        raise DatasetError(f"no class folders under the domains of {str(root)!r}; expected <domain>/<class>/<image>.")
    ignored += [f"{e.name} (not in a domain folder)" for e in _entries(root) if e.is_file()]
    for d in domain_dirs:
        ignored += [f"{d.name}/{e.name} (not in a class folder)" for e in _entries(d) if e.is_file()]
    return domain_dirs, class_dirs, classes


def _images(root, domain_dirs, class_dirs, classes, ignored) -> list[tuple]:
    """(relative path, domain index, class index, stat) of every image file; anything else joins ``ignored``
    with the reason."""
    class_index = {c: i for i, c in enumerate(classes)}
    found = []
    for di, d in enumerate(domain_dirs):
        for c in class_dirs[d]:
            for e, rel in _files(c, f"{d.name}/{c.name}/"):
                problem = (LINK_TO_FOLDER if e.is_dir() else _file_problem(Path(e.path), root) if e.is_symlink()
                           else None)
                if problem:
                    ignored.append(f"{rel} ({problem})")
                elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS:
                    found.append((rel, di, class_index[c.name], e.stat()))
                else:
                    ignored.append(f"{rel} (not an image: not {IMAGE_KINDS})")
    if not found:
        raise DatasetError(f"no images ({IMAGE_KINDS}) under {str(root)!r}.")
    return found


def _without_empty(domains, classes, found, ignored) -> tuple[list[str], list[str], list[tuple]]:
    """A domain or class folder without a single image is no domain or class (ImageFolder refuses it): said in
    ``ignored``, left out, and the indices of ``found`` renumbered."""
    has_d, has_c = {di for _, di, _, _ in found}, {ci for _, _, ci, _ in found}
    ignored += [f"{d} (no images: not a domain)" for i, d in enumerate(domains) if i not in has_d]
    ignored += [f"{c} (a class folder with no images in any domain: not a class)" for i, c in enumerate(classes)
                if i not in has_c]
    new_d = {old: new for new, old in enumerate(sorted(has_d))}
    new_c = {old: new for new, old in enumerate(sorted(has_c))}
    found = [(rel, new_d[di], new_c[ci], st) for rel, di, ci, st in found]
    return [domains[i] for i in sorted(has_d)], [classes[i] for i in sorted(has_c)], found


def _hashed(root: Path, found, known: dict[str, Record], progress: bool) -> list[Record]:
    """A record per image; a file whose size and mtime match ``known`` keeps its stored hash (not read again)."""
    records = []
    for rel, di, ci, st in tqdm(found, desc="hashing files", unit="file", disable=not progress, leave=False):
        old = known.get(rel)
        if old is not None and old.sha256 and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
            digest = old.sha256
        else:
            digest = sha256_file(root / rel)
        records.append(Record(rel, di, ci, st.st_size, st.st_mtime_ns, digest))
    return records


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Changes:
    """What differs between the files a cache was made from and the files on disk now."""
    added: list[str]
    removed: list[str]
    modified: list[str]
    moved: list[str] = field(default_factory=list)   # "old -> new": the same bytes under another path (a renamed
                                                     # class or domain folder); their vectors are kept

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified or self.moved)

    def summary(self, limit: int = 20) -> str:
        lines = []
        for what, paths in (("moved (same bytes, another path)", self.moved), ("added", self.added),
                            ("removed", self.removed), ("modified", self.modified)):
            if paths:
                lines.append(f"{len(paths)} {what}:")
                lines += [f"  {p}" for p in paths[:limit]]
                if len(paths) > limit:
                    lines.append(f"  ... and {len(paths) - limit} more")
        return "\n".join(lines) if lines else "no changes"


def compare(old: dict[str, str], new: dict[str, str]) -> Changes:
    """Compare two {path: sha256} maps. A removed path and an added one with the same content hash are one file
    moved (renamed folder), not a removal and an addition."""
    added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    gone: dict[str, list[str]] = {}
    for p in removed:
        gone.setdefault(old[p], []).append(p)
    moved, still_added = [], []
    for p in added:
        if gone.get(new[p]):
            moved.append(f"{gone[new[p]].pop(0)} -> {p}")
        else:
            still_added.append(p)
    moved_from = {m.split(" -> ")[0] for m in moved}
    return Changes(added=still_added, removed=[p for p in removed if p not in moved_from],
                   modified=sorted(p for p in old.keys() & new.keys() if old[p] != new[p]), moved=moved)
