"""Sim(t, D): mean cosine similarity between a prompt and the images of a domain (the paper's Table 1).

Usage::

    tables = table1(emb)                                   # reproduced, paper and difference
    paper_comparison(emb)                                  # whether (and how) the paper's values compare
    prompt_similarity(emb, ["a comic strip", "a cartoon"])  # any prompts x every domain
"""
from __future__ import annotations

import io
from importlib import resources

import numpy as np
import pandas as pd

from ..registry import registry
from ..text_encoder import TextEncoder
from .arguments import check_cache_path, check_embeddings
from .embeddings import Embeddings, group_means, l2_normalize
from .text import TextSide, text_for, text_side


def similarity_matrix(text: np.ndarray, images: np.ndarray, image_domain: np.ndarray, n_domains: int) -> np.ndarray:
    """(P, n_domains): mean over each domain's images of cos(text_p, image). Inputs need not be normalised.

    The mean of cosines is the cosine's numerator against the mean unit image: mean_x(t̂·x̂) = t̂·mean_x(x̂), so
    one (n_domains x N) product replaces the (P x N) matrix of every cosine."""
    images = np.asarray(images)
    norm = np.sqrt(np.einsum("nd,nd->n", images, images, dtype=np.float64))
    norm[norm == 0] = 1
    means = group_means(images, np.asarray(image_domain), n_domains, (1 / norm).astype(images.dtype))
    return l2_normalize(np.asarray(text, np.float64)) @ means.T


def prompt_similarity(emb: Embeddings, prompts: list[str]) -> pd.DataFrame:
    """Sim(prompt, domain) for any prompts (rows; missing ones are encoded) and every domain (columns)."""
    cache = check_cache_path(emb, "prompt_similarity")
    vectors = cache.prompt_vectors(prompts, TextEncoder(cache))
    values = similarity_matrix(vectors, emb.x, emb.domain, len(emb.domains))
    return pd.DataFrame(values, index=pd.Index(list(prompts), name="prompt"), columns=emb.domains)


def paper_table1() -> pd.DataFrame:
    """The paper's Table 1 (prompts x PACS domains), as printed."""
    text = resources.files("pacs_embed").joinpath("data/paper_table1.csv").read_text()
    return pd.read_csv(io.StringIO(text), index_col="prompt")


def paper_comparison(emb: Embeddings) -> tuple[bool, str]:
    """(whether this cache's Table 1 can be set beside the paper's, a sentence saying so or why not).

    The paper's values are means over all images of PACS's domains (all seven classes): a cache of
    another dataset — even one with a domain of the same name, such as DomainNet's ``sketch`` — or of
    other classes measures something else, so it is not compared."""
    emb = check_embeddings(emb, "paper_comparison")
    pacs = registry()["PACS"]
    other_domains = sorted(set(emb.domains) - set(pacs.domains))
    if other_domains or sorted(emb.classes) != sorted(pacs.classes):
        why = (f"domains {other_domains}" if other_domains else
               f"classes {sorted(emb.classes)} instead of PACS's {pacs.classes}")
        return False, (f"The paper's Table 1 is measured on PACS; this cache has {why}, so it is not compared "
                       f"with the paper.")
    n = {d: int((emb.domain == i).sum()) for i, d in enumerate(emb.domains)}
    model = emb.cache.attrs.get("model_id", "an unrecorded model") if emb.cache is not None else "vectors given in memory"
    unnamed = (f" The paper does not name its CLIP model; this cache was made with {model}, so differences also "
               f"include any difference of model.")
    fewer = {d: f"{k} of {pacs.domains[d]}" for d, k in n.items() if k < pacs.domains[d]}
    if fewer:
        return True, ("Compared with the paper's Table 1, which averages over every PACS image; this cache has "
                      + ", ".join(f"{d} {v}" for d, v in fewer.items()) + " images, so differences include sampling."
                      + unnamed)
    return True, "Compared with the paper's Table 1 (every PACS image)." + unnamed


def table1(emb: Embeddings, domain_prompts: dict | None = None, templates: dict | None = None) -> dict[str, pd.DataFrame]:
    """{'reproduced', 'paper', 'difference'}: Sim(description of each domain, images of each domain).

    Rows are the domains' ``paper`` descriptions (the packaged prompts, or ``domain_prompts``; a
    domain described by several prompts is their averaged vector, labelled "p1 | p2"). 'paper' and
    'difference' cover the rows and domains the paper reports, and are empty when the cache is not of
    PACS (``paper_comparison`` says why).
    """
    text = text_side(check_embeddings(emb, "table1"), ("paper",), domain_prompts, templates=templates)
    labels = [" | ".join(d.prompts) for d in text.descriptions["paper"]]
    ours = pd.DataFrame(similarity_matrix(text.vectors("paper"), emb.x, emb.domain, len(emb.domains)),
                        index=pd.Index(labels, name="prompt"), columns=emb.domains)
    paper = paper_table1()
    if not paper_comparison(emb)[0]:
        paper = paper.iloc[:0, :0]
    rows = [p for p in paper.index if p in ours.index]
    cols = [d for d in paper.columns if d in ours.columns]
    ours = ours.loc[rows + [p for p in ours.index if p not in rows], cols + [d for d in ours.columns if d not in cols]]
    ours.attrs["model"] = str(emb.cache.attrs.get("model_id")) if emb.cache is not None else "vectors given in memory"
    return {"reproduced": ours, "paper": paper.loc[rows, cols], "difference": ours.loc[rows, cols] - paper.loc[rows, cols]}


def description_similarity(emb: Embeddings, text: TextSide) -> pd.DataFrame:
    """Sim(description of domain A, images of domain B) for every description strategy of ``text``.

    Rows: (description, described domain); columns: image domain.
    """
    emb = check_embeddings(emb, "description_similarity")
    text = text_for(emb, text, "description_similarity")
    blocks = {description: pd.DataFrame(similarity_matrix(text.vectors(description), emb.x, emb.domain, len(emb.domains)),
                                index=pd.Index(emb.domains, name="described"), columns=emb.domains)
              for description in text.descriptions}
    return pd.concat(blocks, names=["description"])
