"""Fault injection on JSON files: a malformed cache.json (or index, or stats file) is one line naming the file."""

import numpy as np
import pytest
from fault_helpers import reseal_shard

from latentwm.cli import main
from latentwm.config import ConfigError, LatentwmError
from latentwm.data.cache_integrity import CacheError
from latentwm.data.episodes import DatasetStats, Episode
from latentwm.data.latent_cache import Encoding, LatentCache, encode_to_cache
from latentwm.io.files import read_json


def _cache(path):
    def episode(i):
        g = np.random.default_rng(i)
        return Episode(
            dataset="toy",
            episode_id=f"ep{i}",
            fps=10.0,
            frames={"main": g.integers(0, 255, size=(6, 8, 8, 3), dtype=np.uint8)},
            actions=g.normal(size=(6, 2)).astype(np.float32),
        )

    items = [(f"item/ep{i}", (lambda i=i: episode(i))) for i in range(4)]
    encode_to_cache(
        items,
        Encoding(lambda f: f.astype(np.float32).reshape(len(f), 4, -1, 3).mean(2), "random:test"),
        path,
        episodes_per_shard=2,
        show_progress=False,
    )
    return path


def test_read_json_names_the_file_and_what_it_should_hold(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"a": 1}')
    assert read_json(good) == {"a": 1}
    assert read_json(tmp_path / "absent.json", missing_ok=True) is None
    with pytest.raises(FileNotFoundError, match="absent.json"):
        read_json(tmp_path / "absent.json")
    for name, data in (("torn.json", b'{"a": 1'), ("binary.json", b"\xff\xfe\x00garbage"), ("list.json", b"[1, 2]")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ConfigError, match=rf"{tmp_path / name}: malformed things"):
            read_json(tmp_path / name, "things")
    with pytest.raises(CacheError, match="torn.json"):
        read_json(tmp_path / "torn.json", error=CacheError)
    assert read_json(tmp_path / "list.json", expect=list) == [1, 2]


@pytest.mark.parametrize("name", ["cache.json", "plan.json", "index/rank-00000.json"])
def test_verify_with_a_malformed_cache_file_prints_one_line_naming_it(tmp_path, capsys, name):
    cache = _cache(tmp_path / "cache")
    (cache / name).write_text('{"format": "latentwm-latent-cache", "encod')  # torn by a crash or a bad copy
    assert main(["verify", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentwm verify: ") and len(err.strip().splitlines()) == 1
    assert str(cache / name) in err and "malformed" in err


def test_malformed_stats_file_and_shard_member_name_their_file(tmp_path):
    cache = _cache(tmp_path / "cache")
    (cache / "stats" / "toy.json").write_text("{not json")
    with pytest.raises(LatentwmError, match=r"stats/toy.json: malformed dataset statistics"):
        DatasetStats.load(cache / "stats" / "toy.json")
    c = LatentCache(cache)
    e = c.entries[0]
    off, size = e["files"]["meta.json"]
    with open(cache / e["shard"], "r+b") as fh:  # the episode's meta.json inside the shard, same size
        fh.seek(off)
        fh.write(b"{" * size)
    reseal_shard(cache / e["shard"])  # written so: the checksum matches, the parser must see it
    with pytest.raises(CacheError, match=rf"{e['shard']}: .*meta.json is malformed"):
        LatentCache(cache).raw(0)
