"""A local npm and JSR registry for Deno tests, serving the packages in tests/fixtures/deno-packages.

    with Registry(tmp_path / "registry") as registry:
        env = registry.env(tmp_path / "deno")       # DENO_DIR, NPM_CONFIG_REGISTRY, JSR_URL
        subprocess.run([deno, "cache", entry], env={**os.environ, **env})
    # the registry is gone now (its port refuses): whatever Deno needs must come from its cache

The layout is the one Deno reads: an npm packument at /<name> with a gzipped tarball, and for JSR
/jsr/@scope/name/meta.json, /jsr/@scope/name/<version>_meta.json and the files.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

PACKAGES = Path(__file__).resolve().parents[1] / "fixtures" / "deno-packages"
NPM_PACKAGE = "left-pad-mini"
JSR_SCOPE, JSR_NAME = "edgecli", "shout"
VERSION = "1.0.0"
TYPES = {".ts": "application/typescript", ".json": "application/json", "": "application/octet-stream"}


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = root
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: http.server.ThreadingHTTPServer | None = None
        self._build()

    def env(self, deno_dir: Path) -> dict[str, str]:
        """What points Deno at this registry, and at a cache of the test's own."""
        return {
            "DENO_DIR": str(deno_dir),
            "NPM_CONFIG_REGISTRY": f"{self.url}/",
            "JSR_URL": f"{self.url}/jsr/",
        }

    def __enter__(self) -> Registry:
        root = str(self.root)

        class Files(http.server.SimpleHTTPRequestHandler):
            extensions_map = TYPES

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=root, **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Files)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _build(self) -> None:
        # npm: the packument is served at /<name>, a folder's index.json would not be; a file of that
        # name with no suffix is (as application/octet-stream, which Deno accepts for JSON).
        source = PACKAGES / NPM_PACKAGE
        tarball = _tarball({p.name: p.read_bytes() for p in sorted(source.iterdir())})
        (self.root / "tarballs").mkdir(parents=True, exist_ok=True)
        (self.root / "tarballs" / f"{NPM_PACKAGE}-{VERSION}.tgz").write_bytes(tarball)
        manifest = json.loads((source / "package.json").read_text())
        dist = {
            "tarball": f"{self.url}/tarballs/{NPM_PACKAGE}-{VERSION}.tgz",
            "integrity": "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode(),
            "shasum": hashlib.sha1(tarball).hexdigest(),
        }
        packument = {
            "name": NPM_PACKAGE,
            "dist-tags": {"latest": VERSION},
            "versions": {VERSION: {**manifest, "dist": dist}},
        }
        (self.root / NPM_PACKAGE).write_text(json.dumps(packument))
        # jsr: meta.json lists the versions; <version>_meta.json the files with their checksums.
        package = self.root / "jsr" / f"@{JSR_SCOPE}" / JSR_NAME
        (package / VERSION).mkdir(parents=True, exist_ok=True)
        files = {}
        for path in sorted((PACKAGES / JSR_NAME).iterdir()):
            data = path.read_bytes()
            (package / VERSION / path.name).write_bytes(data)
            files[f"/{path.name}"] = {
                "size": len(data),
                "checksum": "sha256-" + hashlib.sha256(data).hexdigest(),
            }
        meta = {"scope": JSR_SCOPE, "name": JSR_NAME, "latest": VERSION, "versions": {VERSION: {}}}
        (package / "meta.json").write_text(json.dumps(meta))
        (package / f"{VERSION}_meta.json").write_text(
            json.dumps({"manifest": files, "exports": {".": "./mod.ts"}})
        )


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
