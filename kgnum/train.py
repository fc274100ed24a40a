"""``kgnum.train``: one call for every engine.

The loop here owns what every engine shares: configuration, table
initialisation or resume, stopping rules (steps / epochs / time budget),
progress reporting, periodic validation with early stopping, and
checkpoints. Engines only decide where the tables live and who runs
``kernels.step.train_kernel``: the in-process engine below for one worker,
``kgnum.shm`` for several.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
from threadpoolctl import threadpool_limits

from .config import TrainConfig
from .data import KnowledgeGraph
from .embeddings import Embeddings
from .kernels.registry import get_model
from .kernels.sampling import degree_cdf, seed_kernel_rng
from .kernels.step import train_kernel

log = logging.getLogger("kgnum")


class Budget:
    """Stopping rules in steps (batches): max_steps, epochs, time budget."""

    def __init__(self, cfg: TrainConfig, n_train: int):
        self.steps_per_epoch = max(1, math.ceil(n_train / cfg.batch))
        limits = []
        if cfg.max_steps is not None:
            limits.append(int(cfg.max_steps))
        if cfg.epochs is not None:
            limits.append(int(math.ceil(cfg.epochs * self.steps_per_epoch)))
        self.max_steps = min(limits) if limits else None
        self.time_budget = cfg.time_budget
        self.started = None  # set by start(): compilation and worker start-up are not training

    def start(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.perf_counter() - self.started

    def steps_left(self, steps_done: int) -> float:
        return math.inf if self.max_steps is None else self.max_steps - steps_done

    def done(self, steps_done: int) -> bool:
        if self.steps_left(steps_done) <= 0:
            return True
        return self.time_budget is not None and self.elapsed() >= self.time_budget


class Progress:
    """One progress bar with aggregate triples/s and loss (tqdm)."""

    def __init__(self, enabled: bool, total_steps):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, leave=True)

    def update(self, steps: int, triples_per_s: float, loss: float, extra: dict | None = None):
        if self.bar is None:
            return
        post = {"triples/s": f"{triples_per_s:,.0f}", "loss": f"{loss:.4f}"}
        post.update(extra or {})
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(steps)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Validator:
    """Early stopping on filtered valid MRR; keeps a copy of the best tables."""

    def __init__(self, kg: KnowledgeGraph, cfg: TrainConfig, seed: int):
        self.every = cfg.valid_every
        self.patience = cfg.patience
        self.best_mrr = -1.0
        self.best_tables = None
        self.bad_rounds = 0
        self.history: list[dict] = []
        valid = kg.valid
        self.enabled = self.every is not None and valid.shape[0] > 0
        if not self.enabled:
            return  # no validation: no copy of the known triples either
        if cfg.valid_sample is not None and valid.shape[0] > cfg.valid_sample:
            pick = np.random.default_rng(seed).choice(valid.shape[0], cfg.valid_sample, replace=False)
            valid = valid[np.sort(pick)]
        self.triples = valid
        self.known = kg.all_triples()

    def due(self, steps_done: int, last: int) -> bool:
        return self.enabled and steps_done // self.every > last // self.every

    def check(self, emb: Embeddings, steps_done: int) -> bool:
        """Evaluate; return True when training should stop."""
        from .eval import link_prediction_metrics

        metrics = link_prediction_metrics(emb.score_candidates, self.triples, self.known,
                                          emb.n_entities, emb.relation.shape[0])
        self.history.append({"step": steps_done, "valid_mrr": metrics["mrr"]})
        log.info("step %d: valid MRR %.4f", steps_done, metrics["mrr"])
        if metrics["mrr"] > self.best_mrr:
            self.best_mrr = metrics["mrr"]
            self.best_tables = (emb.entity.copy(), emb.relation.copy())
            self.bad_rounds = 0
            return False
        self.bad_rounds += 1
        return self.bad_rounds >= self.patience

    def restore_best(self, emb: Embeddings) -> None:
        if self.best_tables is not None:
            emb.entity[:], emb.relation[:] = self.best_tables


def next_call_steps(current: int, took: float, per_epoch: int, target_seconds: float = 0.2) -> int:
    """Steps for the next kernel call: aim at ``target_seconds`` per call (responsive progress and
    stopping, negligible Python overhead), at most doubling, never more than an epoch."""
    return max(1, min(current * 2, per_epoch, int(current * target_seconds / max(took, 1e-6))))


def initial_embeddings(kg: KnowledgeGraph, cfg: TrainConfig, init: Embeddings | None) -> Embeddings:
    """Fresh tables, or a copy of ``init`` (resume) after checking it matches."""
    sf = get_model(cfg.model)
    if init is not None:
        if init.model != sf.name or init.dim != cfg.dim:
            raise ValueError(f"cannot resume: the saved model is {init.model} dim {init.dim}, "
                             f"but this run asks for --model {cfg.model} --dim {cfg.dim}")
        if init.n_entities != kg.n_entities or init.relation.shape[0] != kg.n_relations:
            raise ValueError(f"cannot resume: the saved model has {init.n_entities} entities and "
                             f"{init.relation.shape[0]} relations, the dataset {kg.n_entities} and "
                             f"{kg.n_relations}")
        return Embeddings(sf.name, init.entity.copy(), init.relation.copy(), cfg.to_dict(),
                          kg.entity_names, kg.relation_names, init.entity_state.copy(),
                          init.relation_state.copy())
    entity, relation = sf.init_tables(kg.n_entities, kg.n_relations, cfg.dim, cfg.gamma, cfg.seed)
    return Embeddings(sf.name, entity, relation, cfg.to_dict(), kg.entity_names, kg.relation_names)


def kernel_args(cfg: TrainConfig) -> tuple:
    """The scalar hyperparameters in train_kernel's order after ``neg_cdf``."""
    return (np.float32(cfg.gamma), np.float32(cfg.lr), np.float32(cfg.adv_temp if cfg.adv else 0.0),
            np.float32(cfg.reg_coef), int(cfg.reg_norm))


def negative_cdf(kg: KnowledgeGraph, cfg: TrainConfig) -> np.ndarray:
    if cfg.neg_sampling == "degree":
        return degree_cdf(kg.train, kg.n_entities)
    return np.empty(0, dtype=np.float64)


def train(kg: KnowledgeGraph, model: str = "TransE_l2", *, init: Embeddings | None = None,
          save: str | None = None, checkpoint_every: float | None = None, progress: bool = True,
          **options) -> Embeddings:
    """Train embeddings of ``kg`` and return them.

    ``options`` are TrainConfig fields (dim, neg, neg_chunk, batch, lr, gamma,
    adv, adv_temp, reg_coef, reg_norm, neg_sampling, max_steps, epochs,
    time_budget, valid_every, patience, valid_sample, workers, seed).
    ``init`` resumes from saved embeddings (same model and dim). ``save``
    writes the result (atomically) to that directory, and also every
    ``checkpoint_every`` seconds while training when given. The returned
    object's ``train_stats`` holds train_seconds, triples_per_second, steps.
    """
    cfg = TrainConfig(model=model, **options).validate()
    if kg.train.shape[0] == 0:
        raise ValueError("the training split is empty")
    emb = initial_embeddings(kg, cfg, init)
    if cfg.workers > 1:
        from .shm.engine import train_shared

        return train_shared(kg, cfg, emb, save=save, checkpoint_every=checkpoint_every,
                            progress=progress)
    # one BLAS thread: the step's small products lose time to thread hand-offs, and the
    # multi-core engine gets its parallelism from processes instead
    with threadpool_limits(1):
        return _train_in_process(kg, cfg, emb, save, checkpoint_every, progress)


def _train_in_process(kg, cfg, emb, save, checkpoint_every, progress) -> Embeddings:
    kernel = train_kernel(get_model(cfg.model).name)
    edges = np.ascontiguousarray(kg.train, dtype=np.int32)
    n_train = edges.shape[0]
    budget = Budget(cfg, n_train)
    validator = Validator(kg, cfg, cfg.seed)
    cdf = negative_cdf(kg, cfg)
    scalars = kernel_args(cfg)
    rng = np.random.default_rng(cfg.seed)
    seed_kernel_rng(cfg.seed)

    # compile before the clock starts so train_seconds measures training
    # (an empty range: the tables are not touched, so no copies are needed)
    kernel(emb.entity, emb.relation, emb.entity_state, emb.relation_state,
           edges, np.zeros(1, dtype=np.int64), 0, 0, cfg.batch, cfg.neg_chunk, cfg.neg, cdf, *scalars, 0)
    bar = Progress(progress, budget.max_steps)  # after compiling: its rate excludes start-up
    budget.start()
    steps = chunk_index = 0
    loss_sum = 0.0
    positives = 0
    last_ckpt = time.perf_counter()
    steps_per_call = 1
    stop = False
    try:
        while not stop:
            order = rng.permutation(n_train)  # reshuffle every epoch
            pos = 0
            while pos < n_train and not stop:
                n_steps = int(min(steps_per_call, budget.steps_left(steps),
                                  math.ceil((n_train - pos) / cfg.batch)))
                end = min(n_train, pos + n_steps * cfg.batch)
                t0 = time.perf_counter()
                loss, chunk_index = kernel(emb.entity, emb.relation, emb.entity_state, emb.relation_state,
                                           edges, order, pos, end, cfg.batch, cfg.neg_chunk, cfg.neg,
                                           cdf, *scalars, chunk_index)
                steps_per_call = next_call_steps(steps_per_call, time.perf_counter() - t0,
                                                 budget.steps_per_epoch)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss} at step {steps}; lower --lr or --gamma")
                last = steps
                steps += n_steps
                positives += end - pos
                loss_sum += loss
                bar.update(n_steps, positives / max(budget.elapsed(), 1e-9), loss / (end - pos))
                pos = end
                if validator.due(steps, last):
                    paused = time.perf_counter()
                    stop = validator.check(emb, steps)
                    budget.started += time.perf_counter() - paused  # validation is not training time
                if save and checkpoint_every and time.perf_counter() - last_ckpt >= checkpoint_every:
                    emb.save(save)
                    last_ckpt = time.perf_counter()
                stop = stop or budget.done(steps)
    finally:
        bar.close()
    seconds = budget.elapsed()
    validator.restore_best(emb)
    emb.train_stats = {"train_seconds": seconds, "steps": steps, "positives": positives,
                       "triples_per_second": positives / max(seconds, 1e-9),
                       "mean_loss": loss_sum / max(positives, 1), "workers": 1,
                       "valid_history": validator.history}
    if save:
        emb.save(save)
    return emb
