"""Dropout (``TANDEM_DROPOUT``): off it changes nothing, on it is random in training only, and it
travels with the saved model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtl_model.config import SettingsError, load_settings
from mtl_model.learn.networks import ExpertBank, build_model, run_experts
from mtl_model.learn.networks.experts import MLP
from mtl_model.learn.networks.ple import CGC
from mtl_model.learn.registry import CONFIG_FILE, load_version
from mtl_model.learn.train import train
from tests.test_train_score import DS, make_samples, quick, write_inputs

CARDINALITIES = (12, 9, 5, 3)  # user, item, category, scene
TASKS = ("click", "cart", "purchase")
ARCHITECTURES = ("shared_bottom", "mmoe", "ple")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def _inputs(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDINALITIES], dim=1)
    return cat, torch.randn(n, 3, generator=g), (torch.rand(n, len(TASKS), generator=g) < 0.3).float()


def _model(architecture: str, **options) -> torch.nn.Module:
    torch.manual_seed(3)
    return build_model(
        architecture, CARDINALITIES, 3, TASKS, embedding_dim=4, hidden_dims=(16, 8), tower_dim=8,
        scene_index=3, **options,
    )  # fmt: skip


def _step(model: torch.nn.Module, seed: int = 11) -> dict[str, torch.Tensor]:
    """One Adam step on a fixed batch, with the global generator seeded (as training seeds it)."""
    cat, num, y = _inputs()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    torch.manual_seed(seed)
    model.train()
    logits = model(cat, num)
    loss = sum(
        torch.nn.functional.binary_cross_entropy_with_logits(logits[t], y[:, k]) for k, t in enumerate(TASKS)
    )
    loss.backward()
    opt.step()
    return {"loss": loss.detach(), "next_draw": torch.rand(4)}  # what the generator gives next


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_dropout_zero_is_the_model_without_the_option(architecture: str) -> None:
    plain, zero = _model(architecture), _model(architecture, dropout=0.0)
    assert plain.state_dict().keys() == zero.state_dict().keys()
    cat, num, _ = _inputs(seed=1)
    for a, b in zip(plain(cat, num).values(), zero(cat, num).values(), strict=True):
        assert torch.equal(a, b)
    sa, sb = _step(plain), _step(zero)
    assert torch.equal(sa["loss"], sb["loss"])
    torch.manual_seed(11)
    assert torch.equal(sb["next_draw"], torch.rand(4))  # p = 0 drew no random numbers
    pa, pb = plain.state_dict(), zero.state_dict()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_dropout_keeps_parameter_names_and_is_random_in_training_only(architecture: str) -> None:
    model = _model(architecture, dropout=0.3)
    assert model.state_dict().keys() == _model(architecture).state_dict().keys()  # old models still load
    cat, num, _ = _inputs(seed=2)
    model.train()
    first, second = model(cat, num), model(cat, num)
    assert all(not torch.equal(first[t], second[t]) for t in TASKS)
    model.eval()
    a, b = model(cat, num), model(cat, num)
    assert all(torch.equal(a[t], b[t]) for t in TASKS)
    plain = _model(architecture).eval()  # same seed, same weights: eval mode is the model without dropout
    plain.load_state_dict(model.state_dict())
    assert all(torch.equal(a[t], plain(cat, num)[t]) for t in TASKS)


def _zero_share(x: torch.Tensor) -> float:
    return (x == 0).float().mean().item()


def _dropped_about_half(off: float, on: float) -> bool:
    """Zeros in eval mode are the ReLU's alone; in train mode (p = 0.5) about half the rest join them."""
    return on > off + 0.5 * (1 - off) - 0.1


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_dropout_reaches_every_hidden_relu(architecture: str) -> None:
    model = _model(architecture, dropout=0.5)
    cgcs = [m for m in model.modules() if isinstance(m, CGC)]
    inner = {id(bank) for cgc in cgcs for bank in (cgc.task_experts, cgc.shared_experts)}
    layers = [m for m in model.modules() if isinstance(m, (MLP, ExpertBank)) and id(m) not in inner]
    shares: dict[int, list[float]] = {k: [] for k in range(len(layers))}
    for k, layer in enumerate(layers):
        layer.register_forward_hook(lambda m, i, o, k=k: shares[k].append(_zero_share(o)))
    cat, num, _ = _inputs(n=512)
    model.eval()(cat, num)
    model.train()(cat, num)
    assert len(layers) == (1 if cgcs else 2)  # the towers, and the bottom or MMoE's experts
    assert all(_dropped_about_half(off, on) for off, on in shares.values())
    for cgc in cgcs:  # PLE's levels run their two banks as one (run_experts)
        x = torch.randn(512, cgc.in_dim)
        off = _zero_share(run_experts([cgc.task_experts.eval(), cgc.shared_experts], x))
        on = _zero_share(run_experts([cgc.task_experts.train(), cgc.shared_experts], x))
        assert _dropped_about_half(off, on)
    assert len(cgcs) == (2 if architecture == "ple" else 0)


def test_dropout_round_trips_through_the_saved_model(tmp_path: Path) -> None:
    samples = make_samples(DS, n_days=3, n_users=60, per_day=12)
    settings = quick(tmp_path, epochs=1, dropout=0.2)
    write_inputs(settings, samples)
    result = train(settings, DS)
    config = json.loads((settings.models_dir / result.version / CONFIG_FILE).read_text())
    assert config["model"]["dropout"] == 0.2 and config["options"]["dropout"] == 0.2
    model, _, loaded = load_version(settings, result.version)
    assert loaded == config and model.dropout == 0.2 and model.towers.hidden.p == 0.2
    assert not model.training  # scoring: eval mode, so no dropout
    off = train(settings.replace(dropout=0.0), DS)
    assert off.version != result.version  # another model, another version name
    off_config = json.loads((settings.models_dir / off.version / CONFIG_FILE).read_text())
    assert "dropout" not in off_config["model"] and "dropout" not in off_config["options"]  # names stay


@pytest.mark.parametrize(("value", "says"), [("1.5", "less than 0.9"), ("-0.1", "greater than or equal")])
def test_a_bad_dropout_is_refused_when_the_settings_load(monkeypatch, value: str, says: str) -> None:
    monkeypatch.setenv("TANDEM_DROPOUT", value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith(f"TANDEM_DROPOUT={value!r}: ") and says in message and "\n" not in message
    monkeypatch.setenv("TANDEM_DROPOUT", "0.25")
    assert load_settings().dropout == 0.25
