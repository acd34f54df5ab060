"""``TANDEM_EMBEDDING_EPOCHS``: after that many epochs the embedding tables stop moving (sparse and
dense tables alike) while the layers go on learning; 0 leaves the fit as it was."""

from __future__ import annotations

import pytest
import torch

from mtl_model.config import Settings, SettingsError, load_settings
from mtl_model.learn.fit import EpochInfo, fit_model
from mtl_model.learn.networks import build_model
from mtl_model.learn.options import options_fingerprint
from tests.test_dropout import CARDINALITIES, TASKS, _inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def _snapshots(sparse: bool, embedding_epochs: int) -> list[dict[str, torch.Tensor]]:
    """The tables and the layers after each of 3 epochs of a small shared-bottom fit."""
    torch.manual_seed(3)
    model = build_model(
        "shared_bottom", CARDINALITIES, 3, TASKS, embedding_dim=4, hidden_dims=(16, 8), tower_dim=8,
        scene_index=3, sparse=sparse,
    )  # fmt: skip
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    assert tables, "the model has embedding tables"
    seen: list[dict[str, torch.Tensor]] = []

    def snapshot(_: EpochInfo) -> None:
        kinds = {"tables": [], "layers": []}
        for p in model.parameters():
            kinds["tables" if id(p) in tables else "layers"].append(p.detach().flatten().clone())
        seen.append({k: torch.cat(v) for k, v in kinds.items()})

    settings = Settings(
        epochs=3, batch_size=16, patience=0, min_steps=0, checkpoints=False, sparse_embeddings=sparse,
        embedding_epochs=embedding_epochs, weight_decay=0.01, embedding_weight_decay=0.1,
    )  # fmt: skip
    fit_model(
        model, _inputs(96, seed=1), _inputs(48, seed=2), settings, device=torch.device("cpu"),
        callbacks=[snapshot],
    )  # fmt: skip
    return seen


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse-tables", "dense-tables"])
def test_tables_stop_after_embedding_epochs_and_the_layers_go_on(sparse: bool) -> None:
    frozen = _snapshots(sparse, embedding_epochs=1)
    assert len(frozen) == 3
    torch.testing.assert_close(frozen[1]["tables"], frozen[0]["tables"], rtol=0, atol=0)
    torch.testing.assert_close(frozen[2]["tables"], frozen[0]["tables"], rtol=0, atol=0)
    assert not torch.equal(frozen[2]["layers"], frozen[0]["layers"])  # the layers still learn
    free = _snapshots(sparse, embedding_epochs=0)
    torch.testing.assert_close(free[0]["tables"], frozen[0]["tables"], rtol=0, atol=0)  # same first epoch
    assert not torch.equal(free[2]["tables"], free[0]["tables"])  # 0: the tables learn every epoch


def test_embedding_epochs_is_validated_and_names_the_version_only_when_set(monkeypatch) -> None:
    monkeypatch.setenv("TANDEM_EMBEDDING_EPOCHS", "-1")
    with pytest.raises(SettingsError, match="(?i)embedding_epochs"):
        load_settings()
    assert "embedding_epochs" not in options_fingerprint(Settings())
    assert "embedding_epochs" in options_fingerprint(Settings(embedding_epochs=1))
