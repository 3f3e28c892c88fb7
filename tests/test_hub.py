"""Model/dataset cards and Hub push/pull, against the in-process fake Hub (tests/fake_hub.py)."""

import io
import json
from pathlib import Path

import httpx2
import pytest
import torch
import yaml
from PIL import Image

from hf_negationclip import NegationCLIPModel, load_processor, tiny_clip_config
from hf_negationclip.apps import cards
from hf_negationclip.apps.cli import main
from hf_negationclip.apps.hub import HubError, pull, push_dataset, push_folder, push_model

MODEL_REPO, DATA_REPO = "org/negationclip", "org/negrefcocog"
RUN_FILES = {
    "config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "training_config.json",
    "results.json",
    "train_log.jsonl",
    "loss.png",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder/tokenizer.json",
    "text_encoder/tokenizer_config.json",
    "README.md",
}


def _results(run: Path, baseline: Path) -> dict:
    def metric(value, chance, n):
        return {"value": value, "chance": chance, "n": n, "ci95": [value - 0.05, min(1.0, value + 0.05)]}

    return {
        "tasks": ["negrefcocog", "world_probe"],
        "created": "2026-11-29T15:00:00",
        "seed": 0,
        "models": {
            "negationclip": {
                "path": str(run),
                "metrics": {
                    "negrefcocog/accuracy": metric(0.6412345678901234, 0.5, 440),
                    "world_probe/negation_accuracy": metric(0.87, 0.5, 200),
                },
            },
            "clip": {
                "path": str(baseline),
                "metrics": {
                    "negrefcocog/accuracy": metric(0.577, 0.5, 440),
                    "world_probe/negation_accuracy": metric(0.01, 0.5, 200),
                },
            },
        },
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as the trainer leaves it: checkpoint, processor, text_encoder/, adapter/, results, log, plot."""
    from peft import LoraConfig, get_peft_model
    from transformers import CLIPTextModel

    root = tmp_path_factory.mktemp("runs")
    world, run, baseline = root / "world", root / "negationclip", root / "baseline"
    world.mkdir()
    (world / "world.json").write_text(json.dumps({"seed": 0, "n_images": 200}))
    torch.manual_seed(0)
    model = NegationCLIPModel(tiny_clip_config())
    model.save_pretrained(run)
    load_processor().save_pretrained(run)
    CLIPTextModel.from_pretrained(run).save_pretrained(run / "text_encoder")
    load_processor().tokenizer.save_pretrained(run / "text_encoder")  # as the fine-tuner exports it
    lora = LoraConfig(r=2, target_modules=r".*text_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|v_proj)")
    peft_model = get_peft_model(NegationCLIPModel(tiny_clip_config()), lora)
    peft_model.peft_config["default"].base_model_name_or_path = str(baseline)  # what peft records: a local path
    peft_model.save_pretrained(run / "adapter")
    (run / "training_config.json").write_text(
        json.dumps(  # the fine-tuning config's shape (training.finetune)
            {
                "preset": str(baseline),
                "output_dir": str(run),
                "recipe": "paper",
                "corpus_dir": str(root / "corpus"),
                "corpus_file": None,
                "train": "lora-text",
                "learning_rate": 1e-6,
                "batch_size": 512,
                "epochs": 15,
            },
            indent=2,
        )
    )
    baseline.mkdir()
    (baseline / "training_config.json").write_text(json.dumps({"preset": "tiny", "world_dir": str(world)}))
    (root / "results.json").write_text(
        json.dumps(_results(run, baseline), indent=2)
    )  # beside the runs, as the harness writes it
    (run / "train_log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3)))
    Image.new("RGB", (32, 24), (200, 30, 30)).save(run / "loss.png")
    (run / "checkpoints" / "step_00000010").mkdir(parents=True)  # resumable training state: never published
    (run / "checkpoints" / "step_00000010" / "optimizer.bin").write_bytes(b"\0" * 64)
    (run / "stray.pt").write_bytes(b"pickle")
    return run


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _model_index_values(meta: dict) -> dict:
    return {
        f"{r['task']['name']}/{m['type']}": m["value"] for r in meta["model-index"][0]["results"] for m in r["metrics"]
    }


def test_model_card_is_filled_from_the_run_files_and_idempotent(run_dir):
    path = cards.write_model_card(run_dir, repo_id=MODEL_REPO)
    first = path.read_bytes()
    assert cards.write_model_card(run_dir, repo_id=MODEL_REPO).read_bytes() == first  # same files, same bytes
    text = first.decode()
    meta = _front_matter(text)
    results = json.loads((run_dir.parent / "results.json").read_text())["models"]
    expected = {k: v["value"] for k, v in results["negationclip"]["metrics"].items()}
    assert _model_index_values(meta) == expected
    assert meta["pipeline_tag"] == "zero-shot-image-classification" and meta["license"] == "mit"
    assert "base_model" not in meta  # the run started from a local folder: no Hub id to name
    assert "| negrefcocog | accuracy | **0.641** | 0.577 | 0.500 | 440 |" in text  # baseline beside it, chance, n
    assert "demonstration model" in text and "scene world" in text  # the limitations say what the world is
    assert "fine-tuned to understand negation" in text and "vision tower frozen, LoRA adapters" in text
    assert "itself trained from random initialisation" in text  # the local base is followed to its origin
    assert 'subfolder="text_encoder"' in text and "CLIPModel.from_pretrained" in text and "load_dataset(" in text
    assert "@inproceedings{park2025negationclip" in text
    assert str(run_dir.parent) not in text  # no local absolute paths in a public card
    (run_dir / "README.md").unlink()


def test_templates_ship_as_package_data():
    assert (cards.template_dir() / cards.MODEL_CARD_TEMPLATE).is_file()
    with pytest.raises(FileNotFoundError, match="known"):
        cards.render_template("nope.md.j2")


def test_dry_run_stages_the_run_and_sends_nothing(run_dir, tmp_path, fake_hub, capsys):
    stage = tmp_path / "stage"
    assert (
        main(
            [
                "push-model",
                str(run_dir),
                "--repo_id",
                MODEL_REPO,
                "--dry_run",
                "--stage_dir",
                str(stage),
                "--datasets",
                "negrefcocog=org/negrefcocog",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    meta = _front_matter((stage / "README.md").read_text())
    assert meta["datasets"] == ["org/negrefcocog"]
    types = {r["task"]["name"]: r["dataset"]["type"] for r in meta["model-index"][0]["results"]}
    assert types == {"negrefcocog": "org/negrefcocog", "world_probe": "world_probe"}
    files = {p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file()}
    assert files == RUN_FILES
    assert "text_encoder/" in out and "model-index" in out and "nothing was sent" in out
    left_out = out.split("left out: ")[1].splitlines()[0]
    assert "checkpoints/" in left_out and "stray.pt" in left_out
    assert fake_hub.requests == []


def test_push_model_one_commit_and_from_pretrained_round_trip(run_dir, tmp_path, fake_hub, monkeypatch):
    from transformers import CLIPModel, CLIPTextModel

    staged = push_model(run_dir, MODEL_REPO)
    assert [c.message for c in fake_hub.commits] == ["Upload NegationCLIP run negationclip"]
    assert set(fake_hub.commits[0].added) == RUN_FILES
    assert staged.commit_url.endswith(fake_hub.commits[0].oid) and not staged.folder.exists()  # temp stage removed
    meta = _front_matter(fake_hub.files(MODEL_REPO)["README.md"].decode())
    results = json.loads((run_dir.parent / "results.json").read_text())["models"]["negationclip"]["metrics"]
    assert _model_index_values(meta) == {k: v["value"] for k, v in results.items()}

    cache = tmp_path / "cache"
    model = NegationCLIPModel.from_pretrained(MODEL_REPO, cache_dir=cache)
    local = NegationCLIPModel.from_pretrained(run_dir)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), local.state_dict().values()))
    assert isinstance(CLIPModel.from_pretrained(MODEL_REPO, cache_dir=cache), CLIPModel)
    CLIPTextModel.from_pretrained(MODEL_REPO, subfolder="text_encoder", cache_dir=cache)
    # HF_HUB_OFFLINE=1 with a warm cache: every request to the Hub now fails, and loading still works
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    fake_hub.fail = lambda request: (_ for _ in ()).throw(httpx2.ConnectError("offline", request=request))
    n_requests = len(fake_hub.requests)
    offline = NegationCLIPModel.from_pretrained(MODEL_REPO, cache_dir=cache)
    assert torch.equal(offline.logit_scale, local.logit_scale)
    assert (pull(MODEL_REPO, cache_dir=cache) / "model.safetensors").exists()
    assert fake_hub.requests[n_requests:] == [], fake_hub.requests[n_requests:]  # offline mode sent nothing


def test_push_adapter_names_its_base_by_hub_id(run_dir, tmp_path):
    with pytest.raises(ValueError, match="--base_model"):
        push_model(run_dir, "org/negationclip-lora", adapter=True, dry_run=True, stage_dir=tmp_path / "a")
    staged = push_model(
        run_dir,
        "org/negationclip-lora",
        adapter=True,
        dry_run=True,
        stage_dir=tmp_path / "b",
        base_model="org/tiny-clip-base",
    )
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= set(staged.files)
    assert "model.safetensors" not in staged.files
    assert (
        json.loads((staged.folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        == "org/tiny-clip-base"
    )
    assert json.loads((staged.folder / "training_config.json").read_text())["preset"] == "org/tiny-clip-base"
    meta = _front_matter(staged.card)
    assert meta["base_model"] == "org/tiny-clip-base" and meta["library_name"] == "peft"
    assert str(run_dir.parent) not in staged.card


def _image_bytes(color) -> dict:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, "PNG")
    return {"bytes": buf.getvalue(), "path": None}


@pytest.fixture
def dataset_dir(tmp_path, monkeypatch):
    """A NegRefCOCOg-like parquet folder (<config>/<split>-*.parquet, embedded images) with its card."""
    import datasets

    folder = tmp_path / "negrefcocog"
    features = datasets.Features(
        {"image": datasets.Image(), "phrase": datasets.Value("string"), "label": datasets.Value("int64")}
    )
    for split, n in (("test", 3), ("validation", 2)):
        rows = {
            "image": [_image_bytes((40 * i, 0, 0)) for i in range(n)],
            "phrase": [f"the circle that is not red {i}" for i in range(n)],
            "label": list(range(n)),
        }
        (folder / "scene").mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(
            folder / "scene" / f"{split}-00000-of-00001.parquet"
        )
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "test_card.md.j2").write_text(
        "---\n{{ card_data }}\n---\n# {{ title }}\n{% for c, splits in stats.items() %}{% for s, st in splits.items() %}"
        "- {{ c }}/{{ s }}: {{ st.rows }} rows\n{% endfor %}{% endfor %}"
        "{% for name, kind in features.scene.items() %}- `{{ name }}`: {{ kind }}\n{% endfor %}"
    )
    monkeypatch.setattr(cards, "template_dir", lambda: templates)
    cards.write_dataset_card(
        folder, "test_card.md.j2", {"title": "NegRefCOCOg (scene)"}, license="mit", pretty_name="NegRefCOCOg"
    )
    return folder


def test_dataset_card_helper_writes_configs_and_stats(dataset_dir):
    text = (dataset_dir / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["configs"] == [
        {
            "config_name": "scene",
            "default": True,
            "data_files": [
                {"split": "test", "path": "scene/test-*"},
                {"split": "validation", "path": "scene/validation-*"},
            ],
        }
    ]
    assert "- scene/test: 3 rows" in text and "- `image`: Image" in text and "- `label`: Value(int64)" in text


def test_push_dataset_and_load_dataset_round_trip(dataset_dir, tmp_path, fake_hub, monkeypatch):
    import datasets

    push_dataset(dataset_dir, DATA_REPO)
    assert len(fake_hub.commits) == 1 and fake_hub.commits[0].message == "Upload dataset negrefcocog"
    assert set(fake_hub.files(DATA_REPO, "dataset")) == {
        ".gitattributes",
        "README.md",
        "scene/test-00000-of-00001.parquet",
        "scene/validation-00000-of-00001.parquet",
    }
    ds = datasets.load_dataset(DATA_REPO, "scene", cache_dir=str(tmp_path / "ds-cache"))
    local = datasets.load_dataset(str(dataset_dir), "scene", cache_dir=str(tmp_path / "local-cache"))
    assert {s: len(d) for s, d in ds.items()} == {"test": 3, "validation": 2}
    assert ds["test"]["phrase"] == local["test"]["phrase"]
    assert ds["test"][2]["image"].getpixel((0, 0)) == (80, 0, 0)
    # HF_HUB_OFFLINE=1 with a warm cache: load_dataset answers without a single request
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    n_requests = len(fake_hub.requests)
    offline = datasets.load_dataset(DATA_REPO, "scene", cache_dir=str(tmp_path / "ds-cache"))
    assert offline["test"]["phrase"] == local["test"]["phrase"] and fake_hub.requests[n_requests:] == []


def test_push_dataset_refuses_a_folder_without_configs(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "README.md").write_text("---\nlicense: mit\n---\n# no configs\n")
    with pytest.raises(ValueError, match="configs"):
        push_dataset(tmp_path / "d", DATA_REPO, dry_run=True, stage_dir=tmp_path / "s")


def _small_folder(tmp_path) -> Path:
    folder = tmp_path / "space"
    folder.mkdir()
    (folder / "app.py").write_text("print('hi')\n")
    (folder / "README.md").write_text("---\nsdk: gradio\n---\n# demo\n")
    return folder


def test_missing_token_is_a_clear_error(tmp_path, fake_hub, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="no Hugging Face token"):
        push_folder(_small_folder(tmp_path), "org/space", "space")
    assert main(["push-dataset", str(tmp_path / "space"), "--repo_id", "org/x"]) == 2  # no configs: refused early
    assert capsys.readouterr().err.startswith("error: ")
    model_dir = tmp_path / "model"
    NegationCLIPModel(tiny_clip_config()).save_pretrained(model_dir)
    capsys.readouterr()
    assert main(["push-model", str(model_dir), "--repo_id", "org/x"]) == 2
    assert capsys.readouterr().err.startswith("error: no Hugging Face token: run `hf auth login`")
    assert fake_hub.requests == []


def test_rejected_token_is_a_clear_error_and_never_echoed(run_dir, tmp_path, fake_hub, monkeypatch):
    import tempfile

    monkeypatch.setenv("HF_TOKEN", "hf_wrong_secret")
    with pytest.raises(HubError, match="401") as err:
        push_folder(_small_folder(tmp_path), "org/space", "space")
    assert "hf_wrong_secret" not in str(err.value)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with pytest.raises(HubError, match="401"):
        push_model(run_dir, MODEL_REPO)
    assert fake_hub.repos == {} and list((tmp_path / "tmp").iterdir()) == []  # the staging folder is gone too


def test_existing_repo_needs_consent(tmp_path, fake_hub):
    folder = _small_folder(tmp_path)
    push_folder(folder, "org/space", "space")
    assert fake_hub.repo("org/space", "space").sdk == "gradio"
    with pytest.raises(HubError, match="already exists.*exist_ok"):
        push_folder(folder, "org/space", "space")
    assert len(fake_hub.commits) == 1
    (folder / "app.py").write_text("print('v2')\n")
    push_folder(folder, "org/space", "space", exist_ok=True, revision="v2", commit_message="second")
    assert fake_hub.files("org/space", "space", "v2")["app.py"] == b"print('v2')\n"
    assert fake_hub.files("org/space", "space")["app.py"] == b"print('hi')\n"  # main untouched


@pytest.mark.parametrize("failure", ["network", "server"])
def test_failed_upload_leaves_nothing_behind(tmp_path, fake_hub, failure):
    def fail(request):
        if "/commit/" in request.url.path:
            if failure == "network":
                raise httpx2.ConnectError("connection reset", request=request)
            return httpx2.Response(500, json={"error": "boom"})
        return None

    fake_hub.fail = fail
    with pytest.raises(HubError, match="cannot reach the Hub" if failure == "network" else "500") as err:
        push_folder(_small_folder(tmp_path), "org/space", "space")
    assert "deleted again; nothing was written" in str(err.value)
    assert fake_hub.repos == {} and fake_hub.commits == []


def test_failed_commit_to_an_existing_repo_changes_nothing(tmp_path, fake_hub):
    folder = _small_folder(tmp_path)
    push_folder(folder, "org/space", "space")
    (folder / "app.py").write_text("print('v2')\n")
    fake_hub.fail = lambda request: (
        httpx2.Response(500, json={"error": "boom"}) if "/commit/" in request.url.path else None
    )
    with pytest.raises(HubError, match="changed nothing; running the same push again resumes it"):
        push_folder(folder, "org/space", "space", exist_ok=True)
    assert len(fake_hub.commits) == 1 and fake_hub.files("org/space", "space")["app.py"] == b"print('hi')\n"


def test_wheel_ships_every_card_template(tmp_path):
    """The templates reach the package through the hf_negationclip/model_cards link: a built wheel must hold them."""
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools", reason="building the wheel without isolation needs setuptools in this env")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(repo),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    shipped = {Path(n).name for n in zipfile.ZipFile(wheel).namelist() if n.startswith("hf_negationclip/model_cards/")}
    templates = {p.name for p in (repo / "model_cards").glob("*.j2")}
    assert cards.MODEL_CARD_TEMPLATE in templates and templates <= shipped


def test_trainer_writes_the_card_with_the_checkpoint(world, tmp_path):
    from hf_negationclip import PretrainConfig, pretrain

    def evaluator(model, processor):  # any callable will do: the card must carry whatever it measured
        probs = model.score([Image.new("RGB", (96, 96))], ["a red circle", "no red circle"], processor)
        return {"negation_probe_accuracy": {"value": float(probs[0, 1]), "chance": 0.5, "n": 1}}

    cfg = PretrainConfig(
        world_dir=str(world),
        output_dir=str(tmp_path),
        epochs=1,
        batch_size=16,
        max_steps=1,
        cache_images=False,
        show_progress=False,
        save_steps=0,
        log_steps=1,
    )
    pretrain(cfg, evaluator, on_save=cards.write_model_card)  # the CLI and demo pass the card writer
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    meta = _front_matter((tmp_path / "README.md").read_text())
    values = _model_index_values(meta)
    assert values and values == {f"world/{k}": v["value"] for k, v in metrics.items() if isinstance(v, dict)}
    assert "baseline" in (tmp_path / "README.md").read_text()  # affirmative captions only: not called a NegationCLIP


def test_fake_hub_takes_datasets_own_push_to_hub(tmp_path, fake_hub):
    """Other engineers may push with ``DatasetDict.push_to_hub``: the fixture serves that path too."""
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"phrase": ["no dog", "a cat"]})}).push_to_hub(
        "org/pushed", config_name="scene"
    )
    assert [c.message for c in fake_hub.commits] == ["Upload dataset"]
    loaded = datasets.load_dataset("org/pushed", "scene", cache_dir=str(tmp_path / "cache"))
    assert loaded["test"]["phrase"] == ["no dog", "a cat"]


def test_many_files_go_through_huggingface_hubs_batched_uploader(tmp_path, fake_hub, capsys):
    """A big folder is split into several commits by huggingface_hub itself (no loop of ours); pull reads it back."""
    folder = tmp_path / "big"
    for i in range(300):
        (folder / f"shard_{i // 100}").mkdir(parents=True, exist_ok=True)
        (folder / f"shard_{i // 100}" / f"{i:04d}.json").write_text(json.dumps({"i": i}))
    push_folder(folder, "org/big", "dataset", commit_message="Upload big")
    messages = [c.message for c in fake_hub.commits]
    assert len(messages) >= 2 and messages[0] == "Upload big" and messages[1] == "Upload big (part 2)"
    assert main(["pull", "org/big", "--repo_type", "dataset", "--local_dir", str(tmp_path / "copy")]) == 0
    assert len(list((tmp_path / "copy").glob("shard_*/*.json"))) == 300


@pytest.fixture
def demo_out(tmp_path):
    """A finished demo's folder as ``run_demo`` leaves it before ``publish_best``: runs + results.json naming the best."""
    out = tmp_path / "demo"
    for label, seed in (("baseline", 0), ("ours", 1)):
        torch.manual_seed(seed)
        NegationCLIPModel(tiny_clip_config()).save_pretrained(out / label)
        load_processor().save_pretrained(out / label)
        (out / label / "training_config.json").write_text(json.dumps({"preset": "tiny", "corpus_dir": None}))
    (out / "ours" / "best").mkdir()  # the loop's best-step state and a resumable checkpoint: training state only
    (out / "ours" / "best" / "trainable.safetensors").write_bytes(b"\0" * 32)
    (out / "ours" / "best" / "best.json").write_text(json.dumps({"step": 4, "score": 0.9}))
    (out / "ours" / "checkpoints" / "step_4").mkdir(parents=True)
    (out / "ours" / "checkpoints" / "step_4" / "optimizer.bin").write_bytes(b"\0" * 32)
    metric = lambda v: {"value": v, "chance": 0.5, "n": 200, "ci95": [v - 0.05, v + 0.05]}  # noqa: E731
    results = {
        "tasks": ["world-probes"],
        "models": {
            label: {"path": str(out / label), "metrics": {"world-probes/negation_probe_accuracy": metric(v)}}
            for label, v in (("baseline", 0.015), ("ours", 0.97))
        },
        "best": "ours",
    }
    (out / "results.json").write_text(json.dumps(results))
    return out


def test_demo_best_publishes_as_it_is(demo_out, tmp_path, fake_hub, capsys):
    from hf_negationclip.apps.demo import publish_best

    best = publish_best(demo_out, "ours")
    assert not (best / "best").exists() and not (best / "checkpoints").exists()  # no training state in best/
    assert (best / "model.safetensors").is_file() and (best / "tokenizer.json").is_file()
    meta = _front_matter((best / "README.md").read_text())
    assert meta["model-index"][0]["name"] == "ours"  # the run's name, not the folder's
    assert _model_index_values(meta) == {"world-probes/negation_probe_accuracy": 0.97}
    stage = tmp_path / "stage"
    args = ["push-model", str(best), "--repo_id", "org/negationclip-demo", "--dry_run", "--stage_dir", str(stage)]
    assert main(args) == 0, capsys.readouterr().err
    staged = _front_matter((stage / "README.md").read_text())
    assert staged["model-index"][0]["name"] == "negationclip-demo"
    assert _model_index_values(staged) == {"world-probes/negation_probe_accuracy": 0.97}  # ours', not the baseline's
    assert not any(p.name in ("best.json", "trainable.safetensors") for p in stage.rglob("*"))
    assert fake_hub.requests == []
    push_model(best, "org/negationclip-demo")
    assert "model.safetensors" in fake_hub.files("org/negationclip-demo")
    assert not any(path.startswith("best/") for path in fake_hub.files("org/negationclip-demo"))
