"""The run loop and the engine contract: what every training backend shares, written once.

    kgnum.train: config, tables (fresh or resumed), Job -> picks an Engine by backend
      -> loop.run(engine, job, ...):
           engine.open(job)                       place tables, compile, start workers
           clock starts
           repeat: engine.advance(n)              ~CALL_SECONDS of work -> Report
                   NaN / inf / kernel fault       -> TrainingDiverged (flags to lower)
                   validation due                 -> engine.snapshot() -> Validator
                   checkpoint due                 -> engine.snapshot(with_state) -> atomic save
                   progress interval              -> log line + history point
           until max_steps / epochs / time budget / early stopping
           engine.stop() -> last reports; engine.snapshot(with_state) -> final tables
           finally: engine.close()                 shared memory, processes, devices: released

An engine only decides where the tables live and who runs the step
(``kernels.step.train_kernel``); it implements ``Engine``. The loop owns the
stopping rules, progress bar and log, validation with early stopping and
best-table restore, checkpoints, the divergence check, SIGTERM, and the
typed result (``TrainStats``, the same keys from every engine).

Time: ``--time-budget`` is wall-clock training time from the first step to
the last, validation and checkpoints included, in every engine (engines that
keep training while the loop validates a snapshot do so; the in-process
engine pauses). Start-up (compilation, worker start) is not counted.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple, Protocol

import numpy as np

from .config import CAP_SECONDS, MIN_VALID_SECONDS, VALIDATIONS_PER_RUN
from .kernels.step import StepParams, Tables

log = logging.getLogger("kgnum")

CALL_SECONDS = 0.2  # target duration of one kernel call: responsive stop/progress, tiny overhead
LOG_EVERY_SECONDS = 10.0  # loss and triples/s to the log (and the saved history) this often
CALIBRATE_SECONDS = 0.5  # training measured before the automatic validation interval is chosen
MAX_VALID_SHARE = 0.1  # automatic validation takes at most this share of the run


class TrainingDiverged(FloatingPointError):
    """The loss or the tables stopped being finite (or the kernel divided by zero).

    Engines raise it with what they saw; the loop re-raises it naming the step and the flags
    to lower (``step`` set)."""
    step: int | None = None


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM during a run (the handler is installed for the duration of ``run``)."""


# -- what the loop hands an engine, and what it gets back ------------------------------

@dataclass(frozen=True)
class Job:
    """One run as an engine sees it."""
    model: str  # registry name
    terms: tuple  # names of the extra loss terms (kernels.terms), in params.terms' order
    params: StepParams
    edges: np.ndarray  # (n_train, 3) int32
    tables: Tables  # initial tables; engines may train these arrays in place
    seed: int
    workers: int
    max_steps: int | None  # over all workers; None: until stopped (time budget, early stopping)
    steps_per_epoch: int
    # what the engine's engine_state() returned in the run this one resumes ({} for a new run)
    engine_state: dict = field(default_factory=dict)


class Report(NamedTuple):
    """Work done since the previous report."""
    steps: int
    positives: int
    loss_sum: float  # sum over those positives of loss (+ penalties), see train_kernel
    finished: bool = False  # the engine has no work left (its share of max_steps is done)


class Engine(Protocol):
    """A training backend, driven by ``run``. Every method may raise; ``close`` always follows."""
    backend: str  # "cpu", "gpu", "dask"
    workers: int
    # optional: call_seconds, the engine's target duration of one advance (default CALL_SECONDS);
    # epoch_log, per-epoch records an engine adds to TrainStats.engine_log; views(), named other
    # entity tables of the last snapshot (same shape), kept with it as ``Embeddings.views``;
    # engine_state(), named arrays of the last snapshot that a resumed run needs beyond the
    # tables, kept as ``Embeddings.engine_state`` and handed back in ``Job.engine_state``
    worker_steps: list  # steps done by each worker so far

    def open(self, job: Job) -> None:
        """Place the tables, compile, start workers; return when training can start."""

    def advance(self, max_steps: int) -> Report:
        """Train (or wait for workers) for about CALL_SECONDS, at most ``max_steps`` steps more."""

    def snapshot(self, with_state: bool) -> Tables:
        """Copies of the tables, owned by the caller (Adagrad state empty unless ``with_state``)."""

    def stop(self) -> Report:
        """Stop training; return the work reported after the last ``advance``."""

    def close(self) -> None:
        """Release everything (shared memory, processes, devices, cluster state); idempotent."""


def fit_call_steps(current: int, took: float, per_epoch: int, target: float = CALL_SECONDS) -> int:
    """Steps for the next kernel call: aim at ``target`` seconds per call (responsive progress and
    stopping, negligible Python overhead), at most doubling, never more than an epoch."""
    return max(1, min(current * 2, per_epoch, int(current * target / max(took, 1e-6))))


# -- stopping, progress, validation ----------------------------------------------------

class Budget:
    """Stopping rules in steps (batches): max_steps, epochs, time budget."""

    def __init__(self, cfg, n_train: int):
        self.steps_per_epoch = max(1, math.ceil(n_train / cfg.batch))
        limits = []
        if cfg.max_steps is not None:
            limits.append(int(cfg.max_steps))
        if cfg.epochs is not None:
            limits.append(int(math.ceil(cfg.epochs * self.steps_per_epoch)))
        self.max_steps = min(limits) if limits else None
        self.time_budget = cfg.time_budget
        self.started = self.stopped = None  # set by start(): compilation and worker start-up are not training

    def start(self) -> None:
        self.started = time.perf_counter()
        self.stopped = None

    def stop(self) -> None:
        """Training is over: the clock stops (the final snapshot and the engine's clean-up are not
        training)."""
        if self.started is not None and self.stopped is None:
            self.stopped = time.perf_counter()

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.stopped or time.perf_counter()) - self.started

    def steps_left(self, steps_done: int) -> float:
        return math.inf if self.max_steps is None else self.max_steps - steps_done

    def done(self, steps_done: int) -> bool:
        if self.steps_left(steps_done) <= 0:
            return True
        return self.time_budget is not None and self.elapsed() >= self.time_budget


class Progress:
    """One progress bar with aggregate triples/s and loss (tqdm), or nothing."""

    def __init__(self, enabled: bool, total_steps):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, leave=True)

    def update(self, steps: int, triples_per_s: float, loss: float | None):
        """``loss`` None (a report of no positives, such as the engine's stop): the bar keeps the
        last loss it showed, not a loss of 0."""
        if self.bar is None:
            return
        if loss is not None:
            self.bar.set_postfix({"triples/s": f"{triples_per_s:,.0f}", "loss": f"{loss:.4f}"}, refresh=False)
        self.bar.update(steps)

    def logging(self):
        """Log lines go through the bar (tqdm.write) while it is shown.

        The handlers that print kgnum's lines are redirected where they are: on the kgnum logger,
        or on the loggers it propagates to (the CLI's is the root's). A tqdm handler added to the
        kgnum logger beside a root handler printed every line twice, once through the bar and once
        onto it."""
        if self.bar is None:
            return nullcontext()
        from tqdm.contrib.logging import logging_redirect_tqdm

        holders, logger = [], log
        while logger is not None:
            if logger.handlers:
                holders.append(logger)
            if not logger.propagate:
                break
            logger = logger.parent
        return logging_redirect_tqdm(holders or [log])

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Validator:
    """Early stopping on filtered valid MRR; keeps the best snapshot's tables.

    ``cfg.valid_every``: steps between validations; 0 turns validation off; None (the
    default) lets ``calibrate`` choose it from the measured speed: about
    VALIDATIONS_PER_RUN validations in the run, at least MIN_VALID_SECONDS of training apart,
    and validation under a tenth of the time (``check`` widens the interval if it is not).
    """

    def __init__(self, kg, cfg, seed: int):
        self.every = cfg.valid_every
        self.auto = cfg.valid_every is None
        self.patience = cfg.patience
        self.best_mrr = -1.0
        self.best_step = None
        self.best_tables = None
        self.bad_rounds = 0
        self.seconds = 0.0
        self.history: list[dict] = []
        self.callback = None  # (step, valid_mrr, train_seconds) -> True to stop (a tuner pruning a trial)
        self.last_step = None  # step of the last validation
        self.stopped_by = None  # why a validation ended the run (early stopping, the callback)
        valid = kg.valid
        self.enabled = self.every != 0 and valid.shape[0] > 0
        if not self.enabled:
            if self.every != 0:
                log.info("no valid triples: no validation and no early stopping")
            return  # no validation: no copy of the known triples either
        if cfg.excluded_relations():  # the sensitive relations of a debiased run are not scored
            from .eval import without_relations

            valid = without_relations(kg, valid, cfg.excluded_relations())
        self.enabled = self.enabled and valid.shape[0] > 0
        if not self.enabled:
            return
        if cfg.valid_sample is not None and valid.shape[0] > cfg.valid_sample:
            # drawn from the triples sorted, so the valid file's line order does not change the sample
            valid = valid[np.lexsort((valid[:, 2], valid[:, 1], valid[:, 0]))]
            pick = np.random.default_rng(seed).choice(valid.shape[0], cfg.valid_sample, replace=False)
            valid = valid[np.sort(pick)]
        self.triples = valid
        # which valid triples (in the model's ids): a resumed run compares its MRR with an earlier
        # leg's only when they were measured on the same ones
        ordered = valid[np.lexsort((valid[:, 2], valid[:, 1], valid[:, 0]))].astype(np.int64)
        self.key = hashlib.sha1(np.ascontiguousarray(ordered).tobytes()).hexdigest()[:16]
        self.kg = kg  # the filter index is built at the first validation, once (not a copy per check)
        self.index = None
        self.expected_seconds = None

    @property
    def ready(self) -> bool:
        return self.enabled and self.every is not None

    def resume_from(self, prev: "TrainStats", emb) -> None:
        """A resumed run starts from the loaded model's tables, which are an earlier leg's best
        validated ones when that leg ended normally: they stay the best until this leg validates
        better, so a worse second leg does not replace them (a checkpoint's tables are not its
        best, and another valid set gives MRRs that do not compare: neither is taken)."""
        if not (self.enabled and prev.best_valid_mrr is not None and prev.best_step is not None
                and not prev.checkpoint and prev.valid_key == self.key):
            return
        self.best_mrr, self.best_step = float(prev.best_valid_mrr), int(prev.best_step)
        self.best_tables = (emb.entity.copy(), emb.relation.copy(), emb.entity_state.copy(),
                            emb.relation_state.copy(), {k: np.array(a) for k, a in (emb.views or {}).items()},
                            {k: np.array(a) for k, a in (emb.engine_state or {}).items()})
        log.info("the loaded tables are the best so far (step %d, valid MRR %.4f): kept unless this run "
                 "validates better", self.best_step, self.best_mrr)

    def calibrate(self, steps_per_second: float, expected_seconds: float, at=None) -> None:
        """Choose the automatic interval once the engine's speed is known. ``at``: (step, training
        seconds) of this measurement, from which the next validation re-measures the speed (an
        engine often runs faster after its first second: the interval widens to stay
        ``seconds`` of training apart)."""
        if not (self.enabled and self.auto and self.every is None):
            return
        seconds = max(MIN_VALID_SECONDS, min(expected_seconds, CAP_SECONDS) / VALIDATIONS_PER_RUN)
        self.every = max(1, int(round(steps_per_second * seconds)))
        self.interval_seconds = seconds
        self.rate_ref = at
        self.steps_per_second = steps_per_second
        self.expected_seconds = min(expected_seconds, CAP_SECONDS)
        log.info("validating every %d steps (about %.0f s) on %d valid triples, patience %d", self.every,
                 seconds, self.triples.shape[0], self.patience)

    def _affordable(self, emb) -> bool:
        """Before the first automatic validation: time the scoring of a few queries; if one
        validation would take more than MAX_VALID_SHARE of the run (a graph of millions of
        entities), turn validation off and say so, instead of spending the budget on it. The
        queries timed are one block as the validation scores them: each call has a cost of its own
        (its threads' start, tens of ms on a busy machine), which 32 queries scaled up to the whole
        sample counted once per 32 instead of once per block."""
        from .eval import block_rows

        n = min(block_rows(emb.n_entities), self.triples.shape[0])
        t0 = time.perf_counter()
        emb.score_candidates(self.triples[:n, 0], self.triples[:n, 1], False)
        estimate = (time.perf_counter() - t0) * 2 * self.triples.shape[0] / n
        if self.expected_seconds is not None and estimate > MAX_VALID_SHARE * self.expected_seconds:
            self.enabled = False
            log.info("one validation on %d valid triples would take about %.0f s, more than %.0f%% of this "
                     "run: no validation and no early stopping (--valid-sample or --valid-every to choose)",
                     self.triples.shape[0], estimate, 100 * MAX_VALID_SHARE)
            return False
        return True

    def _candidates(self, n_entities: int) -> np.ndarray:
        """The entities ranked as answers: all but the attribute rows of ``--attribute-vectors``,
        which the returned model drops (a validation that ranked them would not be the saved
        model's). Sets ``answers`` (their ids, or None for all) and ``n_answers``; renumbers
        ``triples`` over them; returns the known triples, renumbered likewise, for the filter."""
        from .kernels.attributes import attribute_rows

        keep = ~attribute_rows(self.kg.entity_names)
        known = self.kg.all_triples()
        self.answers, self.n_answers = None, n_entities
        if keep.all():
            return known
        self.answers = np.flatnonzero(keep)
        self.n_answers = self.answers.size
        new_id = np.cumsum(keep) - 1
        known = known[keep[known[:, 0]] & keep[known[:, 2]]]
        renumber = lambda t: np.stack([new_id[t[:, 0]], t[:, 1], new_id[t[:, 2]]], axis=1)  # noqa: E731
        self.triples = renumber(self.triples)
        return renumber(known)

    def due(self, steps_done: int, last: int, train_seconds: float = math.inf) -> bool:
        """--valid-every N: on multiples of N; automatic: ``every`` steps after the last validation
        (the interval may have widened since) and ``interval_seconds`` of training after it (an
        engine that speeds up between two validations would otherwise bring them closer)."""
        if not self.ready:
            return False
        if self.auto and self.last_step is not None:
            return steps_done - self.last_step >= self.every and \
                train_seconds - self.last_seconds >= self.interval_seconds
        return steps_done // self.every > last // self.every

    def steps_to_next(self, steps_done: int, train_seconds: float = math.inf) -> float:
        if not self.ready:
            return math.inf
        if self.auto and self.last_step is not None:
            by_time = (self.last_seconds + self.interval_seconds - train_seconds) * self.steps_per_second
            return max(1, self.every - (steps_done - self.last_step), math.ceil(by_time) if by_time > 0 else 0)
        return self.every - steps_done % self.every

    def check(self, emb, steps_done: int, train_seconds: float = 0.0, final: bool = False) -> bool:
        """Evaluate ``emb`` (a snapshot the validator may keep); return True when training should stop.
        ``final``: the tables a run ended with, validated so that the best is chosen among them
        too (no callback: the run is over)."""
        from .eval import FilterIndex, link_prediction_metrics

        started = time.perf_counter()
        if self.index is None:
            if self.auto and not self._affordable(emb):
                return False
            known = self._candidates(emb.n_entities)
            self.index = FilterIndex.from_triples(known, self.n_answers, emb.relation.shape[0])
        answers = self.answers
        score = emb.score_candidates if answers is None else (
            lambda anchors, relations, head: emb.score_candidates(answers[anchors], relations, head)[:, answers])
        metrics = link_prediction_metrics(score, self.triples, None, self.n_answers, emb.relation.shape[0],
                                          index=self.index)
        took = time.perf_counter() - started
        self.seconds += took
        if self.auto and getattr(self, "rate_ref", None) is not None:
            ref_step, ref_seconds = self.rate_ref
            dt, ds = train_seconds - ref_seconds, steps_done - ref_step
            if dt > 0 and ds > 0:  # the speed since the last measurement, validation excluded
                self.steps_per_second = ds / dt
                every = max(self.every, int(math.ceil(self.steps_per_second * self.interval_seconds)))
                if every > 1.1 * self.every:  # training runs faster than first measured (compiled, warm)
                    log.info("training runs at %.0f steps/s: now validating every %d steps", self.steps_per_second,
                             every)
                self.every = every
            self.rate_ref = (steps_done, train_seconds + took)
        self.last_step = steps_done
        self.last_seconds = train_seconds + took  # training time at the end of this validation
        self.history.append({"step": steps_done, "valid_mrr": metrics["mrr"], "seconds": took,
                             "train_seconds": round(train_seconds, 3)})
        log.info("step %d: valid MRR %.4f", steps_done, metrics["mrr"])
        if self.auto and took > MAX_VALID_SHARE * self.every / self.steps_per_second:
            self.every = int(math.ceil(took / MAX_VALID_SHARE * self.steps_per_second))
            log.info("validation takes %.1f s: now every %d steps", took, self.every)
        stop = not final and self.callback is not None and bool(self.callback(steps_done, metrics["mrr"],
                                                                                train_seconds))
        self.stopped_by = "the validation callback" if stop else None
        if metrics["mrr"] > self.best_mrr:
            self.best_mrr = metrics["mrr"]
            self.best_step = steps_done
            self.best_tables = (emb.entity, emb.relation, emb.entity_state, emb.relation_state, emb.views,
                                emb.engine_state)
            self.bad_rounds = 0
            return stop
        self.bad_rounds += 1
        if not stop and self.bad_rounds >= self.patience:
            self.stopped_by = f"early stopping: no better valid MRR in {self.patience} validations"
        return self.stopped_by is not None


# -- the result ------------------------------------------------------------------------

@dataclass
class TrainStats:
    """A run's record, the same keys from every engine; saved with every checkpoint."""
    backend: str
    workers: int
    train_seconds: float = 0.0
    steps: int = 0
    positives: int = 0
    triples_per_second: float = 0.0
    mean_loss: float = 0.0
    valid_seconds: float = 0.0  # part of train_seconds spent validating
    valid_history: list = field(default_factory=list)  # [{"step", "valid_mrr", "seconds", "train_seconds"}]
    best_step: int | None = None  # step of the best validation
    best_valid_mrr: float | None = None
    restored_best: bool = False  # the final tables are the best validated ones, not the last
    history: list = field(default_factory=list)  # [{"seconds", "steps", "loss", "triples_per_second"}]
    worker_steps: list = field(default_factory=list)
    checkpoint: bool = False  # True in a checkpoint written while training
    valid_key: str | None = None  # digest of the valid triples the MRRs were measured on
    loss_sum: float = 0.0
    legs: int = 1  # training runs so far: a resumed model continues its counters
    engine_log: list = field(default_factory=list)  # per-epoch records of engines that keep them (dask: traffic)

    def add(self, report: Report) -> None:
        self.steps += report.steps
        self.positives += report.positives
        self.loss_sum += report.loss_sum

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def previous(cls, saved: dict | None) -> "TrainStats":
        """The counters a resumed run continues from (zeros for a fresh run or an old save)."""
        known = {f.name for f in fields(cls)}
        stats = cls(**{"backend": "", "workers": 0, "legs": 0,
                       **{k: v for k, v in (saved or {}).items() if k in known}})
        if saved and "legs" not in saved:
            stats.legs = 1
        if saved and "loss_sum" not in saved:
            stats.loss_sum = stats.mean_loss * stats.positives
        return stats


# -- signals ---------------------------------------------------------------------------

def _interrupt_for(signum) -> KeyboardInterrupt:
    if signum == signal.SIGTERM:
        return TrainingInterrupted("received SIGTERM: training stopped")
    return KeyboardInterrupt()


@contextmanager
def _interrupts_raise():
    """SIGTERM -> TrainingInterrupted, and SIGINT -> KeyboardInterrupt where Python's own handler
    has it, in the main thread while the run lasts; yields the list of signals received.

    A handler's exception surfaces in whatever Python code the main thread runs at that moment,
    and some code swallows it: a gc callback (dask installs one), a ``__del__``, a weakref
    callback print "Exception ignored in ..." and go on. So each signal is also remembered, and
    the loop raises it at its next step (``_Run.raise_received``) if it was lost; Python's report of
    it (a traceback before the one-line exit) is not printed."""
    received: list = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers can only be set from the main thread
        return

    def on_signal(signum, frame):
        received.append(signal.Signals(signum))
        raise _interrupt_for(signum)

    report = sys.unraisablehook

    def unraisable(info):
        if received and isinstance(info.exc_value, KeyboardInterrupt):
            return  # the signal's own exception, swallowed where it landed: raised again, not printed
        report(info)

    sigs = [signal.SIGTERM] + ([signal.SIGINT] if signal.getsignal(signal.SIGINT) is signal.default_int_handler
                               else [])  # a SIGINT the caller ignores or handles stays theirs
    old = {sig: signal.signal(sig, on_signal) for sig in sigs}
    sys.unraisablehook = unraisable
    try:
        yield received
    finally:
        sys.unraisablehook = report
        for sig, handler in old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def _signals_held(pending: list):
    """SIGINT/SIGTERM remembered, not raised, meanwhile: a second Ctrl-C cannot cut a clean-up short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def remember(signum, frame):
        pending.append(signal.Signals(signum))

    held = {sig: signal.signal(sig, remember) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in held.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def save_interruptible(emb, path: str) -> None:
    """``emb.save(path)`` with SIGTERM (and SIGINT) raising, as during the run: a signal while the
    final model is written stops with TrainingInterrupted and the half-written copy removed (the
    previous checkpoint kept), not with the process killed beside a hidden temporary folder."""
    with _interrupts_raise() as received:
        emb.save(path)
    if received:  # its exception was swallowed meanwhile (see _interrupts_raise): the model is saved
        raise _interrupt_for(received[0])


def _interrupt_under(error: SystemError) -> KeyboardInterrupt | None:
    """The interrupt at the root of ``error``'s causes, if that is what it is. A signal handler
    that raises inside a compiled function's call (in Numba's own Python helpers, such as its
    unpickling of constants) makes CPython report "returned a result with an exception set",
    once for each C call it unwinds through, each SystemError the cause of the next."""
    cause = error.__cause__
    while isinstance(cause, SystemError):
        cause = cause.__cause__
    return cause if isinstance(cause, KeyboardInterrupt) else None


# -- the loop --------------------------------------------------------------------------

class _Run:
    def __init__(self, engine: Engine, job: Job, kg, cfg, emb, save, checkpoint_every, progress, previous):
        self.engine, self.job, self.cfg, self.emb = engine, job, cfg, emb
        self.prev = TrainStats.previous(previous)  # earlier legs: steps and seconds continue from there
        self.save, self.checkpoint_every = save, checkpoint_every
        self.budget = Budget(cfg, job.edges.shape[0])
        self.validator = Validator(kg, cfg, cfg.seed)
        self.stats = TrainStats(engine.backend, engine.workers)
        self.bar = Progress(progress, self.budget.max_steps)
        self.last_log = 0.0
        self.last_ckpt = time.perf_counter()
        self.received: list = []  # signals the run's handlers saw (_interrupts_raise)

    def raise_received(self) -> None:
        """Raise a signal's interrupt that the code it landed in swallowed (see _interrupts_raise)."""
        if self.received:
            raise _interrupt_for(self.received[0])

    def diverged(self, detail: str) -> TrainingDiverged:
        cfg = self.cfg
        hint = (f"lower --lr (now {cfg.lr:g}) or --gamma (now {cfg.gamma:g}; for bilinear models it "
                f"sets the initial scale)")
        if cfg.reg_coef > 0:
            hint += f", or --reg-coef (now {cfg.reg_coef:g})"
        saved = self.save and os.path.exists(os.path.join(self.save, "config.json"))
        where = f"; the last checkpoint in {self.save} is intact" if saved else ""
        error = TrainingDiverged(f"training diverged at step {self.stats.steps:,} ({detail}): {hint}{where}")
        error.step = self.stats.steps
        return error

    def account(self, report: Report) -> None:
        if not math.isfinite(report.loss_sum):
            raise self.diverged(f"loss became {report.loss_sum}")
        self.stats.add(report)
        seconds = self.budget.elapsed()
        self.bar.update(report.steps, self.stats.positives / max(seconds, 1e-9),
                        report.loss_sum / report.positives if report.positives else None)

    def train_seconds(self) -> float:
        """Seconds of training over every leg of the run so far."""
        return self.prev.train_seconds + self.budget.elapsed()

    def snapshot_emb(self, with_state: bool):
        tables = self.engine.snapshot(with_state)
        if not (np.isfinite(tables.entity).all() and np.isfinite(tables.relation).all()):
            raise self.diverged("the tables hold NaN or inf")
        # the state too: an engine whose workers train on while it copies (Hogwild) can copy a row
        # before it goes bad and that row's state, which the step updates first, after
        if with_state and not (np.isfinite(tables.entity_state).all() and np.isfinite(tables.relation_state).all()):
            raise self.diverged("the Adagrad state holds NaN or inf")
        emb = self.emb.with_tables(tables)
        views = getattr(self.engine, "views", None)
        if views is not None:  # taken with this snapshot: they follow it through validation and saves
            emb.views = dict(views())
        state = getattr(self.engine, "engine_state", None)
        if state is not None:  # likewise: a resume from this snapshot continues from this state
            emb.engine_state = dict(state())
        return emb

    def finish_stats(self, final: bool) -> TrainStats:
        """The record so far: this leg's counters added to the earlier legs'."""
        leg, prev, v = self.stats, self.prev, self.validator
        s = TrainStats(leg.backend, self.engine.workers)  # known once the engine is open (dask)
        s.train_seconds = prev.train_seconds + self.budget.elapsed()
        s.steps, s.positives = prev.steps + leg.steps, prev.positives + leg.positives
        s.loss_sum = prev.loss_sum + leg.loss_sum
        s.triples_per_second = s.positives / max(s.train_seconds, 1e-9)
        s.mean_loss = s.loss_sum / max(s.positives, 1)
        s.valid_seconds = prev.valid_seconds + v.seconds
        s.valid_history = list(prev.valid_history) + list(v.history)
        s.history = list(prev.history) + list(leg.history)
        if v.best_step is not None:
            s.best_step, s.best_valid_mrr = v.best_step, v.best_mrr
        else:
            s.best_step, s.best_valid_mrr = prev.best_step, prev.best_valid_mrr
        s.valid_key = getattr(v, "key", None) if v.enabled else prev.valid_key
        s.worker_steps = list(self.engine.worker_steps)
        s.engine_log = list(prev.engine_log) + list(getattr(self.engine, "epoch_log", []))
        s.checkpoint = not final
        s.legs = prev.legs + 1
        return s

    def history_point(self, window: tuple) -> None:
        """Loss and throughput since the previous point, to the log and the saved history."""
        now, steps, positives, loss_sum = (self.budget.elapsed(), self.stats.steps, self.stats.positives,
                                           self.stats.loss_sum)
        t0, s0, p0, l0 = window
        if positives == p0:
            return
        rate = (positives - p0) / max(now - t0, 1e-9)
        loss = (loss_sum - l0) / (positives - p0)
        steps, now = steps + self.prev.steps, now + self.prev.train_seconds  # over every leg
        self.stats.history.append({"seconds": round(now, 3), "steps": steps, "loss": loss,
                                   "triples_per_second": rate})
        log.info("step %d (%.0f s): loss %.4f, %s triples/s", steps, now, loss, f"{rate:,.0f}")

    def checkpoint(self) -> None:
        emb = self.snapshot_emb(with_state=True)
        emb.train_stats = self.finish_stats(final=False).to_dict()
        emb.save(self.save)
        self.last_ckpt = time.perf_counter()

    def train(self) -> None:
        engine, budget, validator, stats = self.engine, self.budget, self.validator, self.stats
        call_steps = 1
        time_steps = math.inf
        window = (0.0, 0, 0, 0.0)
        with self.bar.logging():
            while not budget.done(stats.steps):
                before = self.prev.steps + stats.steps  # validations fall on multiples of --valid-every
                t0 = time.perf_counter()  # counted over every leg; an engine running one call at a time
                report = engine.advance(int(min(call_steps, budget.steps_left(stats.steps),  # meets them
                                                validator.steps_to_next(before, self.train_seconds()),
                                                time_steps)))
                if report.steps:
                    took = time.perf_counter() - t0
                    call_steps = fit_call_steps(report.steps, took, budget.steps_per_epoch,
                                                getattr(engine, "call_seconds", CALL_SECONDS))
                    if budget.time_budget is not None:  # a long call does not overrun the budget
                        left = budget.time_budget - budget.elapsed()
                        time_steps = max(1, int(report.steps * left / max(took, 1e-6)) + 1)
                self.account(report)
                self.raise_received()
                if report.finished:
                    break
                if validator.auto and validator.every is None and budget.elapsed() >= CALIBRATE_SECONDS \
                        and stats.steps > 0:  # a speed to go by: a slow model may not finish a step at once
                    rate = stats.steps / budget.elapsed()
                    expected = min(budget.time_budget or math.inf, budget.steps_left(0) / max(rate, 1e-9))
                    validator.calibrate(rate, expected, at=(self.prev.steps + stats.steps,
                                                            self.train_seconds()))
                if validator.due(self.prev.steps + stats.steps, before, self.train_seconds()):
                    if validator.check(self.snapshot_emb(with_state=True), self.prev.steps + stats.steps,
                                       self.train_seconds()):
                        log.info("%s", validator.stopped_by)
                        break
                if self.save and self.checkpoint_every and report.steps and \
                        time.perf_counter() - self.last_ckpt >= self.checkpoint_every:  # only after new work
                    self.checkpoint()
                if budget.elapsed() - window[0] >= LOG_EVERY_SECONDS:
                    self.history_point(window)
                    window = (budget.elapsed(), stats.steps, stats.positives, stats.loss_sum)
            self.account(engine.stop())
            done = self.prev.steps + stats.steps
            if validator.ready and validator.last_step is not None and validator.last_step != done \
                    and validator.stopped_by is None:  # ended by its stopping rule, after a validation
                # the tables trained since the last validation are validated too, so that the run
                # keeps the best of all rather than dropping that training unseen
                validator.check(self.snapshot_emb(with_state=True), done, self.train_seconds(), final=True)
            self.budget.stop()
            self.history_point(window)


def run(engine: Engine, job: Job, kg, cfg, emb, save: str | None = None,
        checkpoint_every: float | None = None, progress: bool = True, previous: dict | None = None,
        on_validation=None, save_final: bool = True):
    """Train ``emb``'s tables with ``engine`` under ``cfg``'s stopping rules; return the trained
    Embeddings (``train_stats``: ``TrainStats.to_dict()``), also saved to ``save`` when given.

    Raises TrainingDiverged (naming the flags to lower) when the loss or the tables stop being
    finite, TrainingInterrupted on SIGTERM, and whatever the engine raises; the engine is closed
    and the last checkpoint left intact in every case. ``previous``: the saved ``train_stats`` of
    the model being resumed; steps, positives, seconds and histories continue from them.
    ``on_validation(step, valid_mrr, train_seconds)``: called after each validation; True stops
    the run (as early stopping does: best tables kept). ``save_final=False``: ``save`` gets the
    checkpoints only (the caller saves the final model itself, e.g. without the attribute rows).
    """
    r = _Run(engine, job, kg, cfg, emb, save, checkpoint_every, progress, previous)
    r.validator.callback = on_validation
    r.validator.resume_from(r.prev, emb)
    pending: list = []
    with _interrupts_raise() as received:
        r.received = received
        try:
            engine.open(job)
            r.raise_received()
            r.budget.start()
            try:
                r.train()
                r.raise_received()
            except (ZeroDivisionError, FloatingPointError) as e:
                if getattr(e, "step", None) is not None:
                    raise  # the loop's own, already in CLI terms
                raise r.diverged(str(e) if isinstance(e, TrainingDiverged) else f"{type(e).__name__}: {e}") from e
            finally:
                r.bar.close()
            final = r.snapshot_emb(with_state=True)
        except SystemError as e:  # from the engine's start (its compile) as from its calls
            interrupt = _interrupt_under(e)
            if interrupt is not None:
                raise interrupt from None
            raise
        finally:
            with _signals_held(pending):
                engine.close()
    if pending:  # a signal arrived during the clean-up of a run that had finished
        raise TrainingInterrupted(f"received {pending[0].name} while cleaning up")
    stats = r.finish_stats(final=True)
    v = r.validator
    if v.best_tables is not None:
        # the Adagrad state of the best step with its tables, so that a resume continues from that step
        (final.entity, final.relation, final.entity_state, final.relation_state, final.views,
         final.engine_state) = v.best_tables
        stats.restored_best = v.best_step != stats.steps  # both count over every leg
        if stats.restored_best:
            log.info("kept the best validated tables: step %d, valid MRR %.4f", v.best_step, v.best_mrr)
    final.train_stats = stats.to_dict()
    if save and save_final:
        save_interruptible(final, save)
    return final
