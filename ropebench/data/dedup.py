"""Near-duplicate documents: found before the train/validation split, and the overlap left after it, measured.

A document is reduced to the set of its byte 32-grams, and two documents are compared by containment,
|A & B| / |A|: the fraction of A's n-grams that B holds too (Broder 1997, "On the resemblance and containment of
documents"). Each n-gram is hashed with a Karp-Rabin polynomial fingerprint (Karp & Rabin 1987), computed for
every position of the corpus at once by doubling the window width (no Python loop touches a byte), then mixed by
splitmix64's finaliser (Steele, Lea & Flood 2014; Stafford's "Mix13" constants) so that every bit of the hash
depends on every byte. Only hashes with h mod m == 0 are kept (Manber 1994, "Finding similar files in a large
file system"): the choice depends on the n-gram alone, so an n-gram two documents share is kept in both or in
neither, and a shared count over the kept hashes estimates the full one. Shared counts for all pairs of
documents at once are one sparse (documents x hashes) matrix product.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

NGRAM = 32
# Keep 1 n-gram hash in SAMPLE: about 2 M of the 30 M n-grams of the standard library, a few seconds in all.
SAMPLE = 16
# Containment above which documents are linked. The goal is that no validation document shares more than half
# of its n-grams with a training one; linking from 0.3 leaves a margin for the noise of the sampled estimate.
THRESHOLD = 0.3
# Documents shorter than this (about 120 sampled n-grams) are compared on every n-gram instead.
SHORT = 2048
_CHUNK = 1 << 16  # n-gram positions hashed per step: the arrays stay in cache (~3x faster than 4 M at once)
_BASE = 0x100000001B3  # an odd 64-bit multiplier (the FNV-1 prime); arithmetic is modulo 2**64


def _fingerprints(data: np.ndarray) -> np.ndarray:
    """Hash of each NGRAM-byte window of a uint8 array: len(data) - NGRAM + 1 uint64 values (NGRAM: a power of 2)."""
    h = data.astype(np.uint64)
    width = 1
    while width < NGRAM:  # h_2w[i] = h_w[i] * BASE**w + h_w[i + w]: a window of 2w bytes from two of w
        h = h[:-width] * np.uint64(pow(_BASE, width, 1 << 64)) + h[width:]
        width *= 2
    h ^= h >> np.uint64(30)  # splitmix64 finaliser: the polynomial's low bits depend only on the bytes' low bits
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def _in_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if len(sorted_set) == 0:
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


class _HashSet:
    """Membership in a sorted set of hashes. A table on the top 24 bits rules most values out with one memory
    read each, so the binary search (a cache miss per step) runs only on the few left."""

    def __init__(self, sorted_hashes: np.ndarray):
        self.sorted = sorted_hashes
        self.table = np.zeros(1 << 24, bool)
        self.table[sorted_hashes >> np.uint64(40)] = True

    def contains(self, values: np.ndarray) -> np.ndarray:
        found = self.table[values >> np.uint64(40)]
        candidates = np.flatnonzero(found)
        found[candidates] = _in_sorted(values[candidates], self.sorted)
        return found


def _distinct(sorted_values: np.ndarray) -> np.ndarray:
    """Mask of the first of each run of equal values."""
    first = np.ones(len(sorted_values), bool)
    first[1:] = sorted_values[1:] != sorted_values[:-1]
    return first


@dataclass
class NgramSets:
    """Each document's set of (sampled) n-gram hashes, as (document, hash) pairs sorted by hash, then document."""

    doc: np.ndarray  # int64
    hash: np.ndarray  # uint64
    n_docs: int

    def sizes(self) -> np.ndarray:
        return np.bincount(self.doc, minlength=self.n_docs)

    def distinct_hashes(self) -> np.ndarray:
        return self.hash[_distinct(self.hash)]


def ngram_sets(docs: list[bytes], sample: int = SAMPLE, within: np.ndarray | None = None) -> NgramSets:
    """The n-gram hashes h of each document with h mod ``sample`` == 0 (and, if given, in the sorted ``within``)."""
    ends = np.cumsum(np.array([len(d) for d in docs], dtype=np.int64))
    data = np.frombuffer(b"".join(docs), dtype=np.uint8)
    allowed = _HashSet(within) if within is not None else None
    positions, hashes = [np.zeros(0, np.int64)], [np.zeros(0, np.uint64)]
    for start in range(0, len(data) - NGRAM + 1, _CHUNK):
        h = _fingerprints(data[start : start + _CHUNK + NGRAM - 1])
        keep = h % np.uint64(sample) == 0
        if allowed is not None:
            keep[keep] = allowed.contains(h[keep])
        idx = np.flatnonzero(keep)
        positions.append(idx + start)
        hashes.append(h[idx])
    pos, h = np.concatenate(positions), np.concatenate(hashes)
    doc = np.searchsorted(ends, pos, side="right")  # < len(docs): every window starts inside the data
    inside = pos + NGRAM <= ends[doc] if len(pos) else np.zeros(0, bool)
    doc, h = doc[inside], h[inside]  # a window running into the next document is an n-gram of neither
    order = np.argsort(h, kind="stable")  # positions come in document order: ties stay sorted by document
    doc, h = doc[order], h[order]
    first = np.ones(len(h), bool)
    first[1:] = (h[1:] != h[:-1]) | (doc[1:] != doc[:-1])  # a set: one pair per (document, hash)
    return NgramSets(doc[first].astype(np.int64), h[first], len(docs))


def _csr(row_of_entry: np.ndarray, col_of_entry: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """A 0/1 sparse CSR matrix from entries already sorted by row, then column (no copy, no coalescing)."""
    crow = np.zeros(shape[0] + 1, np.int64)
    np.cumsum(np.bincount(row_of_entry, minlength=shape[0]), out=crow[1:])
    values = torch.ones(len(col_of_entry), dtype=torch.float64)  # float64: the counts stay exact integers
    with warnings.catch_warnings():  # torch calls its CSR support beta on first use; it is what we need
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(crow), torch.from_numpy(col_of_entry.astype(np.int64)),
                                       values, shape, check_invariants=False)


def shared_counts(a: NgramSets, b: NgramSets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, count) for each pair of a document i of ``a`` and j of ``b`` sharing ``count`` > 0 hashes."""
    columns = a.distinct_hashes()
    a_col = np.cumsum(_distinct(a.hash)) - 1
    hit = _in_sorted(b.hash, columns)
    b_col, b_doc = np.searchsorted(columns, b.hash[hit]), b.doc[hit]
    by_doc = np.argsort(a.doc, kind="stable")  # rows of A (document x hash) in document order
    left = _csr(a.doc[by_doc], a_col[by_doc], (a.n_docs, max(len(columns), 1)))
    right = _csr(b_col, b_doc, (max(len(columns), 1), b.n_docs))  # B transposed: b's pairs are in hash order
    product = torch.sparse.mm(left, right)
    crow, j = product.crow_indices().numpy(), product.col_indices().numpy()
    i = np.repeat(np.arange(a.n_docs), np.diff(crow))
    counts = product.values().numpy().round().astype(np.int64)
    keep = counts > 0
    return i[keep], j[keep], counts[keep]


def exact_shared(queries: list[bytes], refs: list[bytes]):
    """shared_counts over every n-gram, and the queries' n-gram counts; only the references' n-grams that some
    query has are kept, so the cost follows the queries' size."""
    q = ngram_sets(queries, 1)
    r = ngram_sets(refs, 1, within=q.distinct_hashes())
    return (*shared_counts(q, r), q.sizes())


def containment_links(docs: list[bytes], threshold: float = THRESHOLD, sample: int = SAMPLE):
    """Directed links (src, dst): more than ``threshold`` of document src's n-grams are in document dst.
    Documents under SHORT bytes have too few sampled n-grams for a sound estimate: theirs are counted exactly."""
    short = np.flatnonzero(np.array([len(d) < SHORT for d in docs], dtype=bool))
    sets = ngram_sets(docs, sample)
    i, j, shared = shared_counts(sets, sets)
    keep = (i != j) & (shared > threshold * sets.sizes()[i]) & ~np.isin(i, short)
    si, sj, s_shared, s_sizes = exact_shared([docs[k] for k in short], docs)
    s_keep = (short[si] != sj) & (s_shared > threshold * s_sizes[si])
    return np.concatenate([i[keep], short[si[s_keep]]]), np.concatenate([j[keep], sj[s_keep]])


def near_duplicate_groups(n_docs: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Connected components over mutual links (each of two documents mostly in the other): each document's
    group is the smallest index in it. One-way links are left out on purpose: a short file that is all licence
    header is contained in hundreds of files and would glue them into one group."""
    n = max(n_docs, 1)
    mutual = _in_sorted(dst * n + src, np.sort(src * n + dst))
    a, b = src[mutual], dst[mutual]
    label = np.arange(n_docs)
    while True:  # label propagation with pointer jumping: ends at each component's smallest index
        low = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]
        if (new == label).all():
            return label
        label = new


def follow_containers(side: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Sides are ranked (0 training, then the held-out ones); a document linked to one of a lower-ranked side
    (mostly contained in it) moves to that side, until none is: a held-out document then never mostly repeats
    a document of a side before it (its group-mates follow it through their links). Moves only go down, so
    this ends."""
    side = side.copy()
    while True:
        leak = side[src] > side[dst]
        if not leak.any():
            return side
        np.minimum.at(side, src[leak], side[dst[leak]])


def found_in(queries: list[bytes], refs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """For each query document: how many of its distinct n-grams occur anywhere in ``refs`` (all n-grams,
    exactly), and how many it has."""
    q = ngram_sets(queries, 1)
    r = ngram_sets(refs, 1, within=q.distinct_hashes())
    hit = _in_sorted(q.hash, r.distinct_hashes())
    return np.bincount(q.doc[hit], minlength=len(queries)), q.sizes()


def best_containment(queries: list[bytes], refs: list[bytes]):
    """For each query document: the largest fraction of its n-grams (all of them, exactly) found in any single
    reference document, which reference that is (-1 if none shares any), and how many n-grams it has (0: the
    document is shorter than NGRAM bytes)."""
    i, j, shared, sizes = exact_shared(queries, refs)
    order = np.lexsort((j, -shared, i))  # per query: most shared first, ties to the lowest reference index
    i, j, shared = i[order], j[order], shared[order]
    top = _distinct(i)
    fraction, best = np.zeros(len(queries)), np.full(len(queries), -1)
    fraction[i[top]] = shared[top] / sizes[i[top]]
    best[i[top]] = j[top]
    return fraction, best, sizes
