"""The experiments called from Python, in this process, with a configuration and no command
line: a per-cell run, --predict with its model and explain.py on it (tiny data, 1 epoch), and
the run folder's refusals."""

import json

import pandas as pd
import pytest

import config
import results
import rundir


def start(cfg):
    """The run of a configuration, as main.start_tensorflow builds it, without configuring the
    devices (this test process has used TensorFlow already)."""
    import tensorflow as tf

    return config.Run(
        cfg, strategy=tf.distribute.get_strategy(), seed=cfg.seed or 0, mixed_precision="off"
    )


def run_in_process(experiment, cfg, cells):
    run = start(cfg)
    save, table = rundir.prepare_save_dir(run)
    rows = results.Results(table, cells, resume=False, columns=results.table_columns(run))
    experiment(run, cells, save, rows)
    rundir.release_save_dirs()
    return save, rows


def test_a_per_cell_run_then_predict_and_explain_from_python(tiny_dir, tmp_path, capsys):
    import experiments
    import explain

    cfg = config.Config(
        data_dir=str(tiny_dir),
        epochs=1,
        seed=3,
        save_dir=str(tmp_path / "percell"),
    )
    save, rows = run_in_process(experiments.run_per_cell, cfg, ["S001"])
    table = pd.read_csv(save / "output.csv", dtype={"cell": str})
    assert table.columns.tolist() == results.RESULT_COLUMNS
    assert table.cell.tolist() == ["S001"] and table.n_test.tolist() == [40]
    assert 0 <= table.auc[0] <= 1 and table.best_epoch.tolist() == [1]
    for name in ("log.csv", "predictions.csv", "best_model.keras", "training.json", "roc.png"):
        assert (save / "S001" / name).exists(), name
    record = json.loads((save / "S001" / "training.json").read_text())
    assert record["recipe"] == "default" and record["attempts"] == 1
    assert "Cell S001: test AUC" in capsys.readouterr().out

    # The model it saved, on every gene of the cell: --predict's run, from Python.
    predict = config.Config(
        weights=str(save), predict=str(tiny_dir), seed=3, save_dir=str(tmp_path / "predict")
    )
    assert predict.data_dir == str(tiny_dir)  # --predict DIR reads DIR
    out, _ = run_in_process(experiments.run_predict, predict, ["S001"])
    predicted = pd.read_csv(out / "S001" / "predictions.csv", dtype={"gene_id": str})
    assert len(predicted) == 120  # 40 genes in each of the three splits
    tested = pd.read_csv(save / "S001" / "predictions.csv", dtype={"gene_id": str})
    same = predicted[predicted.split == "test"].reset_index(drop=True)
    pd.testing.assert_series_equal(
        same.probability, tested.probability, check_exact=False, rtol=1e-6
    )

    # explain.py reads the run folder args.json and output.csv name.
    (save / "args.json").write_text(json.dumps(start(cfg).record(["S001"])))
    assert explain.main([str(save), "--steps", "2"]) == 0
    marks = pd.read_csv(save / "explain-marks.csv")
    assert sorted(marks.mark) == sorted(["H3K27me3", "H3K36me3", "H3K4me1", "H3K4me3", "H3K9me3"])
    assert (save / "S001" / "explain" / "explain.csv").exists()


def test_the_run_folder_refuses_an_earlier_run_without_resume_or_overwrite(tmp_path):
    save = tmp_path / "run"
    save.mkdir()
    (save / "output.csv").write_text("cell,auc\n")
    cfg = config.Config(save_dir=str(save))
    with pytest.raises(config.ExperimentError, match="already holds an earlier run"):
        rundir.claim_save_dir(cfg)
    rundir.release_save_dirs()
    again = config.Config(save_dir=str(save), overwrite=True)
    folder, table = rundir.prepare_save_dir(again)
    assert folder == save and table == save / "output.csv" and not table.exists()
    rundir.release_save_dirs()
    assert rundir.default_run_name(cfg) == "percell-full-e20-b100-lr0.001-d0.9"
    assert rundir.default_run_name(config.Config(mix=True, finetune=True)).startswith("finetune")
