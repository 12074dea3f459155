"""Backbones: bundled offline weights, weight files, hub refusal offline, ViT tokens on a grid."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bpcr.features.backbones import (BACKBONES, BUNDLED_WEIGHTS, load_backbone, map_in_order, resolve_name,
                            tokens_to_grid)
from bpcr.errors import BadInput

GRACE_HOPPER = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
MILITARY_UNIFORM = 652  # ImageNet class index


@pytest.fixture(scope="module")
def lite0():
    torch.set_num_threads(2)
    return load_backbone("efficientnet_lite0")


@pytest.mark.slow
def test_bundled_lite0_classifies_a_real_photo(lite0):
    # Mapped wrongly (order, naming), the net would still run but answer noise.
    from PIL import Image

    image = Image.open(GRACE_HOPPER).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = lite0.normalise(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None])
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0  # the packages' [-1, 1] input range
    with torch.inference_mode():
        probs = lite0.model(x).softmax(-1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM
    assert float(probs[MILITARY_UNIFORM]) > 0.3
    # trained BatchNorm statistics, not the (0, 1) of a fresh layer
    bn = lite0.model.bn1
    assert float(bn.running_var.min()) >= 0 and not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))


@pytest.mark.slow
def test_bundled_weights_are_recorded_and_deterministic(lite0):
    again = load_backbone("tf_efficientnet_lite0")
    assert again.weights == lite0.weights
    assert lite0.weights.source == "bundled"
    assert lite0.weights.file.endswith("efficientnet-lite0-57934424.pth")
    assert lite0.weights.sha256.startswith("57934424")  # the file name carries its hash prefix
    assert (lite0.dim, lite0.stride, lite0.mean, lite0.std) == (1280, 32, (0.5,) * 3, (0.5,) * 3)
    x = lite0.normalise(torch.full((1, 3, 64, 64), 128, dtype=torch.uint8))
    assert torch.equal(lite0(x), again(x))
    assert lite0(x).shape == (1, 1280, 2, 2)


def test_bundled_table_covers_lite0_to_lite2():
    assert sorted(BUNDLED_WEIGHTS) == ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
    assert [BACKBONES[f"efficientnet_lite{i}"] for i in range(3)] == sorted(BUNDLED_WEIGHTS)


def test_middle_layer(lite0):
    mid = load_backbone("efficientnet_lite0", layer=3)
    x = mid.normalise(torch.zeros((1, 3, 64, 64), dtype=torch.uint8))
    assert (mid.dim, mid.stride, tuple(mid(x).shape)) == (112, 16, (1, 112, 4, 4))  # stages: 16, 24, 40, 112, 320 channels
    with pytest.raises(BadInput, match="feature layers 0..4"):
        load_backbone("efficientnet_lite0", layer=5)


def test_map_in_order_names_the_first_bad_tensor():
    target = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2), "b.weight": torch.zeros(4)}
    good = {"x": torch.ones(2, 3), "y": torch.ones(2), "z": torch.ones(4)}
    mapped = map_in_order(good, target)
    assert list(mapped) == list(target) and torch.equal(mapped["b.weight"], torch.ones(4))
    bad = {"x": torch.ones(2, 3), "y": torch.ones(3), "z": torch.ones(5)}
    with pytest.raises(BadInput, match=r"tensor 'y' has shape \(3,\) but 'a.bias' needs \(2,\)"):
        map_in_order(bad, target, "w.pth")
    with pytest.raises(BadInput, match="2 tensors, the model expects 3"):
        map_in_order({"x": torch.ones(2, 3), "y": torch.ones(2)}, target)


def test_weights_file_round_trip_and_mismatch(tmp_path):
    made = load_backbone("test_resnet", weights="none", seed=3)
    path = tmp_path / "resnet.pth"
    torch.save(made.model.state_dict(), path)
    loaded = load_backbone("test_resnet", weights=path)
    assert loaded.weights.source == "file" and loaded.weights.state_sha256 == made.weights.state_sha256
    assert load_backbone("test_resnet", weights="none", seed=4).weights.state_sha256 != made.weights.state_sha256

    state = made.model.state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(BadInput, match=r"bad.pth: key 'layer1.0.conv1.weight' has shape \(1, 1, 1, 1\)"):
        load_backbone("test_resnet", weights=tmp_path / "bad.pth")

    # a checkpoint fine-tuned for 5 classes still loads: the classifier is never used
    state = made.model.state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(5, state["fc.weight"].shape[1]), torch.zeros(5)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ft.pth")
    assert load_backbone("test_resnet", weights=tmp_path / "ft.pth").weights.state_sha256 != ""

    del state["layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(BadInput, match="missing key 'layer1.0.conv1.weight'"):
        load_backbone("test_resnet", weights=tmp_path / "missing.pth")


def test_weights_file_refuses_pickled_objects_and_junk(tmp_path):
    torch.save({"w": np.arange(3)}, tmp_path / "np.pth")  # needs the unpickler: refused
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    for name in ("np.pth", "junk.pth"):
        with pytest.raises(BadInput, match="not a loadable weights file"):
            load_backbone("test_resnet", weights=tmp_path / name)
    with pytest.raises(BadInput, match="weights file not found"):
        load_backbone("test_resnet", weights=tmp_path / "absent.pth")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04"], ids=["empty", "zip-magic-only"])
def test_an_empty_or_torn_weights_file_is_one_line(tmp_path, content, cli):
    (tmp_path / "w.pt").write_bytes(content)
    with pytest.raises(BadInput, match="not a loadable weights file") as info:
        load_backbone("test_resnet", weights=tmp_path / "w.pt")
    assert "\n" not in str(info.value)


def test_hub_offline_is_one_clear_error(monkeypatch):
    import timm
    from huggingface_hub.errors import LocalEntryNotFoundError

    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub\nmore")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(BadInput, match=r"cannot download hub weights for resnet50 \(offline\?\)") as info:
        load_backbone("resnet50", weights="hub")
    assert "\n" not in str(info.value)


def test_names_and_missing_weights():
    assert resolve_name("senet154") == "legacy_senet154"
    assert resolve_name("vit_base_patch16_clip_224.openai") == "vit_base_patch16_clip_224.openai"
    with pytest.raises(BadInput, match="unknown backbone 'resnet_nope'; choose from clip_vitb16, densenet201"):
        resolve_name("resnet_nope")
    with pytest.raises(BadInput, match="no bundled offline weights"):
        load_backbone("resnet50")


def test_tokens_to_grid_by_hand():
    # 1 class token then a 2 x 3 grid of 2-d tokens; token t holds (10 t, 10 t + 1)
    tokens = torch.tensor([[[10.0 * t, 10.0 * t + 1] for t in range(7)]])
    grid = tokens_to_grid(tokens, 1, (2, 3))
    assert grid.shape == (1, 2, 2, 3)
    assert grid[0, 0].tolist() == [[10, 20, 30], [40, 50, 60]]
    assert grid[0, 1].tolist() == [[11, 21, 31], [41, 51, 61]]
    with pytest.raises(ValueError):
        tokens_to_grid(tokens, 2, (2, 3))


@pytest.mark.slow
def test_vit_patch_tokens_feed_the_poolings():
    vit = load_backbone("test_vit", weights="none")
    assert vit.is_transformer and vit.stride == 16
    x = vit.normalise(torch.randint(0, 255, (2, 3, 64, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    fmap = vit(x)
    assert fmap.shape == (2, vit.dim, 4, 6)
    with torch.inference_mode():
        tokens = vit.model.forward_features(x)
    assert tokens.shape[1] == 1 + 4 * 6
    assert torch.equal(fmap[:, :, 1, 2], tokens[:, 1 + 1 * 6 + 2, :])  # row 1, column 2
