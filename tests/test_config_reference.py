"""docs/config.md, the reference of every config key, is written from the config classes: the committed
file is what the generator writes now, every key has its description, and every declared rule shows."""
import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from rl_system.config.checks import RULES
from rl_system.config.reference import COMMAND, CONFIGS, DOCS_PATH, config_classes, description, groups, reference

ROOT = Path(__file__).parent.parent


def test_the_committed_reference_is_what_the_generator_writes():
    committed = (ROOT / DOCS_PATH).read_text(encoding="utf-8")
    assert committed == reference(), f"{DOCS_PATH} is out of date with rl_system/config/: run `{COMMAND}`"


def test_every_field_of_every_config_has_a_description():
    classes = config_classes()
    assert len(classes) > 15
    missing = []
    for cls in classes:
        assert (cls.__doc__ or "").strip() and not cls.__doc__.startswith(cls.__name__ + "("), f"{cls.__name__}: no docstring"
        hints = typing.get_type_hints(cls)
        missing += [f"{cls.__name__}.{f.name}" for f in dataclasses.fields(cls) if not description(f, hints[f.name]).strip()]
    assert not missing, f"fields without a description (setting(default, 'description', ...)): {missing}"


def test_every_declared_rule_shows_in_its_row_of_the_reference():
    text = reference()
    documented = set()
    for cls, _, _ in CONFIGS:
        for group in groups(cls):
            documented.add(group.cls)
            rows = {row.key.strip("`"): row for row in group.rows}
            for f in dataclasses.fields(group.cls):
                key = group.prefix + f.name
                for rule in f.metadata.get(RULES, ()):
                    assert key in rows and rule.expected in rows[key].allowed, (key, rule.expected)
                    assert rule.expected.replace("|", "\\|") in text
            for row in group.rows:
                assert f"| {row.key} | {row.type} | {row.default} |" in text
    assert documented == set(config_classes()), "a config class without a table in the reference"


def test_a_rule_gives_the_error_and_the_reference_the_same_words():
    from rl_system.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"^config key 'rollout.top_p': expected a number in \(0, 1\], got 1.5$"):
        load_config(None, ["rollout.top_p=1.5"])
    assert "| `rollout.top_p` | number | `1.0` | a number in (0, 1] |" in reference()


def test_config_docs_check_fails_on_a_stale_file_and_passes_once_written(tmp_path):
    from rl_system import cli

    path = tmp_path / "config.md"
    path.write_text("stale\n")
    with pytest.raises(SystemExit) as info:
        cli.main(["config-docs", "--check", "--output", str(path)])
    assert info.value.code == f"error: {path} is not what the config classes give; run `{COMMAND}`"
    cli.main(["config-docs", "--output", str(path)])
    cli.main(["config-docs", "--check", "--output", str(path)])
    assert path.read_text() == reference()


def test_the_language_choices_are_the_language_reward_s():
    from rl_system.config.choices import LANGUAGES
    from rl_system.rewards.rules import LANGUAGE_SCRIPTS

    assert LANGUAGES == tuple(sorted(LANGUAGE_SCRIPTS))


def test_the_config_package_imports_no_torch_and_nothing_above_it():
    code = ("import sys, rl_system.config, rl_system.config.reference\n"
            "print(sorted(m for m in sys.modules if m.startswith('rl_system') and not m.startswith('rl_system.config')),"
            " 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["['rl_system']", "False"]
