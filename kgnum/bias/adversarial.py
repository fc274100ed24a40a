"""The adversarial-filters debiasing baseline (Bose & Hamilton 2019; ../shared/docs/BIAS.md,
section 4) as an engine of the run loop: ``kgnum train --debias REL,... --debias-method adversarial``.

    per batch (--batch positives; the Numba step's sampling within it: chunks of --neg-chunk
    positives sharing --neg negatives, heads and tails corrupted alternately by chunk):
      raw rows of the batch's entities, each once (heads, tails, every chunk's negatives; plus
      random persons of a sensitive relation when the batch's heads and tails hold fewer than
      MIN_PERSONS of them)
      filtered = mean of f_k(raw) over a random subset of the filters (each on with p 0.5, >= 1)
      link loss and its gradients on the filtered rows, chunk by chunk:
      kernels.step._rows_kernel(model), so every score function works with no torch code of its
      own; other extra terms (the regularizer) too; the gradients summed over the batch's chunks
      objective = link loss (the batch mean) - adversarial_weight * sum_k CE(D_k(filtered persons),
      their value)
      back through the filters into the raw rows (one torch.autograd.backward)
      one row-wise Adagrad update of the raw entity rows (each one's gradient summed over the
      batch) and the relation rows (per positive, as the Numba step); one Adam step on the filters
      then DISC_STEPS Adam steps of every D_k on the detached filtered rows of (at most DISC_BATCH
      of) the same persons

The Numba step updates rows once per chunk, this engine once per batch: in the same epochs its
link prediction trails the basic model's a little further.

PyTorch (CPU, one thread) holds one filter per sensitive relation, f_k: d -> 2d -> d (LeakyReLU,
BatchNorm1d last), and one discriminator, D_k: d -> 2d -> d -> d/2 -> classes, the classes being
relation k's --debias-top-m most frequent values plus "other" when some persons have only values
outside them (a person's class: its first training value among the top ones); entities without
the relation are never discriminator samples. The discriminators run as one batched network
(``Discriminators``): one product per layer for all of them. The tables stay the Job's NumPy
arrays.

Views. ``snapshot`` returns the "[a]" view: the raw entity table through every filter (their
mean, in eval mode), so validation, early stopping, checkpoints and the saved model all see what
the baseline produces. Each snapshot also computes the "[s]" views (only filter k applied), which
the run loop takes from ``views()`` and keeps with that snapshot: a trained model has them as
``emb.views["[s] REL"]`` (saved with it in ``views.npz`` and loaded back), and
``adversarial_views(emb)`` gives every view as an ``Embeddings`` (``{"[a]": ..., "[s] REL": ...}``)
for ``kgnum.bias.measure``. ``TrainStats.engine_log`` gets one record per epoch: each
discriminator's loss and accuracy on the persons it trained on, and their majority rate.

Resuming. ``engine_state()`` gives the raw table, the filters, the discriminators and both Adam
optimizers as named arrays; the run loop keeps them with each snapshot (saved with the model in
``engine_state.npz``) and hands them back in ``Job.engine_state``, so ``kgnum train --load`` of
such a model continues the same baseline run rather than filtering the [a] view again.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numba
import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn

from ..kernels.kl import person_labels, sensitive_triples
from ..kernels.memory import gather_rows, no_rows
from ..kernels.optim import adagrad_accumulate, adagrad_apply
from ..kernels.sampling import sample_negatives, seed_kernel_rng
from ..kernels.step import Tables, _rows_kernel
from ..kernels.terms import _concat_rows, compose
from ..loop import Job, Report, TrainingDiverged

FILTER_ON = 0.5  # probability of each filter being in a batch's composition
DISC_STEPS = 5  # discriminator steps after each batch
FILTER_LR = 1e-3  # Adam, filters
DISC_LR = 1e-3  # Adam, discriminators
MIN_PERSONS = 32  # a batch with fewer persons of a relation among its heads and tails ...
EXTRA_PERSONS = 64  # ... gets this many random persons of it added
DISC_BATCH = 128  # persons of a relation each discriminator step sees at most (drawn from the batch's)
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
    labels = np.full(kg.n_entities, -1, dtype=np.int64)
    with_top, rank = person_labels(persons, values, top)  # of a person's values, the most frequent
    labels[with_top] = rank
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


class Discriminators(nn.Module):
    """Every relation's discriminator as one batched network: ``make_discriminator``'s layers
    (initialised as it does, relation by relation) with relation k's weights at index k of each
    layer's stacked (K, in, out) weights, so each layer of all K is one batched product: a few torch
    ops per step instead of a few per relation. Relation k's logits past its own classes are masked
    to -inf: never predicted, no gradient, so their weights stay zero."""

    def __init__(self, dim: int, classes: list[int]):
        super().__init__()
        nets = [make_discriminator(dim, c) for c in classes]
        widest = max(classes)
        layers = [i for i, m in enumerate(nets[0]) if isinstance(m, nn.Linear)]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for i in layers:
            width = widest if i == layers[-1] else nets[0][i].out_features
            w = torch.zeros(len(nets), nets[0][i].in_features, width)
            b = torch.zeros(len(nets), 1, width)
            for k, net in enumerate(nets):
                w[k, :, :net[i].out_features] = net[i].weight.detach().T
                b[k, 0, :net[i].out_features] = net[i].bias.detach()
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))
        mask = torch.zeros(len(classes), 1, widest)
        for k, c in enumerate(classes):
            mask[k, :, c:] = float("-inf")
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, n, dim) rows, relation k's at [k] -> (K, n, widest class count) logits."""
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = F.leaky_relu(x, 0.2)
        return x + self.mask


class Persons(NamedTuple):
    """Persons of every relation as one padded block: relation k's rows at [k, :count[k]]."""
    index: torch.Tensor  # (K, n) int64 positions in the batch's filtered rows (padding: any row)
    labels: torch.Tensor  # (K, n) int64 classes (padding: 0)
    weight: torch.Tensor  # (K, n) float32 1 / count[k] on relation k's rows, 0 on padding
    count: np.ndarray  # (K,) rows of each relation

    def rows(self, filtered: torch.Tensor) -> torch.Tensor:
        """The persons' rows of ``filtered`` (n_rows, d) as (K, n, d)."""
        return filtered[self.index.view(-1)].view(*self.index.shape, filtered.shape[1])


def persons_block(sets: list[tuple[np.ndarray, np.ndarray]]) -> Persons:
    """``Persons`` of ``(positions, labels)`` pairs, one per relation."""
    count = np.array([s.size for s, _ in sets], dtype=np.int64)
    n = max(1, int(count.max()))
    index = np.zeros((len(sets), n), dtype=np.int64)
    labels = np.zeros((len(sets), n), dtype=np.int64)
    weight = np.zeros((len(sets), n), dtype=np.float32)
    for k, (s, y) in enumerate(sets):
        index[k, :s.size], labels[k, :s.size] = s, y
        weight[k, :s.size] = 1.0 / max(s.size, 1)
    return Persons(torch.from_numpy(index), torch.from_numpy(labels), torch.from_numpy(weight), count)


@functools.lru_cache(maxsize=None)
def batch_kernel(model: str, terms: tuple[str, ...]):
    """Numba function: a batch's link loss on its filtered rows, chunk by chunk, with the gradients
    summed over its chunks. ``(filtered, tables, term_params, heads, rels, tails, negs, i_h, i_t, i_n,
    chunk, chunk_index, gamma, adv_temp, scale) -> (loss_sum, g_f, g_rel, ent_rows, ent_grads, rel_rows,
    rel_grads)``.

    filtered (n_rows, d): the batch's filtered rows; heads/rels/tails (b,) ids, i_h/i_t (b,) their
    rows' positions in ``filtered``; negs and i_n (n_chunks, k): each chunk's negatives and their
    positions. Chunk j (positives j*chunk ...) corrupts heads when ``chunk_index + j`` is odd. g_f:
    the gradient with respect to ``filtered``; g_rel (b, d_r): to each positive's relation row
    (duplicates not merged, as in the Numba step); the terms' rows outside the batch come back as
    (rows, grads) pairs. ``loss_sum``: the positives' losses plus the terms' penalties scaled by the
    batch's size (``scale`` is 1 / b), as in ``kernels.step.train_kernel``.
    """
    rows_kernel = _rows_kernel(model)
    extra = compose(model, terms)

    @numba.njit(fastmath=True, nogil=True)
    def batch_gradients(filtered, tables, term_params, heads, rels, tails, negs, i_h, i_t, i_n, chunk, chunk_index,
                        gamma, adv_temp, scale):
        relation = tables.relation
        b, d, d_r = heads.shape[0], filtered.shape[1], relation.shape[1]
        g_f = np.zeros_like(filtered)
        g_rel = np.empty((b, d_r), dtype=np.float32)
        ent_rows, ent_grads = no_rows(d)
        rel_rows, rel_grads = no_rows(d_r)
        loss = 0.0
        j = 0
        for c0 in range(0, b, chunk):
            c1 = min(c0 + chunk, b)
            predict_head = (chunk_index + j) % 2 == 1
            H, T = gather_rows(filtered, i_h[c0:c1]), gather_rows(filtered, i_t[c0:c1])
            N, R = gather_rows(filtered, i_n[j]), gather_rows(relation, rels[c0:c1])
            part, gH, gR, gT, gN = rows_kernel(H, R, T, N, predict_head, gamma, adv_temp, scale)
            penalty, er, eg, rr, rg = extra(term_params, tables, scale, heads[c0:c1], rels[c0:c1], tails[c0:c1],
                                            negs[j], H, R, T, N, gH, gR, gT, gN)
            loss += part + penalty / scale
            ent_rows, ent_grads = _concat_rows(ent_rows, ent_grads, er, eg)
            rel_rows, rel_grads = _concat_rows(rel_rows, rel_grads, rr, rg)
            for i in range(c1 - c0):
                gh, gt = g_f[i_h[c0 + i]], g_f[i_t[c0 + i]]
                for q in range(d):
                    gh[q] += gH[i, q]
                    gt[q] += gT[i, q]
            g_rel[c0:c1] = gR
            for i in range(N.shape[0]):
                gn = g_f[i_n[j, i]]
                for q in range(d):
                    gn[q] += gN[i, q]
            j += 1
        return loss, g_f, g_rel, ent_rows, ent_grads, rel_rows, rel_grads

    return batch_gradients


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


STATE = "adversarial"  # prefix of this engine's names in Embeddings.engine_state
STATE_RAW = f"{STATE}/raw_entity"


class AdversarialEngine:
    """The baseline's training in this process (see the module docstring); one worker."""
    backend = "cpu"
    workers = 1

    def __init__(self, cfg, kg):
        if kg is None:
            raise ValueError("--debias-method adversarial: the engine needs the graph (its sensitive relations)")
        relations = cfg.debias_relations()
        if not relations:
            raise ValueError("--debias-method adversarial: give the sensitive relations with --debias")
        self.attributes = [attribute(kg, name, int(cfg.debias_top_m)) for name in relations]
        self.weight = float(cfg.adversarial_weight)
        self.worker_steps = [0]
        self.epoch_log: list[dict] = []
        self._limits = None
        self._threads = None
        self._grad_mode = True
        self._views: dict[str, np.ndarray] = {}
        self.filters = self.discriminators = None

    # -- the contract --------------------------------------------------------
    def open(self, job: Job) -> None:
        # one thread for BLAS and torch, as the in-process engine (one worker, one core)
        self._limits = threadpool_limits(1)
        self._threads = torch.get_num_threads()
        self._grad_mode = torch.is_grad_enabled()
        torch.set_num_threads(1)
        self.job, self.tables = job, job.tables
        dim = job.tables.entity.shape[1]
        with torch.random.fork_rng(devices=[]):  # deterministic per seed; the caller's torch state kept
            torch.manual_seed(job.seed)
            self.filters = nn.ModuleList(make_filter(dim) for _ in self.attributes)
            self.discriminators = Discriminators(dim, [len(a.classes) for a in self.attributes])
        self.filter_opt = _adam(self.filters.parameters(), FILTER_LR)
        # Adam is per element and every relation has persons in every batch (MIN_PERSONS), so one
        # optimizer over the stacked weights is each discriminator's own
        self.disc_opt = _adam(self.discriminators.parameters(), DISC_LR)
        if job.engine_state:
            self._restore(job.engine_state)
        # the KL term is the other --debias method: this engine replaces it; the rest stay
        kept = [i for i, name in enumerate(job.terms) if name != "kl"]
        self.term_params = tuple(job.params.terms[i] for i in kept)
        self.batch_kernel = batch_kernel(job.model, tuple(job.terms[i] for i in kept))
        self.rng = np.random.default_rng(job.seed)
        seed_kernel_rng(job.seed)
        self._compile()
        self.order = None
        self.pos = job.edges.shape[0]  # a new epoch (permutation) on the first call
        self.chunk_index = 0
        self._epoch = np.zeros((len(self.attributes), 3))  # per discriminator: loss sum, correct, samples
        self._counts = [np.zeros(len(a.classes), np.int64) for a in self.attributes]

    def advance(self, max_steps: int) -> Report:
        job, n_train = self.job, self.job.edges.shape[0]
        if self.pos >= n_train:
            self.order = self.rng.permutation(n_train)  # reshuffle every epoch
            self.pos = 0
        batch = job.params.batch
        n_steps = int(min(max_steps, math.ceil((n_train - self.pos) / batch)))
        if n_steps <= 0:
            return Report(0, 0, 0.0)
        end = min(n_train, self.pos + n_steps * batch)
        edges = job.edges[self.order[self.pos:end]].astype(np.int64)
        loss = 0.0
        try:
            for b0 in range(0, end - self.pos, batch):
                loss += self._batch(edges[b0:b0 + batch])
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

    def engine_state(self) -> dict[str, np.ndarray]:
        """What a resumed run needs beyond the saved [a] view: the raw table the filters map,
        the filters, the discriminators and both optimizers, as named arrays."""
        out = {STATE_RAW: self.tables.entity.copy()}
        for k, a in enumerate(self.attributes):  # what each discriminator's outputs stand for, by name
            out[f"{STATE}/classes/{k}"] = np.array(a.classes, dtype=str)
        for prefix, module in (("filters", self.filters), ("discriminators", self.discriminators)):
            out.update({f"{STATE}/{prefix}/{k}": v.detach().numpy().copy() for k, v in module.state_dict().items()})
        for prefix, opt in (("filter_opt", self.filter_opt), ("disc_opt", self.disc_opt)):
            for i, values in opt.state_dict()["state"].items():
                out.update({f"{STATE}/{prefix}/{i}/{k}": np.asarray(v).copy() for k, v in values.items()})
        return out

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        """Continue from ``engine_state()`` of the run this one resumes: the raw table replaces the
        [a] view the tables were loaded with. A state for other shapes (another --dim, other
        sensitive relations) is refused by name; none at all starts the filters afresh."""
        raw = state.get(STATE_RAW)
        if raw is None:
            return
        if raw.shape != self.tables.entity.shape:
            raise ValueError(f"the saved adversarial state holds a {raw.shape[0]} x {raw.shape[1]} raw table, "
                             f"this run's table is {self.tables.entity.shape[0]} x {self.tables.entity.shape[1]}")
        for k, a in enumerate(self.attributes):
            saved = state.get(f"{STATE}/classes/{k}")
            if saved is not None and [str(c) for c in saved] != list(a.classes):
                def show(names):
                    return ", ".join(str(c) for c in names[:4]) + (", ..." if len(names) > 4 else "")

                raise ValueError(f"--debias {a.name}: the saved discriminator's classes are {show(saved)} (in that "
                                 f"order), this graph's top values {show(a.classes)}: resume on the graph it was "
                                 f"trained on")
        for prefix, module in (("filters", self.filters), ("discriminators", self.discriminators)):
            own = module.state_dict()
            saved = {k: state.get(f"{STATE}/{prefix}/{k}") for k in own}
            if any(v is None or v.shape != tuple(own[k].shape) for k, v in saved.items()):
                raise ValueError(f"the saved adversarial state's {prefix} do not match this run's (saved for "
                                 f"other --debias relations or --debias-top-m?)")
            module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in saved.items()})
        for prefix, opt in (("filter_opt", self.filter_opt), ("disc_opt", self.disc_opt)):
            current = opt.state_dict()
            entries: dict[int, dict] = {}
            for key, value in state.items():
                parts = key.split("/")
                if len(parts) == 4 and parts[1] == prefix:
                    entries.setdefault(int(parts[2]), {})[parts[3]] = torch.from_numpy(np.array(value))
            opt.load_state_dict({"state": entries, "param_groups": current["param_groups"]})
        self.tables.entity[:] = raw

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
            # an interrupt that lands inside torch.no_grad()'s entry skips its exit and would leave
            # gradients off for the rest of the process (the next run: "does not require grad")
            torch.set_grad_enabled(self._grad_mode)
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None

    # -- one batch -----------------------------------------------------------
    def _batch(self, part: np.ndarray) -> float:
        """One step on the positives ``part`` (b, 3): the sum of their losses plus the penalties
        scaled by b (the run loop's ``loss_sum``)."""
        p, t = self.job.params, self.tables
        b, k = part.shape[0], p.neg
        n_chunks = -(-b // p.neg_chunk)
        heads, rels, tails = (np.ascontiguousarray(part[:, j]) for j in range(3))
        negs = sample_negatives(t.entity.shape[0], k * n_chunks, p.neg_cdf)  # chunk j's: negs[j * k:(j + 1) * k]
        extra = self._extra_persons(np.concatenate([heads, tails]))
        rows, inv = np.unique(np.concatenate([heads, tails, negs, extra]), return_inverse=True)
        inv = inv.ravel()
        raw = torch.from_numpy(t.entity[rows]).requires_grad_(True)
        on = self._subset()
        filtered = self._compose(raw, on)
        loss, g_filtered, g_rel, ent_rows, ent_grads, rel_rows, rel_grads = self.batch_kernel(
            filtered.detach().numpy(), t, self.term_params, heads, rels, tails, negs.reshape(n_chunks, k),
            inv[:b], inv[b:2 * b], inv[2 * b:2 * b + k * n_chunks].reshape(n_chunks, k), p.neg_chunk,
            self.chunk_index, p.gamma, p.adv_temp, 1.0 / b)
        self.chunk_index += n_chunks
        # persons of each relation among the batch's heads, tails and added persons
        people = np.unique(np.concatenate([inv[:2 * b], inv[2 * b + k * n_chunks:]]))
        labels = [a.labels[rows[people]] for a in self.attributes]
        sets = [(people[y >= 0], y[y >= 0]) for y in labels]
        tensors, outer = [filtered], [torch.from_numpy(g_filtered)]
        if self.weight > 0:  # minimised by rows and filters: the discriminators are to be fooled
            block = persons_block(sets)
            tensors.append(-self.weight * self._disc_loss(block.rows(filtered), block)[0].sum())
            outer.append(None)
        self.filter_opt.zero_grad(set_to_none=True)
        torch.autograd.backward(tensors, outer, inputs=[raw, *self._params(on)])  # not the discriminators'
        self.filter_opt.step()
        g_raw = np.ascontiguousarray(raw.grad.numpy())
        lr = p.lr
        adagrad_accumulate(t.entity_state, rows, g_raw)
        adagrad_accumulate(t.relation_state, rels, g_rel)
        adagrad_accumulate(t.entity_state, ent_rows, ent_grads)
        adagrad_accumulate(t.relation_state, rel_rows, rel_grads)
        adagrad_apply(t.entity, t.entity_state, rows, g_raw, lr)
        adagrad_apply(t.relation, t.relation_state, rels, g_rel, lr)
        adagrad_apply(t.entity, t.entity_state, ent_rows, ent_grads, lr)
        adagrad_apply(t.relation, t.relation_state, rel_rows, rel_grads, lr)
        self._train_discriminators(filtered.detach(), sets)
        return float(loss)

    def _disc_loss(self, x: torch.Tensor, block: Persons) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each discriminator's mean cross-entropy on its persons' rows ``x`` (``block.rows``): (K,),
        with every person's (K, n) and the logits (K, n, classes)."""
        logits = self.discriminators(x)
        ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), block.labels.view(-1), reduction="none")
        ce = ce.view(block.index.shape)
        return (ce * block.weight).sum(1), ce, logits

    def _subset(self) -> list[int]:
        """A batch's filters: each on with FILTER_ON, at least one."""
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
        """Random persons of every relation the batch's heads and tails hold too few of."""
        extra = []
        for a in self.attributes:
            if np.unique(ids[a.labels[ids] >= 0]).size < MIN_PERSONS:
                extra.append(self.rng.choice(a.persons, min(EXTRA_PERSONS, a.persons.size), replace=False))
        return np.concatenate(extra) if extra else np.zeros(0, dtype=np.int64)

    def _train_discriminators(self, filtered: torch.Tensor, sets: list) -> None:
        """DISC_STEPS steps of every discriminator on (at most DISC_BATCH of) the batch's persons."""
        picked = []
        for sel, y in sets:
            if sel.size > DISC_BATCH:
                pick = np.sort(self.rng.choice(sel.size, DISC_BATCH, replace=False))
                sel, y = sel[pick], y[pick]
            picked.append((sel, y))
        block = persons_block(picked)
        if not block.count.any():
            return
        x = block.rows(filtered)
        for step in range(DISC_STEPS):
            self.disc_opt.zero_grad(set_to_none=True)
            if step:
                loss = self._disc_loss(x, block)[0].sum()
            else:  # before this batch's updates: how well each tells the filtered persons apart
                losses, ce, logits = self._disc_loss(x, block)
                loss = losses.sum()
                valid = block.weight > 0
                with torch.no_grad():
                    self._epoch[:, 0] += (ce * valid).sum(1).numpy()
                    self._epoch[:, 1] += ((logits.argmax(-1) == block.labels) & valid).sum(1).numpy()
                self._epoch[:, 2] += block.count
                for counts, (_, y) in zip(self._counts, picked):
                    counts += np.bincount(y, minlength=counts.size)
            loss.backward()
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
        back = np.ascontiguousarray(two[::-1])
        r = np.zeros(two.size, dtype=np.int64)
        out = self.batch_kernel(t.entity[two], t, self.term_params, two, r, back, two.reshape(1, -1), two, back,
                                two.reshape(1, -1), p.neg_chunk, 0, p.gamma, p.adv_temp, 1.0)
        state = np.zeros(t.entity.shape[0], np.float32)
        adagrad_accumulate(state, two[:0], out[1][:0])
        adagrad_apply(t.entity, state, two[:0], out[1][:0], p.lr)
