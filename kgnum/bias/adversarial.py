"""The adversarial-filters debiasing baseline (Bose & Hamilton 2019; ../shared/docs/BIAS.md,
section 4) as an engine of the run loop: ``kgnum train --debias REL,... --debias-method adversarial``.

    per chunk (the Numba step's sampling: chunks of --neg-chunk positives sharing --neg negatives,
    heads and tails corrupted alternately):
      raw rows of the chunk's entities (heads, tails, negatives; plus random persons of a sensitive
      relation when the chunk's heads and tails hold fewer than MIN_PERSONS of them)
      filtered = mean of f_k(raw) over a random subset of the filters (each on with p 0.5, >= 1)
      link loss and its gradients on the filtered rows: kernels.step._rows_kernel(model), so every
      score function works with no torch code of its own; other extra terms (the regularizer) too
      objective = link loss - adversarial_weight * sum_k CE(D_k(filtered persons), their value)
      back through the filters into the raw rows (torch.autograd.backward)
      row-wise Adagrad on the raw entity rows and the relation rows (as the Numba step); Adam on
      the filters
      then DISC_STEPS Adam steps of every D_k on the detached filtered rows of (at most DISC_BATCH
      of) the same persons

PyTorch (CPU, one thread) holds one filter per sensitive relation, f_k: d -> 2d -> d (LeakyReLU,
BatchNorm1d last), and one discriminator, D_k: d -> 2d -> d -> d/2 -> classes, the classes being
relation k's --debias-top-m most frequent values plus "other" when some persons have only values
outside them (a person's class: its first training value among the top ones); entities without
the relation are never discriminator samples. The tables stay the Job's NumPy arrays.

Views. ``snapshot`` returns the "[a]" view: the raw entity table through every filter (their
mean, in eval mode), so validation, early stopping, checkpoints and the saved model all see what
the baseline produces. Each snapshot also computes the "[s]" views (only filter k applied), which
the run loop takes from ``views()`` and keeps with that snapshot: a trained model has them as
``emb.views["[s] REL"]`` (saved with it in ``views.npz`` and loaded back), and
``adversarial_views(emb)`` gives every view as an ``Embeddings`` (``{"[a]": ..., "[s] REL": ...}``)
for ``kgnum.bias.measure``. ``TrainStats.engine_log`` gets one record per epoch: each
discriminator's loss and accuracy on the persons it trained on, and their majority rate. The raw
table and the filters are not saved: resuming such a model starts from its [a] view with fresh
filters.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from ..kernels.kl import sensitive_triples
from ..kernels.optim import adagrad_accumulate, adagrad_apply
from ..kernels.sampling import sample_negatives, seed_kernel_rng
from ..kernels.step import Tables, _rows_kernel
from ..kernels.terms import compose
from ..loop import Job, Report, TrainingDiverged

FILTER_ON = 0.5  # probability of each filter being in a chunk's composition
DISC_STEPS = 5  # discriminator steps after each chunk
FILTER_LR = 1e-3  # Adam, filters
DISC_LR = 1e-3  # Adam, discriminators
MIN_PERSONS = 32  # a chunk with fewer persons of a relation among its heads and tails ...
EXTRA_PERSONS = 64  # ... gets this many random persons of it added
DISC_BATCH = 128  # persons of a relation each discriminator step sees at most (drawn from the chunk's)
VIEW_ROWS = 1 << 15  # entity rows through the filters at a time in a snapshot


class Attribute(NamedTuple):
    """One sensitive relation as the discriminators see it."""
    name: str
    labels: np.ndarray  # (n_entities,) int64: each person's class, -1 for entities without the relation
    persons: np.ndarray  # (P,) int64 entity ids with a class
    classes: tuple  # class names: the top values' entity names, then "other" when present


def attribute(kg, name: str, top_m: int) -> Attribute:
    """Relation ``name``'s persons and their classes (errors name --debias)."""
    _, _, persons, values, top = sensitive_triples(kg, name, "--debias", top_m=top_m)
    column = np.full(kg.n_entities, -1, dtype=np.int64)
    column[top] = np.arange(top.size)
    cls = column[values]
    labels = np.full(kg.n_entities, -1, dtype=np.int64)
    in_top = cls >= 0
    with_top, first = np.unique(persons[in_top], return_index=True)
    labels[with_top] = cls[in_top][first]
    classes = [str(kg.entity_names[v]) for v in top]
    rest = np.setdiff1d(np.unique(persons), with_top)
    if rest.size:
        labels[rest] = top.size
        classes.append("other")
    return Attribute(name, labels, np.flatnonzero(labels >= 0).astype(np.int64), tuple(classes))


def make_filter(dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, 2 * dim), nn.LeakyReLU(0.2), nn.Linear(2 * dim, dim), nn.BatchNorm1d(dim))


def make_discriminator(dim: int, classes: int) -> nn.Module:
    half = max(1, dim // 2)
    return nn.Sequential(nn.Linear(dim, 2 * dim), nn.LeakyReLU(0.2), nn.Linear(2 * dim, dim), nn.LeakyReLU(0.2),
                         nn.Linear(dim, half), nn.LeakyReLU(0.2), nn.Linear(half, classes))


def _adam(params, lr: float) -> torch.optim.Optimizer:
    """Adam, fused where this torch has a fused CPU Adam (about a quarter faster on these small layers)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr)


def view_name(relation: str) -> str:
    """The key of relation ``relation``'s [s] view in ``Embeddings.views``."""
    return f"[s] {relation}"


def adversarial_views(emb) -> dict:
    """Every view of a model trained with ``--debias-method adversarial`` as an ``Embeddings``:
    ``{"[a]": emb, "[s] REL": ...}`` for each sensitive relation (the model itself is [a])."""
    out = {"[a]": emb}
    out.update({name: emb.view(name) for name in emb.views if name.startswith("[s] ")})
    return out


class AdversarialEngine:
    """The baseline's training in this process (see the module docstring); one worker."""
    backend = "cpu"
    workers = 1

    def __init__(self, cfg, kg):
        if kg is None:
            raise ValueError("--debias-method adversarial: the engine needs the graph (its sensitive relations)")
        relations = list(dict.fromkeys(r for r in (cfg.debias or "").split(",") if r))
        if not relations:
            raise ValueError("--debias-method adversarial: give the sensitive relations with --debias")
        self.attributes = [attribute(kg, name, int(cfg.debias_top_m)) for name in relations]
        self.weight = float(cfg.adversarial_weight)
        self.worker_steps = [0]
        self.epoch_log: list[dict] = []
        self._limits = None
        self._threads = None
        self._views: dict[str, np.ndarray] = {}
        self.filters = self.discriminators = None

    # -- the contract --------------------------------------------------------
    def open(self, job: Job) -> None:
        # one thread for BLAS and torch: the chunk's products are small (as the in-process engine)
        self._limits = threadpool_limits(1)
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)
        self.job, self.tables = job, job.tables
        dim = job.tables.entity.shape[1]
        with torch.random.fork_rng(devices=[]):  # deterministic per seed; the caller's torch state kept
            torch.manual_seed(job.seed)
            self.filters = nn.ModuleList(make_filter(dim) for _ in self.attributes)
            self.discriminators = nn.ModuleList(make_discriminator(dim, len(a.classes)) for a in self.attributes)
        self.filter_opt = _adam(self.filters.parameters(), FILTER_LR)
        # one optimizer for every discriminator: their parameters are disjoint, so one backward of
        # the sum of their losses is each one's own step (Adam is per parameter)
        self.disc_opt = _adam(self.discriminators.parameters(), DISC_LR)
        self.cross_entropy = nn.CrossEntropyLoss()
        self.rows_kernel = _rows_kernel(job.model)
        # the KL term is the other --debias method: this engine replaces it; the rest stay
        kept = [i for i, name in enumerate(job.terms) if name != "kl"]
        self.term_params = tuple(job.params.terms[i] for i in kept)
        self.terms = compose(job.model, tuple(job.terms[i] for i in kept)) if kept else None
        self.rng = np.random.default_rng(job.seed)
        seed_kernel_rng(job.seed)
        self._compile()
        self.order = None
        self.pos = job.edges.shape[0]  # a new epoch (permutation) on the first call
        self.chunk_index = 0
        self._epoch = [np.zeros(3) for _ in self.attributes]  # per discriminator: loss sum, correct, samples
        self._counts = [np.zeros(len(a.classes), np.int64) for a in self.attributes]

    def advance(self, max_steps: int) -> Report:
        job, n_train = self.job, self.job.edges.shape[0]
        if self.pos >= n_train:
            self.order = self.rng.permutation(n_train)  # reshuffle every epoch
            self.pos = 0
        batch, chunk = job.params.batch, job.params.neg_chunk
        n_steps = int(min(max_steps, math.ceil((n_train - self.pos) / batch)))
        if n_steps <= 0:
            return Report(0, 0, 0.0)
        end = min(n_train, self.pos + n_steps * batch)
        edges = job.edges[self.order[self.pos:end]].astype(np.int64)
        loss = 0.0
        try:
            for b0 in range(0, end - self.pos, batch):
                b1 = min(b0 + batch, end - self.pos)
                scale = 1.0 / (b1 - b0)
                for c0 in range(b0, b1, chunk):
                    part = edges[c0:min(c0 + chunk, b1)]
                    loss += self._chunk(np.ascontiguousarray(part[:, 0]), np.ascontiguousarray(part[:, 1]),
                                        np.ascontiguousarray(part[:, 2]), scale)
        except ZeroDivisionError:
            raise TrainingDiverged("division by zero in the training step") from None
        positives, self.pos = end - self.pos, end
        self.worker_steps[0] += n_steps
        if self.pos >= n_train:
            self._log_epoch()
        return Report(n_steps, positives, float(loss))

    def snapshot(self, with_state: bool) -> Tables:
        """The [a] view (every filter, averaged) as the entity table; the [s] views kept for
        ``views``."""
        t = self.tables
        views = self._filtered(t.entity)
        mean = views[0].copy()
        for v in views[1:]:
            mean += v
        mean /= np.float32(len(views))
        self._views = {view_name(a.name): v for a, v in zip(self.attributes, views)}
        return Tables(mean, t.relation.copy(), t.entity_state.copy() if with_state else None,
                      t.relation_state.copy() if with_state else None)

    def views(self) -> dict[str, np.ndarray]:
        """The [s] views of the last snapshot, by ``view_name``."""
        return dict(self._views)

    def stop(self) -> Report:
        if any(e[2] for e in self._epoch):  # a partial epoch's discriminator record
            self._log_epoch()
        return Report(0, 0, 0.0)

    def close(self) -> None:
        self.filters = self.discriminators = None
        self.filter_opt = self.disc_opt = None
        self._views = {}
        if self._threads is not None:
            torch.set_num_threads(self._threads)
            self._threads = None
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None

    # -- one chunk -----------------------------------------------------------
    def _chunk(self, heads: np.ndarray, rels: np.ndarray, tails: np.ndarray, scale: float) -> float:
        p, t = self.job.params, self.tables
        c = heads.shape[0]
        negs = sample_negatives(t.entity.shape[0], p.neg, p.neg_cdf)
        predict_head = self.chunk_index % 2 == 1
        self.chunk_index += 1
        extra = self._extra_persons(np.concatenate([heads, tails]))
        rows, inv = np.unique(np.concatenate([heads, tails, negs, extra]), return_inverse=True)
        inv = inv.ravel()
        i_h, i_t, i_n = inv[:c], inv[c:2 * c], inv[2 * c:2 * c + negs.shape[0]]
        raw = torch.from_numpy(t.entity[rows]).requires_grad_(True)
        on = self._subset()
        filtered = self._compose(raw, on)
        F = filtered.detach().numpy()
        H, T, N = F[i_h], F[i_t], F[i_n]
        R = t.relation[rels]
        loss, gH, gR, gT, gN = self.rows_kernel(H, R, T, N, predict_head, p.gamma, p.adv_temp, scale)
        penalty = 0.0
        ent_rows = rel_rows = None
        if self.terms is not None:
            penalty, ent_rows, ent_grads, rel_rows, rel_grads = self.terms(
                self.term_params, t, scale, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN)
        grad = np.zeros_like(F)
        np.add.at(grad, i_h, gH)
        np.add.at(grad, i_t, gT)
        np.add.at(grad, i_n, gN)
        # persons of each relation among the chunk's heads, tails and added persons
        people = np.unique(np.concatenate([i_h, i_t, inv[2 * c + negs.shape[0]:]]))
        samples = []
        fool = None
        for k, a in enumerate(self.attributes):
            sel = people[a.labels[rows[people]] >= 0]
            y = torch.from_numpy(a.labels[rows[sel]])
            samples.append((sel, y))
            if sel.size and self.weight > 0:
                ce = self.cross_entropy(self.discriminators[k](filtered[torch.from_numpy(sel)]), y)
                fool = ce if fool is None else fool + ce
        tensors, grads = [filtered], [torch.from_numpy(grad)]
        if fool is not None:  # minimised by rows and filters: the discriminators are to be fooled;
            tensors.append(-self.weight * c * scale * fool)  # weighed like the chunk's share of the batch
            grads.append(None)
        self.filter_opt.zero_grad(set_to_none=True)
        torch.autograd.backward(tensors, grads, inputs=[raw, *self._params(on)])  # not the discriminators'
        self.filter_opt.step()
        g_raw = np.ascontiguousarray(raw.grad.numpy())
        lr = p.lr
        adagrad_accumulate(t.entity_state, rows, g_raw)
        adagrad_accumulate(t.relation_state, rels, gR)
        if ent_rows is not None:
            adagrad_accumulate(t.entity_state, ent_rows, ent_grads)
            adagrad_accumulate(t.relation_state, rel_rows, rel_grads)
        adagrad_apply(t.entity, t.entity_state, rows, g_raw, lr)
        adagrad_apply(t.relation, t.relation_state, rels, gR, lr)
        if ent_rows is not None:
            adagrad_apply(t.entity, t.entity_state, ent_rows, ent_grads, lr)
            adagrad_apply(t.relation, t.relation_state, rel_rows, rel_grads, lr)
        self._train_discriminators(filtered.detach(), samples)
        return float(loss) + penalty / scale

    def _subset(self) -> list[int]:
        """A chunk's filters: each on with FILTER_ON, at least one."""
        on = np.flatnonzero(self.rng.random(len(self.filters)) < FILTER_ON)
        if on.size == 0:
            on = self.rng.integers(len(self.filters), size=1)
        return [int(k) for k in on]

    def _compose(self, raw: torch.Tensor, on: list[int]) -> torch.Tensor:
        """The mean of the filters ``on`` applied to ``raw``."""
        out = self.filters[on[0]](raw)
        for k in on[1:]:
            out = out + self.filters[k](raw)
        return out / float(len(on)) if len(on) > 1 else out

    def _params(self, on: list[int]) -> list:
        return [q for k in on for q in self.filters[k].parameters()]

    def _extra_persons(self, ids: np.ndarray) -> np.ndarray:
        """Random persons of every relation the chunk's heads and tails hold too few of."""
        extra = []
        for a in self.attributes:
            if np.unique(ids[a.labels[ids] >= 0]).size < MIN_PERSONS:
                extra.append(self.rng.choice(a.persons, min(EXTRA_PERSONS, a.persons.size), replace=False))
        return np.concatenate(extra) if extra else np.zeros(0, dtype=np.int64)

    def _train_discriminators(self, filtered: torch.Tensor, samples: list) -> None:
        """DISC_STEPS steps of every discriminator on (at most DISC_BATCH of) the chunk's persons."""
        batches = []
        for k, (sel, y) in enumerate(samples):
            if sel.size > DISC_BATCH:
                pick = np.sort(self.rng.choice(sel.size, DISC_BATCH, replace=False))
                sel, y = sel[pick], y[torch.from_numpy(pick)]
            if sel.size:
                batches.append((k, filtered[torch.from_numpy(sel)], y))
        if not batches:
            return
        for step in range(DISC_STEPS):
            self.disc_opt.zero_grad(set_to_none=True)
            total = None
            for k, x, y in batches:
                logits = self.discriminators[k](x)
                loss = self.cross_entropy(logits, y)
                total = loss if total is None else total + loss
                if step == 0:  # before this chunk's updates: how well it tells the filtered persons apart
                    e = self._epoch[k]
                    e[0] += loss.item() * y.shape[0]
                    e[1] += int((logits.argmax(1) == y).sum())
                    e[2] += y.shape[0]
                    self._counts[k] += np.bincount(y.numpy(), minlength=self._counts[k].size)
            total.backward()
            self.disc_opt.step()

    def _log_epoch(self) -> None:
        record = {"epoch": len(self.epoch_log) + 1, "discriminator_loss": {}, "discriminator_accuracy": {},
                  "majority": {}}
        for a, e, counts in zip(self.attributes, self._epoch, self._counts):
            n = max(e[2], 1)
            record["discriminator_loss"][a.name] = float(e[0] / n)
            record["discriminator_accuracy"][a.name] = float(e[1] / n)
            record["majority"][a.name] = float(counts.max() / n)
            e[:] = 0
            counts[:] = 0
        self.epoch_log.append(record)

    # -- helpers -------------------------------------------------------------
    def _filtered(self, entity: np.ndarray) -> list[np.ndarray]:
        """f_k(entity) for every filter (eval mode: BatchNorm's running statistics)."""
        out = [np.empty_like(entity) for _ in self.filters]
        self.filters.eval()
        try:
            with torch.no_grad():
                for a in range(0, entity.shape[0], VIEW_ROWS):
                    x = torch.from_numpy(entity[a:a + VIEW_ROWS])
                    for k, f in enumerate(self.filters):
                        out[k][a:a + VIEW_ROWS] = f(x).numpy()
        finally:
            self.filters.train()
        return out

    def _compile(self) -> None:
        """Compile the Numba functions on two real rows before the clock starts; touches nothing."""
        t, p = self.tables, self.job.params
        two = np.arange(min(2, t.entity.shape[0]), dtype=np.int64)
        r = np.zeros(two.size, dtype=np.int64)
        H, T, N, R = t.entity[two], t.entity[two[::-1]], t.entity[two], t.relation[r]
        out = self.rows_kernel(H, R, T, N, False, p.gamma, p.adv_temp, 1.0)
        if self.terms is not None:
            self.terms(self.term_params, t, 1.0, two, r, two[::-1], two, H, R, T, N, *out[1:])
        state = np.zeros(t.entity.shape[0], np.float32)
        adagrad_accumulate(state, two[:0], out[1][:0])
        adagrad_apply(t.entity, state, two[:0], out[1][:0], p.lr)
