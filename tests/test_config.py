from pathlib import Path

import pytest

from mtl_model.config import Settings, SettingsError, load_settings
from mtl_model.contract import EVENT_TYPES


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


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("TANDEM_TOP_K", "abc", "valid integer"),
        ("TANDEM_TOP_K", "0", "greater than or equal to 1"),
        ("TANDEM_DEVICE", "gpu", "'auto', 'cpu' or 'cuda'"),
        ("TANDEM_ARCHITECTURE", "nonsense", "'shared_bottom', 'mmoe' or 'ple'"),
        ("TANDEM_LOSS_WEIGHTING", "magic", "'fixed', 'uncertainty', 'gradnorm' or 'pcgrad'"),
        ("TANDEM_BUSINESS_TZ", "Mars/Olympus", "not a time zone"),
        ("TANDEM_TASKS", "click,view", "among click, cart, purchase"),
        ("TANDEM_EXCLUDE_BOUGHT", "maybe", "valid boolean"),
        ("TANDEM_TASK_WEIGHTS", "1,2", "one weight per task"),
        ("TANDEM_HOME", "/tmp/shop?eu", "a path without '?'"),
    ],
)
def test_bad_values_are_refused_when_the_settings_load(monkeypatch, name: str, value: str, says: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith(f"{name}={value!r}: ") and says in message and "\n" not in message


def test_an_unknown_tandem_variable_names_the_nearest_setting(monkeypatch) -> None:
    monkeypatch.setenv("TANDEM_TOPK", "20")
    nearest = r"TANDEM_TOPK: not a Tandem setting \(did you mean TANDEM_TOP_K\?\)"
    with pytest.raises(SettingsError, match=nearest):
        load_settings()
    monkeypatch.delenv("TANDEM_TOPK")
    monkeypatch.setenv("TANDEM_DEMO_USERS", "500")  # read by the demo, not a setting, and allowed
    assert load_settings().top_k == 10


def test_keyword_settings_ignore_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TANDEM_TOP_K", "25")
    assert Settings(home=tmp_path).top_k == 10 and load_settings(home=tmp_path).top_k == 25


def test_dbt_vars_carry_the_sql_settings_and_the_contract() -> None:
    s = load_settings(train_window_days=3, top_k=4, business_tz="Asia/Shanghai")
    got = s.dbt_vars("2026-03-05")
    assert (got["train_window_days"], got["top_k"], got["business_tz"]) == (3, 4, "Asia/Shanghai")
    assert got["event_types"] == list(EVENT_TYPES) and got["run_date"] == "2026-03-05"


def test_replace_moves_paths_with_home_unless_set(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "a", warehouse_path=tmp_path / "wh.duckdb")
    moved = s.replace(home=tmp_path / "b", top_k=3)
    assert moved.landing_dir == (tmp_path / "b" / "landing").resolve() and moved.top_k == 3
    assert moved.warehouse_path == (tmp_path / "wh.duckdb").resolve()


def test_the_cli_refuses_bad_settings_in_one_line_with_exit_code_2(monkeypatch, capsys) -> None:
    from mtl_model.pipeline.cli import main

    monkeypatch.setenv("TANDEM_DEVICE", "gpu")
    assert main(["show"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "tandem: bad settings: TANDEM_DEVICE='gpu': Input should be 'auto', 'cpu' or 'cuda'"
