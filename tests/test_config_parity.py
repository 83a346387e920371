"""config.toml keys of today's Supabase: `[auth] signing_keys_path` and `[functions.NAME] static_files`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from edgecli.config import Config, load_config
from edgecli.errors import ConfigError

pytestmark = pytest.mark.timeout(10)
MakeProject = Callable[..., Path]


def load(root: Path) -> Config:
    return load_config(root, environ={})


def _error(root: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(root)
    assert info.value.exit_code == 2
    return str(info.value)


def test_signing_keys_are_read_relative_to_supabase(make_project: MakeProject) -> None:
    root = make_project('[auth]\nsigning_keys_path = "./signing_keys.json"\n', ["hello"])
    jwk = {**json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()))), "kid": "k1"}
    (root / "supabase" / "signing_keys.json").write_text(json.dumps([jwk]))
    config = load(root)
    assert config.signing_keys_path == (root / "supabase" / "signing_keys.json").resolve()
    assert [(k.kid, k.alg) for k in config.signing_keys] == [("k1", "ES256")]
    assert config.warnings == ()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "which does not exist"),
        ("{not json", "cannot be read as JSON"),
        ('{"a": 1}', "not a JSON array of JWK objects"),
        ('[{"kty": "oct", "k": "c2VjcmV0"}]', "kty 'oct'"),
    ],
)
def test_bad_signing_keys_name_the_line_and_the_fix(
    make_project: MakeProject, content: str | None, problem: str
) -> None:
    root = make_project('[auth]\nsigning_keys_path = "./keys.json"\n', ["hello"])
    if content is not None:
        (root / "supabase" / "keys.json").write_text(content)
    message = _error(root)
    assert message.startswith("supabase/config.toml:2: [auth] signing_keys_path names ./keys.json")
    assert problem in message and "supabase gen signing-key" in message


def test_static_files_are_accepted_without_a_warning_and_resolved(make_project: MakeProject) -> None:
    root = make_project(
        '[functions.site]\nstatic_files = ["./functions/site/*.html", "./static/**/*.txt"]\n', ["site"]
    )
    supabase = root / "supabase"
    (supabase / "functions" / "site" / "page.html").write_text("<p>hi</p>")
    (supabase / "static" / "deep").mkdir(parents=True)
    (supabase / "static" / "deep" / "note.txt").write_text("note")
    config = load(root)
    site = config.functions["site"]
    assert config.warnings == ()
    assert site.static_globs == ("./functions/site/*.html", "./static/**/*.txt")
    assert [p.relative_to(supabase.resolve()).as_posix() for p in site.static_files] == [
        "functions/site/page.html",
        "static/deep/note.txt",
    ]


@pytest.mark.parametrize(
    ("value", "problem"),
    [('"./x/*.html"', "allowed: an array of globs"), ('["../secrets/*"]', "outside supabase/")],
)
def test_bad_static_files(make_project: MakeProject, value: str, problem: str) -> None:
    root = make_project(f"[functions.site]\nstatic_files = {value}\n", ["site"])
    message = _error(root)
    assert message.startswith("supabase/config.toml:2: [functions.site] static_files") and problem in message


def test_static_globs_never_match_edgecli_state(make_project: MakeProject) -> None:
    root = make_project('[functions.site]\nstatic_files = ["./**/*.txt"]\n', ["site"])
    state = root / "supabase" / ".temp" / "edgecli" / "deps" / "abc"
    state.mkdir(parents=True)
    (state / "LICENSE.txt").write_text("x")
    (root / "supabase" / "functions" / "site" / "a.txt").write_text("a")
    site = load(root).functions["site"]
    assert [p.name for p in site.static_files] == ["a.txt"]
