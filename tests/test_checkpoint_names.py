"""Published ADN naming (``<norm>_skip``) and torchvision state dicts load into our models."""

import pytest
import torch

import adn
from adn.core.checkpoint import convert_published_state_dict, load_state_dict_compat


def test_published_resnet_names_round_trip():
    model = adn.create_model("resnet20", num_classes=10)
    ours = model.state_dict()
    published = {"module." + k.replace(".skip_norm.", "_skip."): v.clone() for k, v in ours.items()}
    assert "module.layer1.0.bn1_skip.running_var" in published
    assert convert_published_state_dict(published).keys() == ours.keys()
    fresh = adn.create_model("resnet20", num_classes=10)
    load_state_dict_compat(fresh, published)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, ours[k]), k


def test_torchvision_weights_initialise_twins_from_main_norms():
    from torchvision.models import resnet50

    ref = resnet50(num_classes=10)
    with torch.no_grad():
        ref.layer1[0].bn1.weight.uniform_()
    model = adn.create_model("resnet50", num_classes=10)
    load_state_dict_compat(model, ref.state_dict())
    assert torch.equal(model.layer1[0].bn1.skip_norm.weight, ref.layer1[0].bn1.weight)


def test_foreign_state_dict_names_the_keys():
    model = adn.create_model("resnet20", num_classes=10)
    with pytest.raises(ValueError, match=r"unexpected \d+ keys .*shape mismatch.*conv1.weight"):
        load_state_dict_compat(model, adn.create_model("resnet50", num_classes=10).state_dict())
