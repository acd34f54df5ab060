"""Output biases started at the base rates (``TANDEM_OUTPUT_BIAS=base_rate``, the default): the mean
predicted probability of every task equals its positive rate before the first step, for every
architecture and output (ESMM, PAL), with row weights too; ``uniform`` keeps the old start."""

from __future__ import annotations

import pytest
import torch

from mtl_model.config import Settings
from mtl_model.learn.fit import _start_at_base_rates
from mtl_model.learn.networks import build_model
from mtl_model.learn.options import options_fingerprint
from tests.test_dropout import ARCHITECTURES, CARDINALITIES, TASKS, _inputs, _model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def _labels(n: int, rates: tuple[float, ...], seed: int = 5) -> torch.Tensor:
    """Nested labels (cart ⊂ click, purchase ⊂ cart) at about ``rates``."""
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed))
    return torch.stack([(u < r).float() for r in rates], dim=1)


def _mean_probs(model: torch.nn.Module, cat, num, w=None) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        logits = model(cat, num)
    w = torch.ones(cat.shape[0]) if w is None else w
    return torch.stack([(torch.sigmoid(logits[t]) * w).sum() / w.sum() for t in model.tasks])


@pytest.mark.parametrize(
    ("architecture", "options"),
    [(a, {}) for a in ARCHITECTURES] + [("mmoe", {"esmm": True}), ("shared_bottom", {"pal": True})],
)
def test_mean_prediction_starts_at_each_tasks_rate(architecture: str, options: dict) -> None:
    cat, num, _ = _inputs(n=512)
    y = _labels(512, (0.08, 0.03, 0.01))
    if options.pop("pal", False):  # a position column after the scene, for ProbSeen only
        positions = torch.randint(0, 6, (512, 1), generator=torch.Generator().manual_seed(1))
        cat = torch.cat([cat, positions], dim=1)
        torch.manual_seed(3)
        model = build_model(
            architecture, (*CARDINALITIES, 6), 3, TASKS, embedding_dim=4, hidden_dims=(16, 8),
            tower_dim=8, scene_index=3, bias_index=4,
        )  # fmt: skip
    else:
        model = _model(architecture, **options)
    before = _mean_probs(model, cat, num)
    assert ((before - y.mean(0)).abs() > 0.1).all()  # a fresh tower says 0.5 (0.25 under ESMM)
    model.train()
    model.start_at_base_rates(cat, num, y)
    assert model.training  # left in the mode it was in
    assert torch.allclose(_mean_probs(model, cat, num), y.mean(0), atol=2e-3)


def test_row_weights_give_the_weighted_rate() -> None:
    cat, num, _ = _inputs(n=512)
    y = _labels(512, (0.2, 0.05, 0.01))
    w = torch.where(y[:, 0] > 0, 1.0, 4.0)  # down-sampled negatives weigh 1/rate
    model = _model("shared_bottom")
    model.start_at_base_rates(cat, num, y, w)
    weighted = (y * w[:, None]).sum(0) / w.sum()
    assert torch.allclose(_mean_probs(model, cat, num, w), weighted, atol=2e-3)
    assert not torch.allclose(weighted, y.mean(0), atol=2e-3)  # the weights mattered


def test_strided_rows_and_only_the_output_biases_move() -> None:
    cat, num, _ = _inputs(n=300)
    y = _labels(300, (0.3, 0.1, 0.02))
    model = _model("ple")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _start_at_base_rates(model, (cat, num, y), rows=64)  # every 5th row
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert moved == ["towers.b_out"]
    assert len(TASKS) == model.towers.b_out.shape[0]


def test_the_default_is_in_the_version_name_and_uniform_keeps_old_names() -> None:
    assert options_fingerprint(Settings())["output_bias"] == "base_rate"
    assert "output_bias" not in options_fingerprint(Settings(output_bias="uniform"))
