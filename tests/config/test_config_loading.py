from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medclass.config import apply_overrides, dump_config, load_config
from medclass.errors import ConfigError

pytestmark = pytest.mark.unit  # needs neither ../shared/data nor training

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_ships_the_four_medmnist_configs() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"bloodmnist", "breastmnist", "retinamnist", "dermamnist"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_configs_validate(path: Path) -> None:
    config = load_config(path)
    assert config.experiment == path.stem
    if config.data.source == "medmnist":
        assert config.data.flag == path.stem
    else:
        assert "$" not in str(config.data), "environment variables in paths must be expanded"


TUNING = sorted((REPO / "configs").glob("tune*/*.yaml"))  # tune/: search spaces; tuned/: the recipes they found


@pytest.mark.parametrize("path", TUNING, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_tune_spaces_and_tuned_recipes_validate(path: Path) -> None:
    config = load_config(path)
    assert (config.tune is not None) == (path.parent.name == "tune")  # a found recipe is a plain config
    assert config.data.source != "medmnist" or config.data.flag == path.stem


def test_unknown_key_names_the_field_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "data: {flag: breastmnist}\ntrainer:\n  max_epoch: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "trainer.max_epoch: unknown field (did you mean max_epochs?)" in message


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"optimiser: unknown field \(did you mean optimizer\?\)"):
        load_config(write(tmp_path, "data: {flag: breastmnist}\noptimiser: {lr: 0.1}\n"))


def test_wrong_type_names_the_field_and_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.batch_size: .*integer.*got 'many'"):
        load_config(write(tmp_path, "data: {flag: breastmnist, batch_size: many}\n"))


def test_out_of_range_and_bad_choice(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "data: {flag: breastmnist, size: 32}\nloss: {label_smoothing: 1.5}\n"))
    assert "data.size" in str(err.value) and "loss.label_smoothing" in str(err.value)


def test_missing_required_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data: required field is missing"):
        load_config(write(tmp_path, "model: {name: resnet18}\n"))


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"invalid YAML at line 2"):
        load_config(write(tmp_path, "data:\n\tflag: breastmnist\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_overrides_parse_values_as_yaml() -> None:
    base = {"trainer": {"max_epochs": 10}, "data": {"flag": "x"}}
    result = apply_overrides(
        base,
        ["trainer.max_epochs=3", "optimizer.lr=0.0003", "trainer.deterministic=true", "data.mean=[0.1, 0.2, 0.3]",
         "data.root=null", "model.kwargs.global_pool=avg", "experiment=demo-1"],
    )  # fmt: skip
    assert result["trainer"]["max_epochs"] == 3
    assert result["optimizer"]["lr"] == pytest.approx(3e-4)
    assert result["trainer"]["deterministic"] is True
    assert result["data"]["mean"] == [0.1, 0.2, 0.3]
    assert result["data"]["root"] is None
    assert result["model"]["kwargs"] == {"global_pool": "avg"}
    assert result["experiment"] == "demo-1"
    assert base["trainer"]["max_epochs"] == 10, "the input must not be modified"


def test_overrides_apply_on_top_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "data: {flag: breastmnist, batch_size: 32}\ntrainer: {max_epochs: 9}\n")
    config = load_config(path, ["trainer.max_epochs=3", "data.batch_size=64", "optimizer.lr=3e-4"])
    assert (config.trainer.max_epochs, config.data.batch_size) == (3, 64)
    assert config.optimizer.lr == pytest.approx(3e-4), "YAML reads 3e-4 as text; the schema must still take it"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.max_epochs", "must look like section.field=value"),
        ("=3", "must look like section.field=value"),
        ("trainer..max_epochs=3", "must look like section.field=value"),
        ("seed.value=3", "seed is a value, not a section"),
        ("trainer.max_epoch=3", r"trainer.max_epoch: unknown field \(did you mean max_epochs\?\)"),
        ("trainer.max_epochs=three", r"trainer.max_epochs: .*integer"),
    ],
)
def test_bad_overrides(tmp_path: Path, override: str, expected: str) -> None:
    path = write(tmp_path, "seed: 1\ndata: {flag: breastmnist}\n")
    with pytest.raises(ConfigError, match=expected):
        load_config(path, [override])


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    config = load_config(REPO / "configs" / "bloodmnist.yaml", ["trainer.max_epochs=2", "output_dir=out"])
    assert config.output_dir.is_absolute()
    again = load_config(write(tmp_path, dump_config(config), "resolved.yaml"))
    assert again == config
    assert yaml.safe_load(dump_config(config))["trainer"]["max_epochs"] == 2


def test_python_api_sections_merge_like_the_file(tmp_path: Path) -> None:
    config = load_config(None, ["trainer.max_epochs=2"], experiment="api", data={"flag": "retinamnist"})
    assert config.data.flag == "retinamnist"
    assert config.trainer.max_epochs == 2
    assert config.checkpoint.resolved_mode == "max"
    assert (
        load_config(None, ["checkpoint.monitor=loss"], experiment="a", data={"flag": "x"}).checkpoint.resolved_mode
        == "min"
    )
