"""What one extraction did, as ``extract`` returns it (print it).

Usage::

    print(extract("data/PACS"))      # images, time, device, processor, failures, what to run next
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Summary:
    out: Path
    n_images: int
    n_embedded: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = ""
    dtype: str = ""
    up_to_date: bool = False
    resumed: int = 0           # images found already done in the journal
    kept: int = 0              # unchanged images whose stored embeddings were kept (not embedded again)
    processor: str = ""        # "pil", "fast" or "device" (mapper.MAPPERS)
    ranks: int = 1             # torchrun processes that embedded
    rank: int = 0              # this process's rank (> 0: it embedded its share; rank 0 wrote the file)
    embed_seconds: float = 0.0  # decoding + preprocessing + the image tower, after the model was loaded

    def __str__(self) -> str:
        if self.rank:
            return (f"rank {self.rank} of {self.ranks}: " + (f"{self.out} is up to date" if self.up_to_date else
                    f"embedded {self.n_embedded} images in {self.seconds:.1f} s; rank 0 writes {self.out}"))
        if self.up_to_date:
            return (f"{self.out} is up to date ({self.n_images} images, made on {self.device}/{self.dtype}); nothing to "
                    f"do.\nnext: pacs-embed report {self.out}")
        return "\n".join(["", "pacs-embed extract: done", self._images(), self._time(), f"  output     {self.out}",
                          *self._failures(), "",
                          f"next: pacs-embed report {self.out}        (or open the notebooks: make notebooks; they "
                          f"read the newest cache, or PACS_EMBED_CACHE={self.out})"])

    def _images(self) -> str:
        return (f"  images     {self.n_images} ({self.n_embedded} embedded, {len(self.failures)} failed"
                + (f", {self.resumed} resumed from an earlier run" if self.resumed else "")
                + (f"; kept {self.kept:,}, embedded {self.n_images - self.kept:,}" if self.kept else "") + ")")

    def _time(self) -> str:
        rate = (self.n_images - self.resumed - self.kept) / self.seconds if self.seconds else float("nan")
        return (f"  time       {self.seconds:.1f} s ({rate:.1f} images/s) on {self.device} / {self.dtype}"
                + (f" x {self.ranks} ranks" if self.ranks > 1 else "") + f", {self.processor} preprocessing"
                + (f"; embedding {self.embed_seconds:.1f} s of it" if self.embed_seconds else ""))

    def _failures(self) -> list[str]:
        lines = [f"  FAILED     {p}: {r}" for p, r in self.failures[:20]]
        if len(self.failures) > 20:
            lines.append(f"  ... {len(self.failures) - 20} more failures, listed in the file's /failures group")
        return lines
