"""``kgnum.evaluate``: filtered link prediction of trained embeddings."""
from __future__ import annotations

import time

from .data import KnowledgeGraph
from .embeddings import Embeddings
from .eval import link_prediction_metrics


def evaluate(emb: Embeddings, kg: KnowledgeGraph, split: str = "test", *, batch_size: int = 512) -> dict:
    """Filtered MRR, MR, Hits@1/3/10 over all entities, head and tail side.

    The filter removes every other true answer from train + valid + test.
    Ties count as the mean of the optimistic and pessimistic rank. Returns
    the pooled metrics plus per-side ones under "head"/"tail", "n_queries"
    and "eval_seconds".
    """
    if emb.n_entities != kg.n_entities or emb.relation.shape[0] != kg.n_relations:
        raise ValueError(f"the model has {emb.n_entities} entities / {emb.relation.shape[0]} relations "
                         f"but the dataset {kg.n_entities} / {kg.n_relations}: not the same graph")
    start = time.perf_counter()
    metrics = link_prediction_metrics(emb.score_candidates, kg.split(split), kg.all_triples(),
                                      kg.n_entities, kg.n_relations, batch_size=batch_size)
    metrics["eval_seconds"] = time.perf_counter() - start
    return metrics
