"""Everything the notebooks call, in one namespace.

Usage::

    from pacs_embed import analysis as pa
    emb = pa.load(cache); pa.table1(cache, emb)
"""
from . import plots  # noqa: F401
from .embeddings import Embeddings, dataset_status, l2_normalize, load  # noqa: F401
from .evaluate import evaluate, text_side  # noqa: F401
from .operators import OPERATORS, Context, delta, register  # noqa: F401
from .prompts import DOMAIN_PROMPT_SETS, check_model, domain_prompt_lists, load_prompt_set, prompt_embeddings  # noqa: F401
from .report import markdown, record, report  # noqa: F401
from .similarity import description_similarity, paper_table1, prompt_similarity, similarity_matrix, table1  # noqa: F401,E501
from .stats import gains, grid, method_means, summary  # noqa: F401
