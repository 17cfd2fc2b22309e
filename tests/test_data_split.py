"""The train/validation split: near-duplicates stay on one side, the split ignores how a path is spelled, and the
overlap report measures what is left -- each checked against brute-force sets of byte strings."""

import json
from pathlib import Path

import numpy as np
import pytest

from ropebench.cli.data_report import data_config
from ropebench.data import corpus as data
from ropebench.data import dedup
from ropebench.data.report import split_overlap

N = dedup.NGRAM
LETTERS = list("abcdefghijklmnopqrstuvwxyz")


def random_text(rng, n_words: int) -> str:
    """Words of 2-9 random letters: two such texts share no 32-byte string by chance."""
    return " ".join("".join(rng.choice(LETTERS, rng.integers(2, 10))) for _ in range(n_words)) + "\n"


def edited(rng, text: str, n_edits: int) -> str:
    words = text.split(" ")
    for k in rng.choice(len(words), n_edits, replace=False):
        words[k] = "EDIT"
    return " ".join(words)


def ngrams(doc: bytes) -> set[bytes]:
    return {doc[i : i + N] for i in range(len(doc) - N + 1)}


def reference_hash(window: bytes) -> int:
    """Karp-Rabin polynomial of the window modulo 2**64, then splitmix64's finaliser, in plain Python integers."""
    mask = (1 << 64) - 1
    h = 0
    for byte in window:
        h = (h * dedup._BASE + byte) & mask
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & mask
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & mask
    return h ^ (h >> 31)


def text_corpus(paths, cache: Path, val_fraction=0.1, test_fraction=0.1):
    cfg = data_config("text_files", [str(p) for p in paths])
    cfg.cache_dir, cfg.val_fraction, cfg.test_fraction = str(cache), val_fraction, test_fraction
    return data.load_corpus(cfg, log=lambda *a: None)


def split(names, docs, val: float, test: float = 0.0):
    """(train, val, test) indices as load_corpus draws them."""
    sides, found = data._split_documents(names, docs, {"val": val, "test": test})
    return sides["train"], sides["val"], sides["test"], found


def test_fingerprints_are_the_polynomial_hash_of_each_window():
    doc = bytes(np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8))
    got = dedup._fingerprints(np.frombuffer(doc, np.uint8))
    assert len(got) == len(doc) - N + 1
    assert [int(h) for h in got[::17]] == [reference_hash(doc[i : i + N]) for i in range(0, len(got), 17)]


@pytest.mark.parametrize("sample", [1, 4])
def test_shared_counts_match_python_sets(sample):
    rng = np.random.default_rng(1)
    base = [random_text(rng, n).encode() for n in (5, 40, 300, 300)]  # the first is shorter than one n-gram
    docs = base + [base[2][:700] + base[3][:500], base[1] + base[1], b"", edited(rng, base[3].decode(), 4).encode()]
    kept = [{g for g in ngrams(d) if reference_hash(g) % sample == 0} for d in docs]
    sets = dedup.ngram_sets(docs, sample)
    assert sets.sizes().tolist() == [len(k) for k in kept]
    i, j, shared = dedup.shared_counts(sets, sets)
    got = {(a, b): c for a, b, c in zip(i.tolist(), j.tolist(), shared.tolist())}
    assert len(got) == len(i)  # each pair once
    want = {(a, b): len(kept[a] & kept[b]) for a in range(len(docs)) for b in range(len(docs))}
    assert got == {k: v for k, v in want.items() if v}
    assert got[(4, 2)] > 0 and (5, 2) not in got  # a planted share is found; nothing across a document boundary


def test_best_containment_is_the_largest_share_of_exact_ngrams():
    rng = np.random.default_rng(2)
    train = [random_text(rng, 200).encode() for _ in range(4)]
    val = [train[1][:900] + random_text(rng, 60).encode(), random_text(rng, 100).encode(), b"short",
           edited(rng, train[3].decode(), 6).encode()]
    fraction, best, sizes = dedup.best_containment(val, train)
    for k, doc in enumerate(val):
        shares = [len(ngrams(doc) & ngrams(t)) / max(len(ngrams(doc)), 1) for t in train]
        assert fraction[k] == pytest.approx(max(shares)) and sizes[k] == len(ngrams(doc))
        if max(shares) > 0:
            assert best[k] == int(np.argmax(shares))
    assert best.tolist()[1:3] == [-1, -1] and 0.5 < fraction[0] < 1 and fraction[3] > 0.8


def test_groups_follow_mutual_links_and_contained_documents_follow_their_container():
    # 0<->1<->2 mutual (one group, though 0 and 2 share nothing directly); 3 -> 4 one way (3 is inside 4);
    # 4<->5 mutual; 6 -> 0 and 6 -> 4 one way: a short file inside two groups must not merge them.
    src = np.array([0, 1, 1, 2, 3, 4, 5, 6, 6])
    dst = np.array([1, 0, 2, 1, 4, 5, 4, 0, 4])
    assert dedup.near_duplicate_groups(7, src, dst).tolist() == [0, 0, 0, 3, 4, 4, 6]
    side = np.array([1, 1, 1, 1, 0, 0, 1])  # 0: training, 1: validation
    # 3 and 6 sit in validation while a document holding them is in training: both move; group 0-2 stays.
    assert dedup.follow_containers(side, src, dst).tolist() == [1, 1, 1, 0, 0, 0, 0]
    # With a test side (2): 6 is inside 0 (validation) and 4 (training) -> training; 3 inside 4 -> training;
    # a validation document inside a test one stays (only held-out documents move, and only towards training).
    side = np.array([2, 2, 2, 2, 1, 1, 2])
    assert dedup.follow_containers(side, src, dst).tolist() == [2, 2, 2, 1, 1, 1, 1]


def write_pairs(directory: Path, rng, n_pairs: int) -> list[tuple[str, str]]:
    """n_pairs documents, each with a copy with a few words changed, under unrelated names; short pairs are
    compared on every n-gram, long ones (over dedup.SHORT bytes) on sampled ones."""
    directory.mkdir()
    pairs = []
    for k in range(n_pairs):
        text = random_text(rng, 150 if k % 2 else 1500)
        a, b = f"doc{k:02d}.txt", f"other/copy{(k * 7) % n_pairs:02d}.txt"
        (directory / a).write_text(text)
        (directory / b).parent.mkdir(exist_ok=True)
        (directory / b).write_text(edited(rng, text, 3))
        pairs.append((a, b))
    return pairs


def test_near_duplicates_land_on_the_same_side(tmp_path):
    pairs = write_pairs(tmp_path / "docs", np.random.default_rng(3), 24)
    corpus = text_corpus([tmp_path / "docs"], tmp_path / "cache", val_fraction=0.3)
    val = set(corpus.names["val"])
    assert {a in val for a, _ in pairs} == {True, False}  # both sides are used ...
    assert all((a in val) == (b in val) for a, b in pairs)  # ... and every pair is on one of them
    info = json.loads(next((tmp_path / "cache").glob("*/info.json")).read_text())  # the cache's record of the split
    assert info["near_duplicates"]["groups"] == len(pairs)
    assert any((data._doc_hash(a, "split") < 0.3) != (data._doc_hash(b, "split") < 0.3) for a, b in pairs), \
        "a split by each file's own name would have separated some pair"


def test_unrelated_documents_split_by_val_fraction():
    rng = np.random.default_rng(4)
    names = [f"f{k}.txt" for k in range(400)]
    docs = [random_text(rng, 100).encode() for _ in names]
    train, val, test, found = split(names, docs, 0.1)
    assert sorted(train + val) == list(range(400)) and found["groups"] == found["moved_to_train"] == 0 and not test
    assert 40 - 3 * 6 <= len(val) <= 40 + 3 * 6  # binomial(400, 0.1): mean 40, sd 6
    assert val == [i for i in sorted(range(400), key=lambda i: data._doc_hash(names[i], "order"))
                   if data._doc_hash(names[i], "split") < 0.1]  # with no near-duplicates: the split by name


def test_contained_document_moves_to_the_training_side():
    rng = np.random.default_rng(5)
    names = [f"n{k}" for k in range(60)]
    docs = [random_text(rng, 400).encode() for _ in names]
    drawn_val = [k for k, n in enumerate(names) if data._doc_hash(n, "split") < 0.2]
    container = next(k for k in range(60) if k not in drawn_val)
    docs[drawn_val[0]] = docs[container][:600]  # all of it inside a training document, not the other way round
    train, val, _, found = split(names, docs, 0.2)
    assert drawn_val[0] in train and container in train and found == {**found, "moved_to_train": 1, "groups": 0}
    assert sorted(val) == sorted(drawn_val[1:])


def test_split_ignores_how_the_path_is_spelled(corpus_dir, tmp_path, monkeypatch):
    single = sorted(corpus_dir.glob("*.py"))[0]
    monkeypatch.chdir(corpus_dir.parent)
    relative = text_corpus([corpus_dir.name, f"{corpus_dir.name}/{single.name}"], tmp_path / "a")
    absolute = text_corpus([corpus_dir.resolve(), single.resolve()], tmp_path / "b")
    assert relative.names == absolute.names and single.name in relative.names["train"] + relative.names["val"]
    assert 0 < len(relative.names["val"]) < len(relative.names["train"])
    assert np.array_equal(relative.val.tokens, absolute.val.tokens)
    logged = []
    cfg = data_config("text_files", [str(corpus_dir.resolve()), str(single.resolve())])
    cfg.cache_dir = str(tmp_path / "a")
    data.load_corpus(cfg, log=logged.append)
    assert logged == []  # the same files under another spelling reuse the cache


def test_overlap_report_finds_a_planted_near_duplicate():
    rng = np.random.default_rng(6)
    train = [random_text(rng, 300).encode() for _ in range(5)]
    planted = edited(rng, train[2].decode(), 5).encode()
    val = [random_text(rng, 300).encode(), planted, random_text(rng, 150).encode() + train[0][:400]]
    report = split_overlap(train, [f"t{k}" for k in range(5)], val, ["v0", "planted", "v2"])
    want = len(ngrams(planted) & ngrams(train[2])) / len(ngrams(planted))
    top = report.largest[0]
    assert (top.val_name, top.train_name, top.fraction) == ("planted", "t2", pytest.approx(want))
    assert report.above_limit == 1 and [o.val_name for o in report.largest] == ["planted", "v2"]  # v0: no share
    assert report.largest[1].fraction == pytest.approx(len(ngrams(val[2]) & ngrams(train[0])) / len(ngrams(val[2])))
    assert (report.n_train, report.n_val, report.n_measured) == (5, 3, 3)
    assert "largest overlap: " in "\n".join(report.lines()) and "'planted'" in report.lines()[2]


def test_report_on_a_built_corpus_finds_no_leak(tmp_path, capsys, monkeypatch):
    from ropebench.cli.data_report import data_report

    pairs = write_pairs(tmp_path / "docs", np.random.default_rng(7), 20)
    monkeypatch.setenv("ROPEBENCH_CACHE", str(tmp_path / "cache"))
    report = data_report("text_files", [str(tmp_path / "docs")], split="val")
    assert report.above_limit == 0 and report.n_val > 0 and report.held_out == "validation"
    test = data_report("text_files", [str(tmp_path / "docs")])
    assert test.above_limit == 0 and test.held_out == "test" and report.n_val + test.n_val + test.n_train == 40
    out = capsys.readouterr().out
    assert "validation documents with more than 50% of their n-grams in one training document: 0" in out
    assert "test documents with more than 50% of their n-grams in one training document: 0" in out
    assert any((data._doc_hash(a, "split") < 0.1) != (data._doc_hash(b, "split") < 0.1) for a, b in pairs), \
        "a split by each file's own name would have leaked some pair"


@pytest.mark.parametrize("data_name,paths,expected", [
    ("passkey", None, "--data passkey is generated on the fly"),  # data-report's own options, named as such
    ("nope", None, "unknown data 'nope'; choose one of: hf, passkey, pg19, stdlib"),
    ("stdlib", ["notes"], "--paths notes is read only with --data text_files, not --data stdlib"),
])
def test_report_refuses_bad_input_in_one_line(data_name, paths, expected):
    from ropebench.cli.data_report import data_report
    from ropebench.errors import UserError

    with pytest.raises(UserError) as error:
        data_report(data_name, paths)
    assert expected in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_no_validation_document_of_the_stdlib_mostly_repeats_a_training_one():
    """The whole standard library (~1,800 files, 30 MB), read directly: the split as load_corpus makes it."""
    names, files = data.stdlib_named()
    docs = [f.read_bytes() for f in files]
    train, val, _, found = split(names, docs, 0.1)
    report = split_overlap([docs[i] for i in train], [names[i] for i in train],
                           [docs[i] for i in val], [names[i] for i in val])
    assert report.above_limit == 0, report.lines()
    assert 0.06 * len(docs) < len(val) < 0.14 * len(docs) and found["groups"] > 10
    cp860, cp869 = names.index("encodings/cp860.py"), names.index("encodings/cp869.py")
    assert (cp860 in val) == (cp869 in val)


def test_three_way_split_keeps_validation_and_draws_test_from_training():
    """Validation is the same with or without a test split (as before the test split existed); the test
    documents come from the former training side, in the share asked for."""
    rng = np.random.default_rng(8)
    names = [f"g{k}.txt" for k in range(600)]
    docs = [random_text(rng, 100).encode() for _ in names]
    train2, val2, test2, _ = split(names, docs, 0.1)
    train3, val3, test3, _ = split(names, docs, 0.1, 0.15)
    assert val3 == val2 and not test2
    assert set(train3) | set(test3) == set(train2) and not set(train3) & set(test3)
    assert 90 - 3 * 9 <= len(test3) <= 90 + 3 * 9  # binomial(600, 0.15): mean 90, sd 8.7
    assert set(test3) == {i for i, n in enumerate(names) if 0.1 <= data._doc_hash(n, "split") < 0.25}


def test_test_split_holds_no_near_duplicate_of_training_or_validation(tmp_path):
    pairs = write_pairs(tmp_path / "docs", np.random.default_rng(9), 30)
    corpus = text_corpus([tmp_path / "docs"], tmp_path / "cache", val_fraction=0.25, test_fraction=0.3)
    side = {name: s for s in ("train", "val", "test") for name in corpus.names[s]}
    assert {side[a] for a, _ in pairs} == {"train", "val", "test"}  # all three sides are used ...
    assert all(side[a] == side[b] for a, b in pairs)  # ... and every pair of near-duplicates is on one of them
    tokens = {s: corpus.held_out(s) if s != "train" else corpus.train for s in ("train", "val", "test")}
    docs = {s: [t.tokens[a:b].astype(np.uint8).tobytes() for a, b in zip(t.starts, t.ends)] for s, t in tokens.items()}
    for held in ("val", "test"):
        others = docs["train"] + (docs["val"] if held == "test" else [])
        fraction, _, _ = dedup.best_containment(docs[held], others)
        assert fraction.max() < 0.5


def test_a_test_document_inside_a_validation_one_moves_to_validation():
    rng = np.random.default_rng(10)
    names = [f"t{k}" for k in range(80)]
    docs = [random_text(rng, 400).encode() for _ in names]
    drawn = {k: data._draw_side(data._doc_hash(n, "split"), {"val": 0.2, "test": 0.2}) for k, n in enumerate(names)}
    inner = next(k for k, s in drawn.items() if s == 2)
    container = next(k for k, s in drawn.items() if s == 1)
    docs[inner] = docs[container][:600]
    train, val, test, found = split(names, docs, 0.2, 0.2)
    assert inner in val and container in val and found["moved_to_val"] == 1 and inner not in test


def test_a_corpus_without_a_test_split_refuses_test_in_one_line(tmp_path, corpus_dir):
    from omegaconf import OmegaConf

    from ropebench.errors import UserError

    cfg = OmegaConf.to_container(data_config("text_files", [str(corpus_dir)]), resolve=True, enum_to_str=True)
    cfg = OmegaConf.create({**cfg, "cache_dir": str(tmp_path)})
    del cfg["test_fraction"]  # a run recorded before the test split existed (plain YAML, no such key)
    legacy = data.load_corpus(cfg, log=lambda *a: None)
    assert legacy.test is None and legacy.held_out("val") is legacy.val
    with pytest.raises(UserError, match="no test split .* --split val$"):
        legacy.held_out("test")


def test_report_measures_the_scored_regions_against_training(tmp_path, capsys, corpus_dir):
    """The scored regions' share of n-grams found anywhere in training, checked with Python sets; a run
    directory's own data and evaluation settings are what the report reads."""
    from omegaconf import OmegaConf

    from ropebench.cli.data_report import data_report
    from ropebench.data.regions import region_spans

    cfg = OmegaConf.create({"data": OmegaConf.to_container(data_config("text_files", [str(corpus_dir)])),
                            "model": {}, "pe": {"name": "rope"}, "train": {"seq_len": 16},
                            "eval": {"region_multiple": 4, "max_tokens": 512}})
    cfg.data.cache_dir = str(tmp_path / "cache")
    run = tmp_path / "run"
    run.mkdir()
    OmegaConf.save(cfg, run / "config.yaml")
    data_report(target=[str(run)])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("scored regions:"))
    corpus = data.load_corpus(cfg.data, log=lambda *a: None)
    spans = region_spans(corpus.test, corpus.names["test"], 16, 64, 512)
    assert 2 <= len(spans) <= 8 and all(b - a == 65 for a, b in spans)
    regions = [corpus.test.tokens[a:b].astype(np.uint8).tobytes() for a, b in spans]
    train_grams = set().union(*(ngrams(corpus.train.tokens[a:b].astype(np.uint8).tobytes())
                                for a, b in zip(corpus.train.starts, corpus.train.ends)))
    grams = [ngrams(r) for r in regions]
    total, found = sum(map(len, grams)), sum(len(g & train_grams) for g in grams)
    assert f"{len(spans)} test regions of 64 tokens; {found / total:.1%} of their {total} distinct" in line


def test_regions_start_inside_documents_at_a_fixed_offset_drawn_from_the_name():
    from ropebench.data.regions import region_offset, region_spans

    starts, ends = np.array([0, 500, 540, 2000]), np.array([499, 539, 1999, 2600])
    split = data.TokenSplit(np.zeros(2600, np.uint16), starts, ends)
    names = ["a.py", "short.py", "c.py", "d.py"]
    spans = region_spans(split, names, 64, 100)
    assert [(a - s, b - a) for (a, b), s in zip(spans, (0, 540, 2000))] == \
        [(region_offset(n, e - s - 101), 101) for n, s, e in (("a.py", 0, 499), ("c.py", 540, 1999),
                                                               ("d.py", 2000, 2600))]
    offsets = {region_offset(f"doc{k}", 1000) for k in range(200)}
    assert len(offsets) > 150 and min(offsets) < 100 and max(offsets) > 900  # spread over the document
    assert region_spans(split, names, 64, 100, max_tokens=150) == spans[:2]  # whole regions: ceil(150/100)
