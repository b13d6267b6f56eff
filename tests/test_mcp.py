"""The lab as an MCP server: the toy app serves every lab endpoint as a tool over streamable HTTP, described by its
spec, and a tool call answers as the API does (images back, the same clear message for bad input)."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import urllib.error
import urllib.request

import pytest
from gradio_client.exceptions import AppError
from live_app import live_app
from PIL import Image

from models.profiles import load_profile
from tasks import all_tasks

pytestmark = pytest.mark.live
MCP_PATH = "gradio_api/mcp/"


async def _session_run(url: str, work):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url + MCP_PATH) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        return await work(session)


def mcp(url: str, work):
    return asyncio.run(_session_run(url, work))


@pytest.fixture(scope="module")
def toy_app():
    with live_app("toy") as client:
        yield client


def fetched_images(result) -> list[Image.Image]:
    """The images a tool result carries: inline image content, or the file URLs Gradio serves them at."""
    images = [Image.open(io.BytesIO(base64.b64decode(c.data))) for c in result.content if c.type == "image"]
    text = " ".join(getattr(c, "text", "") or "" for c in result.content)
    for url in dict.fromkeys(re.findall(r"https?://[^'\"\s]+\.png", text)):
        with urllib.request.urlopen(url, timeout=10) as response:
            images.append(Image.open(io.BytesIO(response.read())))
    return images


def test_every_lab_endpoint_is_a_tool_described_by_its_spec(toy_app):
    with urllib.request.urlopen(toy_app.app_url + MCP_PATH + "schema", timeout=10) as response:
        assert response.status == 200  # what the --no-mcp app below does not serve
    tools = mcp(toy_app.app_url, lambda session: session.list_tools()).tools
    profile = load_profile("toy")
    expected = {task.spec.api_name.strip("/"): task.spec.bind(profile) for task in all_tasks()}
    assert {tool.name for tool in tools} == set(expected)  # no helper event of the page
    for tool in tools:
        endpoint = expected[tool.name]
        assert tool.description.startswith(endpoint.spec.summary.rstrip("."))
        properties = tool.inputSchema["properties"]
        assert list(properties) == [f.name for f in endpoint.fields if f.kind != "image"] or \
            set(properties) >= {f.name for f in endpoint.fields if f.kind != "image"}
        for f in endpoint.fields:
            if f.kind != "image":
                assert properties[f.name]["description"] == " ".join(str(f.info or f.label).split()), f.name


def test_text_to_image_and_the_playground_answer_with_images(toy_app):
    async def work(session):
        t2i = await session.call_tool("text_to_image", {"prompt": "a blue square", "steps": 4, "seed": 3})
        playground = await session.call_tool("playground", {"steps": 5, "num_samples": 100})
        return t2i, playground

    t2i, playground = mcp(toy_app.app_url, work)
    assert not t2i.isError and not playground.isError
    drawn = fetched_images(t2i)
    assert drawn and drawn[0].size == (32, 32)
    assert fetched_images(playground)


def test_a_bad_argument_gets_the_message_gradio_client_gets(toy_app):
    with pytest.raises(AppError) as through_client:
        toy_app.predict(prompt="a blue square", steps=0, api_name="/text_to_image")
    result = mcp(toy_app.app_url, lambda session: session.call_tool("text_to_image", {"prompt": "x", "steps": 0}))
    text = " ".join(c.text for c in result.content if c.type == "text")
    assert result.isError and "steps must be between 1 and 100, got 0" in text
    assert "steps must be between 1 and 100, got 0" in str(through_client.value)
    assert "Traceback" not in text


def test_without_mcp_server_there_is_no_mcp_endpoint():
    """The check can fail: the same app launched with --no-mcp serves the page but no MCP endpoint."""
    with live_app("toy", args=["--no-mcp"]) as client:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(client.app_url + MCP_PATH + "schema", timeout=10)
        assert err.value.code == 404
        with pytest.raises(Exception):  # noqa: B017 - whatever the MCP client raises, there is no server
            mcp(client.app_url, lambda session: session.list_tools())
