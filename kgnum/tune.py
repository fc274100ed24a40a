"""``kgnum tune``: a budgeted hyperparameter search with Optuna.

    study (TPE sampler, successive-halving pruner), wall-clock budget for the whole study
      trial i: sample lr, gamma (margin or initial scale), adversarial temperature,
               regularization (bilinear models), dim around the model's defaults
             -> kgnum.train(time_budget = the trial's share, all workers), validating as usual;
                each validation reports its valid MRR at the trial's training time, and a trial
                clearly behind the others at that time is pruned (stopped)
             -> objective: the best filtered valid MRR on the valid sample
      -> DIR/best.json (TrainConfig fields: kgnum train --config DIR/best.json, or
         kgnum.train(kg, **json.load(...))), DIR/trials.tsv (the table), DIR/study.json
         (summary), DIR/journal.log (Optuna's own log of the study)

Trials run one after another, each on every worker: the engine already uses
every core. Optuna is an optional extra (``pip install 'kgnum[tune]'``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass

from .config import TrainConfig, available_cores, default_gamma, model_default
from .files import write_json
from .kernels.registry import get_model
from .kernels.score import PRODUCT_METRICS

log = logging.getLogger("kgnum")

DEFAULT_TRIALS = 8  # without --trials, each trial gets this share of the budget
MIN_TRIAL_SECONDS = 3.0  # a trial shorter than this teaches nothing: the study ends instead
RUNG_UNITS = 10  # intermediate values are reported at the trial's training time in 0.1 s
# settings searched, and the ones a --space flag may name
SEARCHABLE = ("lr", "gamma", "adv_temp", "reg_coef", "dim", "neg", "batch")
# a trial's fields best.json leaves out: its share of the budget would cap a later run
# (explicit flags win, but a run given --epochs would still stop at the trial's seconds)
NOT_IN_BEST = ("time_budget", "max_steps", "epochs", "workers")
# a trial's own failure, from the settings it sampled: recorded as failed, and the study goes on
# (unless no trial has done better: then the error ends the study)
TRIAL_ERRORS = (FloatingPointError, MemoryError)


class TrialFailed(Exception):
    """One trial failed (TRIAL_ERRORS); Optuna records it as failed and samples on."""


@dataclass(frozen=True)
class Range:
    """A float range (log-uniform when ``log``) or a set of integer choices."""
    low: float = 0.0
    high: float = 0.0
    log: bool = True
    choices: tuple = ()

    def describe(self) -> str:
        if self.choices:
            return "|".join(map(str, self.choices))
        return f"{self.low:g}:{self.high:g}" + (" (log)" if self.log else "")


def default_space(model: str) -> dict[str, Range]:
    """The model's search space, around its registry defaults."""
    sf = get_model(model)
    d = sf.defaults
    dim = int(_default(model, "dim"))
    half = dim // 2 - (dim // 2) % 2 if sf.even_dim else dim // 2
    space = {
        "lr": Range(d["lr"] / 4, d["lr"] * 4),
        "adv_temp": Range(0.25, 4.0),
        "dim": Range(choices=(half, dim)),  # the model's default dim and half of it
    }
    if sf.metric in PRODUCT_METRICS:  # bilinear: gamma is the initial scale (gamma + 2) / dim
        space["gamma"] = _initial_scale_range(sf, space["dim"].choices)
        space["reg_coef"] = Range(1e-7, 1e-4)
    else:  # a margin
        space["gamma"] = Range(d["gamma"] / 2, d["gamma"] * 2, log=False)
    return space


def _initial_scale_range(sf, dims) -> Range:
    """A bilinear model's gamma range: gamma sets the initial scale (gamma + 2) / dim, so the
    range follows the dims searched (a quarter of the default at the smallest, twice it at the largest)."""
    return Range(default_gamma(sf, min(dims)) / 4, default_gamma(sf, max(dims)) * 2)


def parse_space(model: str, specs: list[str] | None) -> dict[str, Range]:
    """The default space with ``--space NAME=LOW:HIGH`` / ``NAME=A|B|C`` overrides applied."""
    sf = get_model(model)
    space = default_space(model)
    given = set()
    for spec in specs or []:
        name, sep, value = spec.partition("=")
        name = name.strip().replace("-", "_")
        given.add(name)
        if not sep or not value:
            raise ValueError(f"--space {spec}: expected NAME=LOW:HIGH or NAME=A|B|C")
        if name not in SEARCHABLE:
            raise ValueError(f"--space {spec}: {name!r} cannot be searched; searchable: {', '.join(SEARCHABLE)}")
        try:
            if "|" in value or name in ("dim", "neg", "batch"):
                choices = tuple(int(v) for v in value.split("|"))
                if any(c < 1 for c in choices):
                    raise ValueError
                space[name] = Range(choices=choices)
                continue
            low, _, high = value.partition(":")
            low, high = float(low), float(high)
        except ValueError:
            raise ValueError(f"--space {spec}: not a range LOW:HIGH of numbers"
                             + (" or choices A|B|C of positive integers" if name in ("dim", "neg", "batch")
                                else "")) from None
        if not (0 < low < high) or not math.isfinite(high):
            raise ValueError(f"--space {spec}: needs 0 < LOW < HIGH")
        space[name] = Range(low, high, log=space.get(name, Range()).log if name in space else True)
    if "dim" in space and sf.even_dim and any(c % 2 for c in space["dim"].choices):
        raise ValueError(f"--space dim: {sf.name} needs even dims")
    if sf.metric in PRODUCT_METRICS and "dim" in given and "gamma" not in given:
        space["gamma"] = _initial_scale_range(sf, space["dim"].choices)
    return space


def _import_optuna():
    try:
        import optuna
    except ImportError:
        raise ValueError("kgnum tune needs Optuna, which is not installed: pip install 'kgnum[tune]'") from None
    return optuna


def _suggest(trial, space: dict[str, Range]) -> dict:
    values = {}
    for name, r in space.items():
        if r.choices:
            values[name] = trial.suggest_categorical(name, list(r.choices))
        else:
            values[name] = trial.suggest_float(name, r.low, r.high, log=r.log)
    return values


def tune(kg, model: str, time_budget: float, *, out: str, trials: int | None = None,
         workers: int | None = None, seed: int = 0, space: list[str] | None = None,
         base: dict | None = None) -> dict:
    """Search ``model``'s hyperparameters on ``kg`` within ``time_budget`` wall-clock seconds.

    ``base``: fixed TrainConfig fields under the searched ones. Writes ``out``/best.json,
    trials.tsv, study.json, journal.log and returns the summary (study.json's content).
    KeyboardInterrupt stops the study; what it has is still written (``interrupted``: True).
    """
    optuna = _import_optuna()
    from .train import train

    if time_budget is None or not (time_budget > 0 and math.isfinite(time_budget)):
        raise ValueError(f"--time-budget {time_budget}: kgnum tune needs a budget in seconds for the whole "
                         f"study (a finite number > 0)")
    if not 0 <= seed < 2 ** 32:  # Optuna's sampler takes no other
        raise ValueError(f"--seed {seed}: must be an integer from 0 to 2**32 - 1")
    if trials is not None and trials < 1:
        raise ValueError(f"--trials {trials}: must be >= 1")
    if kg.valid.shape[0] == 0:
        raise ValueError("kgnum tune: the dataset has no valid split to score trials on")
    model = get_model(model).name
    search = parse_space(model, space)
    if workers is not None and workers < 1:
        raise ValueError(f"--workers {workers}: must be >= 1 (leave it out for every core)")
    workers = workers or available_cores()
    per_trial = time_budget / (trials or DEFAULT_TRIALS)
    if per_trial < MIN_TRIAL_SECONDS:
        raise ValueError(f"--time-budget {time_budget:g}: {per_trial:.1f} s per trial is too short "
                         f"(at least {MIN_TRIAL_SECONDS:g}); give more time or fewer --trials")
    fixed = {k: v for k, v in (base or {}).items() if k not in search and k not in ("model",)}
    earlier = _earlier_trials(out, model, kg)
    os.makedirs(out, exist_ok=True)
    study_started = time.perf_counter()
    deadline = study_started + time_budget
    # each trial's outcome is one line of ours: Optuna's warnings are a failed trial's traceback
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = _journal_storage(optuna, os.path.join(out, "journal.log"))
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
        # a rung every few seconds of a trial's training; a trial below the median of those
        # that reached the same rung is stopped
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, int(RUNG_UNITS * per_trial / 9)),
                                                      reduction_factor=3),
        # a rerun with the same space continues the study in the journal (Optuna refuses a
        # parameter whose choices changed, so another space starts another study there)
        storage=storage, study_name=f"kgnum-{model}-{kg.name}-{_space_key(search)}", load_if_exists=True)
    # the defaults first: the search never ends below what a user gets without it
    study.enqueue_trial(first_trial(model, search), skip_if_exists=True)
    rows: list[dict] = list(earlier)
    log.info("tuning %s on %s: %s s, %s, %.0f s per trial, %d worker(s); space %s", model, kg.name,
             f"{time_budget:g}", f"{trials} trials" if trials else "trials until the budget is spent",
             per_trial, workers, ", ".join(f"{k} {r.describe()}" for k, r in search.items()))

    def objective(trial):
        remaining = deadline - time.perf_counter()
        if remaining < MIN_TRIAL_SECONDS:
            study.stop()
            raise optuna.TrialPruned("budget spent")
        values = _suggest(trial, search)
        config = {**fixed, **values, "workers": workers, "seed": seed,
                  "time_budget": round(min(per_trial, remaining), 3)}
        pruned = []

        def report(step, mrr, train_seconds):
            trial.report(mrr, int(RUNG_UNITS * train_seconds))
            if trial.should_prune():
                pruned.append(train_seconds)
                return True
            return False

        started = time.perf_counter()
        level = log.level
        log.setLevel(max(logging.WARNING, level))  # one line per trial, not the trial's own log
        try:
            emb = train(kg, model, progress=False, on_validation=report, **config)
        except TRIAL_ERRORS as e:  # this trial's settings (a blow-up, a dim too big): the study goes on
            row = {"trial": trial.number, "state": "failed", "valid_mrr": None, "steps": 0,
                   "seconds": round(time.perf_counter() - started, 1), "config": {"model": model, **config},
                   "error": (str(e).strip().splitlines() or [type(e).__name__])[0]}
            rows.append(row)
            trial.set_user_attr("row", row)
            if all(r["state"] == "failed" for r in rows):  # the defaults too (the first trial): stop, saying why
                raise
            raise TrialFailed(row["error"]) from e
        finally:
            log.setLevel(level)
        stats = emb.train_stats
        row = {"trial": trial.number, "state": "pruned" if pruned else "complete",
               "valid_mrr": stats["best_valid_mrr"], "steps": stats["steps"],
               "seconds": round(time.perf_counter() - started, 1),
               "config": {k: emb.config[k] for k in TrainConfig.__dataclass_fields__}}
        rows.append(row)
        trial.set_user_attr("row", row)
        if stats["best_valid_mrr"] is None:
            raise optuna.TrialPruned("no validation happened")
        if pruned:
            raise optuna.TrialPruned(f"pruned at {pruned[0]:.0f} s")
        return stats["best_valid_mrr"]

    def announce(study_, frozen):
        row = frozen.user_attrs.get("row")
        if row is None:
            return
        best = max((r for r in rows if r["state"] == "complete" and r["valid_mrr"] is not None),
                   key=lambda r: r["valid_mrr"], default=None)
        shown = {k: row["config"][k] for k in search}
        print(f"trial {row['trial']:3d} {row['state']:8s} valid MRR {row['valid_mrr'] or 0:.4f} "
              f"{row['steps']:>8,} steps {row['seconds']:6.1f} s  {_fmt(shown)}  | best "
              + (f"{best['valid_mrr']:.4f} (trial {best['trial']})" if best else "-")
              + (f"\n  {row['error']}" if "error" in row else ""), flush=True)

    interrupted = False
    try:
        study.optimize(objective, n_trials=trials, timeout=time_budget, callbacks=[announce],
                       catch=(TrialFailed,))
    except KeyboardInterrupt:
        interrupted = True
        log.warning("tuning interrupted: writing the %d finished trials", len(rows))
    except Exception:  # the trials finished so far are still written
        _write_results(out, model, kg, rows, search, time_budget, False)
        raise
    summary = _write_results(out, model, kg, rows, search, time_budget, interrupted)
    # this run's own part of the study (its trials and wall clock), for the closing line
    summary["run"] = {"trials": len(rows) - len(earlier), "seconds": time.perf_counter() - study_started}
    return summary


def _default(model: str, name: str):
    """The value a plain ``kgnum train`` would use for ``name``."""
    if TrainConfig.__dataclass_fields__[name].metadata.get("per_model"):
        return model_default(model, name)
    return getattr(TrainConfig, name)


def first_trial(model: str, search: dict[str, Range]) -> dict:
    """What a plain ``kgnum train`` would use, within the space: a bilinear model's default gamma
    follows its dim (config.default_gamma), so it is taken at the trial's dim."""
    values = {k: _clip(_default(model, k), r) for k, r in search.items()}
    if "gamma" in search:
        dim = values.get("dim", _default(model, "dim"))
        values["gamma"] = _clip(default_gamma(get_model(model), int(dim)), search["gamma"])
    return values


def _space_key(search: dict[str, Range]) -> str:
    text = ";".join(f"{k}={r.describe()}" for k, r in sorted(search.items()))
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _earlier_trials(out: str, model: str, kg) -> list[dict]:
    """The trials an earlier ``kgnum tune`` wrote to ``out`` (study.json), so that a rerun adds to
    them and best.json stays the best of all; a study of another model or graph is refused."""
    path = os.path.join(out, "study.json")
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            earlier = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"--out {out}: study.json cannot be read ({e}); give another --out") from None
    if earlier.get("model") != model or earlier.get("dataset") != kg.name:
        raise ValueError(f"--out {out}: holds a study of {earlier.get('model')} on {earlier.get('dataset')}, "
                         f"not {model} on {kg.name}; give another --out")
    log.info("--out %s: continuing its study (%d earlier trial(s))", out, len(earlier.get("trials", [])))
    return list(earlier.get("trials", []))


def _clip(value, r: Range):
    if r.choices:
        return value if value in r.choices else r.choices[-1]
    return min(max(float(value), r.low), r.high)


def _journal_storage(optuna, path: str):
    """Optuna's append-only journal file: the study's own log, readable by optuna tools."""
    try:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # older Optuna: keep the study in memory (trials.tsv is still written)
        return None
    return JournalStorage(JournalFileBackend(path))


def _fmt(values: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def _write_results(out, model, kg, rows, search, time_budget, interrupted) -> dict:
    done = [r for r in rows if r["state"] == "complete" and r["valid_mrr"] is not None]
    best = max(done, key=lambda r: r["valid_mrr"], default=None)
    with open(os.path.join(out, "trials.tsv"), "w") as f:
        keys = list(search)
        f.write("\t".join(["trial", "state", "valid_mrr", "steps", "seconds", *keys]) + "\n")
        for r in rows:
            f.write("\t".join(map(str, [r["trial"], r["state"], r["valid_mrr"], r["steps"], r["seconds"],
                                        *(r["config"][k] for k in keys)])) + "\n")
    summary = {"model": model, "dataset": kg.name, "time_budget": time_budget, "interrupted": interrupted,
               "trials": rows, "best_trial": best["trial"] if best else None,
               "best_valid_mrr": best["valid_mrr"] if best else None,
               "space": {k: r.describe() for k, r in search.items()}}
    _write_json(os.path.join(out, "study.json"), summary)
    if best is not None:  # the settings, not the trial's stopping rule or this machine's cores
        _write_json(os.path.join(out, "best.json"),
                    {k: v for k, v in best["config"].items() if k not in NOT_IN_BEST})
    return summary


def _write_json(path: str, payload) -> None:
    write_json(path, payload, default=float)
