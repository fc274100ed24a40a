"""PyKEEN peer: TransE on FB15k-237 for a wall-clock budget, then filtered MRR.

Runs in its own venv (``make bench-peers`` creates ``.venv-peers`` with torch's CPU
build and pykeen) and writes a JSON that ``bench/peers/compare.py`` (main venv) sets
next to kgnum trained with the same settings for the same budget:

    .venv-peers/bin/python bench/peers/pykeen_peer.py --budget 600
    .venv/bin/python bench/peers/compare.py

Settings mirror kgnum's FB15k-237 TransE_l2 preset (kgnum/presets.py): TransE with
the L2 distance (``scoring_fct_norm=2``), dim 400, 200 negatives per positive
(PyKEEN's basic sampler, heads and tails corrupted half and half), batch 1000,
self-adversarial negative sampling loss (``NSSALoss``, margin = gamma 12,
temperature 1), Adagrad lr 0.25, 2 torch threads. PyKEEN's TransE normalises entity
rows to unit length after every step by default; kgnum's TransE_l2 (like DGL-KE's)
does not, and with margin 12 unit-length entities cannot reach the margin, so the
constraint is off unless ``--normalize-entities``. kgnum's 200 negatives are shared
by chunks of 200 positives; PyKEEN draws 200 per positive: same count per positive,
so the same number of scored pairs, computed differently.

Budget: training stops at the first batch boundary after ``--budget`` seconds (a
training callback raises at ``pre_batch``; the batch before it has had its optimizer
step). Triples/s = positives processed / training seconds. Data: the three files of
``$KGNUM_DATA_DIR/fb15k-237`` through ``TriplesFactory.from_path`` with entity and
relation ids built from all three files, so the 36 entities that occur only in
valid/test are kept (kgnum's ``unseen="keep"`` for public benchmarks does the same).

Evaluation: ``RankBasedEvaluator`` filtered with train + valid + test; MRR is
``both.realistic.inverse_harmonic_mean_rank``: head and tail queries pooled, the
realistic rank being the mean of the optimistic and pessimistic ranks, kgnum's tie
rule. ``--test-limit N`` evaluates a seeded random N-triple subset of test (the
filter still holds all of test); its indices go into the JSON so compare.py scores
kgnum on the same triples.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "out", "pykeen.json")


class BudgetSpent(Exception):
    """Raised by BudgetCallback before the first batch past the deadline."""


def make_budget_callback(budget: float):
    from pykeen.training.callbacks import TrainingCallback

    class BudgetCallback(TrainingCallback):
        """Counts positives per batch; stops training once ``budget`` seconds have passed."""

        def __init__(self):
            super().__init__()
            self.started = None
            self.positives = 0
            self.batches = 0
            self.loss_sum = 0.0

        def start(self):
            self.started = time.perf_counter()

        def elapsed(self) -> float:
            return time.perf_counter() - self.started

        def pre_batch(self, **kwargs):
            if self.elapsed() >= budget:
                raise BudgetSpent

        def on_batch(self, epoch, batch, batch_loss, **kwargs):
            self.loss_sum += float(batch_loss)

        def post_batch(self, epoch, batch, **kwargs):
            self.positives += int(batch["positives"].shape[0])
            self.batches += 1

    return BudgetCallback()


def load_factories(folder: str):
    """(train, valid, test) TriplesFactory sharing entity/relation ids built from all three files."""
    from pykeen.triples import TriplesFactory
    from pykeen.triples.triples_factory import create_entity_mapping, create_relation_mapping
    from pykeen.triples.utils import load_triples

    paths = {s: os.path.join(folder, f"{s}.txt") for s in ("train", "valid", "test")}
    labeled = np.concatenate([load_triples(p) for p in paths.values()])
    entity_to_id = create_entity_mapping(labeled)
    relation_to_id = create_relation_mapping(labeled[:, 1])
    factories = {s: TriplesFactory.from_path(p, entity_to_id=entity_to_id, relation_to_id=relation_to_id)
                 for s, p in paths.items()}
    return factories["train"], factories["valid"], factories["test"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=600.0, help="training seconds (wall clock)")
    p.add_argument("--data", default=None,
                   help="folder with train/valid/test.txt (default $KGNUM_DATA_DIR/fb15k-237)")
    p.add_argument("--dim", type=int, default=400)
    p.add_argument("--neg", type=int, default=200, help="negatives per positive")
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--lr", type=float, default=0.25)
    p.add_argument("--gamma", type=float, default=12.0, help="NSSALoss margin")
    p.add_argument("--adv-temp", type=float, default=1.0, help="NSSALoss adversarial temperature")
    p.add_argument("--optimizer", choices=("adagrad", "adam"), default="adagrad")
    p.add_argument("--normalize-entities", action="store_true",
                   help="keep PyKEEN TransE's default unit-norm entity constraint")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--test-limit", type=int, default=None,
                   help="evaluate on a random subset of this many test triples")
    p.add_argument("--eval-batch", type=int, default=32, help="queries scored at once in evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import pykeen
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.losses import NSSALoss
    from pykeen.models import TransE
    from pykeen.training import SLCWATrainingLoop

    folder = args.data
    if folder is None:
        root = os.environ.get("KGNUM_DATA_DIR")
        if not root:
            raise SystemExit("set KGNUM_DATA_DIR (the folder holding fb15k-237/) or pass --data")
        folder = os.path.join(root, "fb15k-237")
    t0 = time.perf_counter()
    train_tf, valid_tf, test_tf = load_factories(folder)
    load_seconds = time.perf_counter() - t0
    print(f"PyKEEN {pykeen.get_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"{train_tf.num_entities:,} entities, {train_tf.num_relations:,} relations, "
          f"train {train_tf.num_triples:,}, valid {valid_tf.num_triples:,}, test {test_tf.num_triples:,} "
          f"(loaded in {load_seconds:.1f} s)", flush=True)

    model_kwargs = {} if args.normalize_entities else {"entity_constrainer": None}
    model = TransE(triples_factory=train_tf, embedding_dim=args.dim, scoring_fct_norm=2,
                   loss=NSSALoss(margin=args.gamma, adversarial_temperature=args.adv_temp),
                   random_seed=args.seed, **model_kwargs)
    optim_cls = torch.optim.Adagrad if args.optimizer == "adagrad" else torch.optim.Adam
    optimizer = optim_cls(model.get_grad_params(), lr=args.lr)
    loop = SLCWATrainingLoop(model=model, triples_factory=train_tf, optimizer=optimizer,
                             negative_sampler="basic", negative_sampler_kwargs={"num_negs_per_pos": args.neg},
                             automatic_memory_optimization=False)
    callback = make_budget_callback(args.budget)
    callback.start()
    try:
        # many epochs: the callback ends training at the budget, mid-epoch if need be
        loop.train(triples_factory=train_tf, num_epochs=1_000_000, batch_size=args.batch, use_tqdm=False,
                   use_tqdm_batch=False, callbacks=[callback], pin_memory=False)
    except BudgetSpent:
        pass
    train_seconds = callback.elapsed()
    rate = callback.positives / max(train_seconds, 1e-9)
    epochs = callback.positives / train_tf.num_triples
    print(f"trained {train_seconds:.1f} s: {callback.positives:,} positives ({epochs:.2f} epochs, "
          f"{callback.batches} batches), {rate:,.0f} triples/s, mean batch loss "
          f"{callback.loss_sum / max(callback.batches, 1):.4f}", flush=True)

    test = test_tf.mapped_triples
    test_indices = None
    if args.test_limit is not None and args.test_limit < test.shape[0]:
        test_indices = np.sort(np.random.default_rng(args.seed).choice(test.shape[0], args.test_limit,
                                                                         replace=False))
        test = test[torch.as_tensor(test_indices)]
    t0 = time.perf_counter()
    results = RankBasedEvaluator(filtered=True).evaluate(
        model, test, batch_size=args.eval_batch, use_tqdm=False,
        additional_filter_triples=[train_tf.mapped_triples, valid_tf.mapped_triples, test_tf.mapped_triples])
    eval_seconds = time.perf_counter() - t0
    metrics = {name: float(results.get_metric(f"both.realistic.{name}"))
               for name in ("inverse_harmonic_mean_rank", "arithmetic_mean_rank", "hits_at_1", "hits_at_3",
                            "hits_at_10")}
    print(f"filtered test ({test.shape[0]:,} triples, both sides, realistic rank): "
          f"MRR {metrics['inverse_harmonic_mean_rank']:.4f}, MR {metrics['arithmetic_mean_rank']:.1f}, "
          f"Hits@10 {metrics['hits_at_10']:.4f} (evaluated in {eval_seconds:.1f} s)", flush=True)

    out = {
        "tool": "pykeen", "pykeen_version": pykeen.get_version(), "torch_version": torch.__version__,
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "dataset": "FB15k-237", "data_folder": os.path.abspath(folder),
        "settings": {"model": "TransE", "scoring_fct_norm": 2, "normalize_entities": args.normalize_entities,
                     "dim": args.dim, "neg": args.neg, "batch": args.batch, "lr": args.lr,
                     "gamma": args.gamma, "adv_temp": args.adv_temp, "loss": "NSSALoss",
                     "optimizer": args.optimizer, "negative_sampler": "basic", "threads": args.threads,
                     "budget": args.budget, "seed": args.seed},
        "triples_per_second": rate, "positives": callback.positives, "train_seconds": train_seconds,
        "epochs": epochs, "batches": callback.batches, "load_seconds": load_seconds,
        "mrr": metrics["inverse_harmonic_mean_rank"], "mr": metrics["arithmetic_mean_rank"],
        "hits@1": metrics["hits_at_1"], "hits@3": metrics["hits_at_3"], "hits@10": metrics["hits_at_10"],
        "eval_seconds": eval_seconds, "n_test": int(test.shape[0]),
        "test_indices": None if test_indices is None else test_indices.tolist(),
        "n_entities": train_tf.num_entities, "n_relations": train_tf.num_relations,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
