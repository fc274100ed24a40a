"""The graph a run with attribute vectors trains on, and the model it gives back.

    augment(kg, cfg): kg + one entity row per value of each --debias relation
                      ("[ATTR] REL VALUE", the attribute vectors A_v)
                      + one twin relation per --debias relation ("REL[ATTR]")
                      + the twin triples: every training triple of REL again under REL[ATTR]
    strip(emb):       the trained model without those rows and relations (the saved model)

The step adds a person's attribute vectors to its row on twin and whitelisted triples
(``kgnum.kernels.attributes``); this module only lays out the rows.
"""
from __future__ import annotations

import numpy as np

from ..data import KnowledgeGraph
from ..kernels.attributes import ATTR_TAG, attribute_name, attribute_rows, read_whitelist, twin_name
from ..kernels.kl import sensitive_triples


def augment(kg: KnowledgeGraph, cfg) -> KnowledgeGraph:
    """``kg`` with the attribute rows, twin relations and twin triples of ``cfg.debias``."""
    clash = [str(n) for n in kg.relation_names if ATTR_TAG in str(n)][:1] + \
        [str(n) for n in kg.entity_names if str(n).startswith(ATTR_TAG)][:1]
    if clash:
        raise ValueError(f"--attribute-vectors: the graph already has a name with {ATTR_TAG!r} ({clash[0]!r}); "
                         f"rename it")
    if cfg.attribute_whitelist:
        read_whitelist(cfg.attribute_whitelist, kg)  # its errors name the file and line, before training
    entity_names, relation_names = list(kg.entity_names), list(kg.relation_names)
    twins = []
    for name in cfg.debias_relations():
        rel, _, _, values, _ = sensitive_triples(kg, name, "--debias", top_m=int(cfg.debias_top_m))
        entity_names += [attribute_name(name, str(kg.entity_names[v])) for v in np.unique(values)]
        triples = kg.train[kg.train[:, 1] == rel].copy()
        triples[:, 1] = len(relation_names)
        relation_names.append(twin_name(name))
        twins.append(triples)
    return KnowledgeGraph(kg.name, np.concatenate([kg.train, *twins]), kg.valid, kg.test,
                          np.array(entity_names, dtype=object), np.array(relation_names, dtype=object),
                          dict(kg.dropped_unseen), kg.source, dict(kg.duplicates))


def strip(emb):
    """``emb`` (trained on an ``augment``-ed graph) without its attribute rows and twin relations
    (found by name: ``augment`` refuses graphs whose own names look like them)."""
    keep_e = ~attribute_rows(emb.entity_names)
    keep_r = np.array([not str(n).endswith(ATTR_TAG) for n in emb.relation_names])
    emb.entity, emb.relation = emb.entity[keep_e], emb.relation[keep_r]
    if emb.entity_state is not None:
        emb.entity_state, emb.relation_state = emb.entity_state[keep_e], emb.relation_state[keep_r]
    emb.entity_names = np.asarray(emb.entity_names, dtype=object)[keep_e]
    emb.relation_names = np.asarray(emb.relation_names, dtype=object)[keep_r]
    return emb
