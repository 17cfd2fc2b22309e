"""Evaluating a Hugging Face causal LM: a probe-runner session whose model is ``hf_model.HFCausalLM``.

Everything a run's evaluation does happens unchanged (``ropebench.eval.runner``): the lengths, the protocols,
the token-weighted NLL over the same regions at every length, RoPE scaling per length, a status for a length
that fails (out of memory included) while the others are kept, the merge of every length's rows. What differs:

* the "run directory" is the user's ``--out``. Its ``config.yaml`` describes the evaluation in the shape of a
  run's config (``pe.name``: the label plots and tables use; ``train.seq_len``: the model's
  ``max_position_embeddings``; ``data`` with ``tokenizer``: the model's own; ``hf.model``: the model), so
  ``plot`` and ``table`` read OUT like a run. It is written once, with the first rows -- a refused or failed
  start writes nothing -- and a later evaluation into OUT must describe the same model and data. A local model
  is recorded by its absolute path (``HFRequest.model_id``), so it is the same model however a command names it;
* the text is tokenized by the model's own tokenizer (``data.tokenizer``, ``ropebench.data.load_corpus``);
* every check that can fail (the model, its tokenizer, --rope-scaling, OUT) runs before the weights load.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from ropebench.data import hf_env
from ropebench.errors import UserError, choose
from ropebench.eval.hf_model import import_transformers, load_hf_model, model_scaling, rope_scaling_problem
from ropebench.eval.lengths import run_lengths
from ropebench.eval.perplexity import PerplexityProbe, checked_probe
from ropebench.eval.runner import AS_TRAINED, Session, run_probe
from ropebench.progress import console
from ropebench.run import hf_compat
from ropebench.run.config import flatten_config
from ropebench.run.rundir import CONFIG, RunDir

# data.val_fraction of text given by path: every document is evaluation text (none is held out for training).
EVERY_DOCUMENT = 1.0

DTYPES = ("auto", "float32", "bfloat16", "float16")
# Keys two evaluations into one OUT may differ in: evaluation settings (the rows carry them) and the cache.
_MAY_DIFFER = ("eval", "data.cache_dir", "data.trust_remote_code")  # a permission, not what is measured
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_MODEL_PATHS = ("hf.model", "data.tokenizer")  # where OUT's config names a local model by its path
# Tokens per forward pass when --batch-size is not given: the native evaluation's batch (eval_length's
# batch_tokens), as many windows as make it, at least one. Memory grows with it and the model's width, not with
# its vocabulary (HFCausalLM computes the head's logits in chunks of LOGITS_BUDGET).
TOKENS_PER_PASS = 8192


@dataclass(frozen=True)
class HFRequest:
    """What the user asked for: the model (a local directory or a Hub id) and how to evaluate it."""

    source: str
    out: Path | None
    data: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int | None = None  # None: windows (prompts) making TOKENS_PER_PASS tokens per forward pass
    label: str | None = None
    trust_remote_code: bool = False
    train_len: int | None = None  # the model's training context; None: its max_position_embeddings

    @property
    def local(self) -> bool:
        return Path(os.path.expanduser(self.source)).is_dir()

    @property
    def model_id(self) -> str:
        """The model as OUT's config (``hf.model``, ``data.tokenizer``) and the rows record it: a local directory's
        absolute path -- ``hf/m`` typed here and ``/abs/hf/m`` typed elsewhere are one model -- else the Hub id."""
        return str(Path(os.path.expanduser(self.source)).resolve()) if self.local else self.source


class ResultsDir(RunDir):
    """OUT: a run directory whose config.yaml is written with the first rows merged into it, never before."""

    def __init__(self, path, config: dict):
        super().__init__(path)
        self.config = config

    def merge_rows(self, *args, **kwargs) -> None:
        self.write_config_once(self.config)
        super().merge_rows(*args, **kwargs)


class HFSession(Session):
    """A Hugging Face model opened for evaluation: checked, described, its weights loaded once by the runner."""

    def __init__(self, request: HFRequest, config: dict, tokenizer, device, dtype, log=console.print,
                 may_differ: tuple[str, ...] = ()):
        from omegaconf import OmegaConf

        # Not Session.__init__: there is no run config to read; this session's config is the one it describes.
        self.request, self.tokenizer, self.torch_dtype = request, tokenizer, dtype
        self.run = ResultsDir(request.out, config)
        self.cfg = OmegaConf.create(config)
        self.log = log
        self.model = None
        self.device = device
        self.may_differ = may_differ

    @contextlib.contextmanager
    def claim(self):
        """OUT held by this evaluation alone (a lock beside it, ``locks.lock_beside``), and checked again under the
        lock: an evaluation that finished meanwhile may have described another model there."""
        from ropebench.run.locks import lock_beside

        with lock_beside(Path(self.request.out)):
            check_out(self.request.out, self.run.config, self.may_differ)
            yield

    def load_model(self, device=None, model=None) -> None:
        if model is None:
            r = self.request
            model = load_hf_model(r.source, self.torch_dtype, self.device, r.batch_size, r.trust_remote_code)
        self.model = model.eval()
        self.device = next(model.parameters()).device

    def encoder(self):
        """The model's own tokenizer as the retrieval probes use it, with the BOS its model expects first."""
        from ropebench.data.probes import Encoder
        from ropebench.data.tokenizer import special_lead

        return Encoder(self.tokenizer.encode, tuple(special_lead(self.tokenizer.hf)))

    def logits_at(self, ids, at):
        return self.model.logits_at(ids, at)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _load_config(transformers, request: HFRequest):
    try:
        return transformers.AutoConfig.from_pretrained(request.source, trust_remote_code=request.trust_remote_code)
    except Exception as exc:  # not a model, not on the Hub, remote code refused: one line
        raise UserError(f"'{request.source}' is neither a ropebench run directory nor a Hugging Face model "
                        f"({_first_line(exc)})") from None


def _check_causal(config, source: str) -> None:
    """Refuse an encoder or encoder-decoder from its config; load_hf_model checks causality on the weights."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as causal

    classes = {name for names in causal.values() for name in ([names] if isinstance(names, str) else names)}
    architectures = list(getattr(config, "architectures", None) or [])
    remote = "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    if getattr(config, "is_encoder_decoder", False) or not (config.model_type in causal or remote) or (
            architectures and not any(a in classes or a.endswith(("ForCausalLM", "LMHeadModel"))
                                      for a in architectures)):
        saved = f", saved as {', '.join(architectures)}" if architectures else ""
        raise UserError(f"'{source}' is not a causal language model (model_type {config.model_type}{saved}); "
                        "ropebench evaluates next-token prediction")


def _load_tokenizer(request: HFRequest):
    from ropebench.data.tokenizer import load_tokenizer

    directory = Path(os.path.expanduser(request.source))
    if request.local and not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        raise UserError(f"'{request.source}' has no tokenizer (no {' or '.join(_TOKENIZER_FILES[:2])}); save the "
                        "model's tokenizer there (tokenizer.save_pretrained)")
    return load_tokenizer(request.source, request.trust_remote_code)


def resolve_dtype(name: str, device, config):
    """``auto``: float32 on the CPU (half-precision matmuls there are slow or missing), else the checkpoint's."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device.type == "cpu":
        return torch.float32
    saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    saved = getattr(torch, saved) if isinstance(saved, str) else saved
    return saved if saved in (torch.float16, torch.bfloat16) else torch.float32


def data_node(spec: str | None, tokenizer: str) -> dict:
    """``--data``: ``stdlib`` (default) or another ``conf/data`` preset, ``hf:PATH[:SUBSET]`` (a ``datasets``
    source: Hub name, directory or files), or ``FILE_OR_DIR[,...]`` (text files); tokenized by ``tokenizer``. A
    preset is scored on its validation documents, as runs are; text given by path (files, ``hf:``) is scored
    whole: every document given (``val_fraction`` 1, ``ropebench.data.corpus``), none held out for training."""
    from omegaconf import OmegaConf

    from ropebench.run.config import DataConfig, conf_dir

    spec = (spec or "stdlib").strip()
    # Presets that name their text; `hf` and `text_files` need a path (hf:..., FILE_OR_DIR), passkey is synthetic.
    presets = {p.stem for p in (conf_dir() / "data").glob("*.yaml")} - {"passkey", "text_files", "hf"}
    if spec.startswith("hf:"):
        path, _, subset = spec[3:].partition(":")
        if not path:
            raise UserError("--data hf: needs a data set: hf:NAME_OR_PATH[:SUBSET]")
        node = {"name": "hf-" + path.strip("/").replace("/", "--"), "source": "hf", "path": path, "subset": subset,
                "val_fraction": EVERY_DOCUMENT}
    elif spec in presets:
        node = OmegaConf.to_container(OmegaConf.load(conf_dir() / "data" / f"{spec}.yaml"))
    else:
        paths = [p.strip() for p in spec.split(",") if p.strip()]
        missing = [p for p in paths if not Path(os.path.expanduser(p)).exists()]
        if not paths or missing:
            raise UserError(f"--data '{(missing or [spec])[0]}' is neither a file or directory nor a data preset; "
                            f"use {', '.join(sorted(presets))}, hf:NAME_OR_PATH[:SUBSET] or FILE_OR_DIR[,...]")
        node = {"name": "text_files", "source": "text_files", "val_fraction": EVERY_DOCUMENT,
                "paths": [str(Path(os.path.expanduser(p)).resolve()) for p in paths]}
    defaults = OmegaConf.to_container(OmegaConf.structured(DataConfig), resolve=True, enum_to_str=True)
    # Plain merge (not the typed schema): keys of sources the schema may not list yet are kept as given.
    return {**defaults, **node, "tokenizer": tokenizer}


def export_manifest(request: HFRequest) -> dict:
    """What `ropebench export-hf` recorded beside an exported run (its data and eval settings, its data's paths
    made absolute again), or {}."""
    import json

    from ropebench.run.hf_card import MANIFEST, local_data

    path = Path(request.source) / MANIFEST
    if not request.local or not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if isinstance(manifest.get("data"), dict):
        manifest["data"] = local_data(manifest["data"], Path(os.path.expanduser(request.source)))
    return manifest


def eval_node(data: dict, manifest_eval: dict | None) -> dict:
    """The evaluation settings: an exported run's own, else the defaults -- and for text given by path, every token
    of every document, each document whole (``eval.max_tokens`` 0, ``eval.region_len`` -1)."""
    from omegaconf import OmegaConf

    from ropebench.run.config import EvalConfig

    node = manifest_eval or OmegaConf.to_container(OmegaConf.structured(EvalConfig), resolve=True, enum_to_str=True)
    if data.get("val_fraction") == EVERY_DOCUMENT:
        node = {**node, "max_tokens": 0, "region_len": -1}
    return node


def describe(request: HFRequest, config, data: dict, dtype, evaluation: dict) -> dict:
    """The config.yaml of OUT: the evaluation in the shape of a run's config; ``evaluation``: its eval node. The
    RoPE scaling the model's config carries is ``pe.scaling``, as a run trained with it records it: its rows are
    labelled with it, as the run's are. ``request.train_len`` (--train-len) stands for max_position_embeddings."""
    max_len = request.train_len or getattr(config, "max_position_embeddings", None)
    if request.train_len is not None and request.train_len <= 0:
        raise UserError(f"--train-len must be a positive integer, got {request.train_len}")
    if not isinstance(max_len, int) or max_len <= 0:
        raise UserError(f"'{request.source}' does not state its context length (max_position_embeddings), which "
                        "sets the default lengths and the scaling factor")
    # The label plots and tables show: the model's directory name, or the name part of its Hub id.
    name = Path(request.model_id).name if request.local else request.source.rstrip("/").split("/")[-1]
    label = request.label or name
    rope = hf_compat.rope_parameters(config)
    scaling = model_scaling(config) if rope and "rope_type" in rope else None
    # Plots and tables label a run by pe.name plus the global keys that differ between runs, and pe.* keys only
    # between runs of one pe.name: the model's details live under pe, so labels stay short. `model` is empty:
    # ropebench's model.* keys (its GPT's shape) do not describe this model.
    pe = {"name": label, "model_type": config.model_type, "rope_parameters": rope}
    if scaling:
        pe["scaling"] = {"type": scaling["rope_type"], **{k: v for k, v in scaling.items() if k != "rope_type"}}
    return {
        "model": {},
        "pe": pe,
        "data": data,
        "train": {"seq_len": max_len},
        "eval": evaluation,
        "hf": {"model": request.model_id, "dtype": str(dtype).removeprefix("torch.")},
    }


def _same_directory(old, new, out: Path) -> bool:
    """Whether ``old``, a relative path that an OUT written before models were recorded by absolute path holds
    as it was typed, names the directory ``new`` (absolute): resolved from OUT's parent (the usual place the
    command ran, as in ``eval-length hf/m --out results``) or from the current directory."""
    if not isinstance(old, str) or not isinstance(new, str) or not Path(new).is_absolute():
        return False
    old = Path(os.path.expanduser(old))
    return not old.is_absolute() and any((base / old).resolve() == Path(new)
                                         for base in (out.resolve().parent, Path.cwd()))


def check_out(out: Path | None, config: dict, may_differ: tuple[str, ...] = _MAY_DIFFER) -> None:
    """OUT is new, or holds an evaluation of the same model on the same data (its rows are then merged);
    ``may_differ``: the keys that need not match. A model path stored relative (by an older ropebench) matches
    the directory it names (``_same_directory``)."""
    import yaml

    if out is None:
        raise UserError("a Hugging Face model's results need a directory of their own: add --out DIR")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; give a directory")
    run = RunDir(out)
    if not run.has_config():
        return
    try:
        old = yaml.safe_load(run.config_path().read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"'{run.config_path()}' is unreadable ({type(exc).__name__}); use another --out") from None
    if not isinstance(old, dict) or not isinstance(old.get("hf"), dict):
        raise UserError(f"'{out}' is a ropebench run directory; write a Hugging Face model's results to a "
                        "directory of their own (--out)")
    before, after = flatten_config(old), flatten_config(config)
    changed = [k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)
               and not any(k == p or k.startswith(p + ".") for p in may_differ)
               and not (k in _MODEL_PATHS and _same_directory(before.get(k), after.get(k), out))]
    if changed:
        key = min(changed, key=lambda k: (k != "hf.model", k))  # the model first: the likeliest mix-up
        raise UserError(f"'{out}' holds another evaluation ({key}: {before.get(key)} → {after.get(key)} in "
                        f"{CONFIG}); use another --out")


def open_session(request: HFRequest, rope_scaling: dict | None = None, log=console.print,
                 reads_data: bool = True) -> HFSession:
    """Every check that can refuse, in one place, before any weight is loaded or any file written.
    ``reads_data=False`` (passkey): OUT may describe other evaluation text, which this evaluation never reads."""
    from omegaconf import OmegaConf

    from ropebench.data.hf_source import needs_network
    from ropebench.run.artifacts import resolve_device

    choose("dtype", request.dtype, DTYPES)
    if request.batch_size is not None and request.batch_size <= 0:
        raise UserError(f"--batch-size must be a positive integer, got {request.batch_size}")
    if request.out is None:
        check_out(None, {})
    # An exported ropebench run is evaluated as its source run is by default: the same text (tokenized by the
    # exported tokenizer, which gives the same ids) and the same lengths and regions.
    manifest = export_manifest(request)
    if request.data is None and manifest.get("data"):
        data = {**data_node("stdlib", request.model_id), **manifest["data"], "tokenizer": request.model_id}
    else:
        data = data_node(request.data, request.model_id)
    data["trust_remote_code"] = request.trust_remote_code  # the model's tokenizer tokenizes the text too
    # Offline unless a Hub id or Hub data asks for the network: a local directory never touches it.
    hf_env.prepare(network=not request.local or needs_network(OmegaConf.create(data)))
    transformers = import_transformers()
    config = _load_config(transformers, request)
    _check_causal(config, request.source)
    if rope_scaling and rope_scaling != AS_TRAINED and (why := rope_scaling_problem(config)):
        raise UserError(f"--rope-scaling does not apply to '{request.source}': {why}")
    tokenizer = _load_tokenizer(request)
    device = resolve_device(request.device)
    dtype = resolve_dtype(request.dtype, device, config)
    described = describe(request, config, data, dtype, eval_node(data, manifest.get("eval")))
    may_differ = _MAY_DIFFER + (() if reads_data else ("data",))
    check_out(request.out, described, may_differ)
    return HFSession(request, described, tokenizer, device, dtype, log, may_differ)


class HFPerplexityProbe(PerplexityProbe):
    """A checked PerplexityProbe whose rows also name the model (``model``) and its tokenizer (``tokenizer``)."""

    def __init__(self, checked: PerplexityProbe, source: str):
        vars(self).update(vars(checked))
        self.source, self.tokenizer = source, source

    def cells(self, length: int) -> list[dict]:
        return [{**cell, "model": self.source, "tokenizer": self.source} for cell in super().cells(length)]

    def prepare(self, session) -> None:
        super().prepare(session)
        if self.region_len < 0:  # text given by path: said once, as each row's n_documents says it per length
            count = len(self.corpus.held_out(self.split).starts)
            session.log(f"scoring every document of the text given, each whole: {count} documents (a length scores "
                        "those longer than it)")


def hf_eval_length(request: HFRequest, lengths: list[int] | None = None, protocol: str = "nonoverlapping",
                   stride: int | None = None, rope_scaling: dict | str | None = AS_TRAINED,
                   max_tokens: int | None = None, log=console.print, split: str | None = None,
                   crop: bool | None = None, crop_stride: int | None = None,
                   region_len: int | None = None, crop_sample: int | None = None) -> list[dict]:
    """Perplexity of an HF model at each length (default: ``eval.multiples`` x max_position_embeddings),
    merged into OUT/eval_length.csv and OUT/eval_positions.csv; returns the rows."""
    session = open_session(request, rope_scaling, log)
    lengths = lengths or run_lengths(session.cfg)
    # Enough tokens per batch of windows for --batch-size windows at every length (HFCausalLM runs them
    # --batch-size at a time), or TOKENS_PER_PASS tokens of windows in one pass.
    batch_tokens = request.batch_size * max(lengths) if request.batch_size else TOKENS_PER_PASS
    checked = checked_probe(session.cfg, lengths, protocol, stride, max_tokens, batch_tokens, buckets=32,
                            split=split, crop=crop, crop_stride=crop_stride, region_len=region_len,
                            crop_sample=crop_sample)
    return run_probe(HFPerplexityProbe(checked, request.model_id), session, lengths, rope_scaling)
