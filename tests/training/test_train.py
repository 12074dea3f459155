"""`bpcr train` (bpcr.training.train, bpcr.training.loop): outputs extract loads, resume after SIGKILL, no query ever seen."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from bpcr.features.backbones import load_backbone
from bpcr.errors import BadInput
from bpcr.features.extract import extract
from bpcr.features.options import ExtractOptions
from bpcr.dataset.manifest import read_manifest, write_manifest
from bpcr.training.pseudolabels import description_vectors, partners, positive_pairs, pseudo_categories
from bpcr.io.store import open_store
from bpcr.training.options import TrainOptions
from bpcr.training.train import train
from bpcr.training.loop import Data, Network, _batch_loss, network_input, _Tuples, embed, trainable_names

pytestmark = [pytest.mark.filterwarnings("ignore:backbone .* has random weights"),
              pytest.mark.slow]  # module fixtures train networks on a generated dataset

TYPES = (("lipstick", "3.5g"), ("shampoo", "250ml"), ("nail polish", "15ml"))
BRANDS = ("Kita", "Sovi", "Lecla", "Paxa")
FAST = dict(backbone="test_resnet", weights="none", size=32, batch_size=4, categories=3, min_category_size=3,
            device="cpu", threads=1, workers=0)


def _draw(kind: int, colour: tuple[int, int, int], size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    w, h = size
    box = (w // 4, h // 6, 3 * w // 4, 5 * h // 6)
    [draw.rectangle, draw.ellipse, lambda b, fill: draw.polygon([(b[0], b[3]), (b[2], b[3]), (w // 2, b[1])],
                                                                    fill=fill)][kind](box, fill=colour)
    return image


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """24 database images (3 types x 4 products x 2 listings) and 3 query photos, prepared side by side."""
    root = tmp_path_factory.mktemp("train")
    for folder in ("db", "q", "prepared"):
        (root / folder).mkdir()
    rng = np.random.default_rng(0)
    ids, paths, sizes, texts = [], [], [], []
    for t, (kind, amount) in enumerate(TYPES):
        for b, brand in enumerate(BRANDS):
            colour = tuple(int(v) for v in rng.integers(0, 200, 3))
            for listing in range(2):
                image_id = f"n{t}{b}{listing}"
                size = (int(rng.integers(36, 56)), int(rng.integers(36, 56)))
                _draw(t, colour, size).save(root / "db" / f"{image_id}.jpg", quality=90)
                ids.append(image_id)
                paths.append(root / "db" / f"{image_id}.jpg")
                sizes.append(size)
                texts.append(f"{brand} {kind} {amount} shade {b}" if listing == 0 else
                             f"{brand.upper()} {kind} ({amount}) - shade {b}")
    write_manifest(root / "prepared" / "database.csv", ids, paths, [s[0] for s in sizes], [s[1] for s in sizes], texts)
    qids = ["v1", "v2", "v3"]
    for k, qid in enumerate(qids):
        _draw(k, (200, 40, 40), (48, 48)).rotate(15, fillcolor=(90, 90, 90)).save(root / "q" / f"{qid}.jpg")
    write_manifest(root / "prepared" / "queries.csv", qids, [root / "q" / f"{q}.jpg" for q in qids], [48] * 3,
                   [48] * 3, [""] * 3)
    return root


@pytest.fixture(scope="module")
def told():
    """What the trained fixture's progress heard: (label, total) per bar, (count, note) per step."""
    return []


@pytest.fixture(scope="module")
def trained(dataset, told):
    @contextmanager
    def progress(label: str, total: int, done: int = 0):
        told.append((label, total))
        yield lambda n=1, note=None: told.append((n, note))

    return train(dataset / "prepared" / "database.csv", dataset / "trained",
                 TrainOptions(epochs=2, val_share=0.25, seed=1, **FAST), progress=progress, log=None)


def test_outputs(trained, dataset):
    out = dataset / "trained"
    assert sorted(p.name for p in out.iterdir()) == ["train.json", "weights.pt"]  # no checkpoint, no temporaries
    state = torch.load(out / "weights.pt", weights_only=True)
    assert list(state) == list(load_backbone("test_resnet", weights="none").model.state_dict())
    summary = json.loads((out / "train.json").read_text())
    assert summary == json.loads(json.dumps(trained.summary))
    assert summary["weights"]["sha256"] == hashlib.sha256((out / "weights.pt").read_bytes()).hexdigest()
    assert summary["options"]["loss"] == "robust-contrastive+softmax" and summary["options"]["trainable"] == "last"
    assert summary["pairs"]["near_identical"] == 12  # each product's two listings
    assert summary["categories"]["count"] == 3 and sum(summary["categories"]["sizes"]) == 24
    assert {w for top in summary["categories"]["top_words"] for w in top} >= {"lipstick", "shampoo", "nail"}
    assert summary["leak_check"]["query_ids"] == 3 and summary["split"]["val_images"] == 6
    epochs = summary["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2] and "train" not in epochs[0]
    # validation: one photo per held-out product group (6 images, 3 products of 2 listings each)
    assert all(e["val"]["queries"] == 3 and e["val"]["images"] == 6 for e in epochs)
    assert epochs[1]["positive_pairs"] == 16
    assert epochs[1]["negative_pairs"] > 16 and 0 <= epochs[1]["hard_negatives_found"] <= 16
    rules = epochs[1]["negative_rules"]  # a random network's descriptors are all alike: the image rule acts
    assert rules["candidates"] == sum(rules[r] for r in ("category", "brand", "image", "text")) + rules["negatives"]
    assert rules["image"] > 0
    figures = [e["val"]["map7"] for e in epochs]
    assert summary["best_epoch"] == figures.index(max(figures)) and summary["best_val_map7"] == max(figures)
    assert summary["seconds"]["training"] > 0


def test_the_progress_bar_hears_the_running_loss(trained, told):
    """Each step reports its 12 images (4 tuples of 3) with the epoch's running loss; the last is the epoch's."""
    starts = [i for i, (label, _) in enumerate(told) if isinstance(label, str)]
    assert [told[i][0].split(" (")[0] for i in starts] == ["train epoch 1/2", "train epoch 2/2"]
    for epoch, (first, end) in enumerate(zip(starts, [*starts[1:], len(told)]), start=1):
        steps = told[first + 1:end]
        assert told[first][1] == 3 * 16 and [n for n, _ in steps] == [12] * 4
        means = [float(note.split()[1]) for _, note in steps]
        assert all(note.startswith("loss ") and "(step " in note for _, note in steps)
        recorded = trained.summary["epochs"][epoch]["train"]["loss"]
        assert means[-1] == pytest.approx(recorded, abs=1e-4)


def test_extract_loads_the_weights(trained, dataset):
    stores = extract(dataset / "prepared" / "database.csv", dataset / "store",
                     ExtractOptions(backbone="test_resnet", poolings=["gem"], weights=trained.weights, size=32,
                                    device="cpu", workers=0, threads=1, dtype="float32"))
    store = open_store(stores["gem"])
    assert store.meta["weights"]["state_sha256"] == trained.summary["weights"]["state_sha256"]
    # The trained descriptor is extract's gem descriptor, computed by the training code.
    network = Network(load_backbone("test_resnet", weights=trained.weights), "gem", 3, 0)
    man = read_manifest(dataset / "prepared" / "database.csv")
    data = Data(man.paths, man.ids, None, None, None, None, None, TrainOptions(size=32, batch_size=4))
    mine = embed(network, data, np.arange(len(man)), torch.device("cpu"), 0)
    assert np.allclose(np.asarray(store.features), mine, atol=1e-5)


def test_steps_lower_the_loss(dataset):
    """Eight SGD steps on one fixed batch of tuples lower its loss."""
    man = read_manifest(dataset / "prepared" / "database.csv")
    x, terms = description_vectors(man.descriptions)
    labels = pseudo_categories(x, terms, 3, 3).labels
    options = TrainOptions(margin=1.0, negative_tau=0.5, pair_tau=0.9, temperature=2.0)
    data = Data(man.paths, man.ids, x, labels, partners(24, positive_pairs(x)), np.arange(24), np.arange(0), options)
    torch.manual_seed(0)
    network = Network(load_backbone("test_resnet", weights="none"), "gem", 3, 0)
    tuples = np.array([[0, 1, 8], [8, 9, 16], [16, 17, 0], [2, 3, 10], [10, 11, 18], [18, 19, 2]])
    views = torch.stack([_Tuples(man.paths, tuples, np.zeros(6, int), 32, 0, 1)[t] for t in range(6)])
    x_in = network_input(network, views.transpose(0, 1).reshape(-1, 3, 32, 32), torch.device("cpu"))
    opt = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=0.001, momentum=0.9)
    losses = []
    for _ in range(8):
        emb, logits, _ = network(x_in)
        parts, n_pos, n_neg = _batch_loss(emb, logits, tuples, data, "robust-contrastive", True, None)
        total = parts["pair"] + parts["softmax"]
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(total.detach()))
    assert (n_pos, n_neg) == (6, 6 + 6 * 4)  # 1 : 1 : 4
    assert losses[-1] < 0.8 * losses[0]


def test_trainable_stages():
    import timm

    resnet = timm.create_model("test_resnet")
    last = trainable_names(resnet, "last")
    assert last and all(n.startswith("layer4.") for n in last)
    everything = trainable_names(resnet, "all")
    assert everything == {n for n, _ in resnet.named_parameters() if not n.startswith("fc.")}
    assert trainable_names(resnet, 2) == last | {n for n in everything if n.startswith("layer3.")}
    lite0 = timm.create_model("tf_efficientnet_lite0")
    assert {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")
            for n in trainable_names(lite0, "last")} == {"blocks.5", "blocks.6", "conv_head", "bn2"}


def _kill_after_first_epoch(db, out, options):
    script = (
        "import os, signal\n"
        "from bpcr.training.options import TrainOptions\n"
        "from bpcr.training.train import train\n"
        "def hook(epoch):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"train({str(db)!r}, {str(out)!r}, TrainOptions(**{options!r}), on_epoch=hook, log=None)\n"
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)


def test_resume_after_sigkill_gives_the_same_weights(dataset):
    db = dataset / "prepared" / "database.csv"
    options = {**FAST, "epochs": 2, "val_share": 0.0, "seed": 2, "loss": "contrastive+softmax"}
    whole = train(db, dataset / "whole", TrainOptions(**options), log=None)
    proc = _kill_after_first_epoch(db, dataset / "killed", options)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert sorted(p.name for p in (dataset / "killed").iterdir()) == ["checkpoint.pt"]
    with pytest.raises(BadInput, match=r"unfinished training with other settings \(lr\)"):
        train(db, dataset / "killed", TrainOptions(**{**options, "lr": 0.5}), log=None)
    resumed = train(db, dataset / "killed", TrainOptions(**options), log=None)
    a = torch.load(whole.weights, weights_only=True)
    b = torch.load(resumed.weights, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = load_backbone("test_resnet", weights="none", seed=2).model.state_dict()
    assert not torch.equal(a["layer4.0.conv1.weight"], start["layer4.0.conv1.weight"])  # it did train
    assert torch.equal(a["conv1.0.weight"], start["conv1.0.weight"])  # ... the last stage only
    losses = [[e["train"]["loss"] for e in run.summary["epochs"]] for run in (whole, resumed)]
    assert losses[0] == losses[1]


def test_a_query_never_reaches_training(dataset, tmp_path):
    man = read_manifest(dataset / "prepared" / "database.csv")
    queries = read_manifest(dataset / "prepared" / "queries.csv")
    leaky = dataset / "prepared" / "leaky.csv"
    write_manifest(leaky, man.ids[:20] + ["v2"], man.paths[:20] + [queries.paths[1]], man.widths[:20] + [48],
                   man.heights[:20] + [48], man.descriptions[:20] + [""])
    with pytest.raises(BadInput, match=r"shares 1 ID\(s\) with the query manifest"):
        train(leaky, tmp_path / "out", TrainOptions(**FAST), log=None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, message", [
    ({"loss": "triplet"}, "unknown loss"), ({"pooling": "rmac"}, "unknown pooling 'rmac'; choose from gem, mac"),
    ({"trainable": "first"}, "--trainable"), ({"batch_size": 1}, "--batch-size"), ({"margin": 3.0}, "--margin"),
    ({"optimizer": "adam"}, "unknown optimizer"), ({"val_share": 1.0}, "--val-share"),
    ({"images_per_epoch": 2}, "must hold at least one batch"),
])
def test_bad_options_are_one_line(dataset, tmp_path, option, message):
    with pytest.raises(BadInput, match=message) as err:
        train(dataset / "prepared" / "database.csv", tmp_path / "out", TrainOptions(**{**FAST, **option}), log=None)
    assert "\n" not in str(err.value)


def test_cli_train_writes_weights_that_extract_loads(dataset, cli):
    out = dataset / "cli-trained"
    result = cli("train", dataset / "prepared" / "database.csv", "--out", out, "--backbone", "test_resnet",
                 "--weights", "none", "--epochs", "1", "--size", "32", "--batch-size", "4", "--categories", "3",
                 "--min-category-size", "3", "--device", "cpu")
    assert result.code == 0, result.err
    assert f"wrote {out / 'weights.pt'}" in result.out
    state = torch.load(out / "weights.pt", weights_only=True)
    assert list(state) == list(load_backbone("test_resnet", weights="none").model.state_dict())
    bad = cli("train", dataset / "prepared" / "database.csv", "--out", dataset / "cli-bad", "--epochs", "0")
    assert bad.code == 2 and "--epochs" in bad.err and len(bad.err.strip().splitlines()) == 1


def test_repeated_rows_give_the_same_gradient_bits_on_two_threads():
    """The pair loss gathers rows that repeat; their gradient must not depend on thread timing."""
    from bpcr.training.loop import _rows

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(48, 1280, generator=gen)
        index = torch.randint(0, 48, (4000,), generator=gen).tolist()
        weights = torch.randn(4000, 1280, generator=gen)
        assert torch.equal(_rows(x, index), x[index])
        digests = set()
        for _ in range(10):
            leaf = x.clone().requires_grad_(True)
            (_rows(leaf, index) * weights).sum().backward()
            digests.add(hashlib.sha256(leaf.grad.numpy().tobytes()).hexdigest())
        assert len(digests) == 1  # x[index]'s backward gave 10 different results in 10 runs here
    finally:
        torch.set_num_threads(saved)


def test_two_fresh_runs_on_two_threads_give_the_same_weights(dataset, tmp_path):
    db = dataset / "prepared" / "database.csv"
    options = {**FAST, "backbone": "efficientnet_lite0", "weights": None, "size": 64, "batch_size": 8,
               "threads": 2, "epochs": 1, "val_share": 0.0, "images_per_epoch": 16, "pool_size": 24}
    runs = [train(db, tmp_path / f"run{k}", TrainOptions(**options), log=None) for k in range(2)]
    a, b = (torch.load(r.weights, weights_only=True) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _checkpoint_without(key):
    def damage(ckpt):
        ckpt.pop(key)
    return damage


def _network_key_missing(ckpt):
    ckpt["network"].pop(next(iter(ckpt["network"])))


def _network_of_another_shape(ckpt):
    name = next(k for k, v in ckpt["network"].items() if v.ndim == 4)
    ckpt["network"][name] = torch.zeros(1, 1, 1, 1)


CHECKPOINT_DAMAGE = {
    "no-options": (_checkpoint_without("options"), "lacks options"),
    "no-network": (_checkpoint_without("network"), "lacks network"),
    "network-key-missing": (_network_key_missing, "holds another network"),
    "network-of-another-shape": (_network_of_another_shape, "holds another network"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_DAMAGE))
def test_a_damaged_checkpoint_warns_in_one_line_and_trains_afresh(dataset, tmp_path, case):
    db = dataset / "prepared" / "database.csv"
    options = TrainOptions(**{**FAST, "epochs": 2, "val_share": 0.0, "seed": 3})
    proc = _kill_after_first_epoch(db, tmp_path / "out", dict(dataclasses.asdict(options)))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ckpt = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    damage, reason = CHECKPOINT_DAMAGE[case]
    damage(ckpt)
    torch.save(ckpt, tmp_path / "out" / "checkpoint.pt")
    heard = []
    damaged = train(db, tmp_path / "out", options, log=heard.append)
    warnings = [line for line in heard if line.startswith("warning:")]
    assert len(warnings) == 1 and reason in warnings[0] and "afresh" in warnings[0], heard
    clean = train(db, tmp_path / "clean", options, log=None)
    a = torch.load(damaged.weights, weights_only=True)
    b = torch.load(clean.weights, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_cached_trunk_gives_the_full_networks_loss_and_gradients():
    """One batch through head(trunk(x)) with the trunk's output taken as data: the same descriptors, loss and
    gradients of every trained tensor as the full network, to 1e-5."""
    from bpcr.training.losses import category_softmax, robust_contrastive
    from bpcr.training.trunk import split

    net = load_backbone("test_efficientnet", "none", seed=0)
    network = Network(net, "gem", 3, 0)
    names = trainable_names(net.model, "last")
    for name, param in net.model.named_parameters():
        param.requires_grad_(name in names)
    parts = split(net.model, names)
    assert parts is not None and parts.boundary == "blocks.4" and all(n.startswith(("blocks.4.", "conv_head.", "bn2."))
                                                                        for n in names)
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = network_input(network, images, torch.device("cpu"))
    y, labels = torch.tensor([1.0] * 4 + [0.0] * 4), torch.tensor([0, 1, 2] * 4)
    params = [p for p in network.parameters() if p.requires_grad]

    def loss_of(emb, logits):
        q, c = emb[:4], emb[4:]
        return robust_contrastive(torch.cat([q, q]), c, y, 1.0) + 0.1 * category_softmax(logits, labels)

    emb, logits, _ = network(x)
    full = loss_of(emb, logits)
    full_grads = torch.autograd.grad(full, params)
    with torch.no_grad():
        maps = parts.trunk(x)
    emb_c, logits_c, _ = network.from_trunk(maps, parts.head, 32)
    cached = loss_of(emb_c, logits_c)
    cached_grads = torch.autograd.grad(cached, params)
    assert torch.allclose(emb_c, emb, atol=1e-5) and abs(float(cached.detach()) - float(full.detach())) < 1e-5
    assert len(full_grads) == len(names) + 1  # the backbone's trained tensors and the classifier
    for a, b in zip(cached_grads, full_grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert max(float(g.abs().max()) for g in full_grads) > 1e-4  # gradients that could have differed


CACHED = dict(FAST, backbone="test_efficientnet", trunk_cache="on", views=2)


def test_training_on_the_cached_trunk_is_kept_and_shared_across_losses(dataset, tmp_path):
    db = dataset / "prepared" / "database.csv"
    said: list[str] = []
    first = train(db, tmp_path / "rc", TrainOptions(epochs=1, val_share=0.25, **CACHED), log=said.append,
                  cache_dir=tmp_path / "cache")
    assert first.summary["options"]["trunk_cache"] == "on" and first.summary["options"]["views"] == 2
    folders = [f for f in (tmp_path / "cache").iterdir() if not f.name.startswith(".")]
    assert len(folders) == 1 and (folders[0] / "trunk.npy").is_file()
    maps = np.load(folders[0] / "trunk.npy", mmap_mode="r")
    assert maps.shape[:2] == (24, 3)  # every image: its clean view and 2 photos (a validation image: 1)
    assert not any("read from" in line for line in said)
    said.clear()
    second = train(db, tmp_path / "c", TrainOptions(epochs=1, val_share=0.25, loss="contrastive", **CACHED),
                   log=said.append, cache_dir=tmp_path / "cache")
    assert any("trunk outputs read from" in line for line in said)
    assert second.summary["epochs"][-1]["train"]["loss"] != first.summary["epochs"][-1]["train"]["loss"]
    off = train(db, tmp_path / "off", TrainOptions(epochs=1, val_share=0.25, **{**CACHED, "trunk_cache": "off"}),
                log=None, cache_dir=tmp_path / "cache2")
    assert off.summary["options"]["trunk_cache"] == "off" and not (tmp_path / "cache2").exists()


def test_trunk_cache_on_is_refused_where_the_network_does_not_split(dataset, tmp_path):
    with pytest.raises(BadInput, match="not a plain chain"):
        train(dataset / "prepared" / "database.csv", tmp_path / "out",
              TrainOptions(**{**FAST, "trunk_cache": "on"}), log=None)


def test_early_stopping_returns_the_start_when_training_diverges(dataset, tmp_path):
    """A learning rate of 1e30 sends the weights to infinity in the first steps: the validation retrieves nothing,
    training stops after ``patience`` epochs, and weights.pt holds the starting weights (epoch 0)."""
    db = dataset / "prepared" / "database.csv"
    options = TrainOptions(epochs=4, patience=1, val_share=0.25, lr=1e30, **CACHED)
    result = train(db, tmp_path / "out", options, log=None, cache_dir=tmp_path / "cache")
    history = result.summary["epochs"]
    assert history[0]["val"]["map7"] > 0 and history[1]["val"].get("diverged")
    assert result.summary["best_epoch"] == 0 and result.summary["stopped_early"] and result.summary["epochs_run"] == 1
    start = load_backbone("test_efficientnet", "none", seed=0).model.state_dict()
    saved = torch.load(tmp_path / "out" / "weights.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in start.items() if k in saved)


def test_validation_is_one_photo_per_product_group(dataset):
    from bpcr.training.validation import validation_groups

    man = read_manifest(dataset / "prepared" / "database.csv")
    x, _ = description_vectors(man.descriptions)
    pairs = positive_pairs(x, 0.9)
    data = Data(man.paths, man.ids, x, None, partners(len(man), pairs), None, None, TrainOptions(**FAST))
    rows = np.arange(len(man))
    groups = validation_groups(data, rows)
    # The two listings of a product ("Kita lipstick 3.5g shade 0" and "KITA lipstick (3.5g) - shade 0") are one group.
    assert sorted(map(len, groups)) == [2] * 12
    assert all(man.ids[g[0]][:3] == man.ids[g[1]][:3] for g in groups)


def test_choose_trains_every_point_and_keeps_the_best_on_validation(dataset, tmp_path):
    db = dataset / "prepared" / "database.csv"
    options = TrainOptions(epochs=1, val_share=0.25, choose={"margin": [0.5, 1.0], "lr": [0.001, 0.05]}, **CACHED)
    result = train(db, tmp_path / "out", options, log=None, cache_dir=tmp_path / "cache")
    grid = result.summary["grid"]
    assert [p["point"] for p in grid["points"]] == [{"margin": 0.5, "lr": 0.001}, {"margin": 0.5, "lr": 0.05},
                                                    {"margin": 1.0, "lr": 0.001}, {"margin": 1.0, "lr": 0.05}]
    figures = [p["best_val_map7"] for p in grid["points"]]
    best = figures.index(max(figures))  # the first of the best
    assert grid["chosen"] == grid["points"][best]["point"] and "never queries" in grid["chosen_on"]
    winner = tmp_path / "out-grid" / str(best)
    assert (tmp_path / "out" / "weights.pt").read_bytes() == (winner / "weights.pt").read_bytes()
    assert result.summary["options"]["choose"] == {"margin": [0.5, 1.0], "lr": [0.001, 0.05]}
    assert json.loads((tmp_path / "out" / "train.json").read_text())["grid"]["chosen"] == grid["chosen"]


@pytest.mark.parametrize("choose,message", [({"seed": [0, 1]}, "cannot be chosen"), ({"margin": []}, "non-empty"),
                                            ({"margin": [0.5, 3.0]}, "margin")])
def test_a_bad_grid_is_refused_before_any_work(dataset, tmp_path, choose, message):
    with pytest.raises(BadInput, match=message):
        train(dataset / "prepared" / "database.csv", tmp_path / "out", TrainOptions(choose=choose, **CACHED), log=None)
    assert not (tmp_path / "out").exists()
