import json
import subprocess
import sys
from pathlib import Path

from hf_negationclip.apps.cli import main

sys.path.insert(0, str(Path(__file__).parent))  # negation_fixture


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("world", "pretrain", "evaluate", "demo"):
        assert f"  {name}" in out


def test_every_subcommand_prints_its_help(capsys):
    # argparse %-formats help strings: a bare "%" in a field's help crashed `segment --help`
    from hf_negationclip.apps.cli import _commands

    for name in _commands():
        try:
            code = main([name, "--help"])
        except SystemExit as done:  # argparse exits after printing the help
            code = done.code
        assert code == 0, (name, capsys.readouterr().err)
        assert "usage: hf-negationclip" in capsys.readouterr().out, name


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "hf-negationclip"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout and "world" in out.stdout


def test_world_subcommand_writes_readable_world(tmp_path, capsys):
    assert main(["world", "--out", str(tmp_path), "--images", "12", "--seed", "1", "--show_progress", "false"]) == 0
    assert "wrote 12 images" in capsys.readouterr().out
    data = json.loads((tmp_path / "annotations" / "captions_train.json").read_text())
    assert data["annotations"]


def test_bad_arguments_give_clear_errors(tmp_path, capsys):
    assert main(["world", "--out", str(tmp_path), "--images", "-3"]) == 2
    assert "n_images must be a positive integer" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["world", "--out", str(blocker / "sub"), "--images", "3"]) == 2
    assert "cannot write the world" in capsys.readouterr().err
    assert main(["world", "--splits", "train:0.5"]) == 2
    assert "--splits must look like" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert main(["pretrain", "--world_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_pretrain_then_evaluate_a_saved_checkpoint(world, tmp_path, capsys):
    out = tmp_path / "ckpt"
    args = [
        "pretrain",
        "--world_dir",
        str(world),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--batch_size",
        "16",
        "--show_progress",
        "false",
        "--save_steps",
        "0",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "negation_probe_accuracy" in printed and "chance 0.500" in printed
    saved = json.loads((out / "training_config.json").read_text())
    assert saved["max_steps"] == 2 and saved["batch_size"] == 16
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(out),
                "--world_dir",
                str(world),
                "--n_items",
                "6",
                "--tasks",
                "ccneg",
                "--output_dir",
                str(tmp_path / "eval"),
                "--intervals",
                "false",
                "--show_progress",
                "false",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["models"]["ckpt"]["path"] == str(out)
    assert results["models"]["ckpt"]["metrics"]["scene-ccneg/accuracy"]["n"] == 6


def test_a_missing_checkpoint_is_one_plain_line_for_every_command(world, tmp_path, capsys):
    from negation_fixture import write_negation_fixture

    missing = "/no/such/dir"
    expected = f"error: no checkpoint at {missing} (and it is not a Hub id)"
    assert main(["evaluate", "--model", missing, "--world_dir", str(world), "--output_dir", str(tmp_path / "e")]) == 2
    assert capsys.readouterr().err.strip() == expected
    corpus = tmp_path / "corpus"
    write_negation_fixture(world, corpus, "train", max_images=4)
    args = ["finetune", "--preset", missing, "--corpus_dir", str(corpus), "--world_dir", str(world)]
    assert main([*args, "--output_dir", str(tmp_path / "f"), "--show_progress", "false"]) == 2
    assert capsys.readouterr().err.strip() == expected


def test_a_small_world_pretrains_with_zero_shot_skipped_and_said_so(tmp_path, capsys, caplog):
    world = tmp_path / "w"
    # seed 3: the 6 val images all hold 2+ objects, so there is no single-object image for zero-shot
    assert main(["world", "--out", str(world), "--images", "60", "--seed", "3", "--show_progress", "false"]) == 0
    out = tmp_path / "o"
    args = ["pretrain", "--world_dir", str(world), "--output_dir", str(out), "--max_steps", "1", "--batch_size", "8"]
    assert main([*args, "--show_progress", "false", "--save_steps", "0"]) == 0
    printed = capsys.readouterr().out
    assert "zero_shot_shape_accuracy     skipped (split 'val' has no single-object images)" in printed
    assert "zero-shot shape and colour evaluation skipped" in caplog.text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["zero_shot_color_accuracy"] == {"skipped": "split 'val' has no single-object images"}
    assert metrics["negation_probe_accuracy"]["n"] == 200 and "value" in metrics["image_to_text_r@1"]
