"""Randomized positions (Ruoss et al. 2023): the drawn ids, every encoding that takes per-example position ids
against a reference computed from the ids, and relative encodings' invariance to shifted ids."""

import math

import pytest
import torch
from helpers import tiny_model

from ropebench.core.pe import registry
from ropebench.core.pe.alibi import alibi_slopes
from ropebench.core.pe.sinusoidal import sinusoidal_table
from ropebench.core.pe.t5 import t5_bucket
from ropebench.data.positions import random_position_ids

TAKES_IDS = sorted(n for n, e in registry().items() if e.cls.supports_position_ids)
# Encodings that see only differences of positions: shifting every id by the same amount changes nothing.
RELATIVE = ("rope", "xpos", "t5", "alibi", "kerple")


def test_the_core_encodings_but_nope_take_position_ids():
    assert set(TAKES_IDS) >= {"rope", "xpos", "learned", "sinusoidal", "t5", "alibi", "kerple", "fire"}
    assert "nope" not in TAKES_IDS  # nothing to randomize: refused rather than silently the same run


def test_random_ids_are_sorted_distinct_and_within_range():
    g = torch.Generator().manual_seed(0)
    ids = random_position_ids(64, 20, 50, g)
    assert ids.shape == (64, 20) and ids.dtype == torch.int64
    assert (ids.diff(dim=1) > 0).all()  # sorted and distinct
    assert ids.min() >= 0 and ids.max() < 50
    assert ids.max() > 45 and ids.min() < 4  # the whole range is used
    assert not torch.equal(ids[0], ids[1])  # drawn per example
    again = random_position_ids(64, 20, 50, torch.Generator().manual_seed(0))
    assert torch.equal(ids, again)
    assert torch.equal(random_position_ids(3, 7, 7, g), torch.arange(7).expand(3, 7))  # N = T: nothing to skip
    # Every position equally likely (a uniform subset), so each shows up in about T/N of the rows.
    counts = torch.bincount(random_position_ids(4000, 10, 40, g).flatten(), minlength=40).float() / 4000
    assert counts.sub(10 / 40).abs().max() < 0.04


def _perturbed(name, **kw):
    model = tiny_model(name, train_seq_len=64, **kw)
    with torch.no_grad():  # learned tables and biases start at zero for some encodings: make them matter
        for p in model.pe.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        for block in model.blocks:  # sharper attention than at init, so that positions visibly move the logits
            block.attn.c_attn.weight.mul_(10)
    return model


@pytest.mark.parametrize("name", TAKES_IDS)
def test_ordinary_ids_give_the_ordinary_model(name):
    model = _perturbed(name)
    idx = torch.randint(0, 257, (2, 12))
    with torch.no_grad():
        assert torch.equal(model(idx)[0], model(idx, pos=torch.arange(12).expand(2, 12))[0])


@pytest.mark.parametrize("name", RELATIVE)
def test_relative_encodings_see_only_differences_of_ids(name):
    model = _perturbed(name)
    idx = torch.randint(0, 257, (2, 12))
    ids = torch.stack([torch.arange(12) * 3, torch.tensor([0, 1, 2, 5, 9, 10, 20, 21, 22, 30, 31, 40])])
    with torch.no_grad():
        base, _ = model(idx, pos=ids)
        shifted, _ = model(idx, pos=ids + torch.tensor([[17], [100]]))
        contiguous, _ = model(idx)
    assert torch.allclose(base, shifted, atol=1e-4)
    assert (base - contiguous).abs().max() > 1e-2  # the ids do matter


def test_bias_encodings_compute_each_examples_bias_from_its_ids():
    ids = torch.tensor([[0, 3, 4, 10, 30], [2, 5, 6, 7, 8]])
    cpu = torch.device("cpu")
    alibi, t5, kerple, fire = (_perturbed(n).pe for n in ("alibi", "t5", "kerple", "fire"))
    slopes = alibi_slopes(4)
    a, p = kerple.params()
    c, L = fire.c_and_L()
    with torch.no_grad():
        got = {n: pe.bias(5, cpu, pos=ids) for n, pe in (("alibi", alibi), ("t5", t5), ("kerple", kerple),
                                                        ("fire", fire))}
        for b in range(2):
            for h in range(4):
                for i in range(5):
                    for j in range(i + 1):
                        d = int(ids[b, i] - ids[b, j])
                        bucket = t5_bucket(torch.tensor([d]), t5.num_buckets, t5.max_distance).item()
                        x = math.log1p(c * d) / math.log1p(c * max(L.item(), int(ids[b, i])))
                        mlp = fire.fc2(torch.relu(fire.fc1(torch.tensor([[x]]))))[0, h]
                        want = {"alibi": -slopes[h] * d, "t5": t5.relative_bias.weight[bucket, h],
                                "kerple": -p[h] * math.log1p(a[h] * d), "fire": mlp}
                        for name, value in want.items():
                            assert got[name].shape == (2, 4, 5, 5)
                            assert got[name][b, h, i, j].item() == pytest.approx(float(value), abs=1e-5), name


@pytest.mark.parametrize("name", ["learned", "sinusoidal"])
def test_absolute_encodings_add_the_row_of_each_id(name):
    model = _perturbed(name)
    ids = torch.tensor([[0, 7, 9, 40], [1, 2, 60, 63]])
    x = torch.zeros(2, 4, 32)
    added = model.pe.embed(x, ids)
    for b in range(2):
        for t in range(4):
            if name == "learned":
                want = model.pe.wpe.weight[ids[b, t]]
            else:
                want = model.pe.scale * sinusoidal_table(ids[b, t : t + 1], 32)[0]
            assert torch.allclose(added[b, t], want, atol=1e-6)


def test_xpos_centres_each_example_on_its_own_ids():
    # Far-apart ids must not overflow: each row is centred on its own ids, as the ordinary tables are.
    model = _perturbed("xpos")
    idx = torch.randint(0, 257, (1, 6))
    far = torch.tensor([[20000, 20001, 20005, 20010, 20011, 20020]])
    with torch.no_grad():
        a, _ = model(idx, pos=far)
        b, _ = model(idx, pos=far - 20000)
    assert torch.isfinite(a).all() and torch.allclose(a, b, atol=1e-4)
