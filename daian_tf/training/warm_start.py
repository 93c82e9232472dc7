"""Warm start across days: carry yesterday's weights into a model built on today's
vocabularies (continuous training), the way tf.estimator's `WarmStartSettings` with
vocabulary remapping did.

Yesterday's model was built with yesterday's Transform vocabularies (other sizes, other
order), so Keras' `load_weights` cannot restore its embedding tables. Instead:

- `save_warm_start(model, tf_transform_output, directory)` writes, after training, every
  variable's value and the vocabularies its tables are indexed by, in plain files;
- `warm_start(model, directory, tf_transform_output)` fills a freshly built model (built
  with today's `vocab_sizes` and `tf_transform_output`) from such a directory:
  - a table indexed by a Transform vocabulary (`layers.embedding.table_vocabulary`) is
    remapped row by row BY TOKEN: today's row of token t is yesterday's row of t when t
    was in yesterday's vocabulary; the padding row (id 0) and the out-of-vocabulary row
    (id V + 1) are carried over; tokens new today keep their fresh initialisation;
    tokens gone today are dropped;
  - every other variable must have yesterday's shape and is copied (the price-bucket
    table, the similarity-bin table, the intent level table, attention, MLPs...);
  - the frozen multimodal catalog (`layers.catalog.MultimodalCatalog`, non-trainable,
    keyed by raw item id, not by a Transform vocabulary) is neither saved nor restored:
    it is rebuilt every day from that day's catalog, which the model was built with;
  - anything else (another number of variables, another architecture, a shape mismatch
    on a variable that is not a vocabulary table) raises `DaianInputError` naming the
    variable and both shapes, before any variable is changed.

The id layout is `data.transform`'s: vocabulary index i is id i + 1, id 0 (padding) and
id V + 1 (OOV) are reserved, a table has V + 2 rows (`data.transform.vocab_sizes`).

How variables are matched: by POSITION in `model.weights` (the creation order, fixed by
the code and the config), checked against the variable's structural path with Keras'
auto-numbering stripped from every component (`dense_3/kernel` → `dense/kernel`: two
builds in one process get different counters), against its vocabulary (or none), and,
outside the vocabulary tables, against its shape. Positions alone would accept another
architecture with the same number of variables of the same shapes; paths alone break on
the counters; together they refuse anything but the same architecture.

The directory (`save_warm_start`):
    manifest.json      format/version, model name, and per variable (in `model.weights`
                       order): index, path, key (stripped path), shape, dtype, trainable,
                       vocabulary (name or null), kind ("copy" | "vocabulary" |
                       "catalog"), array (its name in variables.npz, null for the
                       catalog); and per vocabulary its token count. Written last: a
                       directory without it is an incomplete save.
    variables.npz      one array per saved variable, "v0000", "v0001", ... (no pickles).
    vocabularies.json  {vocabulary name: {"encoding": "utf-8" | "base64", "tokens": [..]}},
                       the tokens in vocabulary order (index i is id i + 1).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from daian_tf.core import features as F
from daian_tf.core.errors import DaianInputError
from daian_tf.layers.catalog import MultimodalCatalog
from daian_tf.layers.embedding import is_table, table_vocabulary

MANIFEST_FILE = "manifest.json"
VARIABLES_FILE = "variables.npz"
VOCABULARIES_FILE = "vocabularies.json"
FORMAT = "daian-warm-start"
VERSION = 1

KIND_COPY, KIND_VOCAB, KIND_CATALOG = "copy", "vocabulary", "catalog"
_AUTO_NUMBER = re.compile(r"_\d+$")

PathLike = Union[str, Path]


@dataclasses.dataclass
class WarmStartReport:
    """What `warm_start` did.

    Attributes:
        variables_copied: variables copied as they were (same shape, no vocabulary).
        tables_remapped: vocabulary tables remapped by token.
        rows_carried: token rows of those tables carried over (tokens in both days'
            vocabularies), summed over the tables; the padding and OOV rows, always
            carried, are counted in `reserved_rows_carried`.
        new_rows: token rows left at their fresh initialisation (tokens new today).
        dropped_rows: yesterday's token rows with no row today (tokens gone).
        reserved_rows_carried: padding and OOV rows carried (2 per table).
        skipped: paths of the variables left as built (the frozen catalog).
        tables: per remapped table path, (carried, new, dropped).
    """
    variables_copied: int = 0
    tables_remapped: int = 0
    rows_carried: int = 0
    new_rows: int = 0
    dropped_rows: int = 0
    reserved_rows_carried: int = 0
    skipped: List[str] = dataclasses.field(default_factory=list)
    tables: Dict[str, tuple] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """One line for the log."""
        return (f"warm start: {self.variables_copied} variables copied, "
                f"{self.tables_remapped} tables remapped by token "
                f"({self.rows_carried} rows carried, {self.new_rows} new, "
                f"{self.dropped_rows} dropped; padding/OOV carried), "
                f"{len(self.skipped)} skipped (frozen catalog, rebuilt daily)")


@dataclasses.dataclass(frozen=True)
class _Var:
    """One variable of `model.weights` as `warm_start` sees it."""
    index: int
    variable: object
    path: str
    key: str
    shape: tuple
    kind: str
    vocabulary: Optional[str]


def structural_key(path: str) -> str:
    """`path` with Keras' auto-number suffix stripped from every component
    (`functional_2/dense_3/kernel` → `functional/dense/kernel`)."""
    return "/".join(_AUTO_NUMBER.sub("", part) for part in path.split("/"))


def _sublayers(model) -> list:
    """Every layer inside `model`, recursively (Keras 3's own walk)."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def describe_variables(model) -> List[_Var]:
    """The variables of `model.weights`, in order, with their kind and vocabulary.

    Raises:
        DaianInputError: the model is not built, or has no vocabulary table (a model
            not built by `models.factory.build_model` in this process, e.g. a DIN
            restored by `keras.models.load_model`, whose tables lack their vocabulary:
            build one with `build_model` and `load_weights` into it).
    """
    if not model.built:
        raise DaianInputError(f"warm start: model {model.name!r} is not built; call it "
                              f"once on a batch so that its variables exist")
    vocab_of: Dict[int, Optional[str]] = {}
    catalog = set()
    has_tables = False
    for layer in _sublayers(model):
        if is_table(layer):
            has_tables = True
            vocab_of[id(layer.embeddings)] = table_vocabulary(layer)
        if isinstance(layer, MultimodalCatalog):
            catalog.update(id(v) for v in layer.weights)
    if not has_tables:
        raise DaianInputError(
            f"warm start: model {model.name!r} has no embedding table of "
            f"layers.embedding.make_tables (a model restored by keras.models.load_model "
            f"loses their vocabulary names; build it with models.factory.build_model and "
            f"load_weights into it)")
    out = []
    for i, v in enumerate(model.weights):
        vocab = vocab_of.get(id(v))
        kind = (KIND_CATALOG if id(v) in catalog
                else KIND_VOCAB if vocab is not None else KIND_COPY)
        out.append(_Var(i, v, v.path, structural_key(v.path), tuple(v.shape), kind,
                        vocab))
    return out


# --- vocabularies ---------------------------------------------------------------------
def _as_bytes(token) -> bytes:
    return token if isinstance(token, bytes) else str(token).encode("utf-8")


def read_vocabulary(tf_transform_output, name: str) -> List[bytes]:
    """The tokens of vocabulary `name` (a `features.vocab_names` name) in vocabulary order,
    from `tf_transform_output.vocabulary_by_name` (a `tft.TFTransformOutput`, or any
    object with that method)."""
    tokens = [_as_bytes(t) for t in
              tf_transform_output.vocabulary_by_name(F.vocab_filename(name))]
    if len(set(tokens)) != len(tokens):
        raise DaianInputError(f"warm start: vocabulary {name!r} repeats a token")
    return tokens


def _encode_tokens(tokens: Sequence[bytes]) -> dict:
    try:
        return {"encoding": "utf-8", "tokens": [t.decode("utf-8") for t in tokens]}
    except UnicodeDecodeError:
        return {"encoding": "base64",
                "tokens": [base64.b64encode(t).decode("ascii") for t in tokens]}


def _decode_tokens(entry: Mapping) -> List[bytes]:
    if entry["encoding"] == "utf-8":
        return [t.encode("utf-8") for t in entry["tokens"]]
    if entry["encoding"] == "base64":
        return [base64.b64decode(t) for t in entry["tokens"]]
    raise DaianInputError(f"warm start: unknown token encoding {entry['encoding']!r}")


def _check_rows(var: _Var, tokens: Sequence[bytes], day: str):
    rows = len(tokens) + F.NUM_RESERVED_IDS
    if var.shape[0] != rows:
        raise DaianInputError(
            f"warm start: table {var.path} of vocabulary {var.vocabulary!r} has "
            f"{var.shape[0]} rows but {day}'s vocabulary has {len(tokens)} tokens "
            f"(+{F.NUM_RESERVED_IDS} reserved = {rows}): was the model built with this "
            f"Transform output's vocab_sizes?")


# --- save -----------------------------------------------------------------------------
def save_warm_start(model, tf_transform_output, directory: PathLike) -> Path:
    """Write what `warm_start` needs to start another model from `model` (see the module
    docstring for the files).

    Args:
        model: a built DIN or DAIAN model (`models.factory.build_model`).
        tf_transform_output: the Transform output `model` was trained on (its
            `vocabulary_by_name` gives the tokens of each table's vocabulary).
        directory: created if needed; its warm-start files are overwritten.

    Returns:
        `directory` as a Path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    variables = describe_variables(model)
    vocabularies = {}
    for var in variables:
        if var.kind == KIND_VOCAB:
            if var.vocabulary not in vocabularies:
                vocabularies[var.vocabulary] = read_vocabulary(tf_transform_output,
                                                               var.vocabulary)
            _check_rows(var, vocabularies[var.vocabulary], "the saved model")
    manifest_path = directory / MANIFEST_FILE
    if manifest_path.exists():  # an interrupted overwrite must not look complete
        manifest_path.unlink()
    arrays, entries = {}, []
    for var in variables:
        array = None
        if var.kind != KIND_CATALOG:
            array = f"v{var.index:04d}"
            arrays[array] = np.asarray(var.variable.numpy())
        entries.append({"index": var.index, "path": var.path, "key": var.key,
                        "shape": list(var.shape), "dtype": str(var.variable.dtype),
                        "trainable": bool(var.variable.trainable),
                        "vocabulary": var.vocabulary, "kind": var.kind,
                        "array": array})
    with open(directory / VARIABLES_FILE, "wb") as f:
        np.savez(f, **arrays)
    (directory / VOCABULARIES_FILE).write_text(
        json.dumps({name: _encode_tokens(tokens)
                    for name, tokens in sorted(vocabularies.items())}),
        encoding="utf-8")
    manifest = {"format": FORMAT, "version": VERSION, "model": model.name,
                "variables": entries,
                "vocabularies": {name: len(tokens)
                                 for name, tokens in sorted(vocabularies.items())}}
    manifest_path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return directory


# --- restore --------------------------------------------------------------------------
def _load(directory: Path):
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.exists():
        raise DaianInputError(f"warm start: {manifest_path} not found: {directory} is "
                              f"not a complete save_warm_start directory")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DaianInputError(f"warm start: {manifest_path} is not a {FORMAT} v{VERSION} "
                              f"manifest (format {manifest.get('format')!r}, version "
                              f"{manifest.get('version')!r})")
    with np.load(directory / VARIABLES_FILE, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    vocabs = json.loads((directory / VOCABULARIES_FILE).read_text(encoding="utf-8"))
    return manifest, arrays, {name: _decode_tokens(e) for name, e in vocabs.items()}


def _mismatch(message: str, old: Mapping, new: _Var) -> DaianInputError:
    return DaianInputError(
        f"warm start: {message}: variable #{new.index} {new.path} has shape "
        f"{list(new.shape)} in the model, the saved variable #{old['index']} "
        f"{old['path']} has shape {old['shape']}")


def remap_rows(old_table: np.ndarray, old_tokens: Sequence[bytes],
               new_table: np.ndarray, new_tokens: Sequence[bytes]):
    """Today's table from yesterday's, by token (ids: 0 padding, i + 1 token i, V + 1
    OOV).

    Args:
        old_table: `(len(old_tokens) + 2, D)` yesterday's rows.
        old_tokens: yesterday's vocabulary.
        new_table: `(len(new_tokens) + 2, D)` today's freshly initialised rows.
        new_tokens: today's vocabulary.

    Returns:
        `(table, carried, new, dropped)`: a copy of `new_table` with the padding and OOV
        rows and the rows of the tokens of both days taken from `old_table`, and the
        numbers of token rows carried, left fresh, and dropped.
    """
    old_index = {t: i for i, t in enumerate(old_tokens)}
    pairs = [(j, old_index[t]) for j, t in enumerate(new_tokens) if t in old_index]
    out = np.array(new_table, copy=True)
    out[F.PADDING_ID] = old_table[F.PADDING_ID]
    out[len(new_tokens) + 1] = old_table[len(old_tokens) + 1]  # OOV
    if pairs:
        new_ids, old_ids = (np.array(p, dtype=np.int64) + 1 for p in zip(*pairs))
        out[new_ids] = old_table[old_ids]
    carried = len(pairs)
    return out, carried, len(new_tokens) - carried, len(old_tokens) - carried


def warm_start(model, directory: PathLike, tf_transform_output) -> WarmStartReport:
    """Fill the built `model` from the `save_warm_start` directory `directory`.

    Args:
        model: a built DIN or DAIAN model (variables exist: DAIAN must have been called
            once), made with today's `vocab_sizes(tf_transform_output, ...)`.
        directory: yesterday's `save_warm_start` output.
        tf_transform_output: today's Transform output (the tokens of today's tables).

    Returns:
        The `WarmStartReport`.

    Raises:
        DaianInputError: the directory is incomplete, or the model's variables do not
            match the saved ones (count, structural path, vocabulary, or a shape outside
            the vocabulary tables); nothing is assigned then.
    """
    directory = Path(directory)
    manifest, arrays, old_vocabs = _load(directory)
    saved = manifest["variables"]
    current = describe_variables(model)
    for old, new in zip(saved, current):
        if old["key"] != new.key:
            raise _mismatch(f"another architecture (path {old['key']!r} saved, "
                            f"{new.key!r} here, at the same position)", old, new)
        if old["kind"] != new.kind or old["vocabulary"] != new.vocabulary:
            raise _mismatch(f"saved as a {old['kind']} variable of vocabulary "
                            f"{old['vocabulary']!r}, here a {new.kind} variable of "
                            f"vocabulary {new.vocabulary!r}", old, new)
        if new.kind == KIND_VOCAB:
            if list(new.shape[1:]) != list(old["shape"][1:]):
                raise _mismatch("embedding width differs", old, new)
        elif new.kind == KIND_COPY and list(new.shape) != list(old["shape"]):
            raise _mismatch("shape differs", old, new)
    if len(saved) != len(current):
        n = min(len(saved), len(current))
        extra = ([f"saved #{e['index']} {e['path']} {e['shape']}" for e in saved[n:]]
                 + [f"model #{v.index} {v.path} {list(v.shape)}" for v in current[n:]])
        raise DaianInputError(
            f"warm start: the model has {len(current)} variables, {directory} holds "
            f"{len(saved)} (another architecture, or a model not built yet); unmatched: "
            f"{'; '.join(extra[:5])}")

    new_vocabs: Dict[str, List[bytes]] = {}
    values = {}  # index -> value; assigned only once every check passed
    report = WarmStartReport()
    for old, new in zip(saved, current):
        if new.kind == KIND_CATALOG:
            report.skipped.append(new.path)
            continue
        value = arrays[old["array"]]
        if new.kind == KIND_COPY:
            values[new.index] = value
            report.variables_copied += 1
            continue
        name = new.vocabulary
        if name not in new_vocabs:
            new_vocabs[name] = read_vocabulary(tf_transform_output, name)
        if name not in old_vocabs:
            raise DaianInputError(f"warm start: {directory} lacks the tokens of "
                                  f"vocabulary {name!r} of {old['path']}")
        _check_rows(new, new_vocabs[name], "today")
        old_var = dataclasses.replace(new, path=old["path"], shape=tuple(old["shape"]))
        _check_rows(old_var, old_vocabs[name], "the saved model")
        table, carried, fresh, dropped = remap_rows(
            value, old_vocabs[name], np.asarray(new.variable.numpy()), new_vocabs[name])
        values[new.index] = table
        report.tables_remapped += 1
        report.rows_carried += carried
        report.new_rows += fresh
        report.dropped_rows += dropped
        report.reserved_rows_carried += F.NUM_RESERVED_IDS
        report.tables[new.path] = (carried, fresh, dropped)
    for var in current:
        if var.index in values:
            var.variable.assign(np.asarray(values[var.index]).astype(
                var.variable.dtype))
    return report
