"""``TANDEM_EMBEDDING_EPOCHS``: after that many epochs the embedding tables stop moving (sparse and
dense tables alike) while the layers go on learning; 0 leaves the fit as it was. ``TANDEM_PLATEAU=
hold_embeddings``: the first epoch that does not improve brings the best epoch back and holds the
tables from then on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mtl_model.config import Settings, SettingsError, load_settings
from mtl_model.learn.fit import EpochInfo, _trainer, fit_model, weighting_from
from mtl_model.learn.networks import build_model
from mtl_model.learn.options import options_fingerprint
from tests.test_dropout import CARDINALITIES, TASKS, _inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def _model(sparse: bool) -> torch.nn.Module:
    torch.manual_seed(3)
    return build_model(
        "shared_bottom", CARDINALITIES, 3, TASKS, embedding_dim=4, hidden_dims=(16, 8), tower_dim=8,
        scene_index=3, sparse=sparse,
    )  # fmt: skip


def _fit(
    sparse: bool,
    epochs: int = 3,
    callbacks: tuple[Any, ...] = (),
    checkpoint_dir: Path | None = None,
    **changes: Any,
) -> tuple[torch.nn.Module, list[dict[str, torch.Tensor]], list[EpochInfo]]:
    """A small shared-bottom fit: the model, its tables and layers after each epoch, and the epochs."""
    model = _model(sparse)
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    assert tables, "the model has embedding tables"
    seen: list[dict[str, torch.Tensor]] = []
    infos: list[EpochInfo] = []

    def snapshot(info: EpochInfo) -> None:
        kinds: dict[str, list[torch.Tensor]] = {"tables": [], "layers": []}
        for p in model.parameters():
            kinds["tables" if id(p) in tables else "layers"].append(p.detach().flatten().clone())
        seen.append({k: torch.cat(v) for k, v in kinds.items()})
        infos.append(info)

    settings = Settings(
        epochs=epochs, batch_size=16, patience=0, min_steps=0, checkpoints=False, sparse_embeddings=sparse,
        weight_decay=0.01, embedding_weight_decay=0.1, **({"plateau": "continue"} | changes),
    )  # fmt: skip
    fit_model(
        model, _inputs(96, seed=1), _inputs(48, seed=2), settings, device=torch.device("cpu"),
        callbacks=[snapshot, *callbacks], checkpoint_dir=checkpoint_dir, fingerprint="t",
    )  # fmt: skip
    return model, seen, infos


def _snapshots(sparse: bool, embedding_epochs: int) -> list[dict[str, torch.Tensor]]:
    """The tables and the layers after each of 3 epochs of a small shared-bottom fit."""
    return _fit(sparse, embedding_epochs=embedding_epochs)[1]


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


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse-tables", "dense-tables"])
def test_a_plateau_brings_the_best_epoch_back_and_holds_the_tables(sparse: bool) -> None:
    _, held, infos = _fit(sparse, epochs=8, plateau="hold_embeddings")
    first_bad = next((i for i in infos if i.best_epoch < i.epoch), None)
    assert first_bad is not None and first_bad.epoch < 8, "the fit has an epoch that does not improve"
    k, best = first_bad.epoch - 1, first_bad.best_epoch - 1  # 0-based
    for info in infos:  # after each epoch that did not improve: the best epoch's weights, all of them
        if info.best_epoch < info.epoch:
            for kind in ("tables", "layers"):
                got, want = held[info.epoch - 1][kind], held[info.best_epoch - 1][kind]
                torch.testing.assert_close(got, want, rtol=0, atol=0)
    for later in held[k + 1 :]:  # then the tables stay, the layers learn
        torch.testing.assert_close(later["tables"], held[best]["tables"], rtol=0, atol=0)
    assert any(not torch.equal(later["layers"], held[best]["layers"]) for later in held[k + 1 :])
    _, free, _ = _fit(sparse, epochs=8)  # continue: the same fit up to the plateau epoch
    for a, b in zip(free[:k], held[:k], strict=True):
        torch.testing.assert_close(a["tables"], b["tables"], rtol=0, atol=0)
    assert not torch.equal(free[k]["tables"], held[k]["tables"])


def test_a_fit_resumed_after_its_plateau_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    straight, _, infos = _fit(True, epochs=8, plateau="hold_embeddings")
    plateau = next(i.epoch for i in infos if i.best_epoch < i.epoch)

    class Crash(RuntimeError):
        pass

    def crash(info: EpochInfo) -> None:
        if info.epoch == plateau + 1:
            raise Crash("worker lost")

    with pytest.raises(Crash):
        _fit(True, epochs=8, callbacks=(crash,), checkpoint_dir=tmp_path, plateau="hold_embeddings")
    resumed, _, seen = _fit(True, epochs=8, checkpoint_dir=tmp_path, plateau="hold_embeddings")
    assert [i.epoch for i in seen] == list(range(plateau + 2, 9))  # the held tables came back too
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse-tables", "dense-tables"])
def test_after_a_plateau_the_layers_learn_at_plateau_lr_factor_and_the_tables_not(sparse: bool) -> None:
    settings = Settings(
        learning_rate=0.003, plateau="hold_embeddings", plateau_lr_factor=0.1, sparse_embeddings=sparse
    )
    weighting = weighting_from(settings, len(TASKS))
    trainer = _trainer(_model(sparse), _inputs(96)[2], settings, weighting, torch.device("cpu"), (0, 1), 3)

    def rates() -> dict[str, set[float]]:
        kinds: dict[str, set[float]] = {"tables": set(), "layers": set()}
        for opt in (trainer.opt_dense, trainer.opt_sparse):
            for group in opt.param_groups if opt is not None else ():
                table = group.get("embeddings", opt is trainer.opt_sparse)
                if group["params"]:
                    kinds["tables" if table else "layers"].add(round(group["lr"], 12))
        return kinds

    trainer.set_step(0)
    assert rates() == {"tables": {0.003}, "layers": {0.003}}
    trainer.plateaus, trainer.embeddings_frozen = 1, True  # what _on_plateau and train_epoch set
    trainer.set_step(0)
    assert rates() == {"tables": {0.0}, "layers": {0.0003}}
    trainer.plateaus = 2  # a second plateau: another tenth
    trainer.set_step(0)
    assert rates() == {"tables": {0.0}, "layers": {0.00003}}


def test_plateau_is_validated_and_names_the_version_only_when_set(monkeypatch) -> None:
    monkeypatch.setenv("TANDEM_PLATEAU", "restart")
    with pytest.raises(SettingsError, match="(?i)plateau"):
        load_settings()
    monkeypatch.setenv("TANDEM_PLATEAU", "hold_embeddings")
    monkeypatch.setenv("TANDEM_PLATEAU_LR_FACTOR", "0")
    with pytest.raises(SettingsError, match="(?i)plateau_lr_factor"):
        load_settings()
    assert (Settings().plateau, Settings().plateau_lr_factor) == ("hold_embeddings", 0.1)  # the defaults
    assert "plateau" in options_fingerprint(Settings())  # models before the option: another version
    for factor in (1.0, 0.1):  # under continue the factor is unused and names nothing
        assert not {"plateau", "plateau_lr_factor"} & set(
            options_fingerprint(Settings(plateau="continue", plateau_lr_factor=factor))
        )
