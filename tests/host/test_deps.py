"""Per-function dependency files: what gets installed and the hash that names its folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecli.config import dependency_file
from edgecli.host.deps import DependencyError, installer_command, read_requirements


@pytest.mark.timeout(5)
def test_requirements_txt_is_installed_with_r_and_hashed_by_content(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("six==1.16.0\n")
    first = read_requirements(path)
    assert first.args == ("-r", "requirements.txt")
    assert read_requirements(path).key == first.key
    path.write_text("six==1.17.0\n")
    assert read_requirements(path).key != first.key


@pytest.mark.timeout(5)
def test_pyproject_dependencies(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "fn"\ndependencies = ["six==1.16.0", "attrs"]\n')
    assert dependency_file(tmp_path) == path
    assert read_requirements(path).args == ("six==1.16.0", "attrs")


@pytest.mark.timeout(5)
def test_requirements_txt_wins_and_a_pyproject_without_dependencies_is_none(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "fn"\n')
    assert dependency_file(tmp_path) is None
    (tmp_path / "requirements.txt").write_text("six\n")
    assert dependency_file(tmp_path) == tmp_path / "requirements.txt"


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    ("text", "problem"),
    [("[project\n", "not valid TOML"), ('[project]\ndependencies = "six"\n', "array of strings")],
)
def test_a_bad_pyproject_is_explained(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(text)
    with pytest.raises(DependencyError, match=problem):
        read_requirements(path)


@pytest.mark.timeout(5)
def test_pip_installs_into_the_target_when_uv_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    command = installer_command(tmp_path, ("-r", "requirements.txt"))
    assert command[1:4] == ["-m", "pip", "install"] and ["--target", str(tmp_path)] == command[-4:-2]
