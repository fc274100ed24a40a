"""The command line as a user runs it: flags, JSON output, saved models, error messages."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kgnum
from kgnum.cli import main

TRAIN = ["train", "--dataset", "synthetic", "--model", "TransE_l2", "--dim", "32", "--neg", "32",
         "--neg-chunk", "32", "--batch", "256", "--lr", "0.1", "--gamma", "6", "--adv",
         "--max-steps", "300", "--no-progress"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kgnum", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_train_writes_the_documented_json_and_eval_reproduces_it(tmp_path, capsys):
    out, model = tmp_path / "run.json", tmp_path / "model"
    assert main(TRAIN + ["--save", str(model), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("model", "dim", "train_seconds", "triples_per_second", "steps", "test", "eval_seconds",
                "peak_rss_bytes"):
        assert key in result, key
    assert set(result["test"]) == {"mrr", "mr", "hits@1", "hits@3", "hits@10"}
    assert result["model"] == "TransE_l2" and result["dim"] == 32 and result["steps"] == 300
    assert 0 < result["test"]["mrr"] <= 1 and result["test"]["hits@1"] <= result["test"]["hits@10"]
    assert result["peak_rss_bytes"] > 10 * 2**20
    printed = capsys.readouterr().out
    assert "MRR" in printed and "Hits@10" in printed

    again = tmp_path / "eval.json"
    assert main(["eval", "--load", str(model), "--dataset", "synthetic", "--split", "test",
                 "--json", str(again)]) == 0
    assert json.loads(again.read_text())["test"]["mrr"] == pytest.approx(result["test"]["mrr"], abs=1e-9)


def test_valid_split_key_and_predict_similar(tmp_path, capsys):
    out, model = tmp_path / "run.json", tmp_path / "model"
    assert main(TRAIN + ["--eval-split", "valid", "--json", str(out), "--save", str(model)]) == 0
    result = json.loads(out.read_text())
    assert "valid" in result and "test" not in result
    capsys.readouterr()
    assert main(["predict", "--load", str(model), "--head", "e1", "--relation", "r2", "--k", "4"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4
    assert main(["similar", "--load", str(model), "--entity", "e1", "--k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and not any(line.split()[-1] == "e1" for line in lines)


def test_resume_with_other_dim_is_a_clear_error(tmp_path, capsys):
    model = tmp_path / "model"
    assert main(TRAIN + ["--save", str(model), "--eval-split", "none"]) == 0
    args = [a if a != "32" else "64" for a in TRAIN]
    assert main(args + ["--load", str(model)]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_malformed_file_names_file_and_line_without_traceback(tmp_path):
    data = tmp_path / "kg"
    data.mkdir()
    (data / "train.txt").write_text("a\tr\tb\nb\tr\tc\nc\tr\n")
    (data / "valid.txt").write_text("a\tr\tc\n")
    (data / "test.txt").write_text("b\tr\ta\n")
    proc = run_cli("train", "--data-path", str(data), "--max-steps", "1", "--dim", "8")
    assert proc.returncode == 2
    assert "train.txt:3" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_model_is_clear(capsys):
    assert main(["train", "--dataset", "synthetic", "--model", "Nope", "--max-steps", "1"]) == 2
    assert "--model" in capsys.readouterr().err


def test_help_says_dim_counts_real_floats():
    proc = run_cli("train", "--help")
    assert proc.returncode == 0
    assert "real floats" in proc.stdout and "200 complex" in proc.stdout.replace("\n", " ").replace("  ", " ")


@pytest.mark.parametrize("command", ["train", "plan"])
def test_help_lists_the_model_defaults_its_flags_point_to(command):
    """--lr, --gamma, ... say "(default: the model's, listed below)": the list is there."""
    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and "listed below" in proc.stdout
    rows = [line.split() for line in proc.stdout.splitlines()]
    for model in kgnum.model_names():
        assert any(row[:2] == [model, "--dim"] for row in rows), model


def test_preset_fills_defaults_and_flags_override():
    from kgnum.cli import _config_from_args, build_parser

    args = build_parser().parse_args(["train", "--dataset", "x", "--preset", "fb15k-237", "--model", "RotatE",
                                      "--lr", "0.5"])
    values = _config_from_args(args)
    assert values["model"] == "RotatE" and values["lr"] == 0.5 and values["dim"] == 400


@pytest.mark.parametrize("config, flags, dim", [
    ({"model": "RotatE", "dim": 100}, [], 200),  # the config file's dim, doubled
    ({"model": "RESCAL"}, [], 2 * 100),  # the config file's model's default dim, doubled
    ({"model": "RESCAL", "dim": 50}, ["--dim", "30"], 60),  # an explicit flag still wins
])
def test_double_ent_doubles_the_dim_the_run_would_have(tmp_path, config, flags, dim):
    from kgnum.cli import _config_from_args, build_parser
    from kgnum.config import model_default

    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    args = build_parser().parse_args(["train", "--dataset", "x", "--config", str(path), "-de", *flags])
    assert model_default("RESCAL", "dim") == 100
    assert _config_from_args(args)["dim"] == dim


@pytest.mark.parametrize("config, flags, gamma", [
    (None, ["--preset", "fb15k-237", "--model", "ComplEx", "--dim", "100"], 34.25),  # 143 at dim 400
    (None, ["--preset", "fb15k-237", "--model", "ComplEx", "--dim", "100", "--gamma", "50"], 50.0),  # explicit
    (None, ["--preset", "fb15k-237", "--model", "ComplEx"], 143.0),  # the preset's own dim
    (None, ["--preset", "fb15k-237", "--model", "TransE_l2", "--dim", "100"], 9.0),  # a margin: kept
    ({"model": "DistMult", "dim": 200, "gamma": 70.0}, ["--dim", "400"], 142.0),  # a tune's best.json
])
def test_a_bilinear_gamma_from_a_preset_or_file_keeps_its_scale_at_another_dim(tmp_path, config, flags, gamma):
    """A product model's gamma only sets the initial scale (gamma + 2) / dim: a preset's or config
    file's gamma, tuned at its dim, is rescaled with --dim, as the default gamma is. Kept as it was,
    --preset fb15k-237 --dim 100 saturated the scores (test MRR 0.046 against 0.220)."""
    from kgnum.cli import _config_from_args, build_parser

    extra = []
    if config is not None:
        (tmp_path / "c.json").write_text(json.dumps(config))
        extra = ["--config", str(tmp_path / "c.json")]
    args = build_parser().parse_args(["train", "--dataset", "x", *extra, *flags])
    assert _config_from_args(args)["gamma"] == pytest.approx(gamma)


def test_double_ent_on_a_resume_keeps_the_saved_dim(tmp_path, write_tsv):
    """A resume run with the first run's -de but no --hidden_dim continues the saved model (its dim
    was doubled when it was made); -de used to double the model's default dim, and the resume was
    refused as another dim."""
    import kgnum

    out = tmp_path / "m"
    data = write_tsv(kgnum.synthetic(n_entities=100, n_relations=4, n_train=2000, n_valid=50, n_test=50, seed=1),
                     tmp_path / "syn")
    common = ["--data_path", str(data), "--max_step", "10", "--no-progress", "--eval-split", "none"]
    assert main(["train", *common, "--model_name", "RotatE", "--hidden_dim", "8", "-de", "--save_path", str(out)]) == 0
    assert main(["train", *common, "--load", str(out), "-de", "--save_path", str(out)]) == 0
    resumed = kgnum.load(str(out))
    assert resumed.dim == 16 and resumed.train_stats["steps"] == 20


def test_dglke_spellings_are_accepted_and_mean_the_same(tmp_path, write_tsv):
    import kgnum

    out = tmp_path / "m"
    data = write_tsv(kgnum.synthetic(n_entities=100, n_relations=4, n_train=2000, n_valid=50, n_test=50, seed=1),
                     tmp_path / "syn")
    assert main(["train", "--data_path", str(data), "--model_name", "ComplEx", "--hidden_dim", "16", "-de",
                 "-dr", "--neg_sample_size", "8", "--batch_size", "64", "--max_step", "30", "-adv", "-a", "0.5",
                 "--regularization_coef", "1e-6", "--regularization_norm", "2", "--num_proc", "1",
                 "--save_path", str(out), "--no-progress", "--eval-split", "none"]) == 0
    saved = json.loads((out / "config.json").read_text())
    c = saved["config"]
    assert saved["model"] == "ComplEx" and saved["dim"] == 32  # -de: 2 x hidden_dim real floats
    assert (c["neg"], c["batch"], c["max_steps"], c["adv"], c["adv_temp"], c["reg_coef"], c["reg_norm"],
            c["workers"]) == (8, 64, 30, True, 0.5, 1e-6, 2, 1)


def test_version_verbose_and_nonsensical_values(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("kgnum ")
    for k in ("0", "-3"):
        with pytest.raises(SystemExit) as info:
            main(["predict", "--load", "x", "--head", "a", "--relation", "r", "--k", k])
        assert info.value.code == 2
    capsys.readouterr()
    assert main(["--verbose", "eval", "--load", "/nonexistent/model", "--dataset", "synthetic"]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main(["eval", "--load", "/nonexistent/model", "--dataset", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["eval", "--load", "/nonexistent/model", "--dataset", "synthetic"],
                                  ["bias", "measure", "--load", "/nonexistent/model", "--dataset", "synthetic",
                                   "--sensitive", "r0", "--json", "b.json"]])
def test_verbose_after_the_command_prints_the_traceback(argv, capsys):
    """An error's "(--verbose for details)" is acted on by adding --verbose to the command line."""
    assert main([*argv, "--verbose"]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_predict_never_passes_known_facts_off_as_predictions(tmp_path, capsys):
    import kgnum

    model = tmp_path / "model"
    assert main(TRAIN + ["--save", str(model), "--eval-split", "none"]) == 0
    emb = kgnum.load(str(model))
    kg = kgnum.load_dataset("synthetic")
    h, r = int(kg.train[0, 0]), int(kg.train[0, 1])
    head, rel = str(kg.entity_names[h]), str(kg.relation_names[r])
    known = {str(kg.entity_names[t]) for hh, rr, t in kg.all_triples().tolist() if hh == h and rr == r}
    capsys.readouterr()
    assert main(["predict", "--load", str(model), "--head", head, "--relation", rel, "--k", "5"]) == 0
    shown = [line.split()[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert len(shown) == 5 and not set(shown) & known
    assert main(["predict", "--load", str(model), "--head", head, "--relation", rel, "--k", "2000",
                 "--exclude-mode", "none"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    marked = {line.split()[1] for line in lines if line.endswith("(known)")}
    assert marked == known & {line.split()[1] for line in lines} and marked
    # the API: batched queries equal one-at-a-time ones
    batch = emb.predict_tail([head, head], [rel, rel], 3, exclude="all")
    one = emb.predict_tail(head, rel, 3, exclude="all")
    for got in batch:  # the same answers; scores equal up to BLAS rounding at another batch size
        assert [n for n, _ in got] == [n for n, _ in one]
        assert [s for _, s in got] == pytest.approx([s for _, s in one], rel=1e-5)
    assert emb.score(head, rel, shown[0])[0] == pytest.approx(
        emb.score([h], [r], [kg.entity_id(shown[0])])[0])


def test_unseen_valid_entity_error_speaks_in_flags(tmp_path):
    data = tmp_path / "kg"
    data.mkdir()
    (data / "train.txt").write_text("a\tr\tb\nb\tr\tc\n")
    (data / "valid.txt").write_text("a\tr\tz\n")
    (data / "test.txt").write_text("b\tr\ta\n")
    proc = run_cli("train", "--data-path", str(data), "--max-steps", "1", "--dim", "8")
    assert proc.returncode == 2
    assert "--unseen skip" in proc.stderr and "unseen='skip'" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- output paths
@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    model = tmp_path_factory.mktemp("small") / "model"
    assert main(TRAIN + ["--save", str(model), "--eval-split", "none", "--max-steps", "20"]) == 0
    return model


@pytest.mark.parametrize("flags, words", [
    (["--exclude-relations", "r0,nope"], "--exclude-relations: unknown relation 'nope'"),
    (["--exclude-relations", ",".join(f"r{i}" for i in range(20))], "no test triples to evaluate once those of r0, r1"),
])
def test_eval_relations_it_cannot_leave_out_are_one_line_naming_the_flag(flags, words, small_model, capsys):
    capsys.readouterr()
    assert main(["eval", "--load", str(small_model), "--dataset", "synthetic", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


def test_save_never_deletes_a_folder_that_is_not_a_model(tmp_path, capsys):
    """--save replaces its folder as a whole; a folder holding anything but a kgnum model is refused
    before training, and its files stay."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "notes.txt").write_text("mine")
    assert main(TRAIN + ["--save", str(results), "--eval-split", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--save" in err and "config.json" in err, err
    assert (results / "notes.txt").read_text() == "mine" and os.listdir(results) == ["notes.txt"]
    from kgnum.embeddings import Embeddings

    emb = Embeddings("TransE_l2", np.zeros((2, 4), np.float32), np.zeros((1, 4), np.float32), {"gamma": 1.0},
                     np.array(["a", "b"], dtype=object), np.array(["r"], dtype=object))
    with pytest.raises(ValueError, match="config.json"):  # the library calls refuse it too
        emb.save(str(results))
    with pytest.raises(ValueError, match="save= .*config.json"):
        kgnum.train(kgnum.synthetic(n_entities=20, n_relations=2, n_train=100, n_valid=5, n_test=5), "TransE_l2",
                    dim=8, max_steps=5, save=str(results), progress=False)
    assert os.listdir(results) == ["notes.txt"]
    model = tmp_path / "model"  # a model folder is replaced, as before
    assert main(TRAIN + ["--save", str(model), "--eval-split", "none", "--max-steps", "20"]) == 0
    assert main(TRAIN + ["--save", str(model), "--eval-split", "none", "--max-steps", "20", "--seed", "1"]) == 0


@pytest.mark.parametrize("command", [
    "train --dataset synthetic --max-steps 10 --eval-split none --save {file}/model",
    "train --dataset synthetic --max-steps 10 --json {dir}",
    "eval --load {model} --dataset synthetic --json {dir}",
    "export-dglke --load {model} --out {file}",
    "export --load {model} --format npy --out {dir}",
    "export --load {model} --format word2vec --out {dir}",
    "split {file} --out {file}",
    "split {dir} --out {tmp}/parts",
    "import-dglke {dir} --data-path {dir} --out {dir}",
])
def test_output_and_input_paths_that_cannot_be_used_are_one_line(command, small_model, tmp_path, capsys):
    model, folder, file = small_model, tmp_path / "folder", tmp_path / "f.txt"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    file.write_text("a\tr\tb\n")
    capsys.readouterr()
    argv = command.format(model=model, dir=folder, file=file, tmp=tmp_path).split()
    assert main(argv + ["--no-progress"] if argv[0] == "train" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert (folder / "keep.txt").read_text() == "x" and file.read_text() == "a\tr\tb\n"


def test_json_goes_into_a_new_folder(tmp_path):
    out = tmp_path / "new" / "deeper" / "eval.json"
    assert main(TRAIN + ["--eval-split", "test", "--json", str(out)]) == 0
    assert "test" in json.loads(out.read_text())
    assert os.listdir(out.parent) == ["eval.json"]


# --------------------------------------------------------------------------- values of the wrong kind
@pytest.mark.parametrize("setting, words", [
    ({"lr": "0.1"}, "lr '0.1': must be a finite number"),
    ({"dim": "64"}, "dim '64'"),
    ({"neg": None}, "neg: must be given"),
    ({"model": 5}, "model 5: must be a string"),
    ({"adv": "false"}, "adv 'false': must be true or false"),  # was taken as true
    ({"dim": 31.5}, "must be an integer"),
    ({"neg_chunk": 1e30}, "neg_chunk 1e+30: must be an integer below 2**63"),  # was a Numba traceback
])
def test_a_config_file_value_of_the_wrong_kind_is_one_line_naming_file_and_key(setting, words, tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(setting))
    assert main(["train", "--dataset", "synthetic", "--config", str(path), "--max-steps", "5", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--config {path}" in err and words in err, err


def test_a_config_file_may_write_an_integer_as_a_float(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"dim": 32.0, "neg": 16.0}))
    model = tmp_path / "m"
    assert main(["train", "--dataset", "synthetic", "--config", str(path), "--max-steps", "5", "--no-progress",
                 "--eval-split", "none", "--save", str(model)]) == 0
    assert json.loads((model / "config.json").read_text())["dim"] == 32


@pytest.mark.parametrize("flags, words", [
    (["--epochs", "inf"], "--epochs inf"),
    (["--time-budget", "inf"], "--time-budget inf"),
    (["--gamma", "nan"], "--gamma nan"),
    (["--gamma", "-5"], "--gamma -5"),
    (["--adv-temp", "nan"], "--adv-temp nan"),  # was the same as --no-adv
    (["--reg-coef", "nan"], "--reg-coef nan"),  # was no regularizer
    (["--seed", "-1"], "--seed -1"),
    (["--seed", "99999999999999999999999"], "--seed"),
    (["--batch", "99999999999999999999999"], "--batch 99999999999999999999999: must be an integer below 2**63"),
    (["--neg", "99999999999999999999999"], "--neg 99999999999999999999999"),  # was a Numba traceback
    (["--checkpoint-every", "0", "--save", "{tmp}/m"], "--checkpoint-every 0"),
    (["--checkpoint-every", "-1", "--save", "{tmp}/m"], "--checkpoint-every -1"),
    (["--checkpoint-every", "5"], "needs --save"),
    (["--backend", "dask", "--partition", "{tmp}/p", "--parts", "3"], "--parts 3"),
    (["--backend", "dask", "--scheduler", "foo:bar"], "--scheduler foo:bar"),
    # accepted and changing nothing without the setting they act with
    (["--gpu-placement", "host"], "--gpu-placement 'host': only with --backend gpu"),
    (["--no-gpu-overlap"], "--no-gpu-overlap: only with --backend gpu"),
    (["--backend", "gpu", "--gpus", "numpy:1", "--workers", "3"], "--workers 3: not with --backend gpu"),
    (["--part-checkpoint-every", "5"], "only with --backend dask"),
    (["--debias-top-m", "5"], "--debias-top-m 5: only with --debias"),
    (["--debias", "r0", "--adversarial-weight", "3"], "only with --debias-method adversarial"),
    (["--no-adv", "--adv-temp", "0.5"], "--adv-temp 0.5: the temperature of self-adversarial weighting"),
    (["--valid-every", "0", "--patience", "3"], "--patience 3: early stopping needs validation"),
    (["--valid-every", "0", "--valid-sample", "100"], "--valid-sample 100:"),
])
def test_nonsensical_flag_values_are_one_line_naming_the_flag(flags, words, tmp_path, capsys):
    flags = [f.format(tmp=tmp_path) for f in flags]
    assert main(["train", "--dataset", "synthetic", "--max-steps", "5", "--no-progress", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err, err
    assert not (tmp_path / "m").exists()


def test_data_path_that_is_not_a_folder_is_named_as_data_path(tmp_path, capsys):
    """--data-path is a folder: a missing one is an error about --data-path (it was reported as an
    unknown --dataset), and a dataset's name there is not taken as the dataset."""
    for path in (str(tmp_path / "missing"), "synthetic"):
        assert main(["train", "--data-path", path, "--max-steps", "5", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--data-path {path}: not a directory" in err, err


def test_preset_when_resuming_is_the_loaded_models(tmp_path, capsys):
    """--load DIR --preset P without --model takes P's values for the saved model, not for the default
    model (TransE_l2), which the umls preset has none of."""
    model = tmp_path / "m"
    small = ["--dataset", "synthetic", "--dim", "8", "--max-steps", "5", "--no-progress", "--eval-split", "none"]
    assert main(["train", "--model", "ComplEx", *small, "--save", str(model)]) == 0
    assert main(["train", "--load", str(model), "--preset", "umls", *small, "--save", str(model)]) == 0, \
        capsys.readouterr().err
    saved = json.loads((model / "config.json").read_text())
    assert saved["model"] == "ComplEx" and saved["dim"] == 8  # an explicit flag still wins
    assert (saved["config"]["neg"], saved["config"]["batch"]) == (64, 256)  # the preset's ComplEx values


def test_sigterm_outside_training_stops_a_command_with_one_line_and_no_half_written_file(tmp_path):
    """SIGTERM while a command writes its --json (here: inside json.dump) stops it as Ctrl-C does: one
    line, exit 130, no temporary file beside the output; it killed the process and left the file."""
    import subprocess
    import sys

    out = tmp_path / "plan.json"
    code = (
        "import json, os, signal, sys\n"
        "dump = json.dump\n"
        "def dump_then_term(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    dump(*a, **k)\n"
        "json.dump = dump_then_term\n"
        "from kgnum.cli import main\n"
        f"sys.exit(main(['plan', '--entities', '100', '--relations', '5', '--edges', '1000', '--json', {str(out)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert done.stderr.strip().splitlines()[-1].startswith("kgnum plan: interrupted")
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_log_lines_under_the_progress_bar_are_printed_once_and_its_last_loss_is_the_runs():
    """With the bar shown (no --no-progress), each log line of the run (validations, the loss every
    interval) is printed once, through the bar: the CLI's root handler printed each a second time,
    onto the bar. And the bar's last loss is the run's, not the 0.0000 of the engine's final report."""
    args = [a for a in TRAIN if a != "--no-progress"]
    done = run_cli(*args, "--workers", "1", "--valid-every", "100", "--eval-split", "none")
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stderr.replace("\r", "\n").splitlines()]
    for step in (100, 200, 300):
        assert sum(f"step {step}: valid MRR" in line for line in lines) == 1, done.stderr
    assert sum(line.startswith("step 300 (") and "triples/s" in line for line in lines) == 1, done.stderr
    bars = [line for line in lines if "300/300" in line and "loss=" in line]
    assert bars and all("loss=0.0000" not in line for line in bars), bars


def test_workers_auto_in_a_config_file_and_the_api_means_every_core(tmp_path):
    """--workers auto is also "workers": "auto" in a --config file and workers="auto" in the API (the
    cores this process may use); both were refused as not a number."""
    import kgnum
    from kgnum.config import available_cores

    kg = kgnum.synthetic(n_entities=100, n_relations=4, n_train=2000, n_valid=50, n_test=50, seed=1)
    emb = kgnum.train(kg, "TransE_l2", dim=8, max_steps=5, workers="auto", progress=False, valid_every=0)
    assert emb.train_stats["workers"] == available_cores()
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"workers": "auto", "dim": 8}))
    assert main(["train", "--dataset", "synthetic", "--config", str(config), "--max-steps", "5", "--no-progress",
                 "--eval-split", "none", "--save", str(tmp_path / "m")]) == 0
    assert kgnum.load(str(tmp_path / "m")).config["workers"] == available_cores()


def test_output_into_a_closed_pipe_stops_quietly():
    """`kgnum ... | head` that stops reading: the command ends without an error line (it printed
    'error: [Errno 32] Broken pipe' and exited 2, as for a real failure)."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "kgnum", "plan", "--entities", "100", "--relations", "5",
                          "--edges", "1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and err.strip() == "", err


def test_a_stray_flag_is_named_by_its_command_with_that_commands_usage(capsys):
    """A misspelt flag is reported by the command it was given to, with that command's usage (the
    top-level parser printed only 'usage: kgnum [-h] ...' and 'kgnum: error')."""
    with pytest.raises(SystemExit) as stop:
        main(["train", "--dataset", "synthetic", "--epohcs", "3"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "kgnum train: error: unrecognized arguments: --epohcs 3" in err, err
    assert "usage: kgnum train" in err
