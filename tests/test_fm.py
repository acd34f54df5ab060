"""The FM interaction term (``TANDEM_INTERACTION=fm``, networks/fm.py): the batched pooling is the
sum over pairs of Rendle's paper, off it changes nothing, on it adds user · item to every task's
logit and travels with the saved model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtl_model.config import SettingsError, load_settings
from mtl_model.learn.networks.fm import FMTerm, pairwise_by_definition, pairwise_pooling
from mtl_model.learn.registry import CONFIG_FILE, load_version
from mtl_model.learn.train import train
from tests.test_dropout import ARCHITECTURES, CARDINALITIES, TASKS, _model
from tests.test_dropout import _inputs as dropout_inputs
from tests.test_train_score import DS, make_samples, quick, write_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def _inputs(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return dropout_inputs(n, seed)[:2]


@pytest.mark.parametrize("k", [1, 2, 5])
def test_pooling_is_the_sum_over_pairs(k: int) -> None:
    fields = torch.randn(7, k, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    torch.testing.assert_close(pairwise_pooling(fields), pairwise_by_definition(fields))
    if k == 1:  # one field: no pair
        assert torch.equal(pairwise_by_definition(fields), torch.zeros(7, 6, dtype=torch.float64))
    else:  # the first two fields: the elementwise product, whose sum is their dot product
        two = fields[:, :2]
        torch.testing.assert_close(pairwise_pooling(two).sum(1), (two[:, 0] * two[:, 1]).sum(1))


def test_the_term_starts_as_rendles_and_each_task_has_its_own_weights() -> None:
    fields = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(1))
    term = FMTerm(2, 4)
    y = term(fields)  # [T, B]
    assert y.shape == (2, 5)
    plain = sum((fields[:, i] * fields[:, j]).sum(1) for i in range(3) for j in range(i + 1, 3))
    torch.testing.assert_close(y[0], plain)
    torch.testing.assert_close(y[1], plain)
    with torch.no_grad():
        term.w[1] = 0.0
    assert torch.equal(term(fields)[1], torch.zeros(5))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_off_is_the_model_without_the_option(architecture: str) -> None:
    plain, off = _model(architecture), _model(architecture, interaction=None)
    assert plain.state_dict().keys() == off.state_dict().keys()
    cat, num = _inputs()
    assert all(
        torch.equal(a, b) for a, b in zip(plain(cat, num).values(), off(cat, num).values(), strict=True)
    )


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_on_adds_the_dot_products_to_every_task(architecture: str) -> None:
    plain, fm = _model(architecture), _model(architecture, interaction="fm")
    assert set(fm.state_dict()) - set(plain.state_dict()) == {"fm.w"}  # the other weights are the same draws
    fm.load_state_dict({**plain.state_dict(), "fm.w": fm.fm.w.detach()}, strict=True)
    cat, num = _inputs(seed=2)
    fields = fm.embedding(cat)  # [B, C, D]: no gate scene or sequence column under shared-bottom
    fields = fields[:, : len(CARDINALITIES)]
    extra = pairwise_by_definition(fields).sum(1)  # [B]
    a, b = plain.eval()(cat, num), fm.eval()(cat, num)
    if fm.esmm:  # post-click logits are combined with the click's after the term is added
        torch.testing.assert_close(b["click"], a["click"] + extra)
    else:
        for task in TASKS:
            torch.testing.assert_close(b[task], a[task] + extra)
    with pytest.raises(ValueError, match="interaction must be"):
        _model(architecture, interaction="dcn")


def test_interaction_round_trips_through_the_saved_model(tmp_path: Path) -> None:
    samples = make_samples(DS, n_days=3, n_users=60, per_day=12)
    settings = quick(tmp_path, epochs=1, interaction="fm")
    write_inputs(settings, samples)
    result = train(settings, DS)
    config = json.loads((settings.models_dir / result.version / CONFIG_FILE).read_text())
    assert config["model"]["interaction"] == "fm" and config["options"]["interaction"] == "fm"
    model, _, loaded = load_version(settings, result.version)
    assert loaded == config and model.fm is not None
    off = train(settings.replace(interaction="none"), DS)
    assert off.version != result.version
    off_config = json.loads((settings.models_dir / off.version / CONFIG_FILE).read_text())
    assert "interaction" not in off_config["model"] and "interaction" not in off_config["options"]


def test_a_bad_interaction_is_refused_when_the_settings_load(monkeypatch) -> None:
    monkeypatch.setenv("TANDEM_INTERACTION", "dcn")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith("TANDEM_INTERACTION='dcn': ") and "\n" not in str(err.value)
    monkeypatch.setenv("TANDEM_INTERACTION", "fm")
    assert load_settings().interaction == "fm"
