"""kgnum: fast knowledge-graph embeddings.

    import kgnum
    kg = kgnum.load_dataset("FB15k-237")
    emb = kgnum.train(kg, model="TransE_l2", dim=400, time_budget=300, workers=2)
    kgnum.evaluate(emb, kg)          # filtered MRR, MR, Hits@1/3/10
    emb.predict_tail("/m/02mjmr", "/people/person/nationality", k=5)
    emb.save("out/transe"); kgnum.load("out/transe")
"""
from .data import KGDataError, KnowledgeGraph, load_dataset, synthetic
from .embeddings import Embeddings, load
from .eval import evaluate
from .kernels.registry import model_names
from .train import train

__all__ = ["KGDataError", "KnowledgeGraph", "load_dataset", "synthetic", "Embeddings", "load",
           "evaluate", "train", "model_names"]
__version__ = "0.1.0"
