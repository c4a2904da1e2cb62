"""TFRecord + tf.train.Example without TensorFlow (CRC-32C, framing, corrupt bytes named by offset, the wire format
checked against protobuf's own encoder) and the RLDS reader on a SOAR-layout fixture: TFDS shards of one-episode
Examples whose JPEG frames encode their own number (formats.encode_index), actions, state, instructions, a corrupt
record skipped and counted, and `latentwm encode --source rlds` into a cache that trains."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from formats import encode_fn, encode_index, indices
from PIL import Image

from latentwm.cli import main
from latentwm.config import get_preset
from latentwm.data.clip_sets import make_clip_datasets
from latentwm.data.episodes import EpisodeError, narrations_in
from latentwm.data.latent_cache import Encoding, LatentCache, encode_to_cache
from latentwm.data.sources import load_source
from latentwm.data.sources import tfrecord as tfr
from latentwm.data.sources.rlds import load_rlds, make_spec
from latentwm.train.trainer import Trainer


def _tf_example_classes():
    """tensorflow/core/example/{feature,example}.proto rebuilt as runtime descriptors (no TensorFlow needed)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="tf_example_test.proto", package="tfx", syntax="proto3")

    def msg(name, fields, parent=None, map_entry=False):
        m = (parent.nested_type if parent is not None else fdp.message_type).add(name=name)
        if map_entry:
            m.options.map_entry = True
        for fname, num, typ, label, tname in fields:
            f = m.field.add(name=fname, number=num, type=typ, label=label)
            if tname:
                f.type_name = tname
        return m

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    msg("BytesList", [("value", 1, F.TYPE_BYTES, rep, None)])
    msg("FloatList", [("value", 1, F.TYPE_FLOAT, rep, None)])
    msg("Int64List", [("value", 1, F.TYPE_INT64, rep, None)])
    feat = msg(
        "Feature",
        [
            ("bytes_list", 1, F.TYPE_MESSAGE, opt, ".tfx.BytesList"),
            ("float_list", 2, F.TYPE_MESSAGE, opt, ".tfx.FloatList"),
            ("int64_list", 3, F.TYPE_MESSAGE, opt, ".tfx.Int64List"),
        ],
    )
    feat.oneof_decl.add(name="kind")
    for f in feat.field:
        f.oneof_index = 0
    for name, entry, value in (("Features", "feature", "Feature"), ("FeatureLists", "feature_list", "FeatureList")):
        if value == "FeatureList":
            msg("FeatureList", [("feature", 1, F.TYPE_MESSAGE, rep, ".tfx.Feature")])
        m = msg(name, [(entry, 1, F.TYPE_MESSAGE, rep, f".tfx.{name}.Entry")])
        msg(
            "Entry",
            [("key", 1, F.TYPE_STRING, opt, None), ("value", 2, F.TYPE_MESSAGE, opt, f".tfx.{value}")],
            parent=m,
            map_entry=True,
        )
    msg("Example", [("features", 1, F.TYPE_MESSAGE, opt, ".tfx.Features")])
    msg(
        "SequenceExample",
        [
            ("context", 1, F.TYPE_MESSAGE, opt, ".tfx.Features"),
            ("feature_lists", 2, F.TYPE_MESSAGE, opt, ".tfx.FeatureLists"),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return [
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tfx.{n}")) for n in ("Example", "SequenceExample")
    ]


def test_crc32c_known_values_and_both_paths_agree():
    assert tfr.crc32c(b"123456789") == 0xE3069283
    assert tfr.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert tfr.crc32c(b"\xff" * 32) == 0x62A8AB43
    data = np.random.default_rng(0).integers(0, 256, 70_001, np.uint8).tobytes()  # 68 full lanes + a tail
    assert tfr._crc_numpy(data) == tfr._crc_py(0xFFFFFFFF, data) ^ 0xFFFFFFFF


def test_records_round_trip_and_a_flipped_byte_is_named_by_offset(tmp_path):
    recs = [b"", b"a", np.random.default_rng(1).integers(0, 256, 40_000, np.uint8).tobytes(), b"last"]
    path = tfr.write_records(tmp_path / "x.tfrecord", recs)
    assert list(tfr.iter_records(path)) == recs
    offs = tfr.record_offsets(path)
    assert [o for o, _ in offs] == [0, 16, 33, 40_049] and [n for _, n in offs] == [0, 1, 40_000, 4]
    assert tfr.read_record(path, 33) == recs[2]
    raw = bytearray(path.read_bytes())
    raw[33 + 12 + 5000] ^= 0x10  # inside record 2's data
    (tmp_path / "bad.tfrecord").write_bytes(bytes(raw))
    with pytest.raises(tfr.TFRecordError, match=r"bad.tfrecord: record at byte 33: data CRC mismatch"):
        list(tfr.iter_records(tmp_path / "bad.tfrecord"))
    assert len(tfr.record_offsets(tmp_path / "bad.tfrecord")) == 4  # headers still frame every record
    raw = bytearray(path.read_bytes())
    raw[33 + 2] ^= 0x01  # record 2's length
    (tmp_path / "badlen.tfrecord").write_bytes(bytes(raw))
    offs, err = tfr.scan_records(tmp_path / "badlen.tfrecord")
    assert [o for o, _ in offs] == [0, 16] and "record at byte 33: length CRC mismatch" in str(err)
    (tmp_path / "cut.tfrecord").write_bytes(path.read_bytes()[:-3])
    with pytest.raises(tfr.TFRecordError, match="byte 40049 of 4 bytes runs past the end"):
        tfr.record_offsets(tmp_path / "cut.tfrecord")


def test_example_decoder_matches_protobuf_encoding_both_ways():
    Example, SequenceExample = _tf_example_classes()
    ex = Example()
    ex.features.feature["steps/observation/image_0"].bytes_list.value.extend([b"\xff\xd8jpeg", b"", b"x" * 300])
    ex.features.feature["steps/action"].float_list.value.extend([0.5, -1.25, 3e38, 1e-7])
    ex.features.feature["steps/is_first"].int64_list.value.extend([1, 0, -1, 2**62, -(2**63)])
    ex.features.feature["steps/language_instruction"].bytes_list.value.append("ouvre le tiroir ü".encode())
    ex.features.feature["empty"].float_list.SetInParent()
    got = tfr.parse_example(ex.SerializeToString())
    assert got["steps/observation/image_0"] == [b"\xff\xd8jpeg", b"", b"x" * 300]
    np.testing.assert_array_equal(got["steps/action"], np.float32([0.5, -1.25, 3e38, 1e-7]))
    assert got["steps/is_first"].tolist() == [1, 0, -1, 2**62, -(2**63)]
    assert got["steps/language_instruction"][0].decode() == "ouvre le tiroir ü" and got["empty"].size == 0
    mine = tfr.encode_example({k: v for k, v in got.items()})
    back = Example.FromString(mine)  # our writer's bytes parse in protobuf to the same message
    assert back == ex
    seq = SequenceExample()
    seq.context.feature["id"].int64_list.value.append(7)
    for t in range(3):
        seq.feature_lists.feature_list["obs"].feature.add().float_list.value.extend([t, t + 0.5])
    ctx, lists = tfr.parse_sequence_example(seq.SerializeToString())
    assert ctx["id"].tolist() == [7] and [v.tolist() for v in lists["obs"]] == [[0, 0.5], [1, 1.5], [2, 2.5]]
    with pytest.raises(tfr.TFRecordError):
        tfr.parse_example(ex.SerializeToString()[:-3])


# ----------------------------------------------------------------------------------------------------------------
# SOAR fixture: rlds/{success,failure}/1.0.0/ with TFDS metadata and shards; frame k of episode e shows 100·e + k.

H, W = 64, 96  # formats.encode_index's frame size


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def soar_episode(e: int, T: int, instruction: str) -> dict:
    frames = [encode_index(100 * e + k) for k in range(T)]
    return {
        "steps/observation/image_0": [_jpeg(f) for f in frames],
        "steps/observation/state": np.arange(T * 7, dtype=np.float32) + 1000 * e,
        "steps/action": (np.arange(T * 7, dtype=np.float32) / 10 + e),
        "steps/language_instruction": [instruction] * T,
        "steps/is_first": np.arange(T) == 0,
        "steps/is_last": np.arange(T) == T - 1,
        "steps/is_terminal": np.arange(T) == T - 1,
        "steps/reward": np.zeros(T, np.float32),
        "steps/discount": np.ones(T, np.float32),
        "episode_metadata/file_path": [f"/raw/traj{e}.pkl"],
    }


def write_soar(root: Path, corrupt: bool = False) -> Path:
    layout = {
        "success": [[(0, 6, "put the spoon in the pot"), (1, 5, "open the drawer")], [(2, 7, "wipe table")]],
        "failure": [[(3, 6, "close the drawer")]],
    }
    for subset, shards in layout.items():
        d = root / "rlds" / subset / "1.0.0"
        d.mkdir(parents=True)
        (d / "dataset_info.json").write_text(json.dumps({"name": "soar_dataset", "version": "1.0.0"}))
        (d / "features.json").write_text(json.dumps({"featuresDict": {"features": {"steps": {}}}}))
        for s, eps in enumerate(shards):
            recs = [tfr.encode_example(soar_episode(e, T, txt)) for e, T, txt in eps]
            if corrupt and subset == "failure":
                recs.append(tfr.encode_example(soar_episode(9, 4, "broken")))  # flipped on disk below
            p = tfr.write_records(d / f"soar_dataset-train.tfrecord-{s:05d}-of-{len(shards):05d}", recs)
            if corrupt and subset == "failure":
                raw = bytearray(p.read_bytes())
                raw[-10] ^= 0xFF  # inside the last record's data: its CRC no longer matches
                p.write_bytes(bytes(raw))
    return root


@pytest.fixture(scope="module")
def soar(tmp_path_factory):
    return write_soar(tmp_path_factory.mktemp("soar"), corrupt=True)


def test_soar_episodes_cameras_actions_text(soar):
    items = dict(load_rlds(soar))
    assert sorted(items) == [
        "soar_dataset/failure/soar_dataset-train-00000#00000",
        "soar_dataset/failure/soar_dataset-train-00000#00001",
        "soar_dataset/success/soar_dataset-train-00000#00000",
        "soar_dataset/success/soar_dataset-train-00000#00001",
        "soar_dataset/success/soar_dataset-train-00001#00000",
    ]
    ep = items["soar_dataset/success/soar_dataset-train-00000#00001"]()
    assert (ep.dataset, ep.cameras, len(ep), ep.fps, ep.success) == ("soar_dataset", ["image_0"], 5, 5.0, True)
    assert indices(ep.frames["image_0"].get(range(5))) == [100, 101, 102, 103, 104]
    np.testing.assert_allclose(ep.actions, np.arange(35, dtype=np.float32).reshape(5, 7) / 10 + 1)
    assert ep.mask().tolist() == [True] * 4 + [False]  # RLDS: the is_last step's action is undefined
    np.testing.assert_array_equal(ep.proprio[1], np.arange(7, 14) + 1000)
    assert ep.text == ["open the drawer"] and narrations_in(ep.extras, 2, 3) == ["open the drawer"]
    assert ep.extras["file_path"] == "/raw/traj1.pkl" and ep.extras["narrations"] == [[0, 5, "open the drawer"]]
    fail = items["soar_dataset/failure/soar_dataset-train-00000#00000"]()
    assert fail.success is False and fail.text == ["close the drawer"]
    with pytest.raises(
        EpisodeError,
        match=r"failure/1.0.0/soar_dataset-train.tfrecord-00000-of-00001 record 1 "
        r"\(byte \d+\): .*data CRC mismatch",
    ):
        items["soar_dataset/failure/soar_dataset-train-00000#00001"]()


def test_fps_size_split_and_generic_spec(soar):
    items = dict(load_rlds(soar, fps=2.5, size=32, split="train", dataset="s"))
    ep = items["s/success/soar_dataset-train-00001#00000"]()  # 7 steps at 5 Hz → steps 0, 2, 4, 6
    assert len(ep) == 4 and ep.fps == 2.5 and ep.frame_skip == 2 and ep.actions.shape == (4, 14)
    assert ep.mask().tolist() == [True, True, True, False] and ep.frames["image_0"].get([0]).shape == (1, 32, 32, 3)
    assert indices(
        np.stack([np.asarray(Image.fromarray(f).resize((W, H))) for f in ep.frames["image_0"].get(range(4))])
    ) == [200, 202, 204, 206]
    with pytest.raises(ValueError, match="fps=2.0 must divide the native 5.0"):
        load_rlds(soar, fps=2.0)
    with pytest.raises(FileNotFoundError, match="no TFRecord shards"):
        load_rlds(soar, split="val")
    g = dict(
        load_source(
            "rlds", soar, options=dict(spec="generic", image_keys="observation/image_0", action_key="", native_fps=10.0)
        )
    )
    ep = g["soar_dataset/success/soar_dataset-train-00000#00000"]()
    assert ep.actions is None and ep.proprio is None and ep.fps == 10 and ep.text == []
    with pytest.raises(ValueError, match="generic needs image_keys"):
        make_spec("generic")
    with pytest.raises(EpisodeError, match=r"no encoded images under 'steps/observation/wrist'.*steps/action"):
        dict(load_rlds(soar, image_keys="observation/wrist"))["soar_dataset/success/soar_dataset-train-00001#00000"]()


def test_corrupt_header_lists_the_rest_of_the_shard_as_one_failing_item(tmp_path):
    root = write_soar(tmp_path / "s")
    p = root / "rlds/success/1.0.0/soar_dataset-train.tfrecord-00000-of-00002"
    off = tfr.record_offsets(p)[1][0]
    raw = bytearray(p.read_bytes())
    raw[off + 1] ^= 0xFF
    p.write_bytes(bytes(raw))
    items = dict(load_rlds(root))
    assert "soar_dataset/success/soar_dataset-train-00000#00001+" in items
    with pytest.raises(EpisodeError, match=f"records from 1 on are unreadable.*byte {off}: length CRC"):
        items["soar_dataset/success/soar_dataset-train-00000#00001+"]()
    assert len(items["soar_dataset/success/soar_dataset-train-00000#00000"]()) == 6


def test_encode_cache_skips_the_corrupt_record(soar, tmp_path, capsys):
    res = encode_to_cache(
        load_rlds(soar), Encoding(encode_fn, "mean8"), tmp_path / "c", episodes_per_shard=2, show_progress=False
    )
    assert (res["episodes"], res["skipped"], res["complete"]) == (4, 1, True)
    cache = LatentCache(tmp_path / "c")
    assert [s["item"] for s in cache.skipped] == ["soar_dataset/failure/soar_dataset-train-00000#00001"]
    assert "data CRC mismatch" in cache.skipped[0]["error"]


def test_latentwm_encode_source_rlds_then_train(soar, tmp_path):
    out = tmp_path / "lat"
    assert (
        main(
            [
                "encode",
                "--preset",
                "tiny",
                "--source",
                "rlds",
                "--root",
                str(soar),
                "--out-dir",
                str(out),
                "--text.name",
                "",
            ]
        )
        == 0
    )
    cache = LatentCache(out)
    assert cache.complete and len(cache.entries) == 4 and len(cache.skipped) == 1
    cfg = get_preset("tiny").replace(
        data__cache_dir=str(out),
        data__env_action_dim=7,
        data__frame_skip=1,
        model__action_dim=7,
        data__eval_fraction=0.0,
        train__out_dir=str(tmp_path / "run"),
        train__steps=2,
        train__log_every=1,
    )
    train_set, _, extra = make_clip_datasets(cfg)
    assert Trainer(cfg, train_set, None, extra_state=extra, device="cpu").fit()["step"] == 2
