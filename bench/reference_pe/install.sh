#!/usr/bin/env bash
# A virtual environment for the reference Private Evolution library (microsoft/DPSDA, package `pe`), used by
# bench/reference_augpe.py to run its Aug-PE side by side with ours.  `pe` is not on PyPI: it installs from
# its Git repository (or a local checkout), without its image/tabular extras.  The environment sees the
# project's .venv (torch, sentence-transformers, llama.cpp, dpsynth) through a .pth file, so nothing is
# installed twice and both implementations use the same packages.
#
#     bash bench/reference_pe/install.sh [DPSDA_SOURCE]     # default: git+https://github.com/microsoft/DPSDA
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
src="${1:-git+https://github.com/microsoft/DPSDA}"
py="$root/.venv/bin/python"
[ -x "$py" ] || { echo "run scripts/install.sh first (no $root/.venv)" >&2; exit 1; }
"$py" -m venv "$here/.venv"
site="$("$here/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# an "import" line: site.addsitedir also reads the project venv's own .pth files (the editable dpsynth)
echo "import site; site.addsitedir('$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
    > "$site/dpsynth_venv.pth"
# pe's own requirements for the text pipeline (omegaconf 2.3: pe hashes its DictConfig metadata, which 2.4 refuses), minus image/tabular ones (fld, clean-fid, torchvision: the
# harness stubs their imports) and tiktoken (its encodings download at run time; the harness supplies a
# local tokenizer for the blanking step)
"$here/.venv/bin/pip" install -q --no-deps "$src" omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 generalimport \
    tenacity openai sniffio distro jiter python-dotenv
"$here/.venv/bin/python" -c 'import pe; print("pe installed:", pe.__file__)'
