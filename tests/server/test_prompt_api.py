"""POST /prompt, the WebSocket message sequence, queue, history, interrupt, free and the jobs API."""
from __future__ import annotations

import asyncio

import pytest

from tests.server.support import (ctx_of, next_json, post_prompt, small_prompt, until_done, wait_for,
                                   waiting_prompt)

ERROR_FIELDS = {"type", "message", "details", "extra_info"}


# ------------------------------------------------------------------ POST /prompt
async def test_post_prompt_success_body(client):
    body = await post_prompt(client, small_prompt())
    assert set(body) == {"prompt_id", "number", "node_errors"}
    assert body["node_errors"] == {}
    assert isinstance(body["number"], (int, float))


async def test_post_prompt_validation_error_body(client):
    resp = await client.post("/prompt", json={"prompt": {"2": {"class_type": "TestSink", "inputs": {}}}})
    assert resp.status == 400
    body = await resp.json()
    assert set(body) == {"error", "node_errors"}
    assert set(body["error"]) == ERROR_FIELDS
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    node = body["node_errors"]["2"]
    assert set(node) == {"errors", "dependent_outputs", "class_type"}
    assert node["class_type"] == "TestSink"
    assert set(node["errors"][0]) == ERROR_FIELDS
    assert node["errors"][0]["type"] == "required_input_missing"


@pytest.mark.parametrize("payload, kind", [
    ("{not json", "invalid_prompt"),
    ("{}", "no_prompt"),
    ("[1, 2]", "invalid_prompt"),
])
async def test_post_prompt_malformed_bodies(client, payload, kind):
    resp = await client.post("/prompt", data=payload, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    body = await resp.json()
    assert body["error"]["type"] == kind
    assert body["node_errors"] == {}


async def test_post_ui_workflow(client):
    pytest.importorskip("execution.convert")
    workflow = {"version": 0.4, "last_node_id": 2, "last_link_id": 1, "links": [[1, 1, 0, 2, 0, "INT"]],
                "nodes": [{"id": 1, "type": "TestSource", "mode": 0, "inputs": [],
                           "outputs": [{"name": "INT", "type": "INT", "links": [1]}], "widgets_values": [9]},
                          {"id": 2, "type": "TestSink", "mode": 0,
                           "inputs": [{"name": "value", "type": "INT", "link": 1}], "outputs": []}]}
    resp = await client.post("/api/prompt", json={"workflow": workflow})
    assert resp.status == 200, await resp.text()
    prompt_id = (await resp.json())["prompt_id"]
    await wait_for(lambda: bool(ctx_of(client).queue.history_item(prompt_id)))
    record = (await (await client.get(f"/history/{prompt_id}")).json())[prompt_id]
    assert record["outputs"] == {"2": {"text": ["9"]}}
    assert record["prompt"][3]["extra_pnginfo"]["workflow"] == workflow


async def test_get_prompt_reports_queue_remaining(client):
    assert await (await client.get("/prompt")).json() == {"exec_info": {"queue_remaining": 0}}


# ------------------------------------------------------------------ WebSocket sequence
async def test_ws_sequence_history_written_before_completion(client):
    ws = await client.ws_connect("/ws?clientId=c1")
    hello = await next_json(ws)
    assert hello == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "c1"}}
    prompt_id = (await post_prompt(client, small_prompt(), client_id="c1"))["prompt_id"]
    history_at_completion = []

    async def read_history_on_completion(message: dict) -> None:
        if message["type"] in ("execution_success", "execution_error", "execution_interrupted") \
                or (message["type"] == "executing" and message["data"]["node"] is None):
            if not history_at_completion:
                history_at_completion.append(await (await client.get(f"/history/{prompt_id}")).json())

    messages = await until_done(ws, prompt_id, read_history_on_completion)
    types = [m["type"] for m in messages if m["type"] not in ("status", "progress_state")]
    assert types == ["execution_start", "execution_cached", "executing", "executing", "executed",
                     "execution_success", "executing"]
    assert messages[-1]["data"] == {"node": None, "prompt_id": prompt_id}
    executing = [m["data"]["node"] for m in messages if m["type"] == "executing"]
    assert executing == ["1", "2", None]
    executed = next(m["data"] for m in messages if m["type"] == "executed")
    assert executed["node"] == "2" and executed["output"] == {"text": ["3"]} and executed["prompt_id"] == prompt_id
    # The first completion message found the history record already written.
    record = history_at_completion[0][prompt_id]
    assert record["outputs"] == {"2": {"text": ["3"]}}
    assert record["status"]["completed"] is True
    await ws.close()


async def test_identical_resubmission_is_fully_cached(client):
    ws = await client.ws_connect("/ws?clientId=c2")
    await next_json(ws)
    first = (await post_prompt(client, small_prompt(7), client_id="c2"))["prompt_id"]
    await until_done(ws, first)
    second = (await post_prompt(client, small_prompt(7), client_id="c2"))["prompt_id"]
    messages = await until_done(ws, second)
    cached = next(m["data"] for m in messages if m["type"] == "execution_cached")
    assert sorted(cached["nodes"]) == ["1", "2"]
    assert [m for m in messages if m["type"] == "executing" and m["data"]["node"] is not None] == []
    executed = [m["data"] for m in messages if m["type"] == "executed"]
    assert executed and executed[0]["output"] == {"text": ["7"]}
    await ws.close()


async def test_prompt_without_client_id_sends_no_client_messages(client):
    ws = await client.ws_connect("/ws")
    hello = await next_json(ws)
    assert len(hello["data"]["sid"]) == 32  # uuid4 hex when no clientId is given
    prompt_id = (await post_prompt(client, small_prompt(11)))["prompt_id"]
    await wait_for(lambda: bool(ctx_of(client).queue.history_item(prompt_id)))
    await asyncio.sleep(0.1)
    seen = []
    while True:
        try:
            seen.append(await next_json(ws, timeout=0.3))
        except asyncio.TimeoutError:
            break
    assert {m["type"] for m in seen} <= {"status", "progress_state"}
    await ws.close()


# ------------------------------------------------------------------ queue / history
async def test_queue_history_shapes_while_running(client):
    ctx = ctx_of(client)
    running = (await post_prompt(client, waiting_prompt(), client_id="q"))["prompt_id"]
    pending = (await post_prompt(client, small_prompt(1)))["prompt_id"]
    await wait_for(lambda: running in ctx.queue.running_ids())
    queue = await (await client.get("/queue")).json()
    assert set(queue) == {"queue_running", "queue_pending"}
    assert [item[1] for item in queue["queue_running"]] == [running]
    assert [item[1] for item in queue["queue_pending"]] == [pending]
    item = queue["queue_running"][0]
    assert len(item) == 5 and item[2] == waiting_prompt() and item[3]["client_id"] == "q" and item[4] == ["2"]
    assert "create_time" in item[3]
    assert await (await client.get("/prompt")).json() == {"exec_info": {"queue_remaining": 2}}
    ctx.services.settings["test_gate"].set()
    await wait_for(lambda: bool(ctx.queue.history_item(pending)))
    record = (await (await client.get(f"/history/{running}")).json())[running]
    assert set(record) == {"prompt", "outputs", "status", "meta"}
    assert len(record["prompt"]) == 5 and record["prompt"][1] == running
    assert record["outputs"] == {"2": {"text": ["5"]}}
    assert record["status"]["status_str"] == "success" and record["status"]["completed"] is True
    assert [m[0] for m in record["status"]["messages"]] == ["execution_start", "execution_cached",
                                                            "execution_success"]
    assert all("timestamp" in m[1] for m in record["status"]["messages"])
    assert record["meta"]["2"]["node_id"] == "2"
    assert await (await client.get("/history/unknown")).json() == {}


async def test_queue_delete_and_clear(client):
    ctx = ctx_of(client)
    running = (await post_prompt(client, waiting_prompt()))["prompt_id"]
    await wait_for(lambda: running in ctx.queue.running_ids())
    ids = [(await post_prompt(client, small_prompt(i)))["prompt_id"] for i in range(3)]
    resp = await client.post("/queue", json={"delete": [ids[0]]})
    assert resp.status == 200 and await resp.text() == ""
    pending = (await (await client.get("/queue")).json())["queue_pending"]
    assert sorted(item[1] for item in pending) == sorted(ids[1:])
    await client.post("/queue", json={"clear": True})
    assert (await (await client.get("/queue")).json())["queue_pending"] == []
    assert (await client.post("/queue", data="nope")).status == 400


async def _finished(client, count: int) -> list[str]:
    ctx = ctx_of(client)
    ids = [(await post_prompt(client, small_prompt(i)))["prompt_id"] for i in range(count)]
    await wait_for(lambda: all(ctx.queue.history_item(i) for i in ids))
    return ids


async def test_history_paging(make_client):
    client = await make_client(history_page_limit=3)
    ids = await _finished(client, 5)

    async def history(query: str = "") -> list[str]:
        resp = await client.get(f"/history{query}")
        assert resp.status == 200
        return list(await resp.json())

    assert await history() == ids[-3:]  # never unbounded: the newest page_limit entries
    assert await history("?max_items=2") == ids[-2:]
    assert await history("?max_items=100") == ids[-3:]  # capped
    first, second = await history("?offset=0&max_items=2"), await history("?offset=2&max_items=2")
    assert first == ids[:2] and second == ids[2:4]
    assert await history("?offset=4") == ids[4:]
    assert await history("?offset=5") == []
    for bad in ("?max_items=abc", "?offset=1.5"):
        resp = await client.get(f"/history{bad}")
        assert resp.status == 400
        assert "must be an integer" in (await resp.json())["error"]


async def test_history_delete_and_clear(client):
    ids = await _finished(client, 3)
    await client.post("/history", json={"delete": [ids[0]]})
    assert list(await (await client.get("/history")).json()) == ids[1:]
    await client.post("/history", json={"clear": True})
    assert await (await client.get("/history")).json() == {}


async def test_api_prefix_parity(client):
    await _finished(client, 1)
    for path in ("/queue", "/history", "/prompt", "/object_info/TestSource", "/models", "/features",
                 "/embeddings", "/settings", "/users", "/v2/userdata"):
        plain, api = await client.get(path), await client.get("/api" + path)
        assert plain.status == api.status == 200, path
        assert await plain.json() == await api.json(), path
        assert (await client.head("/api" + path)).status == 200, path
    assert (await client.get("/api/api/jobs")).status == 200
    assert (await client.get("/api/internal/folder_paths")).status == 404  # /internal is not duplicated
    assert (await client.get("/internal/folder_paths")).status == 200


# ------------------------------------------------------------------ interrupt / free
async def test_interrupt_running_prompt(client):
    ctx = ctx_of(client)
    ws = await client.ws_connect("/ws?clientId=i1")
    await next_json(ws)
    prompt_id = (await post_prompt(client, waiting_prompt(), client_id="i1"))["prompt_id"]
    await wait_for(lambda: prompt_id in ctx.queue.running_ids())
    assert (await client.post("/interrupt", json={"prompt_id": "some-other-prompt"})).status == 200
    await asyncio.sleep(0.2)
    assert prompt_id in ctx.queue.running_ids()  # interrupting another id is a no-op
    resp = await client.post("/api/interrupt", json={"prompt_id": prompt_id})
    assert resp.status == 200
    messages = await until_done(ws, prompt_id)
    interrupted = [m["data"] for m in messages if m["type"] == "execution_interrupted"]
    assert interrupted and interrupted[0]["prompt_id"] == prompt_id and interrupted[0]["node_id"] == "1"
    record = (await (await client.get(f"/history/{prompt_id}")).json())[prompt_id]
    assert record["status"]["status_str"] == "error"
    assert (await client.post("/interrupt")).status == 200  # empty body: global interrupt
    await ws.close()


async def test_free_forgets_cached_outputs(client):
    ctx = ctx_of(client)
    await _finished(client, 1)
    assert len(ctx.executor.cache) > 0
    resp = await client.post("/free", json={"unload_models": True, "free_memory": True})
    assert resp.status == 200
    await wait_for(lambda: len(ctx.executor.cache) == 0)


# ------------------------------------------------------------------ jobs API
async def test_jobs_list_shape_sorting_and_pagination(client):
    ctx = ctx_of(client)
    ids = await _finished(client, 3)
    body = await (await client.get("/api/jobs")).json()
    assert set(body) == {"jobs", "pagination"}
    assert body["pagination"] == {"offset": 0, "limit": ctx.config.history_page_limit, "total": 3,
                                  "has_more": False}
    assert [j["id"] for j in body["jobs"]] == ids[::-1]  # created_at, newest first by default
    job = body["jobs"][0]
    assert job["status"] == "completed" and job["outputs_count"] == 0  # text items are not files
    assert {"id", "status", "priority", "create_time", "outputs_count", "execution_start_time",
            "execution_end_time"} <= set(job)
    assert job["execution_end_time"] >= job["execution_start_time"]
    assert None not in job.values()
    asc = await (await client.get("/api/jobs?sort_order=asc")).json()
    assert [j["id"] for j in asc["jobs"]] == ids
    page1 = await (await client.get("/api/jobs?limit=2&offset=0")).json()
    page2 = await (await client.get("/api/jobs?limit=2&offset=2")).json()
    assert page1["pagination"]["has_more"] is True and page2["pagination"]["has_more"] is False
    assert {j["id"] for j in page1["jobs"]} | {j["id"] for j in page2["jobs"]} == set(ids)
    assert not {j["id"] for j in page1["jobs"]} & {j["id"] for j in page2["jobs"]}
    by_duration = await (await client.get("/api/jobs?sort_by=execution_duration")).json()
    assert by_duration["pagination"]["total"] == 3
    clamped = await (await client.get("/api/jobs?offset=-5")).json()
    assert clamped["pagination"]["offset"] == 0


@pytest.mark.parametrize("query", ["status=bogus", "sort_by=name", "sort_order=up", "limit=0", "limit=x",
                                   "offset=y"])
async def test_jobs_invalid_query(client, query):
    resp = await client.get(f"/api/jobs?{query}")
    assert resp.status == 400
    assert isinstance((await resp.json())["error"], str)


async def test_jobs_status_filter_single_job_and_workflow_id(client):
    ctx = ctx_of(client)
    running = (await post_prompt(client, waiting_prompt(), extra_data={
        "extra_pnginfo": {"workflow": {"id": "wf-1", "nodes": []}}}))["prompt_id"]
    await wait_for(lambda: running in ctx.queue.running_ids())
    pending = (await post_prompt(client, small_prompt(2)))["prompt_id"]
    active = await (await client.get("/api/jobs?status=in_progress,pending")).json()
    assert {j["id"]: j["status"] for j in active["jobs"]} == {running: "in_progress", pending: "pending"}
    pending_job = next(j for j in active["jobs"] if j["id"] == pending)
    assert pending_job["outputs_count"] == 0 and "execution_start_time" not in pending_job
    by_workflow = await (await client.get("/api/jobs?workflow_id=wf-1")).json()
    assert [j["id"] for j in by_workflow["jobs"]] == [running]
    assert by_workflow["jobs"][0]["workflow_id"] == "wf-1"
    ctx.services.settings["test_gate"].set()
    await wait_for(lambda: bool(ctx.queue.history_item(pending)))
    detail = await (await client.get(f"/api/jobs/{running}")).json()
    assert detail["outputs"] == {"2": {"text": ["5"]}}
    assert detail["execution_status"]["status_str"] == "success"
    assert detail["workflow"]["prompt"] == waiting_prompt()
    assert detail["workflow"]["extra_data"]["extra_pnginfo"]["workflow"]["id"] == "wf-1"
    done = await (await client.get("/api/jobs?status=completed")).json()
    assert {j["id"] for j in done["jobs"]} == {running, pending}
    finished = await (await client.get("/api/jobs?status=completed,failed,cancelled")).json()
    assert finished["pagination"]["total"] == 2
    missing = await client.get("/api/jobs/nope")
    assert missing.status == 404 and await missing.json() == {"error": "Job not found"}


async def test_jobs_preview_output_with_image_nodes(client):
    ctx = ctx_of(client)
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "jobs"}},
              "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    prompt_id = (await post_prompt(client, prompt))["prompt_id"]
    await wait_for(lambda: bool(ctx.queue.history_item(prompt_id)))
    job = (await (await client.get("/api/jobs")).json())["jobs"][0]
    assert job["outputs_count"] == 2
    preview = job["preview_output"]
    assert preview["nodeId"] == "2" and preview["mediaType"] == "images" and preview["type"] == "output"
    assert preview["filename"] == "jobs_00001_.png"
    image = await client.get("/view", params={"filename": preview["filename"], "type": "output"})
    assert image.status == 200 and image.headers["Content-Type"] == "image/png"


async def test_requeue_and_cancel(client):
    ctx = ctx_of(client)
    [done] = await _finished(client, 1)
    resp = await client.post(f"/api/jobs/{done}/requeue")
    assert resp.status == 200
    again = (await resp.json())["prompt_id"]
    assert again != done
    await wait_for(lambda: bool(ctx.queue.history_item(again)))
    assert (await client.post("/api/jobs/unknown/requeue")).status == 404

    running = (await post_prompt(client, waiting_prompt()))["prompt_id"]
    await wait_for(lambda: running in ctx.queue.running_ids())
    pending = (await post_prompt(client, small_prompt(4)))["prompt_id"]
    resp = await client.post(f"/api/jobs/{pending}/cancel")
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    assert (await (await client.get("/queue")).json())["queue_pending"] == []
    resp = await client.post(f"/api/jobs/{running}/cancel")
    assert resp.status == 200 and (await resp.json())["status"] == "interrupting"
    await wait_for(lambda: bool(ctx.queue.history_item(running)))
    job = await (await client.get(f"/api/jobs/{running}")).json()
    assert job["status"] == "failed"
    assert (await client.post(f"/api/jobs/{running}/cancel")).status == 404
