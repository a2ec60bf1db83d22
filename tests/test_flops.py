"""FLOPs and parameter counts against the published table kept in the model registry."""

import pytest

import adn


def _published_rows():
    for name in adn.list_models():
        info = adn.model_info(name)
        for skip, (gflops, _acc) in info.published.items():
            yield name, skip, gflops


@pytest.mark.parametrize("name, skip, gflops", list(_published_rows()))
def test_flops_match_published_table(name, skip, gflops):
    info = adn.model_info(name)
    model = adn.create_model(name)
    measured = adn.count_flops(model, skip, info.input_size) / 1e9
    assert measured == pytest.approx(gflops, rel=info.flops_tolerance), f"{name} {skip}: {measured:.3f} G vs {gflops} G"


def test_resnet50_table_is_registered():
    assert set(adn.model_info("resnet50").published) == {"FFFF", "TFFF", "TTFF", "TTTT"}


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
