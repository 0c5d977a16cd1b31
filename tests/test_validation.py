"""Bad input is refused before any work (issue 13): each case as a user met it, then the good outcome.

Nonsense sizes and wrong types end with one ConfigError naming the key, the value and the valid range,
recorded as ``failed`` in the run's metrics.json with nothing trained; a misspelt key gets "did you
mean"; evaluate, the divergence hint and the CIFAR-10 reader say what is wrong and what to do.
"""

from __future__ import annotations

import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT

from stridelab.config import CONFIG_DIR
from stridelab.data import cifar10
from stridelab.errors import ConfigError, DataError, RunDiverged
from stridelab.train import run
from stridelab.validation import RULES, composition_error, validate_config

SMOKE = ["experiment=smoke", "logger=csv"]


def refused(cfg, run_dir) -> tuple[str, dict]:
    """Run ``cfg``: it must be refused with a ConfigError, recorded as failed, nothing trained."""
    with pytest.raises(ConfigError) as info:
        run(cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["reason"] == f"ConfigError: {info.value}"
    assert "train/steps" not in metrics and not (run_dir / "model.pt").exists() and not (run_dir / "csv").exists()
    return str(info.value), metrics


@pytest.mark.parametrize(
    "override,expect",
    [
        # These used to pass silently: 0 trained on every image, -5 on all but 5, subset 0 measured all.
        ("data.limit_train=0", "data.limit_train=0 is not valid: it must be an integer >= 1"),
        ("data.limit_train=-5", "data.limit_train=-5 is not valid: it must be an integer >= 1"),
        ("metrics.subset_size=0", "metrics.subset_size=0 is not valid: it must be an integer >= 1"),
        # These ended in tracebacks (max_epochs after 20 s; seed=abc left a folder with no metrics.json).
        ("trainer.max_epochs=abc", "trainer.max_epochs=abc is not valid: it is a string; it must be an integer >= 1"),
        ("optimizer.lr=-1", "optimizer.lr=-1 is not valid: it must be a number > 0 (learning rate)"),
        ("seed=abc", "seed=abc is not valid: it is a string; it must be an integer from 0 to 4294967295"),
    ],
)
def test_bad_value_is_refused_naming_key_value_and_range_and_recorded_failed(override, expect, tmp_path, compose):
    message, metrics = refused(compose([*SMOKE, override], tmp_path), tmp_path / "run")
    assert message.startswith(expect), message
    assert "Set it on the command line" in message
    assert metrics["model"] == "simple_cnn" and (tmp_path / "run" / "config.yaml").is_file()


def test_null_still_means_all_images(tmp_path, compose):
    cfg = compose(["data.limit_train=null", "data.limit_test=null", "metrics.subset_size=null"], tmp_path)
    assert validate_config(cfg) is cfg
    assert "data.limit_train=N" in (ROOT / "README.md").read_text()


def test_every_bad_value_is_named_at_once(tmp_path, compose):
    cfg = compose(["optimizer.lr=abc", "seed=1.5", "data.augment=1", "model.widths=[16,0]"], tmp_path)
    with pytest.raises(ConfigError, match="4 config values are not valid") as info:
        validate_config(cfg)
    for part in ("seed=1.5: it is a decimal number", "data.augment=1: it is an integer; it must be true or false"):
        assert part in str(info.value)
    assert "optimizer.lr=abc: it is a string" in str(info.value) and "model.widths=[16,0]" in str(info.value)


@pytest.mark.parametrize(
    "override",
    [
        "trainer.max_epochs=-1",  # Lightning's "no limit" without a step limit: never ends
        "trainer.precision=17",
        "trainer.devices=0",
        "module.label_smoothing=1.5",
        "data.batch_size=0",
        "optimizer.momentum=1",
        "scheduler.warmup_frac=2",
        "model.width=0",
        "data.batch_size=${oops}",
    ],
)
def test_other_keys_of_the_table_are_checked(override, tmp_path, compose):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        validate_config(compose([override], tmp_path))


def test_every_shipped_config_passes(tmp_path):
    """No false alarms: every option of every group and every preset validates as shipped."""
    from hydra import compose, initialize_config_dir

    groups = {
        group.name: sorted(f.stem for f in group.glob("*.yaml"))
        for group in CONFIG_DIR.iterdir()
        if group.is_dir() and group.name not in ("hydra", "shared", "paths", "launcher", "logger", "callbacks")
    }
    presets = [[f"experiment={name}"] for name in groups.pop("experiment")]
    # The i-th option of every group together: every option is composed at least once.
    combos = [
        [f"{g}={opts[i % len(opts)]}" for g, opts in groups.items()] for i in range(max(map(len, groups.values())))
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for overrides in [*presets, *combos, ["trainer.max_epochs=-1", "+trainer.max_steps=20", "trainer.devices=[0]"]]:
            validate_config(compose(config_name="train", overrides=[*overrides, f"paths.root_dir={tmp_path}"]))
    assert {r.key for r in RULES} >= {"trainer.max_epochs", "data.limit_train", "metrics.subset_size", "seed"}


def composition_message(overrides, tmp_path, compose) -> str:
    with pytest.raises(Exception) as info:
        compose(overrides, tmp_path)
    problem = composition_error(info.value)
    assert problem is not None, info.value
    return str(problem)


@pytest.mark.parametrize(
    "override,meant",
    [
        ("trainer.max_epoch=1", "trainer.max_epochs"),  # the case
        ("traner.max_epochs=1", "trainer.max_epochs"),
        ("max_epochs=1", "trainer.max_epochs"),
        ("data.limt_train=1", "data.limit_train"),
        ("downsampl=1", "downsample"),
        ("hydra.run.dri=1", "hydra.run.dir"),
    ],
)
def test_a_mistyped_key_gets_did_you_mean(override, meant, tmp_path, compose):
    message = composition_message([override], tmp_path, compose)
    key = override.split("=")[0]
    assert message.startswith(f"{key} is not a key of the config. Did you mean {meant}? ")
    assert f"Correct the spelling ({meant}=1); to add a new key on purpose, write +{key}=1." in message


def test_a_key_of_another_option_lists_the_keys_there_are(tmp_path, compose):
    message = composition_message(["optimizer=adamw", "optimizer.momentum=0.9"], tmp_path, compose)
    assert "The keys under optimizer are: lr, weight_decay" in message and "Did you mean" not in message


@pytest.mark.parametrize(
    "override,expect",
    [
        ("+data.test_train=true", "data.test_train is not an option of stridelab.data.Shapes10DataModule"),
        ("+model.wings=3", "model.wings is not an option of stridelab.models.SimpleCNN"),
    ],
)
def test_an_added_key_the_option_does_not_take_is_refused_plainly(override, expect, tmp_path, compose):
    """+group.key=... adds a key Hydra accepts but the option's class does not take: it used to end in
    a TypeError traceback from the constructor."""
    message, _ = refused(compose([*SMOKE, override], tmp_path), tmp_path / "run")
    assert message.startswith(expect) and f"Remove the {override.split('=')[0]}=... override" in message


def test_cli_typo_and_unwritable_folder_are_stridelab_errors(run_main, capsys):
    assert run_main(["trainer.max_epoch=1"]) == 2
    err = capsys.readouterr().err
    assert "stridelab: error: trainer.max_epoch is not a key of the config. Did you mean trainer.max_epochs?" in err
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err
    assert run_main(["hydra.run.dir=/proc/x/run"]) == 2
    err = capsys.readouterr().err
    assert "stridelab: error: Cannot create or write /proc/x" in err and "hydra.run.dir" in err
    assert "Traceback" not in err
    assert run_main(["-m", "seed=0,1", "hydra.sweep.dir=/proc/x/sweep"]) == 2
    assert "stridelab: error: Cannot create or write /proc/x" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,expect",
    [
        (["seed=abc"], "seed=abc is not valid"),  # the typo and the folder: in-process above
    ],
)
def test_cli_refuses_bad_input_at_once(args, expect, tmp_path, run_cli):
    proc = run_cli(["experiment=smoke", *args], tmp_path, timeout=60)
    assert proc.returncode == 2 and "stridelab: error: " in proc.stderr and expect in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "results in" not in proc.stdout
    runs = list((tmp_path / "logs" / "runs").glob("*/metrics.json"))
    if args == ["seed=abc"]:  # a folder exists: the run is recorded, and the aggregate sees it
        assert [json.loads(p.read_text())["status"] for p in runs] == ["failed"]
    else:
        assert runs == []


def test_study_dry_run_catches_bad_values_and_typos(tmp_path):
    from stridelab.studies.runner import run_study

    study = tmp_path / "bad.yaml"
    study.write_text(
        "question: q\ngrids:\n  g:\n    overrides: [experiment=smoke, data.limit_train=0]\n"
        "    params:\n      seed: 0,1\n"
    )
    with pytest.raises(ConfigError, match=r"grid 'g', run .*seed=0: data.limit_train=0 is not valid"):
        run_study(str(study), [], out=str(tmp_path / "out"), dry_run=True)
    study.write_text(study.read_text().replace("data.limit_train=0", "trainer.max_epoch=2"))
    with pytest.raises(ConfigError, match=r"trainer.max_epoch is not a key of the config. Did you mean trainer.max_e"):
        run_study(str(study), [], out=str(tmp_path / "out"), dry_run=True)
    assert not (tmp_path / "out").exists()


def test_data_module_and_suite_refuse_zero_when_built_directly():
    """Code that builds them without a config (notebooks, the bench) gets the same refusal."""
    from stridelab.data.datamodule import Shapes10DataModule
    from stridelab.metrics.suite import MeasurementSuite

    with pytest.raises(ConfigError, match=r"data.limit_train=0 is not valid"):
        Shapes10DataModule(limit_train=0)
    with pytest.raises(ConfigError, match=r"data.limit_test=-5 is not valid"):
        Shapes10DataModule(limit_test=-5)
    with pytest.raises(ConfigError, match=r"metrics.subset_size=0 is not valid"):
        MeasurementSuite(subset_size=0)
    assert len(MeasurementSuite(subset_size=None).subset_indices(7)) == 7


@pytest.mark.parametrize("precision,suggests", [("32-true", False), ("bf16-mixed", True)])
def test_divergence_hint_suggests_full_precision_only_when_not_in_it(precision, suggests):
    from stridelab.training.module import Classifier

    module = Classifier(torch.nn.Linear(2, 2), optimizer=None)
    module._trainer = SimpleNamespace(precision=precision, current_epoch=3)
    module._train.add(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), torch.tensor(float("nan")))
    with pytest.raises(RunDiverged, match="the run diverged") as info:
        module.on_train_epoch_end()
    assert ("trainer.precision=32-true" in str(info.value)) == suggests, str(info.value)


@pytest.mark.parametrize(
    "loss,factor,diverged",
    [
        (1e16, 10.0, True),  # finite, but exploded: optimizer.lr=1000 gave this and used to be recorded ok
        (23.1, 10.0, True),  # just above 10 x ln(10) = 23.03
        (22.9, 10.0, False),  # just below: a bad run, not a diverged one
        (2.3, 10.0, False),  # chance level
        (1e16, None, False),  # diverge_factor=null: only a non-finite loss counts
        (float("inf"), None, True),
    ],
)
def test_divergence_is_a_loss_above_factor_times_ln_classes_or_not_finite(loss, factor, diverged):
    from stridelab.training.module import Classifier

    module = Classifier(torch.nn.Linear(10, 10), optimizer=None, diverge_factor=factor)
    module._trainer = SimpleNamespace(precision="32-true", current_epoch=0)
    module._train.add(torch.zeros(4, 10), torch.zeros(4, dtype=torch.long), torch.tensor(loss * 4))
    if diverged:
        with pytest.raises(RunDiverged, match="Lower the learning rate") as info:
            module.on_train_epoch_end()
        assert ("times the 2.3 of a uniform guess over 10 classes" in str(info.value)) == np.isfinite(loss)
    else:
        module.log_dict = lambda *a, **k: None  # outside a Trainer
        module.on_train_epoch_end()


# evaluate -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory, compose):
    """A run folder as train writes it (config.yaml, model.pt, metrics.json), with untrained weights."""
    from omegaconf import OmegaConf

    from stridelab.build import build_data_and_model

    tmp = tmp_path_factory.mktemp("untrained")
    cfg = compose(["experiment=smoke", "model.width=8", "data.limit_test=64"], tmp)
    run_dir = tmp / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    _, model = build_data_and_model(cfg)
    torch.save(model.state_dict(), run_dir / "model.pt")
    (run_dir / "metrics.json").write_text(json.dumps({"status": "ok", "run_dir": "/the/original/folder"}))
    return run_dir


QUICK_SUITE = [
    "device=cpu",
    "metrics.subset_size=16",
    "metrics.skip=[cost,probe,coverage,worstshift,subpixel,corruption,aliasing]",
]


def copy_of(run_dir, tmp_path):
    copy = tmp_path / "copied_run"
    shutil.copytree(run_dir, copy)
    return copy


def test_evaluate_of_a_copied_run_says_where_the_files_are(untrained_run, tmp_path, capsys):
    from stridelab.evaluate import main

    copy = copy_of(untrained_run, tmp_path)
    assert main([f"ckpt={copy}", *QUICK_SUITE]) == 0
    out = capsys.readouterr().out
    assert f"merged into {copy / 'metrics.json'}" in out and "/the/original/folder" not in out
    assert json.loads((copy / "metrics.json").read_text())["run_dir"] == str(copy)


def test_evaluate_refuses_an_unreadable_metrics_json_before_measuring(untrained_run, tmp_path, capsys):
    from stridelab.evaluate import main

    copy = copy_of(untrained_run, tmp_path)
    (copy / "metrics.json").write_text('{"status": "ok", "test/acc": 0.9')  # cut short
    assert main([f"ckpt={copy}", *QUICK_SUITE]) == 2
    err = capsys.readouterr().err
    assert f"stridelab: error: {copy / 'metrics.json'} cannot be read (JSONDecodeError" in err
    assert "nothing was measured" in err and not (copy / "plots").exists()
    assert (copy / "metrics.json").read_text() == '{"status": "ok", "test/acc": 0.9'


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.remove, (self.path,))  # would delete the sentinel if it ever ran


def test_evaluate_refuses_a_pickle_that_is_not_a_state_dict_without_advising_to_unpickle_it(
    untrained_run, tmp_path, capsys
):
    from stridelab.evaluate import main

    copy = copy_of(untrained_run, tmp_path)
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("still here")
    torch.save({"weight": _Payload(str(sentinel))}, copy / "model.pt")
    assert main([f"ckpt={copy}", *QUICK_SUITE]) == 2
    err = capsys.readouterr().err
    assert f"stridelab: error: {copy / 'model.pt'} is not a plain state_dict" in err and "refuses it" in err
    assert "weights_only" not in err and "False" not in err
    assert sentinel.exists()


@pytest.mark.parametrize(
    "knob,expect",
    [
        ("metrics.subset_sise=8", "metrics.subset_sise is not a key of the config. Did you mean metrics.subset_size?"),
        ("metrics.subset_size=0", "metrics.subset_size=0 is not valid: it must be an integer >= 1"),
    ],
)
def test_evaluate_refuses_a_bad_knob_before_measuring(untrained_run, knob, expect, capsys):
    from stridelab.evaluate import main

    assert main([f"ckpt={untrained_run}", "device=cpu", knob]) == 2
    assert f"stridelab: error: {expect}" in capsys.readouterr().err


# CIFAR-10 files ---------------------------------------------------------------------------------------
def official_layout(root, records):
    directory = root / cifar10.BIN_DIR
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in cifar10.TRAIN_FILES + cifar10.TEST_FILES:
        images = rng.integers(0, 256, (records, 3, 32, 32), dtype=np.uint8)
        cifar10.write_binary_batch(directory / name, images, rng.integers(0, 10, records))
    return directory


def test_cifar10_file_cut_at_a_record_boundary_is_refused(tmp_path, monkeypatch, compose):
    monkeypatch.setattr(cifar10, "RECORDS_PER_FILE", 4)  # the real files hold 10000 records; 4 keeps it small
    directory = official_layout(tmp_path / "cifar", records=4)
    assert cifar10.load_cifar10(tmp_path / "cifar", download_if_missing=False)[0][0].shape == (20, 3, 32, 32)
    cut = directory / "data_batch_2.bin"
    cut.write_bytes(cut.read_bytes()[: 3 * cifar10.RECORD_BYTES])  # a whole number of records: read before
    with pytest.raises(DataError) as info:
        cifar10.load_cifar10(tmp_path / "cifar", download_if_missing=False)
    message = str(info.value)
    assert f"{cut} holds 3 records of 3073 bytes (9219 bytes)" in message
    assert "holds exactly 4 records" in message and f"Delete {directory} and run again to download" in message
    # A run stops on it before torch work, recorded as failed.
    cfg = compose(
        ["experiment=smoke", "data=cifar10", f"data.root={tmp_path / 'cifar'}", "data.download=false"], tmp_path
    )
    with pytest.raises(DataError, match="data_batch_2.bin holds 3 records"):
        run(cfg)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"


def test_generated_stand_ins_may_hold_any_number_of_records(tmp_path):
    cifar10.write_generated(tmp_path, train_size=12, test_size=3)
    (x, _), (tx, _) = cifar10.load_cifar10(tmp_path, download_if_missing=False)
    assert len(x) == 12 and len(tx) == 3


# Issue 19: the input errors that still ended in a traceback, a wrong exit status or a silent default --------------
def test_an_unknown_group_option_is_one_paragraph_and_exit_2(run_main, capsys):
    assert run_main(["downsample=blurpol"]) == 2  # Hydra's own report exited 1
    err = capsys.readouterr().err
    assert (
        "stridelab: error: downsample=blurpol is not an option of downsample (did you mean downsample=blurpool?)" in err
    )
    assert "aps, asap, avgpool, blurpool, conv, ddac, flc, lps, maxpool, strided, tips" in err
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err and "Config search path" not in err


def test_an_added_key_that_nothing_reads_is_refused_with_did_you_mean(run_main, capsys, tmp_path):
    """+optimzer.lr=0.1 used to train at the default rate and exit 0."""
    assert run_main(["experiment=smoke", "+optimzer.lr=0.1", f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "stridelab: error: +optimzer.lr=0.1 adds a key that no part of the run reads" in err
    assert "Did you mean optimizer.lr? Write optimizer.lr=0.1" in err and "+tags.<name>=<value>" in err
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and "train/steps" not in record  # refused before any work


@pytest.mark.parametrize(
    "overrides,refused_key",
    [
        (["+optimzer.lr=0.1"], "optimzer.lr"),
        (["+checkpoint.every=3"], "checkpoint.every"),
        (["+paths.logs=/tmp/x"], "paths.logs"),  # under a group's node, but nothing reads it
        (["++seed2=3"], "seed2"),
        (["+tags.owner=ana", "notes=why"], None),  # free metadata has its place
        (["+my_lr=0.05", "optimizer.lr=${my_lr}"], None),  # read through an interpolation
        (["+optimizer.foo=1"], None),  # under a built node: its constructor refuses it (test above)
        (["+hydra.job.env_set.FOO=1"], None),  # Hydra's own
    ],
)
def test_which_added_keys_count_as_read(overrides, refused_key, tmp_path, compose):
    from stridelab.validation import check_added_keys

    cfg = compose(overrides, tmp_path)
    if refused_key is None:
        check_added_keys(cfg, overrides)
    else:
        with pytest.raises(ConfigError, match=rf"\+{refused_key}=\S+ adds a key that no part of the run reads"):
            check_added_keys(cfg, overrides)


def test_tags_and_notes_are_kept_but_are_not_the_runs_identity(tmp_path, compose):
    from stridelab.config import config_hash

    plain, tagged = compose([], tmp_path), compose(["+tags.owner=ana", "notes=first try"], tmp_path)
    assert tagged.tags.owner == "ana" and tagged.notes == "first try"
    assert config_hash(plain) == config_hash(tagged)


def _study_main(args, capsys) -> tuple[int, str]:
    from stridelab.study import main

    status = main(args)
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    "text,expect",
    [
        ("question: q\ngrids:\n  g: {overrides: [experiment=smoke\n", "line 4, column 1: it is not valid YAML"),
        (
            'question: !!python/object/apply:os.system ["touch PWNED"]\ngrids:\n  g: {params: {seed: "0"}}\n',
            "line 1, column 11: it uses the YAML tag !!python/object/apply:os.system",
        ),
    ],
)
def test_a_study_file_yaml_cannot_read_is_one_paragraph(text, expect, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "broken.yaml"
    study.write_text(text)
    status, err = _study_main([str(study)], capsys)
    assert status == 2 and f"stridelab: error: {study}, {expect}" in err, err
    assert "Traceback" not in err and not (tmp_path / "PWNED").exists()


def test_a_bad_override_to_a_study_is_refused_once_before_any_grid_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STRIDELAB_ROOT", str(tmp_path))
    study = tmp_path / "two.yaml"
    study.write_text(
        "question: q\ngrids:\n  a: {overrides: [experiment=smoke], params: {seed: '0'}}\n"
        "  b: {overrides: [experiment=smoke], params: {seed: '0'}}\n"
    )
    status, err = _study_main([str(study), "traner.max_epochs=1", "--out", str(tmp_path / "out")], capsys)
    assert status == 2 and err.count("stridelab: error:") == 1 and "Did you mean trainer.max_epochs?" in err
    assert "No runs under" not in err and not (tmp_path / "out").exists()
    status, err = _study_main([str(study), "downsample=nope", "--out", str(tmp_path / "out")], capsys)
    assert status == 2 and "downsample=nope is not an option of downsample" in err


@pytest.mark.parametrize(
    "knobs,expect",
    [
        (["metrics.max_shift=32"], "metrics.max_shift=32 is not smaller than the 32-pixel images"),
        (["metrics.crop_padding=40"], "metrics.crop_padding=40 is not smaller than the 32-pixel images"),
    ],
)
def test_suite_knobs_larger_than_the_image_are_refused_before_training(knobs, expect, tmp_path, compose):
    message, _ = refused(compose([*SMOKE, *knobs], tmp_path), tmp_path / "run")
    assert message.startswith(expect), message


def test_suite_input_check_accepts_what_fits_and_skipped_groups():
    from stridelab.metrics.suite import MeasurementSuite

    MeasurementSuite(max_shift=31, crop_padding=31).check_input((3, 32, 32))
    MeasurementSuite(max_shift=99, skip=("shift",)).check_input((3, 32, 32))
    with pytest.raises(ConfigError, match="max_shift=8 is not smaller than the 8-pixel"):
        MeasurementSuite(max_shift=8).check_input((3, 8, 16))  # the shorter side counts
