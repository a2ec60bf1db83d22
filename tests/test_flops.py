"""FLOPs and parameter counts against the published table kept in the model registry."""

import functools

import pytest
import torch

import adn


@functools.cache
def _full_size(name):
    """Each registered model built once, on the meta device: shapes only, so ViT-B/16 counts in a blink."""
    with torch.device("meta"):
        return adn.create_model(name)


def _published_rows():
    for name in adn.list_models():
        info = adn.model_info(name)
        for skip, (gflops, _acc) in info.published.items():
            yield name, skip, gflops


@pytest.mark.parametrize("name, skip, gflops", list(_published_rows()))
def test_flops_match_published_table(name, skip, gflops):
    info = adn.model_info(name)
    measured = adn.count_flops(_full_size(name), skip, info.input_size) / 1e9
    assert measured == pytest.approx(gflops, rel=info.flops_tolerance), f"{name} {skip}: {measured:.3f} G vs {gflops} G"


def test_every_imagenet_architecture_has_its_published_extremes():
    for name in ("resnet50", "mobilenet_v2", "swin_t", "vit_b_16"):
        model = _full_size(name)
        published = adn.model_info(name).published
        assert {"F" * model.num_stages, "T" * model.num_stages} <= set(published), name
        assert all(acc is not None and 60 < acc < 90 for _, acc in published.values()), name


def test_meta_device_count_equals_real_count():
    model = adn.create_model("vit_cifar")
    assert adn.count_flops(model, "TFTF") == adn.count_flops(_full_size("vit_cifar"), "TFTF")


@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_skipping_is_cheaper(name):
    model = adn.create_model(name, num_classes=10)
    size = adn.model_info(name).input_size
    flops = {adn.format_skip(s): adn.count_flops(model, s, size) for s in adn.subnets(model)}
    params = {adn.format_skip(s): adn.count_params(model, s) for s in adn.subnets(model)}
    n = model.num_stages
    assert flops["T" * n] < 0.7 * flops["F" * n]
    assert params["T" * n] < params["F" * n]
    # skipping one more stage never adds compute
    for skip in adn.subnets(model):
        for i, s in enumerate(skip):
            if not s:
                more = adn.format_skip(skip[:i] + (True,) + skip[i + 1 :])
                assert flops[more] < flops[adn.format_skip(skip)]


def test_count_params_excludes_unused_norm_set():
    model = adn.create_model("resnet20", num_classes=10)
    total = sum(p.numel() for p in model.parameters())
    twins = sum(p.numel() for n, p in model.named_parameters() if ".skip_norm." in n)
    assert adn.count_params(model, "FFF") == total - twins


def test_own_counts_are_not_labelled_published(capsys):
    # a model without a published table holds our own counts: `adn models` must not call them published
    from adn.cli import main as cli_main

    ours = {n for n in adn.list_models() if adn.model_info(n).published_by == "adn"}
    assert {"resnet101", "resnet50vd", "swin_v2_t", "vit_b_32", "convnext_tiny"} <= ours
    assert all(acc is None for n in ours for _, acc in adn.model_info(n).published.values())
    assert cli_main(["models", "--model", "resnet101"]) == 0
    out = capsys.readouterr().out
    assert "published" not in out.splitlines()[2] and "reference GFLOPs (adn)" in out
    assert cli_main(["models", "--model", "resnet50"]) == 0
    assert "published GFLOPs  published Acc@1" in capsys.readouterr().out
