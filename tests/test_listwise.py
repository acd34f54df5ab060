"""The listwise loss within a user's rows (``TANDEM_RANKING_LOSS``): the batched kernel equals
ListNet's formula written plainly, the epoch order keeps users together, off changes nothing, and on
it trains and names its model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import torch

from mtl_model.config import Settings, SettingsError, load_settings
from mtl_model.learn.fit import fit_model
from mtl_model.learn.listwise import grouped_order, listwise_loss
from mtl_model.learn.registry import CONFIG_FILE
from mtl_model.learn.train import TrainResult, train, user_groups
from tests.test_dropout import _inputs, _model
from tests.test_train_score import DS, make_samples, quick, same_weights, weights_of, write_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def listnet_plainly(s: list[float], y: list[float], g: list[int], w: list[float]) -> float:
    """Cao et al. 2007, top-one probability, one list per run of equal g: the module's formula."""
    lists: list[list[int]] = []
    for i in range(len(s)):
        if i == 0 or g[i] != g[i - 1]:
            lists.append([])
        lists[-1].append(i)
    terms = []
    for rows in lists:
        mass = sum(y[i] * w[i] for i in rows)
        if mass == 0:
            continue
        norm = sum(w[j] * math.exp(s[j]) for j in rows)
        terms.append(-sum(y[i] * w[i] * math.log(math.exp(s[i]) / norm) for i in rows) / mass)
    return sum(terms) / len(terms) if terms else 0.0


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_batched_kernel_is_listnet_written_plainly(seed: int, weighted: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 200
    groups = torch.sort(torch.randint(0, 30, (n,), generator=g)).values  # runs of users, as batches hold them
    logits = torch.randn(n, generator=g, dtype=torch.float64) * 3
    labels = (torch.rand(n, generator=g) < 0.2).double()
    weight = torch.rand(n, generator=g, dtype=torch.float64) * 4 + 0.5 if weighted else None
    got = listwise_loss(logits, labels, groups, weight)
    w = weight.tolist() if weighted else [1.0] * n
    assert got.item() == pytest.approx(listnet_plainly(logits.tolist(), labels.tolist(), groups.tolist(), w))


def test_the_loss_is_stable_shift_free_and_pulls_positives_up() -> None:
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    logits = torch.tensor([500.0, 499.0, -3.0, 2.0, 1.0, 7.0], requires_grad=True)
    loss = listwise_loss(logits, labels, groups)
    assert math.isfinite(loss.item())
    shifted = listwise_loss(logits.detach() + torch.tensor([9.0, 9.0, 9.0, -4.0, -4.0, 1.0]), labels, groups)
    assert shifted.item() == pytest.approx(loss.item())  # a user's common shift is not its order
    loss.backward()
    assert logits.grad[0] < 0 and logits.grad[4] < 0  # descent raises the positives
    assert logits.grad[1] > 0 and logits.grad[3] > 0  # and lowers their lists' negatives
    assert logits.grad[5] == 0  # a list with no positive carries nothing
    none = listwise_loss(torch.randn(4), torch.zeros(4), torch.tensor([0, 0, 1, 1]))
    assert none.item() == 0.0


def test_the_epoch_order_keeps_each_users_rows_together_and_is_seeded() -> None:
    groups = torch.randint(0, 40, (500,), generator=torch.Generator().manual_seed(5))
    order = grouped_order(groups, torch.Generator().manual_seed(7))
    assert torch.equal(torch.sort(order).values, torch.arange(500))  # every row once
    runs = torch.unique_consecutive(groups[order])
    assert runs.numel() == torch.unique(groups).numel()  # one run per user
    assert torch.equal(order, grouped_order(groups, torch.Generator().manual_seed(7)))
    assert not torch.equal(order, grouped_order(groups, torch.Generator().manual_seed(8)))


def test_fit_refuses_a_ranking_loss_without_the_users(tmp_path: Path) -> None:
    cat, num, y = _inputs()
    settings = quick(tmp_path, ranking_loss=1.0)
    with pytest.raises(ValueError, match="ranking_loss > 0 needs the training rows' users"):
        fit_model(_model("shared_bottom"), (cat, num, y), (cat, num, y), settings, device=torch.device("cpu"))


def _within_user_auc(scores: torch.Tensor, y: torch.Tensor, users: torch.Tensor) -> float:
    """Mean over users with both classes of the share of (positive, negative) pairs in order."""
    aucs = []
    for u in torch.unique(users):
        s, t = scores[users == u], y[users == u]
        pos, neg = s[t > 0], s[t == 0]
        if pos.numel() and neg.numel():
            aucs.append((pos[:, None] > neg[None, :]).double().mean().item())
    return sum(aucs) / len(aucs)


def test_the_ranking_loss_learns_the_order_within_users(tmp_path: Path) -> None:
    """Clicks follow one input within every user; training with the listwise loss (weighted far
    above the pointwise one) orders each user's rows by it."""
    g = torch.Generator().manual_seed(0)
    n, users = 4000, torch.randint(0, 50, (4000,), generator=g)
    x = torch.randn(n, 3, generator=g)
    y = (torch.rand(n, generator=g) < torch.sigmoid(2 * x[:, 0] - 1)).float()[:, None].repeat(1, 3)
    cat = torch.stack([users % 12, torch.zeros(n, dtype=torch.long), users % 5, users % 3], dim=1)
    settings = quick(tmp_path, ranking_loss=5.0, epochs=3, batch_size=256, min_steps=0, patience=0)
    torch.manual_seed(1)
    model = _model("shared_bottom")
    before = _within_user_auc(model(cat, x)["click"].detach(), y[:, 0], users)
    fit_model(model, (cat, x, y), (cat, x, y), settings, device=torch.device("cpu"), groups=users)
    after = _within_user_auc(model.eval()(cat, x)["click"].detach(), y[:, 0], users)
    assert after > 0.75 > before + 0.1


def _trained(settings: Settings, name: str, **changes: object) -> tuple[TrainResult, dict[str, torch.Tensor]]:
    """Train ``DS`` with ``changes`` into a models folder of its own; the result and its weights."""
    run = settings.replace(models_dir=settings.home / name, **changes)
    result = train(run, DS)
    return result, weights_of(run, result.version)


def test_off_is_the_model_without_the_option_and_on_names_its_model(tmp_path: Path) -> None:
    settings = quick(tmp_path, epochs=1)
    write_inputs(settings, make_samples(DS, n_days=3, n_users=60, per_day=12))
    plain, plain_w = _trained(settings, "plain")
    zero, zero_w = _trained(settings, "zero", ranking_loss=0.0)
    assert zero.version == plain.version and same_weights(plain_w, zero_w)
    on, on_w = _trained(settings, "on", ranking_loss=1.0)
    assert on.version != plain.version and not same_weights(plain_w, on_w)
    options = json.loads((tmp_path / "on" / on.version / CONFIG_FILE).read_text())["options"]
    assert options["ranking_loss"] == 1.0
    assert (
        "ranking_loss"
        not in json.loads((tmp_path / "plain" / plain.version / CONFIG_FILE).read_text())["options"]
    )
    again, again_w = _trained(settings, "again", ranking_loss=1.0)
    assert again.version == on.version and same_weights(on_w, again_w) and again.metrics == on.metrics


def test_user_groups_rank_the_users_densely() -> None:
    groups = user_groups(pl.DataFrame({"user_id": ["b", "a", None, "b", "c"]}))
    assert groups.tolist() == [2, 1, 0, 2, 3]


@pytest.mark.parametrize(("value", "says"), [("-1", "greater than or equal"), ("x", "valid number")])
def test_a_bad_ranking_loss_is_refused_when_the_settings_load(monkeypatch, value: str, says: str) -> None:
    monkeypatch.setenv("TANDEM_RANKING_LOSS", value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith(f"TANDEM_RANKING_LOSS={value!r}: ") and says in message and "\n" not in message
