"""MCP: the real app launched with mcp_server=True (what --mcp does), driven by the `mcp` client package over
streamable HTTP at /gradio_api/mcp/: the public endpoints are tools with described parameters, and count_tokens
answers with tiktoken's exact count."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from chat import tokens

pytestmark = pytest.mark.e2e

PUBLIC = {"count_tokens", "next_token", "chat", "classify_digit", "attention", "logit_lens", "head_scores"}


@pytest.fixture(scope="module")
def mcp_url():
    import app
    from chat.local_server import free_port

    demo, port = app.build_app(), free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, mcp_server=True,
                **app.launch_options())
    yield f"http://127.0.0.1:{port}/gradio_api/mcp/"
    demo.close()


def _session(url: str, work):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def run():
        async with streamablehttp_client(url) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)

    # in a thread of its own: Playwright's sync API (the browser tests) keeps an event loop running on this one
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def test_the_public_api_is_listed_as_mcp_tools_with_described_parameters(mcp_url):
    async def work(session):
        return (await session.list_tools()).tools

    tools = {tool.name: tool for tool in _session(mcp_url, work)}
    assert PUBLIC <= set(tools)
    assert not [name for name in tools if name.startswith("value")]  # the page's own load events stay private
    for name in PUBLIC:
        tool = tools[name]
        assert tool.description, name
        undescribed = [p for p, schema in tool.inputSchema["properties"].items() if not schema.get("description")]
        assert not undescribed, f"{name}: parameters without an Args: line: {undescribed}"


def test_count_tokens_through_mcp_is_tiktokens_count(mcp_url):
    text = "这是一段示例文本。ChatGPT reads tokens, not letters."

    async def work(session):
        return await session.call_tool("count_tokens", {"text": text, "model": "gpt-4o"})

    result = _session(mcp_url, work)
    assert not result.isError
    assert result.content[0].text == str(tokens.count_tokens(text, "gpt-4o"))
