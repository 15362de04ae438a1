import ast
import tomllib
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from medsynth_fl.config import (
    CONFIGS_DIR,
    OVERRIDES_KEY,
    Config,
    ConfigError,
    epoch_steps,
    from_flower,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]


def test_base_yaml_mirrors_the_code_defaults():
    documented = yaml.safe_load((CONFIGS_DIR / "base.yaml").read_text())
    assert documented == Config().model_dump(mode="json")


@pytest.mark.parametrize("preset", sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
def test_every_preset_validates(preset):
    assert isinstance(load_config(preset), Config)


def test_unknown_key_is_an_error_naming_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("phase1:\n  epohcs: 3\n")
    with pytest.raises(ConfigError, match=r"phase1\.epohcs: unknown key"):
        load_config(path)


def test_wrong_type_is_an_error_naming_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("generator:\n  ngf: sixteen\n")
    with pytest.raises(ConfigError, match=r"generator\.ngf"):
        load_config(path)


def test_unknown_section_and_bad_literal(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, ["phase3.epochs=1"])
    with pytest.raises(ConfigError, match=r"teacher\.optimizer"):
        load_config(None, ["teacher.optimizer=rmsprop"])


def test_bad_yaml_and_missing_files_are_clear(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("phase1: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("no-such-preset")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["phase1.epochs"])


def test_overrides_apply_in_order_and_config_is_frozen():
    cfg = load_config(
        "tiny", ["phase1.epochs=2", "phase1.epochs=3", "data.centers=[HAM_rosendahl]"]
    )
    assert cfg.phase1.epochs == 3.0 and cfg.data.centers == ["HAM_rosendahl"]
    with pytest.raises(ValidationError):
        cfg.phase1.epochs = 1


def test_from_flower_reads_preset_and_kebab_case_overrides_and_ignores_app_keys():
    cfg = from_flower(
        {
            "preset": "tiny",
            "overrides": "phase2.lambda-g=0.5; federation.sites=[a, b];",
            "store-dir": "/x",
        },
        ["package.site_id=a"],
    )
    assert cfg.phase2.lambda_g == 0.5 and cfg.package.site_id == "a"
    assert cfg.federation.sites == ["a", "b"]
    assert from_flower({}) == Config()  # an empty run config gives the defaults
    assert from_flower({"overrides": ""}) == Config()


def test_from_flower_refuses_settings_outside_overrides():
    # flwr run refuses undeclared keys; an in-process run must not accept them either
    with pytest.raises(ConfigError, match='overrides="classifier.steps=...'):
        from_flower({"preset": "tiny", "classifier.steps": 2})
    with pytest.raises(ConfigError, match="section.key=value"):
        from_flower({"overrides": "classifier.steps"})


def test_every_run_config_key_the_apps_read_is_declared_in_pyproject():
    declared = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"][
            "config"
        ]
    )
    read = set()
    for path in [
        *(REPO / "coordinator").glob("*.py"),
        *(REPO / "site_client").glob("*.py"),
        REPO / "medsynth_fl" / "config.py",
        REPO / "simulation" / "demo.py",
    ]:
        read |= _run_config_keys(ast.parse(path.read_text()))
    assert read, "the scan found no run-config reads: it is broken"
    assert read <= declared, read - declared


def _run_config_keys(tree: ast.AST) -> set[str]:
    """String keys read from a variable named ``rc`` or ``run_config``."""
    names, keys = {"rc", "run_config"}, set()

    def is_run_config(node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and node.id in names

    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Subscript) and is_run_config(node.value):
            key = node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and is_run_config(node.func.value)
            and node.args
        ):
            key = node.args[0]
        elif (
            isinstance(node, ast.Compare)
            and isinstance(node.ops[0], ast.In | ast.NotIn)
            and is_run_config(node.comparators[0])
        ):
            key = node.left
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            keys.add(key.value)
        elif isinstance(key, ast.Name) and key.id == "OVERRIDES_KEY":
            keys.add(OVERRIDES_KEY)
    return keys


def test_epoch_steps():
    assert epoch_steps(2.0, 100, 32) == 7
    assert epoch_steps(2.0, 100, 32, world_size=2) == 4
    assert epoch_steps(0.0, 100, 32) == 0
    assert epoch_steps(0.001, 10, 32) == 1


def test_digest_changes_with_any_setting():
    assert (
        load_config("tiny").digest()
        != load_config("tiny", ["training.seed=1"]).digest()
    )
