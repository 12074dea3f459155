"""Sharded extraction on a local Ray cluster merges into the single process's bytes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bpcr.errors import BadInput
from bpcr.features.extract import extract
from bpcr.features.options import ExtractOptions
from bpcr.dataset.manifest import write_manifest
from bpcr.io.store import open_store

ray = pytest.importorskip("ray", reason='ray is not installed (pip install "bpcr[ray]"); sharding on Ray untested')

from bpcr.features.distributed import extract_sharded_ray  # noqa: E402

# A random-weight Lite0 at 32 px: the test is about who computes the chunks, not what they hold.
TINY = dict(weights="none", size=32, batch_size=2, chunk_batches=1, workers=0, device="cpu", threads=1)
N_IMAGES = 7  # chunks of 2 rows: 4 chunks over 3 shards, the last shard holding 2 of them


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024,
             log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    rng = np.random.default_rng(0)
    ids, paths = [], []
    for k in range(N_IMAGES):
        path = root / f"d{k}.jpg"
        Image.fromarray(rng.integers(0, 256, (40 + 3 * k, 48, 3), dtype=np.uint8)).save(path)
        ids.append(f"d{k}")
        paths.append(path)
    paths[4].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_manifest(root / "db.csv", ids, paths, [48] * N_IMAGES, [40 + 3 * k for k in range(N_IMAGES)],
                   [""] * N_IMAGES)
    return root / "db.csv"


@pytest.mark.filterwarnings("ignore:backbone .* has random weights")
def test_ray_shards_merge_into_the_single_process_store(cluster, manifest, tmp_path):
    single = extract(manifest, tmp_path / "single", ExtractOptions(backbone="efficientnet_lite0",
                                                                   poolings=["gem", "mac"], **TINY))
    merged = extract_sharded_ray(manifest, tmp_path / "ray", 3, ExtractOptions(backbone="efficientnet_lite0",
                                                                               poolings=["gem", "mac"], **TINY))
    assert sorted(merged) == ["gem", "mac"]
    for name in ("gem", "mac"):
        for file in ("ids.txt", "features.npy"):
            assert (merged[name] / file).read_bytes() == (single[name] / file).read_bytes()
        store = open_store(merged[name])
        assert store.failed == {"d4": "truncated image data"} and store.meta["shard"] is None
    assert not (tmp_path / ".ray.shards").exists()  # the parts are gone once merged


def test_ray_task_errors_arrive_as_bad_input(cluster, manifest, tmp_path):
    with pytest.raises(BadInput, match="--size must be between"):
        extract_sharded_ray(manifest, tmp_path / "bad", 2, ExtractOptions(backbone="efficientnet_lite0",
                                                                          poolings=["gem"], **{**TINY, "size": 8}))
    with pytest.raises(BadInput, match="integer >= 1"):
        extract_sharded_ray(manifest, tmp_path / "bad", 0, ExtractOptions(backbone="efficientnet_lite0",
                                                                          poolings=["gem"], **TINY))
