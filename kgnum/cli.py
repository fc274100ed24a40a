"""Command line: ``kgnum train | eval | predict | similar`` with DGL-KE-like flags."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import sys
import time

from dataclasses import fields

from .files import write_json
from .config import CAP_EPOCHS, CAP_SECONDS, TrainConfig, model_defaults_table
from .kernels.registry import model_names
from .presets import PRESETS, preset_values

log = logging.getLogger("kgnum")


def _data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """The data flags: --dataset, or --data-path, or --data-files (--data-path then is their folder).

    argparse's groups cannot say "--data-path with --data-files but not with --dataset", so
    --dataset/--data-files are a mutually exclusive group, --dataset/--data-path exclude each
    other through their action, and a missing data flag (``required``) is reported by
    :func:`_load_kg`, one line like every input error.
    """
    class NotWith(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            other, flag = ("data_path", "--data-path") if self.dest == "dataset" else ("dataset", "--dataset")
            if getattr(namespace, other, None) is not None:
                raise argparse.ArgumentError(self, f"not allowed with argument {flag}")
            setattr(namespace, self.dest, values)

    g = p.add_mutually_exclusive_group()
    g.add_argument("--dataset", action=NotWith,
                   help="built-in name (FB15k, FB15k-237, wn18, wn18rr, synthetic, or a folder "
                        "under $KGNUM_DATA_DIR such as umls), matched case-insensitively")
    p.add_argument("--data-path", "--data_path", action=NotWith,
                   help="directory holding train/valid/test files (.txt; .tsv too for the raw_udd_* and "
                        "udd_* formats); with --data-files, the folder their names are relative to")
    g.add_argument("--data-files", "--data_files", nargs="+", metavar="FILE",
                   help="TRAIN [VALID [TEST]] with any names (no VALID: no early stopping; no TEST: no "
                        "test metrics); for the udd_* formats ENTITIES RELATIONS TRAIN [VALID [TEST]], "
                        "as DGL-KE")
    p.add_argument("--format", metavar="FORMAT", default=None,
                   help="file format: tsv (default; train/valid/test.txt with --data-path), "
                        "raw_udd_{hrt,htr,rht,rth,thr,trh} (string triples, columns in that order; "
                        "raw_udd_hrt = tsv), udd_{hrt,htr,rht,rth,thr,trh} (integer ids in that order + "
                        "entities.dict, relations.dict with lines id<TAB>name)")
    p.add_argument("--delimiter", default=None,
                   help="field separator of the triple files: tab (default), space (any run of "
                        "whitespace), comma, or one other character; .dict files are always tab separated")
    p.add_argument("--duplicates", choices=["keep", "drop"], default="keep",
                   help="a triple repeated within a split: keep it (default, as DGL-KE) or drop the repeats "
                        "(the first occurrence stays); the count is logged either way")
    p.add_argument("--unseen", choices=["error", "skip", "keep"], default=None,
                   help="valid/test triples whose entity or relation is not in train: stop with an "
                        "error, drop them with a count in the log, or keep them (default: keep for "
                        "the public benchmarks FB15k, FB15k-237, wn18, wn18rr, as published; error "
                        "otherwise)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kgnum", description="Fast knowledge-graph embeddings.")
    parser.add_argument("--version", action="version", version=f"kgnum {_version()}")
    parser.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    # the per-model defaults the configuration flags' help points to ("listed below")
    defaults_epilog = ("each model's own defaults (the other flags' defaults are shared):\n"
                       + model_defaults_table()
                       + "\nWith no stopping rule, training runs until early stopping ends it, at most "
                       f"{CAP_EPOCHS} epochs or {CAP_SECONDS:g} s.")
    t = sub.add_parser("train", help="train embeddings, then evaluate",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=defaults_epilog)
    _data_args(t)
    t.add_argument("--preset", choices=sorted(PRESETS), help="tuned settings for a dataset; explicit flags "
                   "and --config win")
    t.add_argument("--config", help="a JSON file of settings (e.g. best.json from kgnum tune); explicit flags "
                   "win")
    _config_args(t)
    t.add_argument("--save", "--save_path", help="directory to save the model to (written atomically)")
    t.add_argument("--checkpoint-every", type=float, help="also save every N seconds while training")
    t.add_argument("--load", help="continue training a saved model: its saved configuration (model, dim, "
                   "hyperparameters, validation) carries on, flags given here override it, the dataset is "
                   "matched to its rows by name, and its statistics accumulate")
    t.add_argument("--force", action="store_true", help="train even when the memory plan says the run does "
                   "not fit in the memory available (see kgnum plan)")
    t.add_argument("--resume", action="store_true", help="with --backend dask: continue from the part "
                   "checkpoints in --checkpoint-dir (after a run lost its scheduler or every worker)")
    t.add_argument("--eval-split", choices=["test", "valid", "none"], default="test",
                   help="split evaluated after training (default test; none: no evaluation)")
    t.add_argument("--json", help="write the run's metrics to this JSON file")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    pl = sub.add_parser("plan", help="the memory a training run will need, against what this machine has",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=defaults_epilog)
    _data_args(pl, required=False)
    pl.add_argument("--entities", type=_positive, help="number of entities (instead of a dataset)")
    pl.add_argument("--relations", type=_positive, help="number of relations (instead of a dataset)")
    pl.add_argument("--edges", type=_positive, help="number of training triples (instead of a dataset)")
    pl.add_argument("--json", help="write the plan to this JSON file")
    pl.add_argument("--preset", choices=sorted(PRESETS), help="as kgnum train")
    pl.add_argument("--config", help="as kgnum train")
    _config_args(pl)  # kgnum train's configuration flags, so the plan is of the same run

    tu = sub.add_parser("tune", help="budgeted hyperparameter search (Optuna): writes DIR/best.json for "
                        "kgnum train --config")
    _data_args(tu)
    tu.add_argument("--model", required=True, help=f"score function; one of {', '.join(model_names())}")
    tu.add_argument("--time-budget", type=float, required=True, help="wall-clock seconds for the whole study")
    tu.add_argument("--trials", type=int, help=f"number of trials, each with an equal share of the budget "
                    f"(default: trials of budget/{8} each until the budget is spent)")
    tu.add_argument("--workers", type=_workers, help="workers of every trial (default: the cores this process "
                    "may use)")
    tu.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial (default 0)")
    tu.add_argument("--space", action="append", metavar="NAME=LOW:HIGH",
                    help="replace one range of the search space (repeatable): lr, gamma, adv-temp, reg-coef as "
                         "LOW:HIGH (log scale; a distance model's gamma, its margin, linear), dim, neg, batch "
                         "as choices A|B|C")
    tu.add_argument("--out", required=True, help="directory for best.json, trials.tsv, study.json, journal.log")

    b = sub.add_parser("bias", help="measure social bias in a trained model")
    bsub = b.add_subparsers(dest="bias_command", required=True)
    bm = bsub.add_parser("measure", help="difference in scores and probe accuracy per sensitive relation; "
                         "per-target bias B_p with --values and --target")
    bm.add_argument("--load", required=True, help="saved model directory")
    bm.add_argument("--view", help="measure this entity table of the model instead of its own (the adversarial baseline saves "
                    "'[s] REL' views: one relation's filter only; '[a]', every filter, is the model itself)")
    _data_args(bm)
    bm.add_argument("--sensitive", required=True, help="sensitive relation(s), comma-separated")
    bm.add_argument("--values", help="two values A,B of the first sensitive relation for B_p (e.g. male,female)")
    bm.add_argument("--target", help="target relation for B_p (e.g. the profession relation)")
    bm.add_argument("--names", help="entity<TAB>display name file for the report (default: the dataset's "
                    "entity_names.tsv when it has one)")
    bm.add_argument("--top-m", type=int, default=30, help="candidate values per sensitive relation (default 30)")
    bm.add_argument("--min-persons", type=int, default=20, help="report targets with at least this many "
                    "persons (default 20)")
    bm.add_argument("--alpha", type=float, default=0.01, help="gradient step of the B_p diagnostic (default 0.01)")
    bm.add_argument("--person-side", action="append", metavar="REL=head|tail",
                    help="force the person side of a sensitive relation (default: detected from the data)")
    bm.add_argument("--top", type=int, default=10, help="targets printed toward each value (default 10)")
    bm.add_argument("--seed", type=int, default=0, help="seed of the probe's split and MLP (default 0)")
    bm.add_argument("--json", required=True, help="write the measurements to this JSON file")
    bm.add_argument("--plot", help="write a bar chart of the most biased targets to this PNG (matplotlib)")

    pa = sub.add_parser("partition", help="partition the entity graph (METIS or random) for the cluster engine")
    _data_args(pa)
    pa.add_argument("--parts", type=int, required=True, help="number of parts")
    pa.add_argument("--method", choices=["metis", "random"], default="metis", help="partitioner (default metis)")
    pa.add_argument("--seed", type=int, default=0, help="seed of METIS or of the random assignment (default 0)")
    pa.add_argument("--dim", type=int, default=400, help="row size for the traffic estimate (default 400)")
    pa.add_argument("--out", required=True, help="directory to save the partition to")
    pa.add_argument("--json", help="write the report to this JSON file")

    sp = sub.add_parser("split", help="split one file of triples into train/valid/test, every valid/test "
                        "entity and relation kept in train")
    sp.add_argument("file", help="text file of triples, one per line")
    sp.add_argument("--ratios", default="0.8,0.1,0.1", help="shares TRAIN,VALID,TEST (default 0.8,0.1,0.1)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the shuffle (default 0)")
    sp.add_argument("--delimiter", default="tab", help="field separator of FILE, as kgnum train's: tab (default), "
                    "space (any run of whitespace), comma, or one other character; the splits are written "
                    "tab-separated")
    sp.add_argument("--out", required=True, help="directory for train.txt, valid.txt, test.txt")

    pl = sub.add_parser("plot", help="training curves (valid MRR and loss against time) of saved runs")
    pl.add_argument("models", nargs="+", help="saved model directories")
    pl.add_argument("--out", required=True, help="PNG to write")

    im = sub.add_parser("import-dglke", help="a DGL-KE saved model into kgnum's format")
    im.add_argument("dglke_dir", help="DGL-KE save directory (config.json, <dataset>_<model>_entity.npy, ...)")
    im.add_argument("--data-path", required=True, help="the dataset folder holding entities.dict/relations.dict "
                    "(or entities.tsv/relations.tsv) that name the rows")
    im.add_argument("--out", required=True, help="kgnum model directory to write")
    ex = sub.add_parser("export-dglke", help="a kgnum model in DGL-KE's save layout")
    ex.add_argument("--load", required=True, help="saved kgnum model directory")
    ex.add_argument("--out", required=True, help="directory to write")
    ex.add_argument("--dataset-name", default="kgnum", help="the <dataset> part of the file names (default kgnum)")

    e = sub.add_parser("eval", help="evaluate a saved model (filtered MRR, MR, Hits@1/3/10)")
    e.add_argument("--load", required=True, help="saved model directory")
    e.add_argument("--view", help="evaluate this entity table of the model instead of its own (the adversarial baseline saves "
                    "'[s] REL' views: one relation's filter only; '[a]', every filter, is the model itself)")
    _data_args(e)
    e.add_argument("--split", choices=["test", "valid"], default="test", help="split to evaluate (default test)")
    e.add_argument("--exclude-relations", help="relations (comma-separated) whose triples are left out of the "
                   "split, besides those the model was trained to leave out (its --debias and "
                   "--eval-exclude-relations)")
    e.add_argument("--per-relation", action="store_true", help="also MRR and Hits@10 per relation and side, "
                   "with each relation's triple count (most frequent first)")
    e.add_argument("--json", help="write the metrics to this JSON file")

    pr = sub.add_parser("predict", help="top-k completions of (head, relation, ?) or (?, relation, tail); from "
                        "files, batch prediction as dglke_predict",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="One query (--head or --tail, and --relation) prints 'score  name' lines. With a "
                               "file, --format or --output,\nthe results are TSV: a header, then head, relation, "
                               "tail, score[, known] per row (names).\n"
                               "  h_r_*  the top-k tails of each (head, relation)\n"
                               "  *_r_t  the top-k heads of each (relation, tail)\n"
                               "  h_*_t  the top-k relations of each (head, tail)\n"
                               "  h_r_t  the score of every triple, in input order (with --topk: the k best, best "
                               "first)\n"
                               "Each side comes from a one-per-line file (--head-file ...) or one value (--head "
                               "...); --format\ndefaults to the sides given. Lines are names unless --ids "
                               "(then every line is a row id, 0-based).\n--exec-mode all pairs the lines as "
                               "their cross product (head, relation, tail; the last varying\nfastest), "
                               "triplet_wise line i with line i. known (1/0: the triple is in the saved train, "
                               "valid or\ntest) is shown when known triples can be in the output: --exclude-mode "
                               "none or train, and h_r_t.")
    pr.add_argument("--load", required=True, help="saved model directory")
    pr.add_argument("--head", help="head entity: predict tails (with --relation), or one head for the batch")
    pr.add_argument("--tail", help="tail entity: predict heads (with --relation), or one tail for the batch")
    pr.add_argument("--relation", help="relation (one query, or one relation for the batch)")
    pr.add_argument("--head-file", "--head_file", help="file of head entities, one per line")
    pr.add_argument("--relation-file", "--relation_file", help="file of relations, one per line")
    pr.add_argument("--tail-file", "--tail_file", help="file of tail entities, one per line")
    pr.add_argument("--data-files", "--data_files", nargs="+", metavar="FILE",
                    help="DGL-KE's spelling: the files of --format's given sides, in order (h_r_*: heads, then "
                         "relations)")
    pr.add_argument("--format", choices=PREDICT_FORMATS, help="which side to predict ('*'); default: the one "
                    "not given (h_r_t when all three are)")
    pr.add_argument("--exec-mode", "--exec_mode", choices=["all", "triplet_wise"], default="all",
                    help="pair the inputs as their cross product (all, the default) or line by line "
                         "(triplet_wise: equal line counts, or one line used with every line)")
    pr.add_argument("--k", "--topk", "--topK", dest="k", type=_positive, default=None,
                    help="answers per query (default 10); with h_r_t: keep only the k best triples")
    ids = pr.add_mutually_exclusive_group()
    ids.add_argument("--ids", action="store_true", help="the inputs are row ids (0-based), not names")
    ids.add_argument("--raw-data", "--raw_data", action="store_true",
                     help="DGL-KE's flag: the inputs are names (kgnum's default, so it changes nothing)")
    pr.add_argument("--exclude-mode", choices=["none", "train", "all"], default="all",
                    help="leave out answers already known in train (train) or in train, valid and test (all, the "
                         "default); none shows them, marked as known")
    pr.add_argument("--output", help="TSV file to write (default: standard output)")

    s = sub.add_parser("similar", help="nearest entities or relations (cosine, dot, l2 or l1), one or from files",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="One --entity prints 'value  name' lines. With a file or --output, TSV: a header, "
                              "then kind, query,\nneighbour, value per row, nearest first (cosine and dot: "
                              "higher = closer; l2 and l1: distances,\nlower = closer). The query itself is "
                              "never its own neighbour. Lines are names unless --ids.")
    s.add_argument("--load", required=True, help="saved model directory")
    s.add_argument("--entity", help="entity (name, or row id with --ids)")
    s.add_argument("--relation", help="relation (name, or row id with --ids)")
    s.add_argument("--entity-file", "--entity_file", help="file of entities, one per line")
    s.add_argument("--relation-file", "--relation_file", help="file of relations, one per line")
    s.add_argument("--metric", "--sim-func", "--sim_func", dest="metric", choices=["cosine", "l2", "l1", "dot"],
                   default="cosine", help="similarity (default cosine)")
    s.add_argument("--k", "--topk", "--topK", dest="k", type=_positive, default=10,
                   help="how many neighbours (default 10)")
    sids = s.add_mutually_exclusive_group()
    sids.add_argument("--ids", action="store_true", help="the inputs are row ids (0-based), not names")
    sids.add_argument("--raw-data", "--raw_data", action="store_true",
                      help="DGL-KE's flag: the inputs are names (kgnum's default, so it changes nothing)")
    s.add_argument("--output", help="TSV file to write (default: standard output)")

    xp = sub.add_parser("export", help="a model's tables as word2vec text, Parquet or kgnum's .npy layout")
    xp.add_argument("--load", required=True, help="saved model directory")
    xp.add_argument("--format", required=True, choices=["word2vec", "parquet", "npy"],
                    help="word2vec: text, 'N DIM' then 'name v1 ... vDIM' per row (whitespace in names becomes _); "
                         "parquet: columns kind, id, name, vector (pip install 'kgnum[parquet]'); npy: the model "
                         "as kgnum train --save writes it")
    xp.add_argument("--kind", choices=["entity", "relation", "all"],
                    help="tables to write (default: entity for word2vec, all for parquet; npy: the whole model)")
    xp.add_argument("--out", required=True, help="file to write (directory for npy)")
    parser.commands = {**sub.choices, "bias": bsub.choices["measure"]}  # which parser reports a stray flag
    for command in parser.commands.values():  # --verbose after the command too, where an error's hint is acted on
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="print the traceback of an error")
    return parser


_CONFIG_FLAGS = tuple(f.name for f in fields(TrainConfig))


def _workers(text: str):
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


# DGL-KE's spellings of the same settings (dglke_train), accepted as aliases
DGLKE_ALIASES = {
    "model": ["--model_name"], "dim": ["--hidden_dim"], "neg": ["--neg_sample_size"], "batch": ["--batch_size"],
    "max_steps": ["--max_step"], "adv": ["-adv", "--neg_adversarial_sampling"],
    "adv_temp": ["-a", "--adversarial_temperature"], "reg_coef": ["--regularization_coef"],
    "reg_norm": ["--regularization_norm"], "workers": ["--num_proc"],
}


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _config_args(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, its help and default taken from the field; every flag
    defaults to None so the CLI can tell an explicit flag from a preset, file or saved value."""
    stop = p.add_argument_group("stopping (the first reached wins)")
    bias = p.add_argument_group("debiasing")
    cluster = p.add_argument_group("cluster (--backend dask)")
    gpu = p.add_argument_group("gpu (--backend gpu)")
    for f in fields(TrainConfig):
        help_text = f.metadata["help"]
        if f.name == "model":
            help_text += f"; one of {', '.join(model_names())}"
        if f.metadata.get("per_model"):
            help_text += " (default: the model's, listed below)"
        elif f.default is not None and f.type != "bool":
            help_text += f" (default {f.default})"
        target = {"stop": stop, "bias": bias, "cluster": cluster, "gpu": gpu}.get(f.metadata.get("group"), p)
        flags = ["--" + f.name.replace("_", "-"), *DGLKE_ALIASES.get(f.name, [])]
        if f.type == "bool":
            target.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text + f" (default {'on' if f.default else 'off'})")
            continue
        kind = _workers if f.name == "workers" else {"int": int, "float": float, "str": str}[f.type.split(" ")[0]]
        target.add_argument(*flags, dest=f.name, type=kind, choices=f.metadata.get("choices"), help=help_text)
    p.add_argument("-de", "--double_ent", action="store_true",
                   help="DGL-KE's flag: entity rows of 2 x --hidden_dim floats (kgnum's --dim counts real floats)")
    p.add_argument("-dr", "--double_rel", action="store_true",
                   help="DGL-KE's flag, accepted and not needed: kgnum sizes relation rows from the model and --dim")


def _version() -> str:
    from . import __version__

    return __version__


def _config_from_args(args, model: str | None = None, saved_dim: int | None = None) -> dict:
    """Explicit flags > --config file > preset (for the chosen model) > the model's defaults.

    ``model``: the model when no flag or file names one (a resumed run's saved model), else
    TrainConfig's default; ``saved_dim``: a resumed model's dim, which -de without a dim keeps (it
    was doubled when that model was made)."""
    fallback = model or TrainConfig.model
    values = {k: getattr(args, k) for k in _CONFIG_FLAGS if getattr(args, k) is not None}
    explicit = set(values)
    sources = []  # (flag, its values): the lower sources, highest first
    if getattr(args, "config", None):
        sources.append((f"--config {args.config}", read_config_file(args.config)))
        values = {**sources[-1][1], **values}
    if args.preset:
        sources.append((f"--preset {args.preset}", preset_values(args.preset, values.get("model") or fallback)))
        values = {**sources[-1][1], **values}
    if getattr(args, "double_ent", False) and "dim" not in values and saved_dim is not None:
        log.info("-de: the resumed model's --dim %d", saved_dim)  # a script's flags, run again
    elif getattr(args, "double_ent", False):  # DGL-KE's -de: entity rows of 2 x hidden_dim
        from .config import model_default  # the dim the run would have, from wherever it comes

        values["dim"] = 2 * values.get("dim", model_default(values.get("model") or fallback, "dim"))
        log.info("-de: --dim %d (kgnum's --dim counts the real floats of an entity row)", values["dim"])
    _gamma_at_the_runs_dim(values, explicit, sources, values.get("model") or fallback)
    return values


def _gamma_at_the_runs_dim(values: dict, explicit: set, sources: list, model: str) -> None:
    """A bilinear model's gamma from a preset or --config file belongs to that source's dim (it only
    sets the initial scale (gamma + 2) / dim): at another --dim it is rescaled to keep that scale, as
    the model's default gamma is (143 at dim 400 saturates the scores at dim 100)."""
    if "gamma" in explicit or "dim" not in values:
        return
    flag, source = next(((f, src) for f, src in sources if "gamma" in src), (None, None))
    if source is None or "dim" not in source or source["dim"] == values["dim"]:
        return
    from .config import gamma_at_dim
    from .kernels.registry import get_model

    try:
        sf = get_model(model)
    except (KeyError, ValueError):  # an unknown model: its own error comes later, naming --model
        return
    gamma = gamma_at_dim(sf, float(source["gamma"]), float(source["dim"]), values["dim"])
    if gamma != float(source["gamma"]):
        log.info("--gamma %g: %s's %g at dim %d kept at --dim %d as the same initial scale", gamma, flag,
                 float(source["gamma"]), int(source["dim"]), int(values["dim"]))
        values["gamma"] = gamma


# flags whose setting only acts together with another one: (field, the setting it needs, whether
# that setting uses it, why); without it the flag would be accepted and change nothing
def _one_of(*values):
    return lambda setting: setting in values


_ONLY_WITH = (
    ("gpu_placement", "backend", _one_of("gpu"), "only with --backend gpu"),
    ("gpu_overlap", "backend", _one_of("gpu"), "only with --backend gpu"),
    ("workers", "backend", _one_of("cpu", "dask"), "not with --backend gpu, which trains one worker per "
                                                   "device (--gpus)"),
    ("part_checkpoint_every", "backend", _one_of("dask"), "only with --backend dask"),
    ("debias_top_m", "debias", bool, "only with --debias"),
    ("adversarial_weight", "debias_method", _one_of("adversarial"), "only with --debias-method adversarial"),
    ("adv_temp", "adv", bool, "the temperature of self-adversarial weighting, which --no-adv turns off"),
    ("patience", "valid_every", lambda every: every != 0, "early stopping needs validation; --valid-every 0 "
                                                          "turns it off"),
    ("valid_sample", "valid_every", lambda every: every != 0, "a sample of valid for validation, which "
                                                              "--valid-every 0 turns off"),
)


def _check_flags_used(args, values: dict, saved: dict | None = None) -> None:
    """Refuse an explicit flag that the run's settings (``values``, over a resumed model's ``saved``
    configuration, over TrainConfig's defaults) would ignore."""
    defaults = TrainConfig.__dataclass_fields__
    for name, needs, uses, why in _ONLY_WITH:
        given = getattr(args, name, None)
        if given is None:
            continue
        if not uses(values.get(needs, (saved or {}).get(needs, defaults[needs].default))):
            flag = name.replace("_", "-")
            flag = (f"--{flag}" if given else f"--no-{flag}") if isinstance(given, bool) else f"--{flag} {given!r}"
            raise ValueError(f"{flag}: {why}")


def read_config_file(path: str) -> dict:
    """TrainConfig fields from a JSON file: a flat object, or one holding them under "config"."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--config {path}: not valid JSON ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a JSON object of settings")
    unknown = sorted(set(data) - set(_CONFIG_FLAGS))
    if unknown:
        raise ValueError(f"--config {path}: unknown settings {', '.join(unknown)}")
    from .config import check_types

    return check_types(data, lambda name: f"--config {path}: {name}")


def _load_kg(args):
    from .data import FORMATS, KGDataError, load_dataset, load_files

    opts = dict(format=args.format, unseen=args.unseen, duplicates=args.duplicates,
                delimiter="\t" if args.delimiter is None else args.delimiter)
    if args.data_files:
        folder = ""
        if args.data_path:
            folder = os.path.expanduser(args.data_path)
            if not os.path.isdir(folder):
                raise KGDataError(f"--data-path {args.data_path}: not a directory (with --data-files it is "
                                  f"the folder the file names are relative to)")
        paths = [os.path.join(folder, os.path.expanduser(f)) for f in args.data_files]  # absolute ones stay
        fmt = args.format or "tsv"
        ids = fmt.startswith("udd_")
        if fmt in FORMATS:  # an unknown format is reported by load_files
            least, names = (3, "ENTITIES RELATIONS TRAIN [VALID [TEST]]") if ids else (1, "TRAIN [VALID [TEST]]")
            if not least <= len(paths) <= least + 2:
                raise KGDataError(f"--data-files: --format {fmt} takes {names}, as DGL-KE; got "
                                  f"{len(paths)} file(s)")
        if ids and len(paths) >= 3:
            ent, rel, *paths = paths
            return load_files(*paths, entities=ent, relations=rel, **opts)
        return load_files(*paths[:3], **opts)
    if args.dataset:  # a name first: a folder of that name here (a saved model) is not the dataset
        return load_dataset(args.dataset, names_first=True, **opts)
    if args.data_path:
        if not os.path.isdir(os.path.expanduser(args.data_path)):  # a folder, not a dataset name
            raise KGDataError(f"--data-path {args.data_path}: not a directory (--dataset NAME for a dataset "
                              f"by name)")
        return load_dataset(os.path.expanduser(args.data_path), **opts)
    raise KGDataError("no data given: use --dataset NAME, --data-path DIR, or --data-files TRAIN [VALID [TEST]] "
                      "(with --data-path DIR as the folder of their names)")


def _peak_rss_bytes() -> int:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int((own + children) * 1024)  # ru_maxrss is in KiB on Linux


def _write_json(path: str, payload: dict) -> None:
    write_json(path, payload)


def _print_metrics(split: str, metrics: dict) -> None:
    print(f"\n{split} (filtered, {metrics['n_queries']:,} queries, both sides)")
    print(f"{'':8s}{'MRR':>8s}{'MR':>10s}{'Hits@1':>9s}{'Hits@3':>9s}{'Hits@10':>9s}")
    for name, m in (("both", metrics), ("head", metrics["head"]), ("tail", metrics["tail"])):
        print(f"{name:8s}{m['mrr']:8.4f}{m['mr']:10.1f}{m['hits@1']:9.4f}{m['hits@3']:9.4f}{m['hits@10']:9.4f}")


def _view_metrics(emb, kg, split: str, excluded: list[str]) -> dict:
    """The adversarial baseline's "[s] REL" views (each relation's filter alone), evaluated as the
    model itself (its [a] view) is: {view: metrics}; empty for a model without views."""
    import kgnum

    return {name: kgnum.evaluate(emb.view(name), kg, split, exclude_relations=excluded)
            for name in sorted(emb.views)}


def _print_views(split: str, metrics: dict, views: dict) -> None:
    print(f"\n{split} by view ([a]: every filter, the model itself; [s] REL: that relation's filter alone)")
    width = max(len(name) for name in ["[a]", *views])
    print(f"{'view':{width}s}{'MRR':>8s}{'MR':>10s}{'Hits@1':>9s}{'Hits@3':>9s}{'Hits@10':>9s}")
    for name, m in (("[a]", metrics), *views.items()):
        print(f"{name:{width}s}{m['mrr']:8.4f}{m['mr']:10.1f}{m['hits@1']:9.4f}{m['hits@3']:9.4f}{m['hits@10']:9.4f}")


def _model_exclusions(emb) -> list[str]:
    """The relations a saved model's own evaluation leaves out (its --debias, --eval-exclude-relations)."""
    return TrainConfig(**{k: emb.config[k] for k in _CONFIG_FLAGS if k in emb.config}).excluded_relations()


def _public_metrics(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("mrr", "mr", "hits@1", "hits@3", "hits@10")}


def cmd_train(args) -> int:
    import kgnum

    kg = _load_kg(args)
    init = kgnum.load(args.load) if args.load else None
    options = _config_from_args(args, init.model if init else None,  # a preset for the model resumed
                                init.dim if init else None)
    _check_flags_used(args, options, init.config if init else None)
    model = options.pop("model", None)
    if args.resume:
        if args.load or not options.get("checkpoint_dir"):
            raise ValueError("--resume continues from the part checkpoints in --checkpoint-dir (and not "
                             "with --load)")
        from .cluster.checkpoint import assemble

        init = assemble(options["checkpoint_dir"])
        log.info("resuming from the part checkpoints in %s (step %d)", options["checkpoint_dir"],
                 init.train_stats.get("steps", 0))
    log.info("%s; training %s", kg, model or (init.model if init else TrainConfig.model))
    emb = kgnum.train(kg, model, init=init, save=args.save, checkpoint_every=args.checkpoint_every,
                      progress=not args.no_progress, force=args.force, **options)
    stats = emb.train_stats
    print(f"trained {emb.model} dim {emb.dim}: {stats['steps']:,} steps, {stats['train_seconds']:.1f} s, "
          f"{stats['triples_per_second']:,.0f} positive triples/s ({stats['workers']} worker(s), "
          f"backend {stats['backend']})")
    payload = {"model": emb.model, "dim": emb.dim, "train_seconds": stats["train_seconds"],
               "triples_per_second": stats["triples_per_second"], "steps": stats["steps"],
               "workers": stats["workers"], "backend": stats["backend"], "config": emb.config,
               "valid_history": stats["valid_history"], "best_step": stats["best_step"],
               "tables": "best" if stats["restored_best"] else "last"}
    if args.eval_split != "none" and len(kg.split(args.eval_split)) == 0:
        log.info("no %s triples: no %s metrics (--eval-split none skips evaluation)", args.eval_split,
                 args.eval_split)
    elif args.eval_split != "none":
        excluded = _model_exclusions(emb)
        metrics = kgnum.evaluate(emb, kg, args.eval_split, exclude_relations=excluded)
        if excluded:
            log.info("%s metrics without the triples of %s", args.eval_split, ", ".join(excluded))
        if stats["restored_best"]:
            log.info("%s metrics of the best tables, step %d", args.eval_split, stats["best_step"])
        _print_metrics(args.eval_split, metrics)
        payload[args.eval_split] = _public_metrics(metrics)
        views = _view_metrics(emb, kg, args.eval_split, excluded)
        if views:
            _print_views(args.eval_split, metrics, views)
            payload["views"] = {name: _public_metrics(m) for name, m in (("[a]", metrics), *views.items())}
        payload["eval_seconds"] = metrics["eval_seconds"] + sum(m["eval_seconds"] for m in views.values())
        print(f"evaluated in {payload['eval_seconds']:.1f} s")
    if args.save:
        print(f"saved to {args.save}")
    payload["peak_rss_bytes"] = _peak_rss_bytes()
    if args.json:
        _write_json(args.json, payload)
    return 0


def cmd_plan(args) -> int:
    from .plan import gpu_options, plan, plan_for

    from .train import resolve_config, training_graph

    options = _config_from_args(args)
    _check_flags_used(args, options)
    if not any(k in options for k in ("max_steps", "epochs", "time_budget")):
        options["max_steps"] = 1  # how long the run lasts does not change what it holds
    cfg = resolve_config(options.pop("model", None), options, None)
    counts = (args.entities, args.relations, args.edges)
    if args.dataset or args.data_path or getattr(args, "data_files", None):
        if any(c is not None for c in counts):
            raise ValueError("--entities/--relations/--edges or a dataset, not both")
        kg = _load_kg(args)
        p = plan_for(training_graph(kg, cfg), cfg)
        what = f"{kg.name}: {kg.n_entities:,} entities, {kg.n_relations:,} relations, {kg.train.shape[0]:,} train"
    else:
        if any(c is None for c in counts):
            raise ValueError("give a dataset (--dataset or --data-path) or all of --entities, --relations, --edges")
        if cfg.attribute_vectors:
            raise ValueError("--attribute-vectors: the plan counts the attribute rows from the sensitive "
                             "relations' values, so give a dataset (--dataset or --data-path)")
        adversarial = len(cfg.debias_relations()) if cfg.debias_method == "adversarial" else 0
        p = plan(*counts, cfg.model, cfg.dim, cfg.workers, cfg.backend, 0, cfg.parts, names=True,
                 adversarial=adversarial, **gpu_options(cfg))
        what = f"{args.entities:,} entities, {args.relations:,} relations, {args.edges:,} train"
    print(f"memory plan: {cfg.model} dim {cfg.dim}, backend {cfg.backend}, {p.workers} worker(s); {what}")
    print(p.table())
    if args.json:
        _write_json(args.json, p.to_dict())
    return 0


def cmd_tune(args) -> int:
    from .tune import tune

    kg = _load_kg(args)
    summary = tune(kg, args.model, args.time_budget, out=args.out, trials=args.trials, workers=args.workers,
                   seed=args.seed, space=args.space)
    run = summary["run"]  # this run's trials and seconds (a rerun into --out adds to earlier ones)
    print(f"\n{run['trials']} trials in {run['seconds']:.0f} s (budget {args.time_budget:g} s)"
          + (" (interrupted)" if summary["interrupted"] else ""))
    if summary["best_trial"] is None:
        print("no trial completed: nothing written to best.json")
        return 130 if summary["interrupted"] else 1
    print(f"best: trial {summary['best_trial']}, valid MRR {summary['best_valid_mrr']:.4f}; "
          f"kgnum train --config {os.path.join(args.out, 'best.json')} ...")
    return 130 if summary["interrupted"] else 0


def cmd_bias(args) -> int:
    import kgnum
    from .bias.measure import (difference_in_scores, plot_targets, probe, read_display_names, sensitive_relation,
                               target_bias)

    started = time.perf_counter()
    emb = kgnum.load(args.load)
    if args.view:
        emb = emb.view(args.view)
    kg = _load_kg(args).aligned_to(emb.entity_names, emb.relation_names)
    sides = {}
    for spec in args.person_side or []:
        rel, sep, side = spec.rpartition("=")  # at the last "=": a relation's name may hold one
        if not sep or side not in ("head", "tail"):
            raise ValueError(f"--person-side {spec}: expected REL=head or REL=tail")
        sides[rel] = side
    relations = [r for r in args.sensitive.split(",") if r]
    unknown = sorted(set(sides) - set(relations))
    if unknown:
        raise ValueError(f"--person-side {unknown[0]}: not one of --sensitive {args.sensitive}")
    if args.top_m < 2:
        raise ValueError(f"--top-m {args.top_m}: must be >= 2")
    if not args.alpha > 0:  # the step toward A: 0 measures nothing, a negative one is the step toward B
        raise ValueError(f"--alpha {args.alpha:g}: must be > 0")
    names_file = args.names or (os.path.join(kg.source, "entity_names.tsv")
                                if kg.source and os.path.exists(os.path.join(kg.source, "entity_names.tsv"))
                                else None)
    names = read_display_names(names_file) if names_file else {}
    report = {"model": emb.model, "dim": emb.dim, "view": args.view, "difference_in_scores": {}, "probe": {},
              "person_side": {}}
    sensitive = {rel: sensitive_relation(kg, rel, sides.get(rel), args.top_m) for rel in relations}
    # B_p first: a bad --values or --target is refused before the probes' training, not after it
    if bool(args.values) != bool(args.target):
        raise ValueError("--values and --target go together (B_p needs both)")
    values = args.values.split(",") if args.values else []
    if args.values and len(values) != 2:
        raise ValueError(f"--values {args.values}: expected two values A,B")
    result = target_bias(emb, kg, sensitive[relations[0]], values[0], values[1], args.target, args.alpha,
                         args.min_persons) if values else None
    print(f"{'sensitive relation':40s} {'side':>5s} {'D':>8s} {'probe':>7s} {'majority':>9s}")
    for rel, s in sensitive.items():
        d = difference_in_scores(emb, s)
        pr = probe(emb, s, args.seed)
        report["difference_in_scores"][rel] = d
        report["probe"][rel] = pr
        report["person_side"][rel] = s.person_side
        print(f"{rel[-40:]:40s} {s.person_side:>5s} {d:8.3f} {pr['accuracy']:7.3f} {pr['majority']:9.3f}")
    if result is not None:
        for row in result["targets"]:
            row["name"] = names.get(row["entity"], row["entity"])
        report["targets"] = result.pop("targets")
        report["target_summary"] = result
        a, b = (names.get(v, v) for v in values)
        for label, rows in ((a, report["targets"][:args.top]), (b, report["targets"][::-1][:args.top])):
            print(f"\n{args.target}: most toward {label}")
            for row in rows:
                counts = ", ".join(f"{names.get(k, k)} {v}" for k, v in row["counts"].items())
                print(f"  {row['bias']:+.5f}  {row['name']}  ({counts})")
        rho = result["spearman_rho"]
        print(f"\nmean |B_p| / alpha {result['mean_abs_bias_over_alpha']:.4f}, Spearman rho against "
              f"log count ratio {'undefined' if rho is None else f'{rho:.3f}'} ({len(report['targets'])} targets, "
              f"{result['persons']} persons)")
        if args.plot:
            plot_targets({**result, "targets": report["targets"]}, args.plot, args.top, names)
            print(f"chart written to {args.plot}")
    elif args.plot:
        raise ValueError("--plot draws B_p: give --values and --target too")
    report["seconds"] = time.perf_counter() - started
    _write_json(args.json, report)
    print(f"measured in {report['seconds']:.1f} s")
    return 0


def cmd_partition(args) -> int:
    from .cluster.partition import partition, save_partition

    kg = _load_kg(args)
    p = partition(kg, args.parts, args.method, args.seed, args.dim)
    save_partition(p, kg, args.out)
    r = p.report
    print(f"{kg.name}: {r['parts']} parts ({r['method']}) in {r['seconds']:.2f} s; edge cut "
          f"{r['edge_cut_fraction']:.4f}; part sizes {r['part_sizes']}; "
          f"{r['bytes_per_epoch'] / 2**20:,.0f} MiB of cross-edge rows per epoch at dim {r['bytes_dim']}")
    if args.json:
        _write_json(args.json, r)
    return 0


def cmd_split(args) -> int:
    from .datasplit import split_file

    counts = split_file(args.file, args.ratios, args.seed, args.out, args.delimiter)
    print(f"{args.out}: train {counts['train']:,}, valid {counts['valid']:,}, test {counts['test']:,} triples")
    return 0


def cmd_plot(args) -> int:
    from .plot import plot_runs

    plot_runs(args.models, args.out)
    print(f"curves of {len(args.models)} run(s) written to {args.out}")
    return 0


def cmd_import_dglke(args) -> int:
    from .interop import import_dglke

    emb = import_dglke(args.dglke_dir, args.data_path)
    emb.save(args.out)
    print(f"imported DGL-KE {emb.model} ({emb.n_entities:,} entities, dim {emb.dim}) to {args.out}")
    return 0


def cmd_export_dglke(args) -> int:
    import kgnum
    from .interop import export_dglke

    emb = kgnum.load(args.load)
    export_dglke(emb, args.out, args.dataset_name)
    print(f"exported {emb.model} to {args.out} in DGL-KE's layout")
    return 0


def cmd_eval(args) -> int:
    import kgnum

    emb = kgnum.load(args.load)
    if args.view:
        emb = emb.view(args.view)
    excluded = [r for r in (args.exclude_relations or "").split(",") if r]
    known = set(map(str, emb.relation_names))
    unknown = [r for r in excluded if r not in known]
    if unknown:  # before the graph is read; the graph's relations are matched to the model's
        raise ValueError(f"--exclude-relations: unknown relation {unknown[0]!r} (the model has no such relation)")
    # as the training run's own evaluation: a debiased model is scored without its sensitive triples
    saved = _model_exclusions(emb)
    excluded = list(dict.fromkeys(excluded + saved))
    if saved:
        log.info("%s metrics without the triples of %s (the model's --debias / --eval-exclude-relations)",
                 args.split, ", ".join(saved))
    kg = _load_kg(args)
    metrics = kgnum.evaluate(emb, kg, args.split, exclude_relations=excluded, per_relation=args.per_relation)
    _print_metrics(args.split, metrics)
    if args.per_relation:
        print(f"\n{'relation':50s} {'triples':>8s} {'MRR':>7s} {'H@10':>6s} {'head MRR':>9s} {'tail MRR':>9s} "
              f"{'head H@10':>9s} {'tail H@10':>9s}")
        for row in metrics["per_relation"]:
            print(f"{row['name'][-50:]:50s} {row['triples']:8d} {row['mrr']:7.4f} {row['hits@10']:6.3f} "
                  f"{row['head']['mrr']:9.4f} {row['tail']['mrr']:9.4f} "
                  f"{row['head']['hits@10']:9.3f} {row['tail']['hits@10']:9.3f}")
    views = {} if args.view else _view_metrics(emb, kg, args.split, excluded)
    if views:
        _print_views(args.split, metrics, views)
    seconds = metrics["eval_seconds"] + sum(m["eval_seconds"] for m in views.values())
    print(f"evaluated in {seconds:.1f} s")
    if args.json:
        payload = {"model": emb.model, "dim": emb.dim, args.split: _public_metrics(metrics),
                   "eval_seconds": seconds, "peak_rss_bytes": _peak_rss_bytes()}
        if views:
            payload["views"] = {name: _public_metrics(m) for name, m in (("[a]", metrics), *views.items())}
        if args.per_relation:
            payload["per_relation"] = metrics["per_relation"]
        _write_json(args.json, payload)
    return 0


PREDICT_FORMATS = ("h_r_t", "h_r_*", "*_r_t", "h_*_t")
_SIDES = (("head", "entity"), ("relation", "relation"), ("tail", "entity"))


def _keys_to_ids(numbered, where: str, kind: str, emb, as_ids: bool):
    """Row ids (int64) of [(line number or None, text)]: names, or row ids with --ids; an error
    names ``where`` (the flag, and file) and the line."""
    import numpy as np

    def at(no):
        return where if no is None else f"{where}:{no}"

    n = len(emb.entity_names if kind == "entity" else emb.relation_names)
    if as_ids:
        out = np.empty(len(numbered), dtype=np.int64)
        for j, (no, text) in enumerate(numbered):
            try:
                out[j] = int(text.strip())
            except ValueError:
                raise ValueError(f"{at(no)}: {text!r} is not a row id (--ids: every line is a 0-based "
                                 f"{kind} id)") from None
            if not 0 <= out[j] < n:
                raise ValueError(f"{at(no)}: {kind} id {out[j]} out of range [0, {n})")
        return out
    try:
        return emb.ids([text for _, text in numbered], kind)  # one pass over the model's name index
    except ValueError:
        pass
    for no, text in numbered:  # find the first unknown name
        try:
            emb.ids(text, kind)
        except ValueError:
            hint = " (give --ids if the lines are row ids)" if text.strip().lstrip("-").isdigit() else ""
            raise ValueError(f"{at(no)}: unknown {kind} {text!r}{hint}") from None
    raise AssertionError("unreachable")


def _read_inputs(path: str, flag: str, kind: str, emb, as_ids: bool):
    """Row ids of a file of one name (or row id) per line; blank lines are skipped."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a byte order mark is not part of the first name
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{flag} {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{flag} {path}: is a directory, not a file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{flag} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise ValueError(f"{flag} {path}: empty (expected one {kind} per line)")
    return _keys_to_ids(numbered, f"{flag} {path}", kind, emb, as_ids)


def _write_tsv(path, header, lines) -> None:
    """A header and ``lines`` (strings, no newline) to ``path`` (replaced when complete) or stdout."""
    text = "\t".join(header) + "\n" + "".join(line + "\n" for line in lines)
    if path is None:
        sys.stdout.write(text)
        return
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.dirname(path)):
        raise FileNotFoundError(f"--output {path}: directory {os.path.dirname(path)} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"--output {path}: is a directory")
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def cmd_predict(args) -> int:
    import kgnum

    files = {"head": args.head_file, "relation": args.relation_file, "tail": args.tail_file}
    values = {"head": args.head, "relation": args.relation, "tail": args.tail}
    exclude = None if args.exclude_mode == "none" else args.exclude_mode
    if not (any(files.values()) or args.data_files or args.format or args.output):  # one query
        if args.relation is None or (args.head is None) == (args.tail is None):
            raise ValueError("give --relation and one of --head, --tail (one query), or input files "
                             "(--head-file, --relation-file, --tail-file) for a batch")
        emb = kgnum.load(args.load)
        side = "head" if args.head is not None else "tail"
        anchor = int(_keys_to_ids([(None, values[side])], f"--{side}", "entity", emb, args.ids)[0])
        rel = int(_keys_to_ids([(None, args.relation)], "--relation", "relation", emb, args.ids)[0])
        k = args.k or 10
        if side == "head":
            rows = emb.predict_tail(anchor, rel, k, exclude=exclude)
        else:
            rows = emb.predict_head(rel, anchor, k, exclude=exclude)
        known = set()  # --exclude-mode none or train: the known answers shown are marked
        if exclude != "all" and emb.known_triples is not None:
            ids = emb.known_answers([anchor], [rel], side == "tail", ("train", "valid", "test"))[0]
            known = {str(emb.entity_names[i]) for i in ids}
        for name, score in rows:
            print(f"{score:10.4f}  {name}" + ("  (known)" if name in known else ""))
        return 0

    if args.data_files:
        if any(files.values()):
            raise ValueError("--data-files or --head-file/--relation-file/--tail-file, not both")
        if not args.format:
            raise ValueError("--data-files needs --format (the files are its given sides, in order)")
        needed = [side for (side, _), part in zip(_SIDES, args.format.split("_")) if part != "*"]
        if len(args.data_files) != len(needed):
            raise ValueError(f"--format {args.format} takes {len(needed)} data files ({', '.join(needed)}), "
                             f"got {len(args.data_files)}")
        files = {side: dict(zip(needed, args.data_files)).get(side) for side, _ in _SIDES}
    for side, _ in _SIDES:
        if files[side] and values[side] is not None:
            raise ValueError(f"--{side} or --{side}-file, not both")
    given = [side for side, _ in _SIDES if files[side] or values[side] is not None]
    fmt = args.format or "_".join(side[0] if side in given else "*" for side, _ in _SIDES)
    if fmt not in PREDICT_FORMATS:
        raise ValueError(f"given: {', '.join(given) or 'nothing'}; batch prediction needs two or three sides "
                         f"(h_r_*: heads and relations, *_r_t: relations and tails, h_*_t: heads and tails, "
                         f"h_r_t: all three)")
    for (side, _), part in zip(_SIDES, fmt.split("_")):
        if part != "*" and side not in given:
            raise ValueError(f"--format {fmt} needs the {side}s: give --{side}-file (or --{side})")
        if part == "*" and side in given:
            raise ValueError(f"--format {fmt} predicts the {side}: --{side}-file / --{side} is not used")
    emb = kgnum.load(args.load)
    inputs, where = {}, {}
    for side, kind in _SIDES:
        if files[side]:
            inputs[side] = _read_inputs(files[side], f"--{side}-file", kind, emb, args.ids)
            where[side] = f"--{side}-file {files[side]}"
        elif values[side] is not None:
            inputs[side] = _keys_to_ids([(None, values[side])], f"--{side}", kind, emb, args.ids)
            where[side] = f"--{side}"
    if args.exec_mode == "triplet_wise" and len({x.size for x in inputs.values()} - {1}) > 1:
        raise ValueError("--exec-mode triplet_wise pairs line i with line i: "
                         + ", ".join(f"{where[s]} has {inputs[s].size} line(s)" for s in inputs))
    res = emb.predict_batch(**{f"{side}s": ids for side, ids in inputs.items()}, k=args.k, exclude=exclude,
                            exec_mode=args.exec_mode)
    show_known = res["known"] is not None and (fmt == "h_r_t" or exclude != "all")
    names_e, names_r = emb.entity_names, emb.relation_names
    cols = [names_e[res["head"]], names_r[res["relation"]], names_e[res["tail"]], res["score"].tolist()]
    if show_known:
        cols.append(res["known"].astype(int).tolist())
        lines = (f"{h}\t{r}\t{t}\t{s:.7g}\t{kn}" for h, r, t, s, kn in zip(*cols))
    else:
        lines = (f"{h}\t{r}\t{t}\t{s:.7g}" for h, r, t, s in zip(*cols))
    _write_tsv(args.output, ["head", "relation", "tail", "score"] + (["known"] if show_known else []), lines)
    if args.output:
        log.info("%s: %d row(s) (--format %s, --exec-mode %s)", args.output, res["score"].size, fmt, args.exec_mode)
    return 0


def cmd_similar(args) -> int:
    import kgnum

    for kind in ("entity", "relation"):
        if getattr(args, kind) is not None and getattr(args, f"{kind}_file"):
            raise ValueError(f"--{kind} or --{kind}-file, not both")
    if all(x is None for x in (args.entity, args.relation, args.entity_file, args.relation_file)):
        raise ValueError("give --entity, --relation, --entity-file or --relation-file")
    emb = kgnum.load(args.load)
    queries = []
    for kind in ("entity", "relation"):
        file, value = getattr(args, f"{kind}_file"), getattr(args, kind)
        if file:
            queries.append((kind, _read_inputs(file, f"--{kind}-file", kind, emb, args.ids)))
        elif value is not None:
            queries.append((kind, _keys_to_ids([(None, value)], f"--{kind}", kind, emb, args.ids)))
    if len(queries) == 1 and queries[0][1].size == 1 and not (args.entity_file or args.relation_file
                                                                or args.output):
        kind, ids = queries[0]
        for name, value in emb.similar(int(ids[0]), args.k, args.metric, kind):
            print(f"{value:8.4f}  {name}")
        return 0
    lines = []
    for kind, ids in queries:
        top, values = emb.similar_ids(ids, args.k, args.metric, kind)
        names = emb.entity_names if kind == "entity" else emb.relation_names
        for q, row, vals in zip(ids.tolist(), top.tolist(), values.tolist()):
            lines.extend(f"{kind}\t{names[q]}\t{names[n]}\t{v:.7g}" for n, v in zip(row, vals) if n >= 0)
    _write_tsv(args.output, ["kind", "query", "neighbour", args.metric], lines)
    if args.output:
        log.info("%s: %d row(s) (--metric %s)", args.output, len(lines), args.metric)
    return 0


def cmd_export(args) -> int:
    import kgnum
    from .export import export

    emb = kgnum.load(args.load)
    path = export(emb, args.out, args.format, args.kind)
    print(f"exported {emb.model} ({emb.n_entities:,} entities, {emb.relation.shape[0]:,} relations) to {path} "
          f"as {args.format}")
    return 0


# what each command writes: (argument, flag, kind); "model" / "partition": a folder replaced as a
# whole (one that holds something else is refused), "dir": a folder written into, "file": a file
_OUTPUTS = {
    "train": [("save", "--save", "model"), ("json", "--json", "file")],
    "plan": [("json", "--json", "file")],
    "tune": [("out", "--out", "dir")],
    "bias": [("json", "--json", "file"), ("plot", "--plot", "file")],
    "partition": [("out", "--out", "partition"), ("json", "--json", "file")],
    "split": [("out", "--out", "dir")],
    "plot": [("out", "--out", "file")],
    "import-dglke": [("out", "--out", "model")],
    "export-dglke": [("out", "--out", "dir")],
    "eval": [("json", "--json", "file")],
    "predict": [("output", "--output", "file")],
    "similar": [("output", "--output", "file")],
    "export": [("out", "--out", "file")],
}
_MARKERS = {"model": "config.json", "partition": "partition.json", "dir": None}


def _check_outputs(args) -> None:
    """Refuse an output path that cannot be written (or must not be replaced) before any work."""
    from .files import check_output_dir, check_output_file

    for attr, flag, kind in _OUTPUTS.get(args.command, []):
        path = getattr(args, attr, None)
        if not path:
            continue
        if args.command == "export" and getattr(args, "format", None) == "npy":
            kind = "model"  # npy writes the model's folder, as train --save does
        if kind == "file":
            check_output_file(path, flag)
        else:
            check_output_dir(path, flag, _MARKERS[kind])


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (a batch system's time limit, ``kill``) stops any command as Ctrl-C does: the files it
    was writing are removed, not left half-written, and it exits with one line. The training run
    installs its own handler while it lasts."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield  # a caller's own handling stays theirs
        return

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args, stray = parser.parse_known_args(argv)
    if stray:  # named by the command's own parser, with its usage (the top-level one shows only kgnum's)
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(stray)}")
    started = time.perf_counter()
    with _sigterm_interrupts():
        return _run_command(args, started)


def _run_command(args, started: float) -> int:
    try:
        _check_outputs(args)
        return {"train": cmd_train, "plan": cmd_plan, "tune": cmd_tune, "bias": cmd_bias, "partition": cmd_partition,
                "split": cmd_split, "plot": cmd_plot, "import-dglke": cmd_import_dglke,
                "export-dglke": cmd_export_dglke,
                "eval": cmd_eval, "predict": cmd_predict,
                "similar": cmd_similar, "export": cmd_export}[args.command](args)
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as other commands do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
    except (ValueError, OSError, RuntimeError, FloatingPointError, MemoryError) as e:
        # KGDataError is a ValueError: input problems are one clear line, not a traceback; an OSError
        # (a path that cannot be read or written) says which path
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and e.filename and e.strerror:
            e = OSError(f"{e.filename}: {e.strerror}")
        if args.verbose:
            import traceback

            traceback.print_exc()
        lines = str(e).strip().splitlines() or [type(e).__name__]
        more = "" if args.verbose or len(lines) == 1 else " (--verbose for details)"
        print(f"kgnum {args.command}: error: {lines[0]}{more}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kgnum {args.command}: interrupted after {time.perf_counter() - started:.0f} s", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
