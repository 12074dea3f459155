"""bpcr.features.loader: every way of decoding gives the same batches, in plan order; stopping early leaves no thread."""
from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from bpcr.features import loader
from bpcr.features.loader import _Images, _Prefetch, batch_loader, batches_of_chunk, decode_resized
from tests.helpers import ROOT



@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(0)
    paths = []
    for k in range(11):
        w, h = int(rng.integers(30, 90)), int(rng.integers(30, 90))
        path = folder / f"i{k:02d}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8)).save(path)
        paths.append(path)
    paths[4].write_bytes(b"")  # unreadable: reported, never stacked
    shapes = [(32, 32) if k % 3 else (32, 48) for k in range(len(paths))]
    batches = batches_of_chunk(0, len(paths), 3, len(paths), shapes)
    return paths, shapes, batches


def _serial(paths, shapes, batches, saliency=None):
    """The reference: each image decoded alone, stacked by hand."""
    out = []
    for rows in batches:
        good, failed, pixels, maps = [], {}, [], []
        for r in rows:
            try:
                p = decode_resized(paths[r], shapes[r])
            except loader.ImageError as exc:
                failed[r] = exc.reason
                continue
            good.append(r)
            pixels.append(p.transpose(2, 0, 1))
            if saliency:
                from bpcr.features.saliency import saliency_map

                maps.append(saliency_map(p, saliency))
        out.append((good, np.stack(pixels) if good else None, np.stack(maps) if maps else None, failed))
    return out


def _same(got, expected):
    got = list(got)
    assert len(got) == len(expected)
    for batch, (rows, pixels, maps, failed) in zip(got, expected):
        assert batch.rows == rows and batch.failed == failed
        if pixels is None:
            assert batch.images is None
        else:
            # channels-last in memory: each image's (H, W, 3) pixels as decoded, no transposing copy
            assert batch.images.dtype == torch.uint8
            assert batch.images.is_contiguous(memory_format=torch.channels_last)
            assert np.array_equal(batch.images.numpy(), pixels)
        assert (batch.maps is None) == (maps is None)
        if maps is not None:
            assert batch.maps.dtype == np.float32 and np.array_equal(batch.maps, maps)


@pytest.mark.parametrize("ahead", [1, 2, 5])
def test_prefetch_equals_serial_decoding(images, ahead):
    paths, shapes, batches = images
    assert any(4 in rows for rows in batches)
    _same(_Prefetch(_Images(paths, shapes, None), batches, ahead, pin=False), _serial(paths, shapes, batches))


def test_saliency_maps_travel_with_their_images(images):
    paths, shapes, batches = images
    _same(_Prefetch(_Images(paths, shapes, "spectral"), batches, 2, pin=False),
          _serial(paths, shapes, batches, "spectral"))


@pytest.mark.slow
def test_processes_and_threads_give_the_same_batches(images):
    paths, shapes, batches = images
    cpu = torch.device("cpu")
    _same(batch_loader(paths, shapes, batches, None, 1, cpu), _serial(paths, shapes, batches))
    _same(batch_loader(paths, shapes, batches, None, 0, cpu), _serial(paths, shapes, batches))


def test_a_batch_of_only_unreadable_images(images, tmp_path):
    paths, _, _ = images
    gone = [tmp_path / "none.jpg", paths[4]]
    (batch,) = _Prefetch(_Images(gone, [(32, 32)] * 2, None), [[0, 1]], 2, pin=False)
    assert batch.rows == [] and batch.images is None and batch.maps is None
    assert batch.failed == {0: "file not found", 1: "zero-byte file"}


def _decoders():
    return [t for t in threading.enumerate() if t.name == "bpcr-decode"]


def test_stopping_early_ends_the_helper(images):
    paths, shapes, batches = images
    it = iter(_Prefetch(_Images(paths, shapes, None), batches, 2, pin=False))
    next(it)
    it.close()  # what a consumer's exception or Ctrl-C does to the generator
    assert not _decoders()


def test_an_unexpected_error_reaches_the_consumer(images, monkeypatch):
    paths, shapes, batches = images
    real = loader.decode_view

    def broken(path, shape, jpeg_draft=False, preprocess=loader.PLAIN):
        if path == paths[batches[-1][0]]:
            raise RuntimeError("decoder bug")
        return real(path, shape, jpeg_draft, preprocess)

    monkeypatch.setattr(loader, "decode_view", broken)
    with pytest.raises(RuntimeError, match="decoder bug"):
        list(_Prefetch(_Images(paths, shapes, None), batches, 2, pin=False))
    assert not _decoders()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is missing")
def test_the_gpu_benchmark_refuses_clearly_without_cuda():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "extract_throughput.py"), "--device", "cuda"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no CUDA GPU here" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.slow
def test_the_channels_last_layout_gives_the_nchw_descriptors(images):
    """The stage's layout (channels-last batch and network) changes float rounding only, never the result."""
    from bpcr.features.backbones import load_backbone
    from bpcr.features.extract import PoolingSpec, describe_batch
    from bpcr.features.loader import model_on
    from bpcr.features.pooling import POOLINGS, check_params, l2n

    paths, shapes, _ = images
    rows = [r for r in range(len(paths)) if shapes[r] == (32, 32) and r != 4][:4]
    batch = _Images(paths, shapes, None).batch(rows)
    net = model_on(load_backbone("efficientnet_lite0"), torch.device("cpu"))
    assert next(net.parameters()).is_contiguous(memory_format=torch.channels_last)
    spec = [PoolingSpec("gem", check_params("gem"), None)]
    got = describe_batch(net, batch.images, None, spec, (1.0,), False, torch.device("cpu"), "float32")["gem"]
    plain = net.to(memory_format=torch.contiguous_format)
    fmap = plain(plain.normalise(batch.images.contiguous()))
    want = l2n(POOLINGS["gem"](fmap.float(), **check_params("gem"))).numpy()
    assert got.shape == want.shape == (len(batch.rows), net.dim)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
