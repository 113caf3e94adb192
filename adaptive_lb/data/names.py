"""Names -> nationality: full names ("first last") drawn per country from the ``names-dataset`` package.

How names are chosen (README, "Names -> nationality"):

1. **Candidates** (read once from the package, cached): for each country, its ``top_k`` most frequent first
   names and last names by the package's per-country rank, after dropping a name when (a) the country holds
   less than ``min_share`` of the name's bearers (the package's per-country shares; this removes names foreign
   to the country, e.g. a Cyrillic name ranked in Italy), or (b) it has a character outside the Latin, Greek
   and Cyrillic letters, space, hyphen and apostrophe (scripts with thousands of characters, such as kanji or
   hangul, would need an alphabet far larger than the data can train).
2. **Draws** (cheap, repeated for every seed): first and last names independently, each with probability
   proportional to ``1 / rank`` (Zipf's law: the package stores ranks, not counts, per country), joined with
   a space; full names longer than ``max_len`` characters are redrawn.
3. **Leaks**: a full name is kept once per country, and a full name drawn for two or more countries is
   dropped from all of them (its label would be a coin flip), so no full name occurs twice in the dataset and
   hence never in two splits. Every class then gets its first ``per_class + test_per_class`` distinct names,
   shuffled with the seeded generator (in draw order the late names are the rarer ones); the first
   ``per_class`` are the training part (the held-out split is carved from it), the rest the test split.

Names are stored as ``int64`` character codes ``(N, max_len)``, right-padded with 0; code ``i`` is the
``i``-th character of the table's alphabet (1-based). The package is imported only here, only when the
candidate table is not cached yet.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path

import torch

from adaptive_lb.config import NamesConfig
from adaptive_lb.data.datasets import RawData
from adaptive_lb.errors import DataError
from adaptive_lb.rundir import atomic_write

TABLE_VERSION = 1  # bump when the candidate rules change: old cache files are then ignored
SCRIPTS = ("LATIN", "GREEK", "CYRILLIC")
PUNCTUATION = " -'"
MAX_ROUNDS = 20  # draw rounds before a class short of distinct names is an error


def load_names(cfg: NamesConfig, root: str, seed: int) -> RawData:
    """Train and test splits of names -> nationality, deterministic for ``seed`` (see the module docstring)."""
    table = candidate_table(cfg, root)
    per_country = draw_full_names(table, cfg, seed)
    alphabet = table["alphabet"]
    n_train = cfg.per_class
    parts = {"train": [names[:n_train] for names in per_country], "test": [names[n_train:] for names in per_country]}
    xs, ys = {}, {}
    for split, groups in parts.items():
        xs[split] = encode([n for names in groups for n in names], alphabet, cfg.max_len)
        ys[split] = torch.arange(len(groups)).repeat_interleave(torch.tensor([len(g) for g in groups]))
    labels = tuple(table["countries"][c]["label"] for c in cfg.countries)
    return RawData(xs["train"], ys["train"], xs["test"], ys["test"], labels, alphabet)


# ------------------------------------------------------------------------------------------ candidates
def table_settings(cfg: NamesConfig) -> dict:
    """What the candidate table depends on (and its cache key): not the seed nor the class sizes."""
    return {"version": TABLE_VERSION, "countries": sorted(cfg.countries), "top_k": cfg.top_k,
            "min_share": cfg.min_share}


def cache_path(cfg: NamesConfig, root: str) -> Path:
    """``<root or ./data>/names/candidates-<hash>.json``."""
    key = hashlib.sha256(json.dumps(table_settings(cfg), sort_keys=True).encode()).hexdigest()[:16]
    return Path(root or "data") / "names" / f"candidates-{key}.json"


def candidate_table(cfg: NamesConfig, root: str) -> dict:
    """The cached candidate table of ``cfg``'s countries, built from the package (and written) if missing."""
    path = cache_path(cfg, root)
    if path.is_file():
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
            if table.get("settings") == table_settings(cfg):
                return table
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below
    table = {"settings": table_settings(cfg), **extract_candidates(sorted(cfg.countries), cfg.top_k, cfg.min_share)}
    _write_cache(path, table)
    return table


def _write_cache(path: Path, table: dict) -> None:
    """Write the table with the package's atomic writer: readers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: fh.write(json.dumps(table, ensure_ascii=False).encode("utf-8")))
    except OSError as exc:
        raise DataError(f"cannot write the names cache '{path}' ({exc}): set data.root to a writable folder") from None


def extract_candidates(countries: list[str], top_k: int, min_share: float) -> dict:
    """Read the package: per country, its ``top_k`` first and last names by rank that pass ``clean_name``
    and ``min_share``. Returns ``{"source", "alphabet", "countries": {code: {"label", "first", "last"}}}``
    with ``[name, rank]`` lists sorted by rank."""
    try:
        from names_dataset import NameDataset
    except ImportError:
        raise DataError("data.name=names needs the names-dataset package: pip install -e '.[names]'") from None
    from importlib.metadata import version

    out: dict = {code: {"label": country_label(code)} for code in countries}
    for kind in ("first", "last"):
        nd = NameDataset(load_first_names=kind == "first", load_last_names=kind == "last")  # ~1 GB, seconds
        lookup = nd.first_names if kind == "first" else nd.last_names
        ranked: dict[str, list[tuple[int, str]]] = {code: [] for code in countries}
        for raw_name, info in lookup.items():
            for code, rank in info["rank"].items():
                if code in ranked and (info["country"].get(code) or 0.0) >= min_share:
                    name = clean_name(raw_name)
                    if name:
                        ranked[code].append((int(rank), name))
        del nd, lookup
        for code, pairs in ranked.items():
            best: dict[str, int] = {}
            for rank, name in sorted(pairs):  # two raw spellings can clean to one name: keep the better rank
                best.setdefault(name, rank)
            out[code][kind] = [[name, rank] for name, rank in sorted(best.items(), key=lambda kv: kv[1])][:top_k]
    empty = [code for code in countries if not out[code]["first"] or not out[code]["last"]]
    if empty:
        raise DataError(f"data.names.countries: names-dataset has no names for {', '.join(empty)} (after the "
                        f"min_share filter); use other ISO alpha-2 codes (e.g. GB, US, CA, IE; it has no AU)")
    chars = {ch for entry in out.values() for kind in ("first", "last") for name, _ in entry[kind] for ch in name}
    return {"source": f"names-dataset {version('names-dataset')}", "alphabet": "".join(sorted(chars | {" "})),
            "countries": out}


def clean_name(raw: str) -> str:
    """NFC-normalised name with single spaces; "" when it has a character outside ``SCRIPTS`` letters and
    ``PUNCTUATION`` or fewer than two letters."""
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    letters = 0
    for ch in name:
        if ch.isalpha() and unicodedata.name(ch, "").startswith(SCRIPTS):
            letters += 1
        elif ch not in PUNCTUATION:
            return ""
    return name if letters >= 2 else ""


def country_label(code: str) -> str:
    """``"United Kingdom (GB)"``; the bare code when pycountry (a dependency of names-dataset) lacks it."""
    try:
        import pycountry

        country = pycountry.countries.get(alpha_2=code)
    except (ImportError, LookupError):
        country = None
    if country is None:
        return code
    return f"{getattr(country, 'common_name', None) or country.name} ({code})"


# ------------------------------------------------------------------------------------------------ draws
def draw_full_names(table: dict, cfg: NamesConfig, seed: int) -> list[list[str]]:
    """``per_class + test_per_class`` distinct, unambiguous full names per country of ``cfg.countries``
    (in that order), each list in seeded random order. Raises a ``DataError`` when a country cannot supply
    that many."""
    gen = torch.Generator().manual_seed(7_919 * (seed + 1) + 1)
    want = cfg.per_class + cfg.test_per_class
    pools: dict[str, dict[str, None]] = {code: {} for code in cfg.countries}  # ordered sets
    short = list(cfg.countries)
    for _ in range(MAX_ROUNDS):
        for code in short:
            for name in _draw(table["countries"][code], 2 * want, cfg.max_len, gen):
                pools[code].setdefault(name)
        owners: dict[str, int] = {}
        for pool in pools.values():
            for name in pool:
                owners[name] = owners.get(name, 0) + 1
        kept = {code: [n for n in pool if owners[n] == 1] for code, pool in pools.items()}
        short = [code for code in cfg.countries if len(kept[code]) < want]
        if not short:
            # The first ``want`` distinct names, shuffled: in first-appearance order the late ones are the rarer
            # ones, and ``load_names`` would hand them all to the test split.
            return [[kept[code][i] for i in torch.randperm(want, generator=gen).tolist()] for code in cfg.countries]
    have = ", ".join(f"{code} {len(kept[code])}" for code in short)
    raise DataError(f"too few distinct unambiguous names ({have}; need {want} per country): lower "
                    "data.names.per_class / test_per_class, or raise data.names.top_k")


def _draw(entry: dict, n: int, max_len: int, gen: torch.Generator) -> list[str]:
    """``n`` full names of one country, first and last names drawn with probability ~ 1 / rank."""
    picks = []
    for kind in ("first", "last"):
        ranks = torch.tensor([rank for _, rank in entry[kind]], dtype=torch.float64)
        picks.append(torch.multinomial(1.0 / ranks, n, replacement=True, generator=gen).tolist())
    full = (f"{entry['first'][i][0]} {entry['last'][j][0]}" for i, j in zip(*picks, strict=True))
    return [name for name in full if len(name) <= max_len]


def encode(names: list[str], alphabet: str, max_len: int) -> torch.Tensor:
    """``(N, max_len)`` int64 codes, right-padded with 0; character ``alphabet[i]`` is code ``i + 1``."""
    index = {ch: i + 1 for i, ch in enumerate(alphabet)}
    out = torch.zeros(len(names), max_len, dtype=torch.int64)
    for row, name in enumerate(names):
        out[row, : len(name)] = torch.tensor([index[ch] for ch in name], dtype=torch.int64)
    return out


def decode(codes: torch.Tensor, alphabet: str) -> list[str]:
    """Inverse of ``encode``: ``(N, L)`` codes -> strings (pads dropped)."""
    return ["".join(alphabet[c - 1] for c in row if c > 0) for row in codes.tolist()]
