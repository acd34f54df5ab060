from pathlib import Path

from mtl_model.config import load_settings


def test_env_overrides_defaults(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path))
    monkeypatch.setenv("TANDEM_TOP_K", "25")
    monkeypatch.setenv("TANDEM_TASKS", "click,purchase")
    monkeypatch.setenv("TANDEM_TRAIN_QUEUE", "gpu")
    s = load_settings()
    assert s.home == tmp_path.resolve()
    assert s.landing_dir == tmp_path.resolve() / "landing"
    assert s.warehouse_path == tmp_path.resolve() / "warehouse.duckdb"
    assert (s.top_k, s.tasks, s.train_queue) == (25, ("click", "purchase"), "gpu")


def test_explicit_path_beats_home(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "a"))
    monkeypatch.setenv("TANDEM_WAREHOUSE_PATH", str(tmp_path / "wh.duckdb"))
    s = load_settings()
    assert s.warehouse_path == tmp_path.resolve() / "wh.duckdb"
    assert s.models_dir == (tmp_path / "a").resolve() / "models"


def test_as_env_round_trips(monkeypatch, tmp_path: Path) -> None:
    s = load_settings(home=tmp_path, top_k=7, hidden_dims=(32, 16))
    for key, value in s.as_env().items():
        monkeypatch.setenv(key, value)
    assert load_settings() == s
