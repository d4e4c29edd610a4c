"""A device that does not exist here is one line and exit 2 in every command, never a traceback."""

import pytest
import torch

from mtcnn.device import DeviceError, resolve_device


def test_resolve_device_rules(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="'gpu7' is not a device name"):
        resolve_device("gpu7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"'cuda' asked for, but .*use --device cpu"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match=r"'cuda:7' asked for, but this machine has 1 CUDA GPU \(cuda:0\)"):
        resolve_device("cuda:7")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match=r"has 2 CUDA GPUs \(cuda:0\.\.cuda:1\)"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_commands_say_one_line(monkeypatch, tmp_path, capsys):
    from mtcnn.commands.detect import main as detect_main
    from mtcnn.commands.gen_hard_example import main as gen_hard_example_main
    from mtcnn.commands.train import main as train_main
    from mtcnn.nets import build_net
    from mtcnn.weights import NET_NAMES, save_bundle

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    weights = tmp_path / "w.pt"
    save_bundle({n: build_net(n) for n in NET_NAMES}, weights)
    image = tmp_path / "a.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(image), np.zeros((40, 40, 3), np.uint8))
    runs = [
        lambda: detect_main([str(image), "--weights", str(weights), "--device", "cuda"]),
        lambda: gen_hard_example_main(["--test_mode", "PNet", "--pnet", str(weights), "device=cuda"]),
        lambda: train_main("pnet", ["--out", str(tmp_path / "run"), "device=cuda", f"data.train=[{tmp_path}/x.h5]"]),
    ]
    for run in runs:
        code = run()
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "'cuda' asked for" in err, err
