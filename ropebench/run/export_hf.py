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
RoPE scaling applied during training (``pe.scaling``) maps to ``rope_parameters`` for linear, dynamic and yarn,
which transformers computes as ropebench does (``ropebench.core.rope.freqs``).
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
from ropebench.run.artifacts import load_model
from ropebench.run.rundir import CHECKPOINT, RunDir

SUPPORTED = ("rope", "p_rope", "nope", "learned")
ROTARY = ("rope", "p_rope")
MANIFEST = "ropebench_export.json"
HF_SCALING = ("linear", "dynamic", "yarn")
_YARN_KEYS = ("original_max_position_embeddings", "beta_fast", "beta_slow", "truncate", "attention_factor",
              "mscale", "mscale_all_dim")


def export_hf(run_dir, out, *, force: bool = False) -> Path:
    """Write the run as a transformers model directory at ``out``, atomically; returns ``out``."""
    _require_transformers()
    from ropebench.run.hf_tokenizer import load_run_tokenizer, save_tokenizer

    run, out = RunDir(run_dir), Path(out)
    cfg = run.read_config()
    check_exportable(cfg)
    _check_out(out, run.path, force)
    model = load_model(run, cfg)
    # The tokenizer's model_max_length is a hard limit (transformers warns past it): the learned table's length;
    # RoPE and NoPE have none (max_position_embeddings, the training length, is not one).
    tokenizer = load_run_tokenizer(cfg.data, model.pe.max_len())
    hf_model = to_hf(model, cfg, int(tokenizer.eos_token_id))

    def write(tmp: Path) -> None:
        with _no_progress_bar():
            hf_model.save_pretrained(str(tmp))
        save_tokenizer(tokenizer, tmp)
        _add_legacy_keys(tmp / "config.json", hf_model.config)
        (tmp / MANIFEST).write_text(json.dumps(_manifest(run, cfg, hf_model), indent=2) + "\n")

    _write_atomically(out, write)
    return out


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
    """Refuse, in one line, an encoding that has no exact transformers architecture."""
    name = str(cfg.pe.name)
    if name not in SUPPORTED:
        raise UserError(f"pe={name} has no transformers architecture to export to; "
                        f"export-hf supports pe={', '.join(SUPPORTED)}")
    if name in ROTARY and cfg.pe.get("rotate_values", False):
        raise UserError(f"pe={name} with rotate_values=true (an ablation that rotates values) has no transformers "
                        "architecture; export-hf supports pe=rope (rotate_values=false), nope, learned")
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
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"'{out}' exists and is not empty; choose a new directory or pass --force to replace it")


def to_hf(model, cfg, eos_id: int):
    """The transformers model equal to ropebench's ``model`` (GPT-NeoX for rope/nope, GPT-2 for learned)."""
    if cfg.pe.name == "learned":
        from transformers import GPT2LMHeadModel

        hf_model, state = GPT2LMHeadModel(_gpt2_config(model, eos_id)), _gpt2_state(model)
    else:
        from transformers import GPTNeoXForCausalLM

        rotary_dim = model.pe.rotary_dim if cfg.pe.name in ROTARY else 0
        params = rope_parameters(cfg, model, rotary_dim)
        hf_model = GPTNeoXForCausalLM(_neox_config(model, cfg, eos_id, params))
        interleaved = cfg.pe.name in ROTARY and model.pe.pairing == "interleaved"
        state = _neox_state(model, rotary_dim if interleaved else 0)
    with torch.no_grad():
        hf_model.load_state_dict(state, strict=True)
    return hf_model.eval()


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
    return GPTNeoXConfig(
        vocab_size=model.wte.weight.shape[0], hidden_size=m.n_embd, num_hidden_layers=m.n_layer,
        num_attention_heads=m.n_head, intermediate_size=model.blocks[0].mlp.c_fc.out_features, hidden_act="gelu",
        attention_dropout=float(m.dropout), hidden_dropout=float(m.dropout),
        max_position_embeddings=int(cfg.train.seq_len), layer_norm_eps=model.ln_f.eps,
        bos_token_id=eos_id, eos_token_id=eos_id, tie_word_embeddings=True, use_parallel_residual=False,
        attention_bias=bool(m.bias), rope_parameters=params)


def _gpt2_config(model, eos_id: int):
    from transformers import GPT2Config

    m = model.cfg
    return GPT2Config(
        vocab_size=model.wte.weight.shape[0], n_positions=model.pe.max_len(), n_embd=m.n_embd, n_layer=m.n_layer,
        n_head=m.n_head, n_inner=model.blocks[0].mlp.c_fc.out_features, activation_function="gelu",
        resid_pdrop=float(m.dropout), embd_pdrop=float(m.dropout), attn_pdrop=float(m.dropout),
        layer_norm_epsilon=model.ln_f.eps, scale_attn_weights=True, bos_token_id=eos_id, eos_token_id=eos_id,
        tie_word_embeddings=True)


def _bias(linear_or_norm) -> torch.Tensor:
    """The module's bias, or zeros where ropebench's has none (model.bias=false)."""
    weight, bias = linear_or_norm.weight, linear_or_norm.bias
    return bias.detach() if bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)


def _norm(prefix: str, norm) -> dict:
    return {prefix + "weight": norm.weight.detach(), prefix + "bias": _bias(norm)}


def _half_split_order(head_dim: int, rotary_dim: int) -> torch.Tensor:
    """Channel order that turns interleaved pairs (2i, 2i+1) into half-split pairs (i, i + rotary_dim/2):
    even rotary channels, then odd ones, then the channels past rotary_dim unchanged."""
    return torch.cat([torch.arange(0, rotary_dim, 2), torch.arange(1, rotary_dim, 2),
                      torch.arange(rotary_dim, head_dim)])


def _neox_qkv(tensor: torch.Tensor, n_head: int, interleaved_dim: int) -> torch.Tensor:
    """ropebench's c_attn rows [all q | all k | all v] -> NeoX's per head [q_h, k_h, v_h]; with
    ``interleaved_dim`` > 0, q and k rotary rows reordered to half-split pairing."""
    t = tensor.detach().reshape(3, n_head, -1, *tensor.shape[1:])
    if interleaved_dim:
        order = _half_split_order(t.shape[2], interleaved_dim)
        t = torch.cat([t[:2, :, order], t[2:]], dim=0)
    return t.transpose(0, 1).reshape(tensor.shape).contiguous()


def _neox_state(model, interleaved_dim: int) -> dict:
    wte = model.wte.weight.detach()
    state = {"gpt_neox.embed_in.weight": wte, "lm_head.weight": wte,
             **_norm("gpt_neox.final_layer_norm.", model.ln_f)}
    n_head = model.cfg.n_head
    for i, block in enumerate(model.blocks):
        p = f"gpt_neox.layers.{i}."
        attn, mlp = block.attn, block.mlp
        state.update(_norm(p + "input_layernorm.", block.ln_1))
        state.update(_norm(p + "post_attention_layernorm.", block.ln_2))
        state[p + "attention.query_key_value.weight"] = _neox_qkv(attn.c_attn.weight, n_head, interleaved_dim)
        state[p + "attention.dense.weight"] = attn.c_proj.weight.detach()
        if attn.c_attn.bias is not None:
            state[p + "attention.query_key_value.bias"] = _neox_qkv(attn.c_attn.bias, n_head, interleaved_dim)
            state[p + "attention.dense.bias"] = attn.c_proj.bias.detach()
        state[p + "mlp.dense_h_to_4h.weight"] = mlp.c_fc.weight.detach()
        state[p + "mlp.dense_h_to_4h.bias"] = _bias(mlp.c_fc)
        state[p + "mlp.dense_4h_to_h.weight"] = mlp.c_proj.weight.detach()
        state[p + "mlp.dense_4h_to_h.bias"] = _bias(mlp.c_proj)
    return state


def _gpt2_state(model) -> dict:
    wte = model.wte.weight.detach()
    state = {"transformer.wte.weight": wte, "lm_head.weight": wte,
             "transformer.wpe.weight": model.pe.wpe.weight.detach(), **_norm("transformer.ln_f.", model.ln_f)}
    for i, block in enumerate(model.blocks):
        p = f"transformer.h.{i}."
        state.update(_norm(p + "ln_1.", block.ln_1))
        state.update(_norm(p + "ln_2.", block.ln_2))
        for name, linear in (("attn.c_attn", block.attn.c_attn), ("attn.c_proj", block.attn.c_proj),
                             ("mlp.c_fc", block.mlp.c_fc), ("mlp.c_proj", block.mlp.c_proj)):
            state[f"{p}{name}.weight"] = linear.weight.detach().t().contiguous()  # Conv1D: (in, out)
            state[f"{p}{name}.bias"] = _bias(linear)
    return state


def _add_legacy_keys(config_path: Path, config) -> None:
    """GPT-NeoX before transformers 5 reads rotary_pct / rotary_emb_base / rope_scaling, not rope_parameters
    (and defaults rotary_pct to 0.25): record them too, so an older transformers loads the same model."""
    params = getattr(config, "rope_parameters", None)
    if config.model_type != "gpt_neox" or not params or params["rope_type"] == "proportional":
        return
    data = json.loads(config_path.read_text())
    data["rotary_pct"] = params["partial_rotary_factor"]
    data["rotary_emb_base"] = params["rope_theta"]
    if params["rope_type"] != "default":
        data["rope_scaling"] = dict(params)  # transformers 5 takes rope_scaling over rope_parameters: the same
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _manifest(run: RunDir, cfg, hf_model) -> dict:
    from omegaconf import OmegaConf

    from ropebench import __version__
    from ropebench.run.hf_tokenizer import tokenizer_dir

    return {"source_run": str(run.path.resolve()), "pe": OmegaConf.to_container(cfg.pe),
            "train_seq_len": int(cfg.train.seq_len), "architecture": hf_model.config.architectures[0],
            "tokenizer": tokenizer_dir(cfg.data) or "bytes", "data": OmegaConf.to_container(cfg.data),
            "eval": OmegaConf.to_container(cfg.eval),
            "rope_parameters": getattr(hf_model.config, "rope_parameters", None), "ropebench_version": __version__}


def _make_readable(directory: Path) -> None:
    """Modes as for anything the user creates (mkdtemp leaves 0700, safetensors 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(directory, 0o777 & ~mask)
    for path in directory.iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~mask)


def _write_atomically(out: Path, write) -> None:
    """Build the export in a temporary directory beside ``out``, then move it into place (an existing ``out``,
    already allowed by the caller, is replaced only once the new one is complete)."""
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
    except BaseException:
        if old is not None and not out.exists():
            os.replace(old / "previous", out)  # put the previous export back
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
