"""Self-hosted ``/docs`` (issue 11, "Small HTTP fixes"): Swagger UI's assets come from the fastapi-offline
package through the server itself, so the page works with no internet access.

Real components: the default server on a real uvicorn, and headless Chromium (Debian package ``chromium``)
with every host name but 127.0.0.1 made unresolvable, i.e. offline for anything but the server.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from urllib.parse import urljoin, urlsplit

import httpx
import pytest


def _asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)["\']', html)


def test_docs_references_only_local_assets_that_answer(default_server: str) -> None:
    page = httpx.get(default_server + "/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    urls = _asset_urls(html)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(urls), urls
    assert not re.search(r"https?://", html), "the /docs page must not load anything from another host"
    assert "url: '/openapi.json'" in html
    for url in urls:
        absolute = urljoin(default_server + "/docs", url)
        assert urlsplit(absolute).netloc == urlsplit(default_server).netloc, url
        asset = httpx.get(absolute)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0
    script = httpx.get(default_server + "/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in script.text and "javascript" in script.headers["content-type"]
    assert httpx.get(default_server + "/docs/assets/no-such-file.js").status_code == 404
    assert httpx.get(default_server + "/openapi.json").json()["openapi"].startswith("3.")


def test_docs_renders_offline_in_headless_chromium(default_server: str) -> None:
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if chromium is None:
        pytest.skip("headless Chromium is not installed (Debian package: chromium)")
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
         "--virtual-time-budget=10000", "--dump-dom", default_server + "/docs"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    # Swagger UI drew one block per operation of /openapi.json: the script ran and the spec loaded
    shown = set(re.findall(r'data-path="([^"]+)"', dom))
    spec = httpx.get(default_server + "/openapi.json").json()
    assert shown == set(spec["paths"]), (sorted(shown), dom[-2000:])
    assert {"/extract", "/render", "/v1/chat/completions", "/readyz"} <= shown
