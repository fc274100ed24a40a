"""``kgnum.train``: validate the configuration, set up the tables, pick the engine, run the loop.

    TrainConfig.validate -> initial tables (fresh, or a resumed model)
      -> Job (model, extra loss terms, StepParams, edges, tables)
      -> engine by backend: cpu (InProcessEngine with 1 worker, shm.SharedMemoryEngine
         with more), gpu, dask -> loop.run(engine, job, ...)

Engines are imported only when chosen: ``import kgnum`` imports none of their
heavy dependencies.
"""
from __future__ import annotations

import copy
import importlib
import logging
import math
from dataclasses import fields

import numpy as np

from .blas import held_back
from .config import CLUSTER_FIELDS, TrainConfig, available_cores
from .data import KnowledgeGraph
from .embeddings import Embeddings
from .kernels.registry import get_model
from .kernels.attributes import attribute_rows
from .kernels.sampling import degree_cdf
from .kernels.step import Tables, step_params
from .kernels.terms import active_terms
from .loop import Engine, Job, Budget, run, save_interruptible

log = logging.getLogger("kgnum")

# backends whose engines live in their own package, built by a module-level make_engine(cfg)
_ENGINE_MODULES = {"gpu": ("kgnum.gpu.engine", "gpu"), "dask": ("kgnum.cluster.engine", "cluster")}


STOPPING = ("max_steps", "epochs", "time_budget")  # count from the start of each leg, never resumed
NOT_RESUMED = STOPPING + CLUSTER_FIELDS  # ... nor where the last leg's cluster was


def resolve_config(model: str | None, options: dict, init: Embeddings | None) -> TrainConfig:
    """The run's configuration: ``options`` over TrainConfig's defaults, or, when resuming, over
    the configuration saved with ``init`` (all but the stopping rules); each override is logged."""
    if init is None:
        return TrainConfig(model=model or TrainConfig.model, **options).validate()
    known = {f.name for f in fields(TrainConfig)}
    saved = {k: v for k, v in init.config.items() if k in known and k not in NOT_RESUMED}
    saved.update(model=init.model, dim=init.dim)
    explicit = dict(options, **({"model": model} if model else {}))
    if get_model(explicit.get("model", init.model)).name != init.model or explicit.get("dim", init.dim) != init.dim:
        raise ValueError(f"cannot resume: the saved model is {init.model} dim {init.dim}, "
                         f"but this run asks for --model {explicit.get('model', init.model)} "
                         f"--dim {explicit.get('dim', init.dim)}")
    explicit.pop("model", None)
    overrides = [f"--{k.replace('_', '-')} {saved[k]!r} -> {v!r}" for k, v in explicit.items()
                 if k in saved and saved[k] != v]
    cores = available_cores()
    if "workers" not in explicit and saved.get("backend", "cpu") == "cpu" and (saved.get("workers") or 0) > cores:
        # the count the saving machine had (the default is every core): not more than this one has
        overrides.append(f"--workers {saved['workers']!r} -> {cores!r} (the cores this process may use)")
        saved["workers"] = cores
    cfg = TrainConfig(**{**saved, **explicit}).validate()
    log.info("resuming %s dim %d with its saved configuration%s", cfg.model, cfg.dim,
             "; overrides: " + ", ".join(overrides) if overrides else "")
    return cfg


def initial_embeddings(kg: KnowledgeGraph, cfg: TrainConfig, init: Embeddings | None) -> Embeddings:
    """Fresh tables for ``kg``, or a copy of ``init`` (resume); ``kg`` must already be aligned to
    ``init``'s rows (``KnowledgeGraph.aligned_to``)."""
    sf = get_model(cfg.model)
    if init is not None:
        emb = Embeddings(sf.name, init.entity.copy(), init.relation.copy(), cfg.to_dict(),
                         init.entity_names, init.relation_names, init.entity_state.copy(),
                         init.relation_state.copy())
        emb.engine_state = {k: v.copy() for k, v in init.engine_state.items()}
        emb.views = {k: v.copy() for k, v in init.views.items()}  # they stay with the loaded tables
        return emb
    entity, relation = sf.init_tables(kg.n_entities, kg.n_relations, cfg.dim, cfg.gamma, cfg.seed)
    return Embeddings(sf.name, entity, relation, cfg.to_dict(), kg.entity_names, kg.relation_names)


def grown(init: Embeddings, kg: KnowledgeGraph, cfg: TrainConfig) -> Embeddings:
    """``init`` with fresh rows appended for the entities and relations of ``kg`` it lacks.

    Old names keep their rows (and Adagrad state); new ones get rows drawn as a fresh model's
    would be (state zero), after the old ones, in the order the graph numbers them.
    """
    have_e = {str(n) for n in init.entity_names}
    have_r = {str(n) for n in init.relation_names}
    new_e = [str(n) for n in kg.entity_names if str(n) not in have_e]
    new_r = [str(n) for n in kg.relation_names if str(n) not in have_r]
    if not new_e and not new_r:
        return init
    if init.engine_state:
        log.info("the saved engine state (%s) is for the old rows: this run starts its engine afresh",
                 ", ".join(sorted({k.split("/")[0] for k in init.engine_state})))
    stats = dict(init.train_stats)
    if not attribute_rows(new_e).all() and stats.pop("valid_key", None) is not None:
        # the earlier legs' valid MRRs ranked fewer entities: they do not compare with this run's, so the
        # loaded tables (the new rows untrained) are not kept as the best against this run's validations
        log.info("the saved valid MRRs ranked %d entities, this run ranks more: the loaded tables are not "
                 "kept as the best so far", init.n_entities - int(attribute_rows(init.entity_names).sum()))
    sf = get_model(init.model)
    ent, rel = sf.init_tables(len(new_e), len(new_r), init.dim, cfg.gamma, cfg.seed + 1)
    log.info("the dataset adds %d entities and %d relations to the saved model: new rows appended, "
             "the %d old entities and %d relations keep theirs", len(new_e), len(new_r), init.n_entities,
             init.relation.shape[0])
    out = Embeddings(sf.name, np.concatenate([init.entity, ent]), np.concatenate([init.relation, rel]),
                     init.config, list(init.entity_names) + new_e, list(init.relation_names) + new_r,
                     np.concatenate([init.entity_state, np.zeros(len(new_e), np.float32)]),
                     np.concatenate([init.relation_state, np.zeros(len(new_r), np.float32)]), stats)
    return out


def make_job(kg: KnowledgeGraph, cfg: TrainConfig, emb: Embeddings) -> Job:
    """The run as engines see it: the step's parameters and extra terms, edges, tables."""
    cdf = degree_cdf(kg.train, kg.n_entities) if cfg.neg_sampling == "degree" else None
    terms, term_params = active_terms(cfg, kg)
    if "attributes" in terms and cdf is None:  # attribute rows (after the graph's own) are never negatives
        cdf = np.cumsum(~attribute_rows(kg.entity_names), dtype=np.float64)
    params = step_params(cfg.batch, cfg.neg_chunk, cfg.neg, cdf, cfg.gamma, cfg.lr,
                         cfg.adv_temp if cfg.adv else 0.0, term_params)
    edges = np.ascontiguousarray(kg.train, dtype=np.int32)
    budget = Budget(cfg, edges.shape[0])
    tables = Tables(emb.entity, emb.relation, emb.entity_state, emb.relation_state)
    return Job(get_model(cfg.model).name, terms, params, edges, tables, int(cfg.seed), int(cfg.workers),
               budget.max_steps, budget.steps_per_epoch, dict(emb.engine_state))


def make_engine(cfg: TrainConfig, kg: KnowledgeGraph | None = None, client=None) -> Engine:
    """The engine of ``cfg.backend``; a clear error when it is not available. ``kg``: the graph (the
    dask engine partitions it); ``client``: a ``distributed.Client`` for the dask engine.
    ``--debias-method adversarial`` has its own engine (``kgnum.bias.adversarial``, PyTorch)."""
    if cfg.debias and cfg.debias_method == "adversarial":
        if cfg.backend != "cpu":
            raise ValueError(f"--backend {cfg.backend}: --debias-method adversarial trains in this process; "
                             f"use --backend cpu")
        try:
            from .bias.adversarial import AdversarialEngine
        except ModuleNotFoundError as e:
            if e.name is not None and e.name.split(".")[0] == "torch":
                raise ValueError("--debias-method adversarial: needs PyTorch, which is not installed "
                                 "(pip install 'kgnum[adversarial]')") from None
            raise
        if cfg.workers != 1:
            log.info("--debias-method adversarial trains with one worker (--workers %d ignored)", cfg.workers)
        return AdversarialEngine(cfg, kg)
    if cfg.backend == "cpu":
        if cfg.workers == 1:
            from .local import InProcessEngine

            return InProcessEngine()
        from .shm.engine import SharedMemoryEngine

        return SharedMemoryEngine(cfg.workers)
    module, extra = _ENGINE_MODULES[cfg.backend]
    try:
        engine_module = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            raise ValueError(f"--backend {cfg.backend}: this engine is not built yet in this version of "
                             f"kgnum; use --backend cpu") from None
        raise ValueError(f"--backend {cfg.backend}: needs the Python package {e.name!r}, which is not "
                         f"installed (pip install 'kgnum[{extra}]'); or use --backend cpu") from None
    if cfg.backend == "dask":
        return engine_module.make_engine(cfg, kg, client)
    return engine_module.make_engine(cfg)


def training_graph(kg: KnowledgeGraph, cfg: TrainConfig) -> KnowledgeGraph:
    """The graph a run of ``cfg`` trains on: ``kg``, with the attribute rows, twin relations and
    twin triples when ``cfg.attribute_vectors``."""
    if not cfg.attribute_vectors:
        return kg
    from .bias.attributes import augment

    return augment(kg, cfg)


def _check_memory(kg: KnowledgeGraph, cfg: TrainConfig, force: bool) -> None:
    from .plan import format_bytes, plan_for

    p = plan_for(kg, cfg)
    if p.fits:
        log.debug("memory plan:\n%s", p.table())
        return
    message = (f"this run needs about {format_bytes(p.peak)} at its peak but {format_bytes(p.free)} is available "
               f"(kgnum plan with the same flags shows the breakdown); lower --dim or --workers, or "
               f"pass --force to try anyway")
    if force:
        log.warning("%s: running anyway (--force)", message.split(" (kgnum plan")[0])
        return
    log.warning("memory plan:\n%s", p.table())
    raise MemoryError(message)


def train(kg: KnowledgeGraph, model: str | None = None, *, init: Embeddings | None = None,
          save: str | None = None, checkpoint_every: float | None = None, progress: bool = True,
          on_validation=None, client=None, force: bool = False, **options) -> Embeddings:
    """Train embeddings of ``kg`` and return them.

    ``options`` are TrainConfig fields (dim, neg, neg_chunk, batch, lr, gamma,
    adv, adv_temp, reg_coef, reg_norm, neg_sampling, max_steps, epochs,
    time_budget, valid_every, patience, valid_sample, backend, workers, seed).
    ``model`` defaults to TransE_l2. ``init`` resumes from saved embeddings:
    the configuration saved with them is continued (options override it; the
    stopping rules count from the start of this leg), ``kg`` is matched to
    their rows by entity and relation name, and the statistics accumulate
    (steps, positives, seconds, validation history). ``save``
    writes the result (atomically) to that directory, and also every
    ``checkpoint_every`` seconds while training when given. The returned
    object's ``train_stats`` is ``loop.TrainStats`` as a dict (train_seconds,
    steps, positives, triples_per_second, mean_loss, workers, backend,
    valid_history, best_step, history, ...). ``on_validation(step, valid_mrr,
    train_seconds)`` is called after every validation; returning True stops
    the run like early stopping. Before training, the run's memory plan
    (``kgnum.plan``) is checked against the memory available; a run that
    does not fit raises ``MemoryError`` naming both, unless ``force``.
    ``client``: a ``distributed.Client`` of the
    cluster to train on with ``backend="dask"`` (else ``scheduler`` /
    ``local_cluster`` / a LocalCluster of ``workers`` processes).
    """
    cfg = resolve_config(model, options, init)
    if checkpoint_every is not None and not (checkpoint_every > 0 and math.isfinite(checkpoint_every)):
        raise ValueError(f"--checkpoint-every {checkpoint_every}: must be a number of seconds > 0")
    if checkpoint_every is not None and not save:
        raise ValueError("--checkpoint-every needs --save: the directory the checkpoints go to")
    if save:  # refused before training, not at the first checkpoint
        from .files import check_output_dir

        check_output_dir(save, "save=", "config.json")
    if kg.train.shape[0] == 0:
        raise ValueError("the training split is empty")
    resumed = {str(r) for r in init.relation_names} if init is not None else set()
    for name in [r for r in (cfg.eval_exclude_relations or "").split(",") if r]:  # before training, not at its end
        if name in resumed:  # the loaded model's own (the graph may be a subset of its names)
            continue
        try:
            kg.relation_id(name)
        except ValueError:
            raise ValueError(f"--eval-exclude-relations {name}: no such relation in graph {kg.name!r}") from None
    graph = kg
    kg = training_graph(kg, cfg)
    augmented = kg is not graph  # attribute rows and twin relations, stripped from the saved model
    if init is not None and not augmented and attribute_rows(init.entity_names).any():
        # a checkpoint of a run with attribute vectors, resumed without them: they would be saved with
        # the model, never trained, and the twin relations with them
        from .bias.attributes import strip

        log.info("this run has no --attribute-vectors: the loaded model's attribute vectors and twin "
                 "relations are dropped")
        init = strip(copy.copy(init))
    if init is not None:
        init = grown(init, kg, cfg)
        kg = kg.aligned_to(init.entity_names, init.relation_names)
    _check_memory(kg, cfg, force)
    if client is not None and cfg.backend != "dask":
        raise ValueError(f"client= is for backend='dask' (this run: backend={cfg.backend!r})")
    engine = make_engine(cfg, kg, client)
    if cfg.backend == "cpu":  # the engine runs here: its BLAS is this process's
        note = held_back()
        if note:
            log.info("%s", note)
    emb = initial_embeddings(kg, cfg, init)
    emb.known_triples = {split: kg.split(split) for split in ("train", "valid", "test")}  # saved with it
    if init is not None and hasattr(engine, "previous_stats"):
        engine.previous_stats = init.train_stats
    # checkpoints go to ``save`` whatever the graph (aligned to a loaded model, grown, augmented)
    out = run(engine, make_job(kg, cfg, emb), kg, cfg, emb, save=save, checkpoint_every=checkpoint_every,
              progress=progress, previous=init.train_stats if init is not None else None,
              on_validation=on_validation, save_final=not augmented)
    if augmented:  # checkpoints keep the attribute rows (a resume continues them); the model does not
        from .bias.attributes import strip

        out = strip(out)
        mine = graph.aligned_to(out.entity_names, out.relation_names)
        out.known_triples = {split: mine.split(split) for split in ("train", "valid", "test")}
        if save:
            save_interruptible(out, save)
    return out
