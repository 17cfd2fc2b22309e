"""Export a finished run as a Hugging Face ``transformers`` model directory (``ropebench export-hf RUN OUT``).

``AutoModelForCausalLM.from_pretrained(OUT)`` and ``AutoTokenizer.from_pretrained(OUT)`` then load it with no
ropebench import, and its logits equal ropebench's (fp32). The architectures, and why they are exact:

* RoPE and NoPE -> GPT-NeoX (Black et al. 2022, ``GPTNeoXForCausalLM``): pre-LayerNorm with a sequential
  residual (``use_parallel_residual=False``), exact-erf GELU MLP (``hidden_act="gelu"``), attention scaled by
  1/sqrt(head_dim), rotary on the first ``partial_rotary_factor * head_dim`` channels of each head with
  half-split pairing (``rotate_half``), tied embeddings. Its fused ``query_key_value`` is laid out per head as
  [q_h, k_h, v_h], ropebench's ``c_attn`` as [all q | all k | all v]: rows are reordered. A run with
  interleaved pairing (channels 2i, 2i+1) becomes half-split by permuting the rotary rows of q and k within each
  head (even channels first, then odd) -- q.k is unchanged by a permutation applied to both. NoPE is
  ``partial_rotary_factor=0``: no channel is rotated. Missing biases (``model.bias=false``) are zeros, and
  ``attention_bias`` drops them from the attention projections.
* p-RoPE -> GPT-NeoX with ``rope_type="proportional"`` (transformers 5): frequencies over the whole head, the
  first ``int(partial_rotary_factor * head_dim // 2)`` pairs turning and the rest at frequency 0 -- p-RoPE's
  layout, not the contiguous block that ``partial_rotary_factor`` means for the default type. No legacy
  ``rotary_pct`` is written for it: a transformers without ``proportional`` would read it as that block.
* learned -> GPT-2 (Radford et al. 2019, ``GPT2LMHeadModel``): the same block with a learned position table
  (``wpe``); its linear layers are ``Conv1D`` (weights transposed), ``c_attn`` is [all q | all k | all v] like
  ropebench's, and ``activation_function="gelu"`` (GPT-2's default is the tanh approximation).

``max_position_embeddings`` is the run's training length, Hugging Face's convention for the trained context.
RoPE scaling applied during training (``pe.scaling``) maps to ``rope_parameters`` (transformers 4:
``rope_scaling``, ``run.hf_compat``) for linear, dynamic and yarn; before anything is written, the export is
checked to compute the run's logits and rotary tables in the installed transformers (``check_same_model``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ropebench.errors import UserError
from ropebench.run import hf_card, hf_compat
from ropebench.run.artifacts import load_model
from ropebench.run.hf_card import MANIFEST
from ropebench.run.hf_weights import gpt2_state, neox_state
from ropebench.run.rundir import CHECKPOINT, RunDir, space_problem

SUPPORTED = ("rope", "p_rope", "nope", "learned")
ROTARY = ("rope", "p_rope")
HF_SCALING = ("linear", "dynamic", "yarn")
_YARN_KEYS = ("original_max_position_embeddings", "beta_fast", "beta_slow", "truncate", "attention_factor",
              "mscale", "mscale_all_dim")


def export_hf(run_dir, out, *, force: bool = False) -> Path:
    """Write the run as a transformers model directory at ``out``, atomically; returns ``out``."""
    _require_transformers()
    from ropebench.run.hf_tokenizer import load_run_tokenizer, save_tokenizer
    from ropebench.run.locks import lock_beside

    run, out = RunDir(run_dir), Path(out)
    cfg = run.read_config()
    check_exportable(cfg)
    # The run is read whole (no `resume` may rewrite it meanwhile) and OUT written by this command alone.
    with run.claim(shared=True), lock_beside(out):
        _check_out(out, run.path, force)
        model = load_model(run, cfg)
        # The tokenizer's model_max_length is a hard limit (transformers warns past it): the learned table's
        # length; RoPE and NoPE have none (max_position_embeddings, the training length, is not one).
        table_len = model.pe.max_len()
        tokenizer = load_run_tokenizer(cfg.data, table_len)
        hf_model = to_hf(model, cfg, int(tokenizer.eos_token_id))
        check_same_model(model, hf_model, cfg)

        def write(tmp: Path) -> None:
            with _no_progress_bar():
                hf_model.save_pretrained(str(tmp))
            save_tokenizer(tokenizer, tmp)
            _add_legacy_keys(tmp / "config.json", hf_model.config)
            (tmp / MANIFEST).write_text(json.dumps(hf_card.manifest(run, cfg, hf_model, out), indent=2) + "\n")
            (tmp / hf_card.CARD).write_text(hf_card.model_card(run, cfg, hf_model, table_len))

        _write_atomically(out, write, _size(model))
    return out


def _size(model) -> int:
    """About how many bytes an export writes: the weights, twice (the tied head is stored once; the margin is the
    tokenizer and the configs)."""
    return 2 * sum(p.numel() * p.element_size() for p in model.parameters())


def _require_transformers() -> None:
    try:
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise UserError("export-hf needs transformers and tokenizers: pip install -e '.[hf]'") from None


@contextlib.contextmanager
def _no_progress_bar():
    """transformers draws a progress bar per shard written: noise for a one-line command."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            logging.enable_progress_bar()


def check_exportable(cfg) -> None:
    """Refuse, in one line, an encoding that has no exact transformers architecture (or a task run, whose
    vocabulary no Hugging Face tokenizer writes)."""
    if str(cfg.data.source) == "task":
        raise UserError("a data=task run has the task's own vocabulary, not a tokenizer's; export-hf exports runs "
                        "trained on text")
    name = str(cfg.pe.name)
    if name not in SUPPORTED:
        raise UserError(f"pe={name} has no transformers architecture to export to; "
                        f"export-hf supports pe={', '.join(SUPPORTED)}")
    if name in ROTARY and cfg.pe.get("rotate_values", False):
        raise UserError(f"pe={name} with rotate_values=true (an ablation that rotates values) has no transformers "
                        "architecture; export-hf supports pe=rope (rotate_values=false), nope, learned")
    if name == "p_rope" and not hf_compat.stores_rope_parameters():
        raise UserError(f"pe=p_rope exports as transformers' rope type 'proportional', which needs transformers 5 "
                        f"or later; this is {hf_compat.version()}")
    if name in ROTARY and cfg.pe.get("resonance", False):
        raise UserError(f"pe={name} with resonance=true (integer wavelengths) has no transformers rope type; "
                        "export-hf supports plain RoPE frequencies")
    extra = _unexportable_setting(cfg)
    if extra:
        raise UserError(f"{extra} has no GPT-NeoX / GPT-2 equivalent; export-hf supports one encoding in every "
                        "layer, full causal attention and no logit scale")


def _unexportable_setting(cfg) -> str | None:
    """The first model or training setting the exported architectures cannot express, or None."""
    layers = [str(n) for n in (cfg.model.get("layers") or [])]
    if any(n != str(cfg.pe.name) for n in layers):
        return f"model.layers=[{','.join(layers)}] (a layer pattern)"
    if any(w is not None for w in (cfg.model.get("windows") or [])):
        return "model.windows (sliding-window attention)"
    if str(cfg.model.get("logit_scale", "none")) != "none":
        return f"model.logit_scale={cfg.model.logit_scale}"
    if cfg.train.get("drop_rope_at") is not None:
        return "train.drop_rope_at (DroPE: RoPE dropped, then a fitted logit scale)"
    return None


def _is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a ropebench run: its config, a checkpoint, or final weights with final.json (an
    export has model.safetensors too, but never final.json)."""
    run = RunDir(path)
    if (run / CHECKPOINT).is_file() or run.is_finished():
        return True
    if not run.has_config():
        return False
    try:
        run.read_config()  # a config.yaml with the sections of a run config
    except UserError:  # another program's config.yaml
        return False
    return True


def _run_inside(out: Path) -> Path | None:
    """The first run directory at or below ``out`` (``out`` itself, or a sweep's job), or None. Symbolic links
    are not followed: replacing ``out`` removes the link, never what it points to."""
    for root, dirs, _ in os.walk(out):
        if _is_run_dir(Path(root)):
            return Path(root)
        dirs.sort()
    return None


def _check_out(out: Path, run_path: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"'{out}' exists and is not a directory; choose a new directory for the export")
    target, source = out.resolve(), run_path.resolve()
    if target == source or target in source.parents:
        raise UserError(f"'{out}' holds the run '{run_path}'; choose a directory outside it")
    found = _run_inside(out) if out.is_dir() else None
    if found is not None:  # a run is a record: not even --force replaces one (or a sweep of them)
        what = "is a ropebench run directory" if found == out else f"holds the ropebench run '{found}'"
        raise UserError(f"'{out}' {what}; export-hf never replaces a run, even with --force: choose another "
                        "directory for the export")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():  # --force replaces an earlier export, never anything else
            raise UserError(f"'{out}' exists, is not empty and is not an earlier export (no {MANIFEST} there); "
                            "choose a new directory -- --force replaces only an earlier export")
        if not force:
            raise UserError(f"'{out}' holds an earlier export; choose a new directory or pass --force to replace it")


def to_hf(model, cfg, eos_id: int):
    """The transformers model equal to ropebench's ``model`` (GPT-NeoX for rope/nope, GPT-2 for learned)."""
    if cfg.pe.name == "learned":
        from transformers import GPT2LMHeadModel

        hf_model, state = GPT2LMHeadModel(_gpt2_config(model, eos_id)), gpt2_state(model)
        # generate() stops at the end of the position table by default (past it GPT-2 has no position to embed).
        hf_model.generation_config.max_length = model.pe.max_len()
    else:
        from transformers import GPTNeoXForCausalLM

        rotary_dim = model.pe.rotary_dim if cfg.pe.name in ROTARY else 0
        params = rope_parameters(cfg, model, rotary_dim)
        hf_model = GPTNeoXForCausalLM(_neox_config(model, cfg, eos_id, params))
        interleaved = cfg.pe.name in ROTARY and model.pe.pairing == "interleaved"
        state = neox_state(model, rotary_dim if interleaved else 0)
    # The output layer's name differs between versions (GPT-NeoX: embed_out in transformers 4, lm_head in 5).
    head = next(name for name, module in hf_model.named_modules() if module is hf_model.get_output_embeddings())
    state[f"{head}.weight"] = state.pop("lm_head.weight")
    with torch.no_grad():
        hf_model.load_state_dict(state, strict=True)
    return hf_model.eval()


@torch.no_grad()
def check_same_model(model, hf_model, cfg, tol: float = 1e-3) -> None:
    """The transformers model computes ropebench's logits (at the training length, and at twice that where the
    encoding has positions there) and, for RoPE, its rotary tables (``hf_compat.check_rotary_tables``), or the
    export is refused: a transformers that computes the architecture or its scaling otherwise would export another
    model under this run's name."""
    if cfg.pe.name == "rope":  # on fresh modules: a dynamic one keeps the longest length it has seen
        for module in {type(m) for m in hf_model.modules() if type(m).__name__.endswith("RotaryEmbedding")}:
            hf_compat.check_rotary_tables(module(config=hf_model.config), training_scaling(cfg, model),
                                          float(cfg.pe.base), model.pe.rotary_dim, int(cfg.train.seq_len))
    train_len = int(cfg.train.seq_len)
    limit = model.pe.max_len()
    lengths = [n for n in (train_len, 2 * train_len) if limit is None or n <= limit]
    ids = torch.randint(0, model.wte.weight.shape[0], (1, max(lengths)), generator=torch.Generator().manual_seed(0))
    for length in lengths:
        ours, theirs = model(ids[:, :length])[0], hf_model(ids[:, :length]).logits
        diff = (ours.float() - theirs.float()).abs().max().item()
        if not diff <= tol:
            scaling = training_scaling(cfg, model)
            what = f"its {scaling['rope_type']} RoPE scaling" if scaling else f"{hf_model.config.architectures[0]}"
            raise UserError(f"transformers {hf_compat.version()} computes {what} otherwise than ropebench (logits "
                            f"differ by up to {diff:.3g} at {length} tokens); export with another transformers "
                            "version (pip install -U transformers)")


def _rotary_fraction(rotary_dim: int, head_dim: int) -> float:
    """The float f with int(head_dim * f) == rotary_dim (how transformers reads partial_rotary_factor):
    rotary_dim / head_dim itself can round just below (e.g. 58 / 220 * 220 = 57.99...)."""
    fraction = rotary_dim / head_dim
    while int(head_dim * fraction) < rotary_dim:
        fraction = math.nextafter(fraction, 2.0)
    return fraction


def rope_parameters(cfg, model, rotary_dim: int) -> dict:
    """transformers' ``rope_parameters`` for the run: theta, the rotary fraction, and training-time scaling."""
    head_dim = model.cfg.n_embd // model.cfg.n_head
    base = float(cfg.pe.base) if cfg.pe.name in ROTARY else 10000.0  # NoPE: rotates nothing, theta unused
    params = {"rope_type": "default", "rope_theta": base,
              "partial_rotary_factor": _rotary_fraction(rotary_dim, head_dim)}
    spec = training_scaling(cfg, model)
    if cfg.pe.name == "p_rope":  # proportional: int(f * head_dim // 2) pairs turn, f found as for rotary_dim
        params.update(rope_type="proportional", partial_rotary_factor=_rotary_fraction(2 * model.pe.kept_pairs,
                                                                                        head_dim))
        if spec is not None:
            params["factor"] = spec["factor"]  # linear, the only scaling proportional computes
    elif spec is not None:
        params.update(rope_type=spec["rope_type"], factor=spec["factor"])
        if spec["rope_type"] == "yarn":
            params.update({key: spec[key] for key in _YARN_KEYS if key in spec})
    return params


def training_scaling(cfg, model) -> dict | None:
    """The RoPE scaling the run was trained with (``pe.scaling``, part of the model), or None; refused if
    transformers cannot compute it as ropebench does."""
    spec = getattr(model.pe, "trained_scaling", None)
    if spec is None:
        return None
    kind, train_len = spec["rope_type"], int(cfg.train.seq_len)
    if cfg.pe.name == "p_rope" and kind != "linear":
        raise UserError(f"pe=p_rope trained with rope scaling '{kind}' cannot be exported exactly; transformers' "
                        "proportional type takes linear scaling only")
    if kind not in HF_SCALING:
        raise UserError(f"pe=rope trained with rope scaling '{kind}' cannot be exported exactly; export-hf "
                        f"supports training-time scaling none, {', '.join(HF_SCALING)}")
    if kind == "dynamic" and spec.get("original_max_position_embeddings", train_len) != train_len:
        # transformers' dynamic NTK stretches from max_position_embeddings, which is the training length here.
        raise UserError("pe=rope trained with dynamic scaling from original_max_position_embeddings="
                        f"{spec['original_max_position_embeddings']} cannot be exported exactly; transformers "
                        f"stretches from max_position_embeddings, the training length ({train_len})")
    return spec


def _neox_config(model, cfg, eos_id: int, params: dict):
    from transformers import GPTNeoXConfig

    m = model.cfg
    rope = {"rope_parameters": params} if hf_compat.stores_rope_parameters() else hf_compat.legacy_gpt_neox_keys(params)
    return GPTNeoXConfig(
        vocab_size=model.wte.weight.shape[0], hidden_size=m.n_embd, num_hidden_layers=m.n_layer,
        num_attention_heads=m.n_head, intermediate_size=model.blocks[0].mlp.c_fc.out_features, hidden_act="gelu",
        attention_dropout=float(m.dropout), hidden_dropout=float(m.dropout),
        max_position_embeddings=int(cfg.train.seq_len), layer_norm_eps=model.ln_f.eps,
        bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id, tie_word_embeddings=True,
        use_parallel_residual=False, attention_bias=bool(m.bias), **rope)


def _gpt2_config(model, eos_id: int):
    from transformers import GPT2Config

    m = model.cfg
    return GPT2Config(
        vocab_size=model.wte.weight.shape[0], n_positions=model.pe.max_len(), n_embd=m.n_embd, n_layer=m.n_layer,
        n_head=m.n_head, n_inner=model.blocks[0].mlp.c_fc.out_features, activation_function="gelu",
        resid_pdrop=float(m.dropout), embd_pdrop=float(m.dropout), attn_pdrop=float(m.dropout),
        layer_norm_epsilon=model.ln_f.eps, scale_attn_weights=True, bos_token_id=eos_id, eos_token_id=eos_id,
        pad_token_id=eos_id, tie_word_embeddings=True)


def _add_legacy_keys(config_path: Path, config) -> None:
    """GPT-NeoX before transformers 5 reads rotary_pct / rotary_emb_base / rope_scaling, not rope_parameters
    (and defaults rotary_pct to 0.25): record both schemas, so that every version loads the same model. Not for
    p-RoPE (proportional): a transformers without that type would read rotary_pct as GPT-NeoX's contiguous block."""
    params = hf_compat.rope_parameters(config)
    if config.model_type != "gpt_neox" or not params or params["rope_type"] == "proportional":
        return
    data = json.loads(config_path.read_text())
    data.update(hf_compat.legacy_gpt_neox_keys(params))
    data["rope_parameters"] = params
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _make_readable(directory: Path) -> None:
    """Modes as for anything the user creates (mkdtemp leaves 0700, safetensors 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(directory, 0o777 & ~mask)
    for path in directory.iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~mask)


def _write_atomically(out: Path, write, size: int) -> None:
    """Build the export in a temporary directory beside ``out``, then move it into place (an existing ``out``,
    already allowed by the caller, is replaced only once the new one is complete). ``size``: about how many bytes
    it writes, to tell a full disk from other failures (transformers and safetensors word it their own ways)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    old = None
    try:
        write(tmp)
        _make_readable(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old / "previous")
        os.replace(tmp, out)
    except BaseException as exc:
        problem = exc if isinstance(exc, OSError) else None if isinstance(exc, UserError) else \
            space_problem(out.parent, size)
        if old is not None and not out.exists():
            os.replace(old / "previous", out)  # put the previous export back
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if problem is not None and problem.errno is not None:  # named by OUT, not by the temporary directory
            raise OSError(problem.errno, problem.strerror, str(out)) from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
