"""Fine-tuning: ``init`` (start from the shipped, original or any trained weights), ``freeze``, and
the fine-tuning recipe ``pipeline_finetune.yaml`` end to end on a tiny input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
import yaml

from mtcnn.commands.train import main as train_main
from mtcnn.config import ConfigError, default_config, from_dict, load_config
from mtcnn.config.train import TrainConfig
from mtcnn.training import train
from mtcnn.training.loop import DEBUG_EXIT_CODE, Trainer
from mtcnn.weights import DEFAULT_WEIGHTS, WeightsError, make_checkpoint
from test_train import config_dict, make_sample_file
from tests_helpers import PROJECT_ROOT


@pytest.fixture(scope="module")
def pnet_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pnet_samples")
    counts = {"pos": 48, "part": 48, "neg": 144, "landmark": 48}
    return make_sample_file(d / "pnet_train.h5", 12, counts, seed=1), make_sample_file(d / "pnet_val.h5", 12, counts, seed=2)


def _config(files, out, **extra) -> TrainConfig:
    extra = {"val.enabled": False, "checkpoint.every_steps": 0, **extra}
    return from_dict(TrainConfig, config_dict(files, out, "pnet", **extra))


def _shipped(net: str) -> dict[str, torch.Tensor]:
    return torch.load(DEFAULT_WEIGHTS / f"{net}.pt", map_location="cpu", weights_only=True)["state_dict"]


def _set_up(trainer: Trainer) -> Trainer:
    """A trainer up to its first step: data opened, model built (and initialised), optimiser made."""
    trainer._check_inputs()
    trainer._setup()
    return trainer


def _equal(a: dict, b: dict, keys=None) -> bool:
    return all(torch.equal(a[k].cpu(), b[k].cpu()) for k in (keys or a))


# --------------------------------------------------------------------------------------------
# init
# --------------------------------------------------------------------------------------------


def test_init_default_loads_exactly_the_shipped_tensors(pnet_files, tmp_path):
    shipped = _shipped("pnet")
    trainer = _set_up(Trainer(_config(pnet_files, tmp_path / "a", init="default")))
    state = trainer.model.state_dict()
    assert state.keys() == shipped.keys() and _equal(shipped, state)
    assert trainer.init_record["init"] == "default" and trainer.init_record["source"] == "mtcnn/weights/pnet.pt"
    # without init: the random initialisation of today
    random_start = _set_up(Trainer(_config(pnet_files, tmp_path / "b"))).model.state_dict()
    assert not _equal(shipped, random_start)


def test_init_original_and_a_path(pnet_files, tmp_path, original_weights):
    from mtcnn.weights import load_stage_net

    trainer = _set_up(Trainer(_config(pnet_files, tmp_path / "o", init="original")))
    assert _equal(load_stage_net(original_weights, "pnet").state_dict(), trainer.model.state_dict())
    # a checkpoint path, a bundle and a run folder name the same net
    for init in (str(DEFAULT_WEIGHTS / "pnet.pt"), str(DEFAULT_WEIGHTS), str(original_weights)):
        trainer = _set_up(Trainer(_config(pnet_files, tmp_path / "p", init=init), overwrite=True))
        expected = _shipped("pnet") if init != str(original_weights) else load_stage_net(original_weights, "pnet").state_dict()
        assert _equal(expected, trainer.model.state_dict()), init


def test_mismatched_weights_are_one_clear_line(pnet_files, tmp_path, capsys):
    out = tmp_path / "never"
    base = ["--out", str(out), f"data.train=[{pnet_files[0]}]", f"data.val=[{pnet_files[1]}]", "epochs=1"]
    # another net's checkpoint
    assert train_main("pnet", [*base, f"init={DEFAULT_WEIGHTS / 'rnet.pt'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {DEFAULT_WEIGHTS / 'rnet.pt'}: holds a 'rnet' but a 'pnet' was expected (init={DEFAULT_WEIGHTS / 'rnet.pt'})"]
    # a P-Net whose recorded spec differs from the registry's
    from mtcnn.nets import build_net

    ckpt = make_checkpoint("pnet", build_net("pnet"))
    ckpt["spec"]["num_landmarks"] = 68
    bad = tmp_path / "pnet68.pt"
    torch.save(ckpt, bad)
    assert train_main("pnet", [*base, f"init={bad}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {bad}: pnet spec num_landmarks=68 differs from the registered 5"]
    # a net with no shipped weights; a missing file
    with pytest.raises(WeightsError, match=r"^init=default: no shipped weights for net 'kp68_baseline' \(shipped: pnet, rnet, onet"):
        from mtcnn.training.finetune import resolve_init

        resolve_init("default", "kp68_baseline")
    assert train_main("pnet", [*base, f"init={tmp_path / 'none.pt'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'none.pt'}: weights file not found" in err[0]
    assert not out.exists()


def test_shape_mismatch_is_one_line(tmp_path):
    """Same name and spec, other layer shapes (a variant of the net): refused before training."""
    from mtcnn.nets import build_net
    from mtcnn.training.finetune import apply_init, resolve_init

    ckpt = make_checkpoint("onet", build_net("onet"))
    ckpt["state_dict"]["cls.weight"] = torch.zeros(2, 64)
    path = tmp_path / "onet.pt"
    torch.save(ckpt, path)
    with pytest.raises(WeightsError) as info:
        apply_init(build_net("onet"), resolve_init(str(path), "onet"))
    assert str(info.value) == f"{path}: onet.cls.weight has shape (2, 64), expected (2, 256)"


def test_landmark_models_start_from_their_shipped_weights(tmp_path):
    """``init`` in the landmark zoo's configs (the MobileNet-V2 cascade, 68 points) and the Sun et al. cascade's."""
    from mtcnn.landmark_models import load_landmark_model
    from mtcnn.training.cascade_run import trainer_config
    from mtcnn.training.cascade_task import CascadeTrainConfig
    from mtcnn.training.finetune import apply_init, resolve_init
    from mtcnn.training.keypoint_task import KeypointTask, KeypointTrainConfig
    from test_keypoint_training import _dot_faces

    cfg = KeypointTrainConfig(net="mobilenet_l1", out=str(tmp_path / "m"), epochs=1, steps_per_epoch=2, batch_size=4,
                              device="cpu", init="default")
    cfg.val = dataclasses.replace(cfg.val, enabled=False)
    task = KeypointTask(cfg, train=_dot_faces(8))
    trainer = _set_up(Trainer(cfg, task))
    shipped = load_landmark_model("mobilenet").level1.state_dict()
    assert _equal(shipped, trainer.model.state_dict())
    assert trainer.init_record["source"] == "mtcnn/weights/mobilenet_cascade.pt[mobilenet_l1]"
    kp = load_landmark_model("68").net
    from mtcnn.nets import build_net

    model = build_net("kp68_compact")
    apply_init(model, resolve_init("default", "kp68_compact"))
    assert _equal(kp.state_dict(), model.state_dict())
    # the cascade's config carries init to each of its 23 runs
    ccfg = load_config(CascadeTrainConfig, default_config("landmarks_cascade.yaml"), ["init=default", "freeze.layers=[trunk]"])
    assert trainer_config("LE21", ccfg).init == "default" and trainer_config("LE21", ccfg).freeze.layers == ["trunk"]
    assert resolve_init("default", "sun_le21").record["source"] == "mtcnn/weights/cascade_sun.pt[LE21]"


# --------------------------------------------------------------------------------------------
# freeze, resume, the card
# --------------------------------------------------------------------------------------------


def _trunk_and_heads(state):
    trunk = [k for k in state if k.startswith("body.")]
    heads = [k for k in state if not k.startswith("body.")]
    return trunk, heads


def test_freeze_holds_for_n_steps_then_layers_move_and_resume_is_exact(pnet_files, tmp_path):
    extra = {"init": "default", "freeze.layers": ["trunk"], "freeze.steps": 3, "epochs": 2, "steps_per_epoch": 3,
             "optim.lr": 0.01, "optim.lr_boundaries": []}
    shipped = _shipped("pnet")
    trunk, heads = _trunk_and_heads(shipped)
    full = train(_config(pnet_files, tmp_path / "full", **extra))
    # The same run killed after step 3 (the last frozen one) in a subprocess, then resumed.
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(config_dict(pnet_files, tmp_path / "cut", "pnet", **{
        "val.enabled": False, "checkpoint.every_steps": 0, **extra})))
    r = subprocess.run([sys.executable, str(PROJECT_ROOT / "train_models" / "train_pnet.py"), "--config", str(cfg_file),
                        "debug.stop_after_steps=3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == DEBUG_EXIT_CODE, r.stderr[-2000:]
    assert "trunk frozen for the first 3 steps" in r.stderr
    at_3 = torch.load(tmp_path / "cut" / "last.pt", map_location="cpu", weights_only=True)
    assert at_3["global_step"] == 3 and at_3["init"]["init"] == "default"
    assert _equal(shipped, at_3["model"], trunk)  # frozen: exactly the shipped tensors after 3 steps
    assert not any(torch.equal(shipped[k], at_3["model"][k]) for k in heads if k.startswith("cls"))  # the heads learnt
    resumed = train(_config(pnet_files, tmp_path / "cut", **extra), resume=True)
    a = torch.load(full, map_location="cpu", weights_only=True)
    b = torch.load(resumed, map_location="cpu", weights_only=True)
    assert _equal(a["state_dict"], b["state_dict"])  # resume is exact with init and freeze
    assert not any(torch.equal(shipped[k], a["state_dict"][k]) for k in trunk if k.endswith("weight"))  # thawed: moved
    # the card: what the run started from, in the final checkpoint and the resolved config
    for ckpt in (a, b):
        assert ckpt["meta"]["init"]["init"] == "default" and ckpt["meta"]["init"]["source"] == "mtcnn/weights/pnet.pt"
        assert ckpt["config"]["init"] == "default" and ckpt["config"]["freeze"] == {"layers": ["trunk"], "steps": 3}
    resolved = yaml.safe_load((tmp_path / "full" / "config.resolved.yaml").read_text())
    assert resolved["init"] == "default"
    metrics = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["settings"].endswith("init default")


def test_freeze_of_named_layers_for_the_whole_run(pnet_files, tmp_path):
    cfg = _config(pnet_files, tmp_path / "f", **{"init": "default", "freeze.layers": ["body.0", "box"], "epochs": 1,
                                                 "steps_per_epoch": 2, "optim.name": "sgd", "optim.weight_decay": 0.1})
    final = torch.load(train(cfg), map_location="cpu", weights_only=True)["state_dict"]
    shipped = _shipped("pnet")
    frozen = ["body.0.weight", "body.0.bias", "box.weight", "box.bias"]
    assert _equal(shipped, final, frozen)  # weight decay does not move them either
    assert not torch.equal(shipped["body.3.weight"], final["body.3.weight"])


def test_unknown_freeze_layer_is_a_config_error(pnet_files, tmp_path):
    with pytest.raises(ConfigError, match=r"freeze.layers: 'body.9' is not a layer of pnet \(did you mean 'body.6'\? layers: trunk, body, body.0, body.1"):
        _set_up(Trainer(_config(pnet_files, tmp_path / "x", **{"freeze.layers": ["body.9"]})))
    with pytest.raises(ConfigError, match=r"freeze.steps=0 is out of range"):
        _config(pnet_files, tmp_path / "x", **{"freeze.steps": 0})


# --------------------------------------------------------------------------------------------
# the fine-tuning recipe
# --------------------------------------------------------------------------------------------

FINETUNE = default_config("pipeline_finetune.yaml")


def _user_coco(shared_data, tmp_path, n: int = 10):
    """'The user's photos': the first n face_mask training photos, exported as a COCO file."""
    from mtcnn.data.annotations import read_annotations

    records = read_annotations(shared_data / "face_mask" / "annotations", "voc")[:n]
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "face"}, {"id": 2, "name": "hand"}]}
    for i, r in enumerate(records):
        doc["images"].append({"id": i, "file_name": r.path.name, "width": r.width, "height": r.height})
        for b in r.boxes.tolist():
            doc["annotations"].append({"id": len(doc["annotations"]), "image_id": i, "category_id": 1, "iscrowd": 0,
                                       "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
        doc["annotations"].append({"id": len(doc["annotations"]), "image_id": i, "category_id": 2, "bbox": [0, 0, 5, 5]})
    path = tmp_path / "user" / "instances.json"
    path.parent.mkdir()
    path.write_text(json.dumps(doc))
    return path, shared_data / "face_mask" / "images"


def _tiny_overrides(work, coco, images) -> list[str]:
    photos = f"{{name: mine, format: coco, path: '{coco}', images_root: '{images}', classes: [face], split: %s}}"
    out = [f"work_dir={work}", f"finetune.photos.train=[{photos % 'train'}]", f"finetune.photos.val=[{photos % 'val'}]",
           "scenes.num_train=4", "scenes.num_val=2", "scenes.canvas=[160,120]", "scenes.min_face=30",
           "scenes.faces_per_scene=[1,2]", "evaluate.max_images=2", "threads=1"]
    for net in ("pnet", "rnet", "onet"):
        out += [f"train_{net}.epochs=1", f"train_{net}.steps_per_epoch=2", f"train_{net}.val.max_per_kind=64",
                f"train_{net}.val.num_images=0", f"train_{net}.log.progress=false", f"train_{net}.log.tensorboard=false"]
    out += ["train_onet.batch_size=48", "train_onet.data.composition={pos: 8, part: 8, neg: 16, landmark: 16}"]
    return out


def test_finetune_recipe_plan(shared_data, tmp_path):
    """The recipe mines with the shipped nets, starts every stage from them and replays a share of the
    original sources next to the user's photos."""
    from mtcnn.pipeline import PipelineConfig, plan

    if not (shared_data / "face_mask").is_dir():
        pytest.skip("needs face_mask")
    coco, images = _user_coco(shared_data, tmp_path)
    cfg = load_config(PipelineConfig, FINETUNE, _tiny_overrides(tmp_path / "w", coco, images))
    steps = plan(cfg)
    assert steps["mine_pnet"].pnet == "default" and steps["mine_rnet"].rnet == "default"
    assert all(steps[f"train_{net}"].init == "default" for net in ("pnet", "rnet", "onet"))
    train = steps["pnet_data"].sources.train
    # 8 training photos of the user's 10; replay 0.3: ceil(8 * 0.3 / 0.7) = 4 originals, 2 per original source
    assert [(s.name, s.sample_images) for s in train] == [("mine", None), ("scenes", 2), ("cnn_facepoint", 2)]
    assert [(s.name, s.sample_images) for s in steps["mine_rnet"].sources.val] == [("mine", None), ("scenes", 1), ("cnn_facepoint", 1)]
    assert [(s.name, s.sample_images) for s in steps["pnet_data"].landmarks.sources.train] == [("cnn_facepoint", 4)]
    with pytest.raises(ConfigError, match="finetune.replay=1.0 is out of range"):
        load_config(PipelineConfig, FINETUNE, ["finetune.replay=1.0"])
    with pytest.raises(ConfigError, match="finetune.photos needs train and val sources"):
        load_config(PipelineConfig, FINETUNE, ["finetune.photos.val=[]"])


@pytest.mark.data
def test_finetune_recipe_end_to_end(shared_data, tmp_path):
    """tools/run_pipeline.py pipeline_finetune.yaml on 10 photos: every step runs, the bundle loads in
    tools/detect.py, and the report compares it with the shipped weights."""
    for need in ("face_mask", "cnn_facepoint", "nonface_scenes"):
        if not (shared_data / need).is_dir():
            pytest.skip(f"needs {need}")
    coco, images = _user_coco(shared_data, tmp_path)
    work = tmp_path / "w"
    command = [sys.executable, str(PROJECT_ROOT / "tools" / "run_pipeline.py"), "pipeline_finetune.yaml",
               *_tiny_overrides(work, coco, images)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    bundle = work / "mtcnn_trained.pt"
    assert bundle.is_file()
    raw = torch.load(bundle, map_location="cpu", weights_only=True)
    for net in ("pnet", "rnet", "onet"):
        assert raw["nets"][net]["meta"]["init"]["source"] == f"mtcnn/weights/{net}.pt"
    report = json.loads((work / "eval" / "report.json").read_text())
    assert report["images"] == 2 and report["baseline"]["weights"] == "default" and 0 <= report["ap"] <= 1
    # The bundle carries the operating point it was evaluated at; the baseline ran at its own.
    from mtcnn.detector import MTCNN
    from mtcnn.pipeline import PipelineConfig

    evaluated = load_config(PipelineConfig, FINETUNE, _tiny_overrides(work, coco, images)).evaluate
    assert raw["detector"] == {"thresholds": list(evaluated.thresholds), "min_face_size": evaluated.min_face_size,
                               "factor": evaluated.factor}
    assert tuple(MTCNN(weights=bundle).config.thresholds) == tuple(evaluated.thresholds)
    assert report["settings"]["min_face_size"] == evaluated.min_face_size
    assert tuple(report["baseline"]["settings"]["thresholds"]) == tuple(MTCNN().config.thresholds)
    # the mining used the shipped nets, and the samples hold the user's photos and the replayed ones
    from mtcnn.data.h5 import SampleReader

    mined = SampleReader(work / "samples" / "rnet_train.h5")
    assert "mtcnn/weights/pnet.pt" in mined.attrs["checkpoints"]
    sources = set(mined.sources())
    assert any("face_mask/images" in s for s in sources) and any("cnn_facepoint" in s for s in sources)
    assert any("scenes" in s for s in sources)
    from mtcnn.commands.detect import main as detect_main

    out = tmp_path / "dets.jsonl"
    assert detect_main([str(images / "maksssksksss0.jpg"), "--weights", str(bundle), "--json", str(out)]) == 0
    assert json.loads(out.read_text().splitlines()[0])["faces"] is not None


def test_face_mask_demonstration_is_the_recipe_with_its_stated_changes():
    """pipeline_finetune_face_mask.yaml (the README's worked example) differs from
    pipeline_finetune.yaml only where its header says: WebFaces replayed, replay 0.5, mining down
    to 12 px faces, longer schedules, its operating point (the thresholds of the weights shipped when
    it ran) and its work_dir."""
    from mtcnn.config import to_dict
    from mtcnn.pipeline import PipelineConfig

    base = to_dict(load_config(PipelineConfig, FINETUNE))
    demo = to_dict(load_config(PipelineConfig, default_config("pipeline_finetune_face_mask.yaml")))
    changed = set()

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in set(a) | set(b):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        elif a != b:
            changed.add(path)

    walk(base, demo, "")
    assert changed == {
        "work_dir", "finetune.replay", "evaluate.min_face_size", "evaluate.thresholds",
        "pnet_data.sources.train", "pnet_data.sources.val",
        "mine_pnet.sources.train", "mine_pnet.sources.val", "mine_rnet.sources.train", "mine_rnet.sources.val",
        "mine_pnet.detector.min_face_size", "mine_rnet.detector.min_face_size", "mine_pnet.min_box_size", "mine_rnet.min_box_size",
        "train_pnet.epochs", "train_pnet.optim.lr_boundaries", "train_rnet.epochs", "train_rnet.optim.lr_boundaries",
        "train_onet.epochs", "train_onet.optim.lr_boundaries",
    }, sorted(changed)
    webfaces = [s["name"] for s in demo["mine_rnet"]["sources"]["train"]]
    assert webfaces == ["scenes", "cnn_facepoint", "webfaces"]
