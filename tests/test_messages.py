"""Messages that used to mislead: each names the real problem and the real way out."""

import pytest

from mtcnn.data.annotations import AnnotationError, read_wider


def test_wider_face_count_too_large_says_larger(tmp_path):
    gt = tmp_path / "gt.txt"
    # a.jpg promises 2 faces but has 1: the parser reaches b.jpg's lines
    gt.write_text("a.jpg\n2\n1 2 30 40 0 0 0 0 0 0\nb.jpg\n1\n5 5 20 20 0 0 0 0 0 0\n")
    with pytest.raises(AnnotationError, match="face count larger than the face lines that follow"):
        read_wider(gt, tmp_path)


def test_weights_that_are_not_a_checkpoint(tmp_path):
    from mtcnn.weights import WeightsError, load_bundle

    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nSome text that is not a checkpoint.\n" * 20)
    with pytest.raises(WeightsError) as err:
        load_bundle(readme)
    text = str(err.value)
    assert text == f"{readme}: not a PyTorch checkpoint (expected a .pt file written by torch.save)"
    assert "weights_only" not in text


def test_long_library_messages_are_cut_at_a_boundary():
    from mtcnn.weights import _first_sentence

    long = "Weights only load failed. This file can still be loaded, to do so you have two options, " * 3
    assert _first_sentence(long) == "Weights only load failed."
    words = "word " * 60
    cut = _first_sentence(words)
    assert cut.endswith(" ...") and all(w == "word" for w in cut[:-4].split())


def test_missing_data_mentions_mtcnn_data(tmp_path, monkeypatch):
    from mtcnn.config.data import SourceConfig
    from mtcnn.data.generate import GenerationError, load_source

    monkeypatch.setenv("MTCNN_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(GenerationError, match=r"not found \(the data folder .*nowhere is MTCNN_DATA; set MTCNN_DATA"):
        load_source(SourceConfig(name="faces", format="cnn_facepoint", path="{data}/cnn_facepoint/trainImageList.txt"))


def test_stop_after_does_not_claim_trained_weights(tmp_path, capsys):
    from mtcnn.commands.run_pipeline import main as run_pipeline_main
    from test_pipeline import TINY, _finished_work_dir

    _finished_work_dir(tmp_path)
    assert run_pipeline_main([str(TINY), f"work_dir={tmp_path}", "--stop-after", "pnet_data"]) == 0
    out = capsys.readouterr().out
    assert "trained weights" not in out and f"stopped after pnet_data; outputs so far are in {tmp_path}" in out
