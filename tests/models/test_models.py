"""The registry and the classifier contract, for every model we register."""

from __future__ import annotations

import pytest
import torch

from inspectnet.errors import ModelError
from inspectnet.models import create_model, list_models


def test_seed_cnn_is_the_course_cnn() -> None:
    net = create_model("seed-cnn", 2, pretrained=False, img_size=180)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert net.backbone.fc1.in_features == 64 * 22 * 22 and net.backbone.fc1.out_features == 128
    assert net.backbone.dropout.p == 0.2
    # Keras counts for the same model at 180 px: 3,988,898 parameters.
    assert sum(p.numel() for p in net.parameters()) == 3_988_898


@pytest.mark.parametrize("name,size", [("seed-cnn", 64), ("efficientnet_lite0", 64)])
def test_contract(name: str, size: int) -> None:
    torch.manual_seed(0)
    net = create_model(name, 3, pretrained=False, img_size=size)
    x = torch.rand(2, 3, size, size)
    feats = net.forward_features(x)
    assert feats.ndim == 4 and feats.shape[1] == net.num_features
    logits = net.forward_head(feats)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    assert net.pooled_features(x).shape[0] == 2
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    net.reset_classifier(5)
    assert net(x).shape == (2, 5)


def test_lite0_shipped_weights_know_a_cat() -> None:
    skimage = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skimage.chelsea()).permute(2, 0, 1).float()[None] / 255
    x = torch.nn.functional.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
    net = create_model("efficientnet_lite0", 1000, pretrained=True).eval()
    with torch.no_grad():
        top = net(x).softmax(1).topk(3).indices[0].tolist()
    # ImageNet 281-285 are the domestic cats (285 = Egyptian cat).
    assert top[0] in range(281, 286)


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ModelError) as e:
        create_model("efficientnet_lite9x", 2)
    assert "seed-cnn" in str(e.value) and "efficientnet_lite0" in str(e.value)
    assert "efficientnet_lite*" not in list_models()
    assert {"seed-cnn", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= set(list_models())


def test_lecture_alias_resolves_to_timm_random_init_offline() -> None:
    net = create_model("resnet50", 2, pretrained=False)
    assert type(net.backbone).__name__ == "ResNet"


@pytest.mark.parametrize("name, frozen, trained", [
    ("efficientnet_lite0", ("conv_stem", "blocks.0", "blocks.1"), ("blocks.2", "blocks.6", "conv_head", "classifier")),
    ("resnet18", ("conv1", "layer1"), ("layer2", "layer4", "fc")),
])
def test_finetune_keeps_the_stem_and_early_stages_frozen_by_default(name, frozen, trained):
    from inspectnet.train.blocks import auto_unfreeze, unfreeze_top

    net = create_model(name, 2, pretrained=False)
    for p in net.parameters():
        p.requires_grad_(False)
    unfreeze_top(net, auto_unfreeze(net))
    grads = {n: p.requires_grad for n, p in net.backbone.named_parameters()}
    for prefix in frozen:
        assert not any(v for n, v in grads.items() if n.startswith(prefix + ".")), prefix
    for prefix in trained:
        assert all(v for n, v in grads.items() if n.startswith(prefix + ".")), prefix
    assert auto_unfreeze(create_model("seed-cnn", 2, pretrained=False, img_size=64)) == -1  # no stages: all


def test_catavgmax_pool_sees_a_small_spot_that_averaging_dilutes_and_round_trips(tmp_path) -> None:
    from inspectnet.bundle import ModelCard, load_model, save_bundle

    net = create_model("efficientnet_lite0", 2, pretrained=False, pool="catavgmax").eval()
    clf = net.get_classifier()
    assert clf.in_features == 2 * net.num_features
    fmap = torch.zeros(1, net.num_features, 8, 8)
    fmap[0, 0, 3, 3] = 64.0  # one hot cell: its average is 1, its max 64
    with torch.no_grad():
        pooled = net.forward_head(fmap, pre_logits=True)
    assert pooled[0, 0].item() == pytest.approx(1.0) and pooled[0, net.num_features].item() == pytest.approx(64.0)
    net.reset_classifier(3)  # a new head keeps the pooling (timm's default argument would not)
    assert net.get_classifier().in_features == 2 * net.num_features
    net.reset_classifier(2)
    card = ModelCard(architecture="efficientnet_lite0", classes=["damaged", "intact"], positive_class="damaged",
                     img_size=64, mean=[0.5] * 3, std=[0.5] * 3, pool="catavgmax")
    save_bundle(tmp_path, net, card)
    back = load_model(tmp_path)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(back.network(x), net(x))


def test_pool_on_a_model_without_pooling_names_the_fix() -> None:
    # A vision transformer pools its own tokens: there is no pooling layer to swap.
    with pytest.raises(ModelError, match="--pool avg"):
        create_model("vit_tiny_patch16_224", 2, pretrained=False, pool="catavgmax")
    with pytest.raises(ModelError, match="--pool catavgmax"):
        create_model("seed-cnn", 2, pool="catavgmax-mid")


def test_pooled_seed_cnn_sees_a_defect_anywhere_and_exports(tmp_path) -> None:
    from inspectnet.bundle import ModelCard, load_model, save_bundle
    from inspectnet.export import export_onnx
    from inspectnet.predict import OnnxPredictor

    torch.manual_seed(0)
    flat = create_model("seed-cnn", 2, pretrained=False, img_size=128).eval()
    pooled = create_model("seed-cnn", 2, pretrained=False, img_size=128, pool="catavgmax").eval()
    pooled.backbone.features.load_state_dict(flat.backbone.features.state_dict())
    # Same convolutions; Flatten's 1M-weight Dense(128) becomes a 16k one on 2 x 64 pooled channels.
    assert pooled.backbone.fc1.in_features == 128 and flat.backbone.fc1.in_features == 64 * 16 * 16
    assert sum(p.numel() for p in pooled.parameters()) == 23_584 + 16_512 + 258  # convs, Dense(128), output
    # A chip moved by 32 px on an even tray: what the pooled head sees is the same, while
    # Flatten's input moves to other weights.
    a, b = torch.full((1, 3, 128, 128), 0.4), torch.full((1, 3, 128, 128), 0.4)
    a[..., 40:46, 40:46] = 1.0
    b[..., 72:78, 40:46] = 1.0
    with torch.no_grad():
        assert torch.allclose(pooled.pooled_features(a), pooled.pooled_features(b), atol=1e-5)
        fa, fb = flat.forward_features(a).flatten(1), flat.forward_features(b).flatten(1)
        assert not torch.allclose(fa, fb, atol=1e-3)
    card = ModelCard(architecture="seed-cnn", classes=["damaged", "intact"], positive_class="damaged",
                     img_size=128, mean=[0.5] * 3, std=[0.5] * 3, pool="catavgmax")
    save_bundle(tmp_path, pooled, card)
    back = load_model(tmp_path).network
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(back(x), pooled(x))
    export_onnx(tmp_path)
    logits = OnnxPredictor(tmp_path).logits(x.numpy())
    assert torch.allclose(torch.from_numpy(logits), pooled(x).detach(), atol=1e-4)


def test_mid_pool_adds_the_block_before_the_head_and_exports(tmp_path) -> None:
    from inspectnet.bundle import ModelCard, load_model, save_bundle
    from inspectnet.export import export_onnx
    from inspectnet.predict import OnnxPredictor

    net = create_model("efficientnet_lite0", 2, pretrained=False, pool="catavgmax-mid").eval()
    last = net.backbone.num_features
    assert net.num_features == last + net.tap_channels and net.tap_channels > 0
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        fmap = net.forward_features(x)
        final = net.backbone.forward_features(net.normalize(x))
    assert fmap.shape[1] == net.num_features
    assert torch.allclose(fmap[:, :last], final, atol=1e-5)  # the last map is unchanged, the tap comes after
    assert net.get_classifier().in_features == 2 * net.num_features
    net.reset_classifier(2)
    assert net.get_classifier().in_features == 2 * net.num_features
    card = ModelCard(architecture="efficientnet_lite0", classes=["damaged", "intact"], positive_class="damaged",
                     img_size=64, mean=[0.5] * 3, std=[0.5] * 3, pool="catavgmax-mid")
    save_bundle(tmp_path, net, card)
    back = load_model(tmp_path).network
    with torch.no_grad():
        assert torch.equal(back(x), net(x))
    export_onnx(tmp_path)  # checks ONNX Runtime against torch itself
    logits = OnnxPredictor(tmp_path).logits(x.numpy())
    assert torch.allclose(torch.from_numpy(logits), net(x).detach(), atol=1e-4)


def test_mid_pool_needs_a_block_list() -> None:
    with pytest.raises(ModelError, match="--pool catavgmax"):
        create_model("resnet18", 2, pretrained=False, pool="catavgmax-mid")


@pytest.mark.parametrize("pool", ["catavgmax", "catavgmax-mid"])
def test_avg_columns_of_a_richer_pool_are_the_average_head_features(pool) -> None:
    # finetune fits its average-pooled head on these columns of the features approach's
    # extraction; if timm ever orders the pools differently, this says so.
    avg = create_model("efficientnet_lite0", 2, pretrained=False, pool="avg").eval()
    rich = create_model("efficientnet_lite0", 2, pretrained=False, pool=pool).eval()
    rich.backbone.load_state_dict({k: v for k, v in avg.backbone.state_dict().items()
                                   if not k.startswith("classifier")}, strict=False)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want = avg.pooled_features(x)
        got = rich.pooled_features(x)[:, rich.avg_columns()]
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)
