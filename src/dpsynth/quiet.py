"""Quiet model loading: no tqdm bars from transformers or huggingface_hub on the console.

transformers draws a "Loading weights" bar for every model it loads (sentence-transformers loads through
it), and huggingface_hub one per download.  On a terminal they tear through dpsynth's own progress bars;
piped to a log they are a stream of carriage-return redraws.  ``quiet_model_loading`` turns both off for the
duration of a load and restores what was on before, so an application that wants its bars keeps them.
With ``gguf``, also the "Converting and de-quantizing GGUF tensors" bar, which transformers' GGUF converter
draws with tqdm itself, outside both switches.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def quiet_model_loading(gguf: bool = False) -> Iterator[None]:
    restore: list[Callable[[], None]] = []
    if gguf:  # imported only for a GGUF load: the converter module is not needed otherwise
        try:
            import transformers.modeling_gguf_pytorch_utils as gguf_utils

            gguf_tqdm = gguf_utils.tqdm
            gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
            restore.append(functools.partial(setattr, gguf_utils, "tqdm", gguf_tqdm))
        except (ImportError, AttributeError):  # another transformers version: its bar stays
            pass
    try:
        from transformers.utils import logging as hf_logging

        if hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            restore.append(hf_logging.enable_progress_bar)
    except ImportError:  # pragma: no cover - transformers is a dependency of every model-loading path
        pass
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        if not are_progress_bars_disabled():
            disable_progress_bars()
            restore.append(enable_progress_bars)
    except ImportError:  # pragma: no cover
        pass
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()
