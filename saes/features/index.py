"""Feature tables on disk (Parquet, written atomically) and their query API (DuckDB).

A features directory holds:

    latents.parquet   one row per latent: latent, count, density, log10_density, mean_act,
                      mean_act_all, max_act, q50, q90, q99, hist (list<int64>),
                      top_logit_ids / top_logit_vals / bottom_logit_ids / bottom_logit_vals
    contexts.parquet  one row per (latent, rank): act, window, position, center (index of the
                      activating token in the lists), token_ids (list<int32>, -1 = outside the
                      window), acts (list<float32>, the latent on every context token)
    vocab.parquet     id -> token string (so readers need no tokenizer)
    features.json     hist_edges_log10, n_tokens, d_sae, hook, sae path, config

Both tables are sorted by latent and written in small row groups, so DuckDB reads one row group
for a feature page (well under a second for a 16k-latent SAE).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from interp.errors import BadFormat, CorruptFile, InterpError, MissingFile
from interp.io import atomic_write_json, atomic_writer, read_json, regular_file_size

ROW_GROUP = 1024


def _write_parquet_atomic(table, path: Path, row_group_size: int = ROW_GROUP) -> None:
    import pyarrow.parquet as pq

    with atomic_writer(path) as f:
        pq.write_table(table, f, row_group_size=row_group_size, compression="zstd")


def write_feature_tables(out_dir: str | Path, stats: dict, vocab: list[str], meta: dict,
                         logits: tuple | None = None) -> dict[str, str]:
    """Write the tables of `feature_stats(...)` (and `logit_effects(...)`) into `out_dir`;
    returns the artefact names -> relative paths. `features.json` is written last."""
    import pyarrow as pa

    out = Path(out_dir)
    d_sae = len(stats["count"])
    density = stats["density"]
    cols = {
        "latent": pa.array(np.arange(d_sae, dtype=np.int32)),
        "count": pa.array(stats["count"].astype(np.int64)),
        "density": pa.array(density.astype(np.float64)),
        "log10_density": pa.array(np.log10(density + 1e-10)),
        "mean_act": pa.array(stats["mean_act"].astype(np.float64)),
        "mean_act_all": pa.array(stats["mean_act_all"].astype(np.float64)),
        "max_act": pa.array(stats["max_act"].astype(np.float64)),
    }
    for k in ("q50", "q90", "q99"):
        cols[k] = pa.array(stats[k].astype(np.float64))
    cols["hist"] = pa.array(list(stats["hist"].astype(np.int64)), type=pa.list_(pa.int64()))
    if logits is not None:
        names = ("top_logit_ids", "top_logit_vals", "bottom_logit_ids", "bottom_logit_vals")
        for name, t in zip(names, logits):
            arr = t.numpy()
            typ = pa.list_(pa.int32()) if "ids" in name else pa.list_(pa.float32())
            cols[name] = pa.array(list(arr.astype(np.int32 if "ids" in name else np.float32)),
                                  type=typ)
    _write_parquet_atomic(pa.table(cols), out / "latents.parquet")

    vals = stats["top_vals"]  # [d_sae, n]
    lat, rank = np.nonzero(vals > 0)  # row-major: sorted by latent, then rank
    C = stats["ctx_tokens"].shape[2]
    center = int(meta["config"]["context_left"])
    ctx = pa.table({
        "latent": pa.array(lat.astype(np.int32)), "rank": pa.array(rank.astype(np.int16)),
        "act": pa.array(vals[lat, rank].astype(np.float32)),
        "window": pa.array(stats["top_window"][lat, rank].astype(np.int64)),
        "position": pa.array(stats["top_pos"][lat, rank].astype(np.int32)),
        "center": pa.array(np.full(len(lat), center, dtype=np.int16)),
        "token_ids": pa.FixedSizeListArray.from_arrays(
            pa.array(stats["ctx_tokens"][lat, rank].reshape(-1).astype(np.int32)), C),
        "acts": pa.FixedSizeListArray.from_arrays(
            pa.array(stats["ctx_acts"][lat, rank].reshape(-1).astype(np.float32)), C),
    })
    _write_parquet_atomic(ctx, out / "contexts.parquet", row_group_size=4 * ROW_GROUP)
    _write_parquet_atomic(pa.table({"id": pa.array(np.arange(len(vocab), dtype=np.int32)),
                                    "token": pa.array(vocab, type=pa.string())}),
                          out / "vocab.parquet", row_group_size=1 << 16)
    atomic_write_json(out / "features.json", {**meta, "d_sae": d_sae,
                                              "n_tokens": int(stats["n_tokens"]),
                                              "n_contexts": int(len(lat))})
    return {"latents": "latents.parquet", "contexts": "contexts.parquet",
            "vocab": "vocab.parquet", "features": "features.json"}


@dataclass
class Context:
    """One top-activating context: the window slice, the latent's activation on each token."""

    rank: int
    act: float
    window: int
    position: int
    center: int  # index of the activating token in `tokens` / `acts`
    tokens: list[str]
    token_ids: list[int]
    acts: list[float]


@dataclass
class FeaturePage:
    """Everything a feature page shows for one latent (`FeatureIndex.page`)."""

    latent: int
    density: float
    log10_density: float
    count: int
    n_tokens: int
    mean_act: float  # over the tokens where it fires
    mean_act_all: float  # over all tokens
    max_act: float
    quantiles: dict[str, float]  # {"q50", "q90", "q99"} of positive activations
    hist_edges: list[float]  # activation values (not log10) of the bin edges
    hist_counts: list[int]
    contexts: list[Context] = field(default_factory=list)
    top_logits: list[tuple[str, float]] = field(default_factory=list)
    bottom_logits: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class FeatureIndex:
    """Query a features run: `FeatureIndex(path).page(latent)`, `.latents()`, `.search(token)`.

    `path` is a features run directory (kind "features"), or any directory holding the tables.
    Each call opens its own DuckDB cursor, so one index can serve several threads (Streamlit).
    """

    def __init__(self, path: str | Path):
        import duckdb

        p = Path(path)
        if not (p / "features.json").is_file() and (p / "features" / "features.json").is_file():
            p = p / "features"
        if not (p / "features.json").is_file():
            raise InterpError(f"{p} holds no feature tables (features.json missing); make them "
                              "with `interp features SAE_RUN --tokens N`.")
        self.path = p
        self.meta = read_json(p / "features.json", expect=dict)
        fix = "make the tables again with `interp features SAE_RUN`."
        try:
            if isinstance(self.meta.get("d_sae"), bool):
                raise TypeError("d_sae is true/false, not a count")
            self.n_latents = int(self.meta["d_sae"])
            edges = [float(e) for e in self.meta["hist_edges_log10"]]
            int(self.meta["n_tokens"])
        except (KeyError, TypeError, ValueError) as e:
            raise BadFormat(f"{p / 'features.json'} lacks a valid d_sae, n_tokens or "
                            f"hist_edges_log10 ({type(e).__name__}: {e}); {fix}") from e
        if self.n_latents < 1 or len(edges) > 1 << 16:
            raise BadFormat(f"{p / 'features.json'}: d_sae {self.n_latents} or "
                            f"{len(edges)} histogram edges is not a features table; {fix}")
        self._con = duckdb.connect()
        for name in ("latents", "contexts", "vocab"):
            table = p / f"{name}.parquet"
            try:
                regular_file_size(table, "Feature table")
            except MissingFile as e:
                raise MissingFile(f"{e} {fix}") from None
            f = str(table).replace("'", "''")
            try:
                self._con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{f}')")
            except duckdb.Error as e:
                raise CorruptFile(f"{table} is not a readable Parquet table "
                                  f"({str(e).splitlines()[0]}); {fix}") from e
        self._vocab: list[str] | None = None
        self._lock = threading.Lock()

    def _query(self, sql: str, params=None, one: bool = False):
        """(rows, column names) of a query; a table that turns out to be corrupt or of the wrong
        schema when read (a bit flip inside a data page, a missing column) is a `CorruptFile`
        naming the features directory."""
        import duckdb

        cur = self._cur()
        try:
            cur.execute(sql, params or [])
            rows = cur.fetchone() if one else cur.fetchall()
        except duckdb.Error as e:
            raise CorruptFile(f"The feature tables in {self.path} cannot be read "
                              f"({str(e).splitlines()[0]}); make them again with "
                              "`interp features SAE_RUN`.") from e
        return rows, [d[0] for d in cur.description]

    def _cur(self):
        return self._con.cursor()

    @property
    def vocab(self) -> list[str]:
        with self._lock:
            if self._vocab is None:
                self._vocab = [r[0] for r in self._query("SELECT token FROM vocab ORDER BY id")[0]]
        return self._vocab

    def _tok(self, i: int) -> str:
        return self.vocab[i] if 0 <= i < len(self.vocab) else ""

    def _check(self, latent: int) -> int:
        latent = int(latent)
        if not 0 <= latent < self.n_latents:
            raise InterpError(f"Latent {latent} is out of range: the dictionary of {self.path} "
                              f"has {self.n_latents} latents (0..{self.n_latents - 1}).")
        return latent

    def page(self, latent: int, n_contexts: int | None = None) -> FeaturePage:
        """The feature page of one latent: statistics, histogram, top contexts, logit effects."""
        latent = self._check(latent)
        row, names = self._query("SELECT * FROM latents WHERE latent = ?", [latent], one=True)
        if row is None:
            raise BadFormat(f"{self.path / 'latents.parquet'} has no row for latent {latent} "
                            f"although features.json declares {self.n_latents} latents; make the "
                            "tables again with `interp features SAE_RUN`.")
        r = dict(zip(names, row))
        lim = "" if n_contexts is None else f" LIMIT {int(n_contexts)}"
        ctx_rows, _ = self._query("SELECT rank, act, \"window\", position, center, token_ids, "
                                  "acts FROM contexts WHERE latent = ? ORDER BY rank" + lim,
                                  [latent])
        try:
            return self._build_page(latent, r, ctx_rows)
        except (TypeError, ValueError, KeyError, IndexError) as e:
            raise BadFormat(f"The feature tables in {self.path} hold a row of the wrong type "
                            f"for latent {latent} ({type(e).__name__}: {e}); make them again "
                            "with `interp features SAE_RUN`.") from e

    def _build_page(self, latent: int, r: dict, ctx_rows) -> FeaturePage:
        contexts = []
        for rank, act, window, position, center, ids, acts in ctx_rows:
            keep = [i for i, t in enumerate(ids) if t >= 0]
            contexts.append(Context(
                rank=int(rank), act=float(act), window=int(window), position=int(position),
                center=int(center) - keep[0] if keep else 0,
                tokens=[self._tok(ids[i]) for i in keep], token_ids=[int(ids[i]) for i in keep],
                acts=[float(acts[i]) for i in keep]))
        edges = [10 ** e for e in self.meta["hist_edges_log10"]]

        def logit_list(ids_key, vals_key):
            if r.get(ids_key) is None:
                return []
            return [(self._tok(i), float(v)) for i, v in zip(r[ids_key], r[vals_key])]

        return FeaturePage(
            latent=latent, density=float(r["density"]), log10_density=float(r["log10_density"]),
            count=int(r["count"]), n_tokens=int(self.meta["n_tokens"]),
            mean_act=float(r["mean_act"]), mean_act_all=float(r["mean_act_all"]),
            max_act=float(r["max_act"]),
            quantiles={k: float(r[k]) for k in ("q50", "q90", "q99")},
            hist_edges=edges, hist_counts=[int(c) for c in r["hist"]], contexts=contexts,
            top_logits=logit_list("top_logit_ids", "top_logit_vals"),
            bottom_logits=logit_list("bottom_logit_ids", "bottom_logit_vals"))

    def latents(self, order_by: str = "density", descending: bool = True,
                limit: int | None = None, min_density: float = 0.0) -> list[dict]:
        """Summary rows (latent, count, density, log10_density, mean_act, max_act, q50, q90,
        q99) of latents with density >= `min_density`, sorted by `order_by`."""
        allowed = ("latent", "count", "density", "mean_act", "max_act", "q50", "q90", "q99")
        if order_by not in allowed:
            raise InterpError(f"order_by must be one of {allowed}, not {order_by!r}.")
        sql = ("SELECT latent, count, density, log10_density, mean_act, max_act, q50, q90, q99 "
               f"FROM latents WHERE density >= ? ORDER BY {order_by} "
               f"{'DESC' if descending else 'ASC'}, latent")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows, names = self._query(sql, [float(min_density)])
        return [dict(zip(names, r)) for r in rows]

    def log10_densities(self) -> np.ndarray:
        """log10(density + 1e-10) of every latent, in latent order (for the density figure)."""
        rows, _ = self._query("SELECT log10_density FROM latents ORDER BY latent")
        return np.array([r[0] for r in rows])

    def search(self, token: str, limit: int = 20) -> list[dict]:
        """Latents whose top contexts peak on `token` (its exact string, or with surrounding
        whitespace stripped): [{latent, hits, max_act, density}], most hits first."""
        ids = [i for i, t in enumerate(self.vocab) if t == token or t.strip() == token.strip()]
        if not ids:
            return []
        rows, _ = self._query(
            "SELECT c.latent, count(*) AS hits, max(c.act) AS max_act, any_value(l.density) "
            "FROM contexts c JOIN latents l USING (latent) "
            "WHERE list_extract(c.token_ids, c.center + 1) IN (SELECT UNNEST(?::INTEGER[])) "
            "GROUP BY c.latent ORDER BY hits DESC, max_act DESC, c.latent LIMIT ?",
            [ids, int(limit)])
        return [{"latent": int(a), "hits": int(b), "max_act": float(c), "density": float(d)}
                for a, b, c, d in rows]

    def close(self) -> None:
        self._con.close()
