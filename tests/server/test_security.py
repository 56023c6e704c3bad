"""Host/Origin/Fetch-Metadata checks, trusted origins, CORS mode, bearer token for HTTP and WS,
and the headers every response carries."""
from __future__ import annotations

import aiohttp
import pytest

from tests.server.support import ctx_of, next_json, small_prompt

PROMPT = {"prompt": small_prompt()}


def same_origin(client) -> str:
    return f"http://127.0.0.1:{client.port}"


async def test_same_origin_requests_pass(client):
    resp = await client.post("/prompt", json=PROMPT, headers={"Origin": same_origin(client),
                                                             "Sec-Fetch-Site": "same-origin"})
    assert resp.status == 200


@pytest.mark.parametrize("headers", [
    {"Origin": "null"},
    {"Origin": "http://evil.com"},
    {"Origin": "http://localhost:{port}"},  # a different host name than Host: is another origin
    {"Origin": "http://127.0.0.1:1"},
    {"Origin": "garbage"},
    {"Sec-Fetch-Site": "cross-site"},
])
async def test_cross_origin_refused(client, headers):
    headers = {k: v.format(port=client.port) for k, v in headers.items()}
    resp = await client.post("/prompt", json=PROMPT, headers=headers)
    assert resp.status == 403
    assert "error" in await resp.json()
    assert (await client.get("/queue", headers=headers)).status == 403
    assert ctx_of(client).queue.remaining() == 0


async def test_cross_site_navigation_to_the_editor_allowed(client):
    navigate = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    resp = await client.get("/", headers=navigate)
    assert resp.status == 200
    assert (await client.get("/queue", headers=navigate)).status == 403
    assert (await client.post("/", headers=navigate)).status == 403


async def test_cross_site_websocket_refused(client):
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect("/ws", headers={"Origin": "http://evil.com"})
    assert err.value.status == 403


@pytest.mark.parametrize("host, status", [
    ("evil.example:{port}", 403),
    ("192.168.1.20:{port}", 403),
    ("localhost:{port}", 200),
    ("127.0.0.2:{port}", 200),
    ("[::1]:{port}", 200),
])
async def test_dns_rebinding_host_check(client, host, status):
    resp = await client.get("/queue", headers={"Host": host.format(port=client.port)})
    assert resp.status == status


async def test_host_check_off_when_listening_on_all_interfaces(make_client):
    client = await make_client(listen="0.0.0.0")
    assert (await client.get("/queue", headers={"Host": f"192.168.1.20:{client.port}"})).status == 200


async def test_trusted_origin_allowed(make_client):
    client = await make_client(trusted_origins=("https://proxy.example",))
    headers = {"Origin": "https://proxy.example", "Sec-Fetch-Site": "cross-site", "Host": "proxy.example"}
    assert (await client.post("/prompt", json=PROMPT, headers=headers)).status == 200
    other = {"Origin": "https://other.example", "Host": "proxy.example"}
    assert (await client.post("/prompt", json=PROMPT, headers=other)).status == 403


async def test_cors_mode(make_client):
    client = await make_client(cors_origin="*")
    resp = await client.options("/prompt", headers={"Origin": "http://studio.example",
                                                    "Access-Control-Request-Method": "POST"})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Access-Control-Allow-Methods"] == "POST, GET, DELETE, PUT, OPTIONS, PATCH"
    assert resp.headers["Access-Control-Allow-Headers"] == "Content-Type, Authorization"
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    resp = await client.post("/prompt", json=PROMPT, headers={"Origin": "http://studio.example",
                                                             "Sec-Fetch-Site": "cross-site"})
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
    assert (await client.get("/queue", headers={"Host": "evil.example"})).status == 403  # rebinding still blocked


async def test_no_cors_headers_by_default(client):
    resp = await client.get("/queue")
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_bearer_token_for_http(make_client):
    client = await make_client(auth_token="s3cret")
    good = {"Authorization": "Bearer s3cret"}
    for method, path in (("GET", "/queue"), ("GET", "/api/object_info"), ("POST", "/prompt"),
                         ("GET", "/view?filename=x.png"), ("GET", "/internal/folder_paths"),
                         ("POST", "/no/such/route")):
        resp = await client.request(method, path, json=PROMPT)
        assert resp.status == 401, path
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "error" in await resp.json()
        wrong = await client.request(method, path, json=PROMPT, headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401, path
    assert (await client.get("/queue", headers=good)).status == 200
    assert (await client.post("/prompt", json=PROMPT, headers=good)).status == 200
    assert (await client.get("/queue?token=s3cret")).status == 401  # query tokens only for /ws and /view
    assert (await client.get("/view?filename=x.png&token=s3cret")).status == 404  # authorized, file missing
    assert (await client.get("/")).status == 200  # the editor page itself loads
    assert (await client.get("/app.js")).status == 200


async def test_bearer_token_for_websocket(make_client):
    client = await make_client(auth_token="s3cret")
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect("/ws")
    assert err.value.status == 401
    ws = await client.ws_connect("/ws?clientId=a&token=s3cret")
    assert (await next_json(ws))["type"] == "status"
    await ws.close()
    ws = await client.ws_connect("/api/ws", headers={"Authorization": "Bearer s3cret"})
    assert (await next_json(ws))["type"] == "status"
    await ws.close()


async def test_common_headers_and_index(client):
    index = await client.get("/")
    assert index.status == 200 and "test editor" in await index.text()
    assert index.headers["Cache-Control"] == "no-cache"
    assert index.headers["Pragma"] == "no-cache" and index.headers["Expires"] == "0"
    for path in ("/", "/queue", "/app.js", "/nope", "/view"):
        assert (await client.get(path)).headers["X-Content-Type-Options"] == "nosniff", path
    script = await client.get("/app.js")
    assert script.headers["Cache-Control"] == "no-cache"
    missing_image = await client.get("/missing.png")
    assert missing_image.status == 404 and missing_image.headers["Cache-Control"] == "public, max-age=3600"
    not_found = await client.get("/api/nothing/here")
    assert not_found.status == 404 and await not_found.json() == {"error": "Not Found"}
    wrong_method = await client.delete("/queue")
    assert wrong_method.status == 405 and "error" in await wrong_method.json()
