"""Sim(t_D, D): mean cosine similarity between a prompt and the images of a domain (the paper's Table 1).

Usage::

    table = table1(cache)          # reproduced, paper and difference, prompts x domains
"""
from __future__ import annotations

import io
from importlib import resources

import numpy as np
import pandas as pd

from .embeddings import Embeddings, l2_normalize, load
from .prompts import domain_prompt, load_prompt_set, prompt_embeddings


def similarity_matrix(text: np.ndarray, images: np.ndarray, image_domain: np.ndarray, n_domains: int) -> np.ndarray:
    """(P, n_domains): mean over each domain's images of cos(text_p, image). Inputs need not be normalised."""
    sims = l2_normalize(text) @ l2_normalize(images).T
    return np.stack([sims[:, image_domain == d].mean(axis=1) for d in range(n_domains)], axis=1)


def prompt_similarity(cache, prompts: list[str], emb: Embeddings | None = None) -> pd.DataFrame:
    """Sim(prompt, domain) for any prompts (rows) and every domain of the cache (columns)."""
    emb = emb or load(cache)
    values = similarity_matrix(prompt_embeddings(cache, prompts), emb.x, emb.domain, len(emb.domains))
    return pd.DataFrame(values, index=pd.Index(prompts, name="prompt"), columns=emb.domains)


def paper_table1() -> pd.DataFrame:
    """The paper's Table 1 (prompts x PACS domains), as printed."""
    text = resources.files("pacs_embed").joinpath("data/paper_table1.csv").read_text()
    return pd.read_csv(io.StringIO(text), index_col="prompt")


def table1(cache, emb: Embeddings | None = None, prompt_set: dict | None = None) -> dict[str, pd.DataFrame]:
    """{'reproduced', 'paper', 'difference'}: Table 1 with the paper's four domain prompts.

    'paper' and 'difference' cover the domains the paper reports that the cache has.
    """
    emb = emb or load(cache)
    prompt_set = prompt_set or load_prompt_set()
    paper = paper_table1()
    prompts = [domain_prompt(d, prompt_set) for d in emb.domains]
    ours = prompt_similarity(cache, prompts, emb)
    rows = [p for p in paper.index if p in ours.index]
    cols = [d for d in paper.columns if d in ours.columns]
    ours = ours.loc[rows + [p for p in ours.index if p not in rows], cols + [d for d in ours.columns if d not in cols]]
    return {"reproduced": ours, "paper": paper.loc[rows, cols], "difference": ours.loc[rows, cols] - paper.loc[rows, cols]}


def description_similarity(text, emb: Embeddings) -> pd.DataFrame:
    """Sim(description of domain A, images of domain B) for every domain-prompt set of a TextSide.

    Rows: (prompt set, described domain); columns: image domain.
    """
    blocks = {how: pd.DataFrame(similarity_matrix(vectors, emb.x, emb.domain, len(emb.domains)),
                                index=pd.Index(emb.domains, name="described"), columns=emb.domains)
              for how, vectors in text.domain.items()}
    return pd.concat(blocks, names=["prompt_set"])
