"""``/docs`` works offline: the page and every asset it loads come from the server itself, never a CDN;
the docs routes are labelled as themselves in /metrics."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import httpx
from test_service_api import metric_value

# Where a page or style sheet names another resource: src/href attributes, Swagger UI's `url: '...'`
# (the schema) and CSS url(...).
REFERENCES = re.compile(r"""(?:\bsrc|\bhref)\s*=\s*["']([^"']+)["']|\burl:\s*'([^']+)'""")
CSS_URLS = re.compile(r"""url\(\s*["']?([^"')]+)["']?\s*\)""")


def on_this_host(reference: str) -> bool:
    """A path on the same server: no scheme, no host, not protocol-relative."""
    parts = urlsplit(reference)
    return not parts.scheme and not parts.netloc and reference.startswith("/")


def test_docs_page_and_every_asset_it_loads_come_from_this_server(client: httpx.Client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "http://" not in html and "https://" not in html, "the page names another host"
    references = [a or b for a, b in REFERENCES.findall(html)]
    # The script, the style sheet, the icon and the schema: exactly what the page needs.
    assert sorted(references) == ["/docs/assets/favicon-32x32.png", "/docs/assets/swagger-ui-bundle.js",
                                  "/docs/assets/swagger-ui.css", "/openapi.json"]
    expected_types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}
    for reference in references:
        assert on_this_host(reference), reference
        response = client.get(reference)
        assert response.status_code == 200, (reference, response.status_code)
        suffix = reference[reference.rindex("."):]
        assert response.headers["content-type"].startswith(expected_types[suffix]), (reference, response.headers)
        assert len(response.content) > 100, reference
    assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text
    assert json.loads(client.get("/openapi.json").text)["paths"]["/v1/tag"]
    # The style sheet pulls in nothing from elsewhere either (its images are inline data: URLs).
    css = client.get("/docs/assets/swagger-ui.css").text
    for url in CSS_URLS.findall(css):
        assert url.startswith("data:") or on_this_host(url), url
    # Swagger UI's online validator badge would call out: it is off.
    assert '"validatorUrl": null' in html


def test_redoc_from_a_cdn_is_not_served(client: httpx.Client) -> None:
    assert client.get("/redoc").status_code == 404


def test_docs_routes_have_their_own_metric_labels(client: httpx.Client) -> None:
    before = client.get("/metrics").text
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200
    assert client.get("/docs/assets/no-such-file.js").status_code == 404
    after = client.get("/metrics").text

    def delta(**labels: str) -> float:
        return (metric_value(after, "slotfill_http_requests_total", **labels)
                - metric_value(before, "slotfill_http_requests_total", **labels))

    assert delta(method="GET", route="/docs", status="200") == 1
    assert delta(method="GET", route="/openapi.json", status="200") == 1
    assert delta(method="GET", route="/docs/assets", status="200") == 1
    assert delta(method="GET", route="/docs/assets", status="404") == 1
    assert delta(route="<unmatched>") == 0
