"""The WASP paper's IMDb comparison (Zou et al., ICML 2025, Table 2), scaled to a 2-core CPU.

Every row is a real `dpsynth.synthesize` run (its own run directory under --out; a finished row is
not re-run, so the script can be stopped and started again) followed by `dpsynth.evaluate` against
the embedded dataset's fixed test split (IMDb: 2,000 reviews): logistic regression on frozen MiniLM
embeddings (accuracy mean +- std over classifier seeds 0, 1, 2), FID and MAUVE in the same embedding
space, wall time and generated tokens.  Results accumulate in bench/results/quality.json after each row.

--dataset newsgroups runs the same rows on the topic task (embedded:newsgroups: 4 newsgroups, private
posts from its pool, the fixed 1,531-post test split); its results go to quality_newsgroups.json, its
sets to results/quality_sets_newsgroups/ and its runs under runs/quality-newsgroups by default.

Rows (names for --rows):
  zero-shot                    epsilon = 0 (no private data), the three generators
  aug-pe:<generator>           Aug-PE with one generator (Q=1, no far votes, rephrase, no weighting)
  wasp                         WASP with all three generators (the defaults)
  wasp-no-weighting            ablation: generators keep equal weights
  wasp-no-contrastive          ablation: only good examples in the prompt
  wasp-q1                      ablation: Top-Q with Q = 1 (Top-1 vote)
  wasp-pop<P>                  WASP whose votes see a population of P samples (wasp.population = P); the rest
                               of N is generated after the last vote, at no privacy cost, e.g. wasp-pop200
  wasp-s<S>                    WASP with good and bad pools of S samples per class (wasp.top_s = S; default 8),
                               e.g. wasp-s32: each prompt's L = 4 examples drawn from a wider pool
  <row>-even                   the same WASP row with even class shares (wasp.class_uniform_mix = 1), as zero-shot
                               has, instead of shares that follow the vote's estimate of the private class
                               counts, before any -t<T>: wasp-even+judge, wasp-kw-even+judge
  wasp-kw                      WASP whose rounds prompt zero-shot with words typical of the voted good pools
                               (wasp.variation = keywords) instead of showing examples
  wasp-kwc                     the same with words the class's good pool uses more than the other classes'
                               samples (wasp.keywords_against = other_classes)
  wasp-latest                  WASP whose votes rank the previous round's samples only (wasp.vote_on = latest),
                               so late votes rank as strongly as the first, at the same privacy cost
  wasp-spread<K>               WASP whose good pools are S samples spread out in embedding space among the
                               top K x S by votes (wasp.pool_spread = K), e.g. wasp-spread4
  <row>-t<T>                   the same with at most T tokens per sample (wasp.max_new_tokens, default 64;
                               finetune.max_new_tokens for dp-finetune rows),
                               e.g. wasp-t128+judge, zero-shot-t128+judge
  <row>-w                      the same with a writer named in every prompt (wasp.writers; rows of the
                               WASP pipeline only), after any -t<T>: zero-shot-w+judge, wasp-t128-w+judge
  <row>-big                    the same with a fourth, larger generator: Qwen2.5-Coder-1.5B-Instruct
                               (qwen2.5-coder-1.5b-instruct, pip install 'dpsynth[embedded-large]'; rows of
                               the WASP pipeline only), after any -w: zero-shot-big+judge, wasp-big+judge
                               (the judge stays the 0.5B)
  <row>+judge                  the same with Qwen2.5-Coder-0.5B checking each new sample's label
                               (wasp.label_judge), for rows whose generators include it: wasp+judge,
                               zero-shot+judge, aug-pe:qwen2.5-0.5b+judge (the rows keep the generator's
                               former name qwen2.5-0.5b; aug-pe:qwen2.5-coder-0.5b is the same row setting)
  dp-finetune                  DP-SGD + LoRA fine-tune of SmolLM2-135M, then sampling (Yue et al. 2023)
  dp-finetune-b<B>             the same with expected batch size B (default 8), e.g. dp-finetune-b32
  dp-finetune-lr<LR>           the same with learning rate LR (default 0.002), e.g. dp-finetune-lr0.0005
  dp-finetune-sgd<LR>          the same with plain SGD (finetune.optimizer = sgd) at learning rate LR, e.g.
                               dp-finetune-sgd0.005
  dp-finetune-frozen           the same pipeline with learning rate 1e-12, so the LoRA weights stay at their
                               initialisation: SmolLM2's samples under dp-finetune's prompts and label shares,
                               what a dp-finetune row is read against
  pearl-select                 PEARL sketch of private embeddings picks N of 3N zero-shot candidates
  only-private                 the classifier trained on the M private records (not DP)
  real-ceiling                 the classifier trained on 20,000 real records (not DP; newsgroups: its whole
                               pool of 2,308 posts)

    python bench/quality.py [--dataset imdb|newsgroups] [--rows wasp,zero-shot,...] [--epsilons 4] [--seeds 0]
                            [--n 100] [--m 100] [--repeat R]

--repeat R (R >= 1) runs the same rows and seeds again as draw R: how far apart two runs of one seed land
(llama.cpp batches the requests of its parallel slots as they arrive, so a seed does not fix the texts).
Draws go to run directories and kept sets ending in -r<R> and to quality[_DATASET]_repeats.json, so the
tables, which read one draw per seed, are not changed by them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dpsynth  # noqa: E402
from common import code_version, read_json, run_code, write_result  # noqa: E402
from dpsynth.config import (  # noqa: E402
    QWEN_CODER_GENERATOR,
    Config,
    GeneratorConfig,
    default_generators,
    generator_named,
)
from dpsynth.data import EMBEDDED_DATASETS, EMBEDDED_IMDB, EmbeddedDataset  # noqa: E402
from dpsynth.errors import ConfigError, ResumeError  # noqa: E402
from dpsynth.evaluate.core import evaluate  # noqa: E402
from dpsynth.evaluate.inputs import default_embedder, find_run_output  # noqa: E402
from dpsynth.generators.models import QWEN25_CODER_15  # noqa: E402

ALL_ROWS = [
    "zero-shot",
    "aug-pe:smollm2-135m",
    "aug-pe:gemma3-270m",
    "aug-pe:qwen2.5-0.5b",
    "wasp",
    "wasp-no-weighting",
    "wasp-no-contrastive",
    "wasp-q1",
    "pearl-select",
    "dp-finetune",
    "only-private",
    "real-ceiling",
]
RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"
# Each generated row's synthetic set (text, label, generator, round), kept so that other classifiers or
# metrics can be run on the same sets later without regenerating them (e.g. `bench/diag_quality.py`).
SETS = RESULTS.parent / "quality_sets"
DATASETS = {name.removeprefix("embedded:"): ds for name, ds in EMBEDDED_DATASETS.items()}
IMDB = EMBEDDED_DATASETS[EMBEDDED_IMDB]


# the "-big" rows' fourth generator: does a larger model let the vote pay? (docs/quality.md, "A larger generator")
BIG = GeneratorConfig(name="qwen2.5-coder-1.5b", model=QWEN25_CODER_15, prompt_format="chat")
JUDGE = QWEN_CODER_GENERATOR  # the "+judge" rows: this generator checks every new sample's label (wasp.label_judge)


def row_config(row: str, eps: float, seed: int, n: int, m: int, out: Path, dataset: EmbeddedDataset = IMDB) -> Config:
    """The row's config.  Every row states its label judge: the plain rows run the papers' algorithms
    (no judge, whatever the config default), the "+judge" rows add Qwen2.5-Coder-0.5B as the judge."""
    plain = row.removesuffix("+judge")
    big = plain.endswith("-big")  # "-big": the same row with a fourth, larger generator (BIG)
    plain = plain.removesuffix("-big")
    writers = plain.endswith("-w")  # "-w": the same row with wasp.writers (a writer named in every prompt)
    plain = plain.removesuffix("-w")
    tokens = re.fullmatch(r"(.+)-t(\d+)", plain)  # "-t<T>": the same row with max_new_tokens = T
    if tokens:
        plain = tokens.group(1)
    even = plain.startswith("wasp") and plain.endswith("-even")  # "-even": class_uniform_mix = 1
    plain = plain.removesuffix("-even") if even else plain
    # only the fields the row sets: a killed run then resumes (its stored config holds values the run
    # resolved, e.g. the embedded dataset's labels, which a full dump would contradict with defaults)
    d = _plain_config(plain, eps, seed, n, m, out, dataset).model_dump(exclude_unset=True)
    if d.get("method") != "dp-finetune":  # it samples from its own model and reads no wasp section
        d.setdefault("wasp", {})["label_judge"] = JUDGE if row.endswith("+judge") else None
    if tokens:  # the section the row's method generates with
        section = "finetune" if d.get("method") == "dp-finetune" else "wasp"
        d.setdefault(section, {})["max_new_tokens"] = int(tokens.group(2))
    if writers:
        d.setdefault("wasp", {})["writers"] = True
    if even:  # even class shares, as zero-shot has, instead of the vote's estimate of the private ones
        d.setdefault("wasp", {})["class_uniform_mix"] = 1.0
    if big:
        d["generators"] = [g.model_dump() for g in default_generators()] + [BIG.model_dump()]
    if d.get("method") == "dp-finetune" and (big or writers or row.endswith("+judge")):
        # fine-tuning samples from its own model: a generator list, writers or a judge would be ignored
        raise ValueError(f"{row}: -big, -w and +judge apply to rows of the WASP pipeline, not to dp-finetune")
    return Config.model_validate(d)


def _plain_config(row: str, eps: float, seed: int, n: int, m: int, out: Path, dataset: EmbeddedDataset) -> Config:
    base: dict[str, Any] = {
        "n_synthetic": n,
        "out": str(out),
        "seed": seed,
        "privacy": {"epsilon": eps},
        "data": {"n_private": m, "seed": seed},
    }
    if dataset is not IMDB:  # IMDb is the config default (its earlier runs' config.yaml leave it unset)
        base["data"]["private"] = dataset.source
    if row == "zero-shot":
        return Config.model_validate({**base, "method": "zero-shot"})
    if row == "dp-finetune":
        return Config.model_validate({**base, "method": "dp-finetune"})
    if row == "dp-finetune-frozen":
        # the fine-tune's own contribution: the same pipeline (label shares, prompts, sampling) with a learning
        # rate so small that the LoRA weights stay at their initialisation (B = 0, so the adapter adds nothing):
        # the base model's samples under dp-finetune's prompts, the baseline a dp-finetune row is read against
        return Config.model_validate({**base, "method": "dp-finetune", "finetune": {"learning_rate": 1e-12}})
    if row.startswith("dp-finetune-lr"):  # another learning rate: does the noise, or too little data, cost?
        lr = float(row.removeprefix("dp-finetune-lr"))
        return Config.model_validate({**base, "method": "dp-finetune", "finetune": {"learning_rate": lr}})
    if row.startswith("dp-finetune-sgd"):  # plain SGD: steps in proportion to the noisy gradient, not ~lr each
        lr = float(row.removeprefix("dp-finetune-sgd"))
        return Config.model_validate(
            {**base, "method": "dp-finetune", "finetune": {"optimizer": "sgd", "learning_rate": lr}}
        )
    if row.startswith("dp-finetune-b"):  # another expected batch size (same epochs: same compute, fewer steps)
        return Config.model_validate(
            {**base, "method": "dp-finetune", "finetune": {"batch_size": int(row.removeprefix("dp-finetune-b"))}}
        )
    if row.startswith("aug-pe:"):
        # rows keep the generator names they were measured under (aug-pe:qwen2.5-0.5b is qwen2.5-coder-0.5b)
        name = row.split(":", 1)[1]
        g = generator_named(name, default_generators())
        if g is None:
            known = ", ".join(x.name for x in default_generators())
            raise ValueError(f"aug-pe:{name}: no default generator is called {name!r} (the generators: {known})")
        return Config.model_validate({**base, "method": "aug-pe", "generators": [g.model_dump()]})
    if row.startswith("wasp-s") and row.removeprefix("wasp-s").isdigit():
        return Config.model_validate({**base, "method": "wasp", "wasp": {"top_s": int(row.removeprefix("wasp-s"))}})
    if row.startswith("wasp-spread") and row.removeprefix("wasp-spread").isdigit():
        return Config.model_validate(
            {**base, "method": "wasp", "wasp": {"pool_spread": int(row.removeprefix("wasp-spread"))}}
        )
    if row == "wasp-kw":  # the vote steers topics; no example is shown to imitate
        return Config.model_validate({**base, "method": "wasp", "wasp": {"variation": "keywords"}})
    if row == "wasp-kwc":  # the same, with words that separate the classes rather than words of the class
        wasp_kwc = {"variation": "keywords", "keywords_against": "other_classes"}
        return Config.model_validate({**base, "method": "wasp", "wasp": wasp_kwc})
    if row == "wasp-latest":  # every vote ranks one round's samples: as many votes per sample as the first
        return Config.model_validate({**base, "method": "wasp", "wasp": {"vote_on": "latest"}})
    if row.startswith("wasp-pop"):
        population = int(row.removeprefix("wasp-pop"))
        return Config.model_validate({**base, "method": "wasp", "wasp": {"population": population}})
    wasp = {
        "wasp": {},
        "wasp-no-weighting": {"weighting": False},
        "wasp-no-contrastive": {"contrastive": False},
        "wasp-q1": {"q": 1},
    }[row]
    return Config.model_validate({**base, "method": "wasp", "wasp": wasp})


def config_hash(cfg: Config) -> str:
    """A short hash of the row's resolved config (every field, defaults included) without what differs between
    runs of one setting: the seeds and the run directory.  Two rows with the same hash ran the same settings."""
    d = cfg.model_dump(mode="json")
    d.pop("out", None)
    d.pop("seed", None)
    d.get("data", {}).pop("seed", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    """A result row's identity in the results file (draw 0, the first run, has no "repeat" field)."""
    return (r["row"], r["epsilon"], r["seed"], r["n"], r["m"], r.get("repeat", 0))


def tokens_of(run: Path) -> int | None:
    if not (run / "rounds.json").exists():  # dp-finetune samples with transformers and keeps no round log
        return None
    rounds = json.loads((run / "rounds.json").read_text())
    return int(sum(rounds[-1]["completion_tokens"].values())) if rounds else 0


def keep_set(name: str, syn: Any, sets: Path = SETS) -> None:
    """Copy a generated set (a run directory or a list of records) to SETS/<name>.jsonl, atomically."""
    if isinstance(syn, Path):
        out = find_run_output(syn)
        assert out is not None and out.suffix == ".jsonl", f"{syn}: the benchmark writes JSONL runs"
        rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines() if x.strip()]
    else:
        rows = syn
    keep = ("text", "label", "generator", "round")
    lines = [json.dumps({k: r[k] for k in keep if k in r}, ensure_ascii=False) for r in rows]
    sets.mkdir(parents=True, exist_ok=True)
    tmp = sets / f".{name}.jsonl.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(sets / f"{name}.jsonl")


def summarize(ev: dict[str, Any]) -> dict[str, Any]:
    acc = ev["utility"]["logreg"]["accuracy"]
    fid = ev.get("fidelity", {})
    return {
        "accuracy_mean": round(acc["mean"], 4),
        "accuracy_std": round(acc["std"], 4),
        "fid": None if fid.get("fid") is None else round(float(fid["fid"]), 4),
        "mauve": None if fid.get("mauve") is None else round(float(fid["mauve"]), 4),
        "label_consistency": (
            None if fid.get("label_consistency") is None else round(float(fid["label_consistency"]["score"]), 4)
        ),
        "n_synthetic": ev["synthetic"]["n"],
    }


def pearl_select(
    eps: float, seed: int, n: int, m: int, out: Path, embedder: Any, dataset: EmbeddedDataset = IMDB
) -> tuple[list[dict[str, Any]], Any]:
    """3N zero-shot candidates (no private data), then a DP sketch of the M private embeddings picks N."""
    from pearl_tools import embedding_sketch, select_by_sketch

    pool_dir = out.parent / f"pearl-pool-n{3 * n}-s{seed}"
    zs: dict[str, Any] = {"method": "zero-shot", "n_synthetic": 3 * n, "out": str(pool_dir), "seed": seed}
    if dataset is not IMDB:
        zs["data"] = {"private": dataset.source}  # its labels and task (zero-shot reads no private record)
    # a finished pool is returned as it is, once its config.yaml is found to hold these settings (as for the rows)
    dpsynth.synthesize(Config.model_validate(zs), resume=pool_dir.exists(), progress=False)
    cand = [json.loads(x) for x in (pool_dir / "synthetic.jsonl").read_text().splitlines() if x.strip()]
    priv = dataset.private(m, seed)
    classes = list(dataset.labels)
    e_priv = embedder.encode([str(t) for t in priv["text"]])
    e_cand = embedder.encode([c["text"] for c in cand])
    sketch, plan = embedding_sketch(
        e_priv, epsilon=eps, delta=1e-5, labels=[str(v) for v in priv["label"]], classes=classes, seed=seed
    )
    del e_priv, priv  # the private embeddings are read once, by the sketch
    chosen: list[dict[str, Any]] = []
    for lab in classes:
        idx = np.array([i for i, c in enumerate(cand) if c["label"] == lab])
        if len(idx) == 0:
            continue
        keep = select_by_sketch(e_cand[idx], sketch, min(n // len(classes), len(idx)), label=lab)
        chosen.extend(cand[int(i)] for i in idx[keep])
    return chosen, plan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--dataset",
        choices=list(DATASETS),
        default="imdb",
        help="embedded dataset: imdb (sentiment, default) or newsgroups (4 topics); private draws and test split",
    )
    ap.add_argument("--rows", default=",".join(ALL_ROWS))
    ap.add_argument("--epsilons", default="4")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--ceiling-n", type=int, default=20_000)
    ap.add_argument("--out", default=None, help="run directories (default runs/quality, runs/quality-newsgroups)")
    ap.add_argument("--repeat", type=int, default=0, help="draw R >= 1 of the same seeds (see the docstring)")
    args = ap.parse_args()
    if args.repeat < 0:
        ap.error("--repeat: a draw number >= 1 (0 is the first run)")
    dataset = DATASETS[args.dataset]
    suffix = "" if dataset is IMDB else f"_{args.dataset}"  # IMDb keeps the files it always had
    out_root = Path(args.out or ("runs/quality" + suffix.replace("_", "-")))
    results_file = RESULTS.with_name(f"quality{suffix}{'_repeats' if args.repeat else ''}.json")
    draw = f"-r{args.repeat}" if args.repeat else ""
    sets = SETS.with_name(f"quality_sets{suffix}")
    results: list[dict[str, Any]] = []
    if results_file.exists():
        results = read_json(results_file).get("rows", [])
    done = {_key(r) for r in results}
    special = ("only-private", "real-ceiling", "pearl-select")
    for row in args.rows.split(","):  # a misspelt row fails now, not after hours of the rows before it
        if row not in special:
            try:
                row_config(row, 4.0, 0, args.n, args.m, out_root / "check", dataset)
            except (KeyError, ValueError, ConfigError) as exc:
                ap.error(f"row {row!r}: {exc} (the rows: see this script's docstring)")
    code = code_version()  # the code this process runs, recorded in every row it adds (see pair_table.py)
    embedder = default_embedder()
    test = dataset.source
    for row in args.rows.split(","):
        for eps in [float(e) for e in args.epsilons.split(",")]:
            for seed in [int(s) for s in args.seeds.split(",")]:
                non_dp = row in ("only-private", "real-ceiling")
                e_row = 0.0 if row.startswith("zero-shot") else (float("inf") if non_dp else eps)
                key = (row, e_row, seed, args.n, args.m, args.repeat)
                if key in done:
                    continue
                run = out_root / f"{row.replace(':', '-')}-eps{e_row:g}-n{args.n}-m{args.m}-s{seed}{draw}"
                t0 = time.time()
                tokens = None
                settings = None
                made_by = code  # rows of real data or made in this process
                if row == "only-private":
                    syn: Any = dataset.private(args.m, seed)
                elif row == "real-ceiling":
                    pool, _ = dataset.split()
                    syn = pool.sample(n=min(args.ceiling_n, len(pool)), random_state=seed)
                elif row == "pearl-select":
                    syn, _ = pearl_select(eps, seed, args.n, args.m, run, embedder, dataset)
                    tokens = tokens_of(run.parent / f"pearl-pool-n{3 * args.n}-s{seed}")  # all 3N candidates
                else:
                    cfg = row_config(row, eps, seed, args.n, args.m, run, dataset)
                    settings = config_hash(cfg)
                    # always through synthesize, finished or not: on a run directory that exists it compares the
                    # row's settings with the run's config.yaml (a run made with other settings is refused, never
                    # evaluated under this row's name) and returns a finished run without spending anything
                    made_by = run_code(run, code)  # before synthesize: a run it begins is noted as this code's
                    try:
                        dpsynth.synthesize(cfg, resume=run.exists(), progress=False)
                    except ResumeError as exc:
                        raise SystemExit(f"row {row} (epsilon {e_row:g}, seed {seed}): {exc}") from None
                    syn = run
                    tokens = tokens_of(run)
                wall = time.time() - t0
                if row not in ("only-private", "real-ceiling"):  # real data is never copied into results
                    keep_set(run.name, syn, sets)
                ev = evaluate(
                    syn,
                    test,
                    embedder=embedder,
                    seeds=(0, 1, 2),
                    per_round=False,
                    write=False,
                    reference_real=False,
                    mauve=row != "real-ceiling",  # MAUVE on 20k vs 2k texts costs more than the table is worth
                )
                rec = {
                    "row": row,
                    "epsilon": e_row,
                    "seed": seed,
                    "n": args.n,
                    "m": args.m,
                    "wall_seconds": round(wall, 1),
                    "tokens": tokens,
                    **summarize(ev),
                    **({"repeat": args.repeat} if args.repeat else {}),
                    "code": made_by,
                    "config_hash": settings,
                }
                # another invocation may have written rows since this one started: merge, never overwrite them
                if results_file.exists():
                    theirs = read_json(results_file).get("rows", [])
                    ours = {_key(r) for r in results}
                    results += [r for r in theirs if _key(r) not in ours]
                results.append(rec)
                print(rec, flush=True)
                write_result(
                    results_file.stem,
                    {
                        "command": "python bench/quality.py " + " ".join(sys.argv[1:]),
                        "dataset": dataset.source,
                        "test": f"fixed {dataset.title} test split, {dataset.test_size:,} {dataset.unit} "
                        f"({dataset.source})",
                        "classifier": "logistic regression on all-MiniLM-L6-v2 embeddings (deterministic, fitted once)",
                        "generators": [g.model for g in default_generators()],
                        "rows": results,
                    },
                )


if __name__ == "__main__":
    main()
