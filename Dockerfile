# ChatLab as a Hugging Face Docker Space (README front matter: sdk: docker, app_port: 7860). docs/deploying.md says
# why Docker rather than the runtime install.
FROM python:3.11-slim

# g++ compiles the fast CPU decoder's kernels; the Space runs the container as uid 1000
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/* \
    && useradd -m -u 1000 user
USER user
ENV HOME=/home/user PATH=/home/user/.local/bin:$PATH \
    CHATLAB_CACHE_DIR=/home/user/.cache/chatlab GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
WORKDIR /home/user/app

# The Makefile's two pip commands, plus the CPU torch index (PyPI's torch is a multi-GB CUDA build)
COPY --chown=user requirements.txt requirements-nodeps.txt ./
RUN pip install --no-cache-dir --user --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt \
    && pip install --no-cache-dir --user --no-deps -r requirements-nodeps.txt

COPY --chown=user . .
# The first start's work, done once in the image: the GGUF -> safetensors conversion and the fast decoder's build
# (when the Space's CPU differs in class from the builder's, the decoder is rebuilt in the background at start)
RUN python -c "from chat.llm import models; from chat.llm.fastpath import package; m = models.get_model(); \
package.prepare_decoder(m.model, m.device, print)"

EXPOSE 7860
CMD ["python", "app.py"]
