"""The item catalog of a raw-log directory (spec/DATA.md §1): items.csv and
item_embeddings.parquet, read row by row with the checks of `raw_logs` (each bad value
a `RawLogError` naming the file, the row and the column; parquet rows are numbered by
their 1-based record index), and held as a `Catalog` of side features and
unit-normalised multimodal vectors keyed by item id. Values of optional item columns
that are absent or empty become `""` (brand, shop) or `0.0` (price); an item the
catalog does not know gets `UNKNOWN_ITEM`.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from apache_beam.io.filesystems import FileSystems

from daian_tf.core import features as F
from daian_tf.core.errors import RawLogError
from daian_tf.data.raw_logs import RawLayout, finite_float, iter_csv, nonempty, optional


class ItemSide(NamedTuple):
    """Side features of one catalog item (items.csv)."""

    category_id: str
    brand_id: str
    shop_id: str
    price: float


UNKNOWN_ITEM = ItemSide("", "", "", 0.0)


class Catalog:
    """Items' side features and unit-normalised multimodal vectors, keyed by item id.

    Its size is the catalog's (items.csv and item_embeddings.parquet), never the logs';
    the sample builder passes it to its workers as a Beam side input.

    Attributes:
      items: item id -> ItemSide.
      stats: counts found while loading (items, embeddings, items_without_embedding,
        embeddings_for_unknown_items) and `embedding_dim`.
    """

    def __init__(self, items: Dict[str, ItemSide], embedding_ids: Sequence[str],
                 embeddings: np.ndarray):
        self.items = items
        self._row = {item: i for i, item in enumerate(embedding_ids)}
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        # (N, d_m) unit vectors; a zero vector stays zero, so its cosine is 0.
        self._unit = np.divide(embeddings, norms, out=np.zeros_like(embeddings),
                               where=norms > 0).astype(np.float32)
        self.stats = {
            "items": len(items),
            "embeddings": len(embedding_ids),
            "embedding_dim": int(embeddings.shape[1]),
            "items_without_embedding": sum(1 for i in items if i not in self._row),
            "embeddings_for_unknown_items": sum(1 for i in embedding_ids
                                                if i not in items),
        }

    def side(self, item_id: str) -> ItemSide:
        """Side features of `item_id`; an unknown item gets empty strings and 0.0."""
        return self.items.get(item_id, UNKNOWN_ITEM)

    def has_embedding(self, item_id: str) -> bool:
        return item_id in self._row

    def cos(self, a: str, b: str) -> float:
        """cos(m_a, m_b); 0.0 when either item has no (or a zero) vector."""
        ia, ib = self._row.get(a), self._row.get(b)
        if ia is None or ib is None:
            return 0.0
        return float(np.dot(self._unit[ia], self._unit[ib]))


def read_items(path: str) -> Dict[str, ItemSide]:
    """Parse items.csv into item id -> ItemSide; a duplicate id names both rows."""
    items: Dict[str, ItemSide] = {}
    first_row: Dict[str, int] = {}
    for line, index, fields in iter_csv(path):
        item = nonempty(fields, index, "item_id", path, line)
        if item in items:
            raise RawLogError(f"duplicate item_id {item!r} (first at row "
                              f"{first_row[item]})", path, line, "item_id")
        price = optional(fields, index, "price")
        items[item] = ItemSide(
            category_id=nonempty(fields, index, "category_id", path, line),
            brand_id=optional(fields, index, "brand_id"),
            shop_id=optional(fields, index, "shop_id"),
            price=finite_float(price, path, line, "price") if price else 0.0)
        first_row[item] = line
    return items


def read_embeddings(path: str) -> Tuple[List[str], np.ndarray]:
    """Parse item_embeddings.parquet into (ids, (N, d_m) float32), by record batches.

    Errors name the 1-based record index as the row: a null or empty id, a null vector,
    a vector whose length differs from the first row's, a NaN/inf entry, a duplicate id.
    """
    import pyarrow.parquet as pq

    ids: List[str] = []
    first_row: Dict[str, int] = {}
    chunks: List[np.ndarray] = []
    dim: Optional[int] = None
    with FileSystems.open(path) as f:
        pf = pq.ParquetFile(f)
        offset = 0
        for batch in pf.iter_batches(columns=list(F.EMBEDDINGS_COLUMNS)):
            batch_ids = batch.column(0).to_pylist()
            vectors = batch.column(1).to_pylist()
            for k, (item, vec) in enumerate(zip(batch_ids, vectors)):
                row = offset + k + 1
                item = "" if item is None else str(item).strip()
                if not item:
                    raise RawLogError("empty item_id", path, row, "item_id")
                if item in first_row:
                    raise RawLogError(f"duplicate embedding row for item_id {item!r} "
                                      f"(first at row {first_row[item]})", path, row,
                                      "item_id")
                if vec is None or len(vec) == 0:
                    raise RawLogError(f"missing embedding for item_id {item!r}", path,
                                      row, "embedding")
                if dim is None:
                    dim = len(vec)
                if len(vec) != dim:
                    raise RawLogError(f"embedding of item_id {item!r} has length "
                                      f"{len(vec)}, expected {dim} (the first row's)",
                                      path, row, "embedding")
                arr = np.asarray([np.nan if v is None else v for v in vec],
                                 dtype=np.float64)
                if not np.all(np.isfinite(arr)):
                    raise RawLogError(f"embedding of item_id {item!r} has NaN/inf/null "
                                      f"entries", path, row, "embedding")
                first_row[item] = row
                ids.append(item)
                chunks.append(arr.astype(np.float32))
            offset += batch.num_rows
    return ids, np.stack(chunks)


def write_embeddings(path: str, ids: Sequence[str], vectors: np.ndarray) -> None:
    """Write item_embeddings.parquet: `item_id` (string) and `embedding` (list of
    float32, one length), one row per id, in the order given."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"write_embeddings: {len(ids)} ids and vectors of shape "
                         f"{vectors.shape}")
    d = vectors.shape[1]
    offsets = pa.array(np.arange(0, len(ids) * d + 1, d, dtype=np.int32))
    table = pa.table({
        F.EMBEDDINGS_COLUMNS[0]: pa.array([str(i) for i in ids], pa.string()),
        F.EMBEDDINGS_COLUMNS[1]: pa.ListArray.from_arrays(
            offsets, pa.array(vectors.reshape(-1), type=pa.float32())),
    })
    pq.write_table(table, path)


def read_model_catalog(raw_dir: str) -> Tuple[List[str], np.ndarray]:
    """The item ids and multimodal vectors of `raw_dir`'s item_embeddings.parquet
    (checked as the sample builder checks it), for DAIAN's frozen catalog table."""
    return read_embeddings(FileSystems.join(raw_dir, F.EMBEDDINGS_FILE))


def load_catalog(layout: RawLayout) -> Catalog:
    """items.csv and item_embeddings.parquet of a checked raw directory."""
    items = read_items(layout.path(F.ITEMS_FILE))
    ids, vectors = read_embeddings(layout.path(F.EMBEDDINGS_FILE))
    return Catalog(items, ids, vectors)
