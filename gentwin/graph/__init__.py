"""The knowledge-graph twin: schema, versions and two interchangeable stores (networkx and Neo4j).

Section II.B of the paper keeps the adaptive twin models as knowledge graphs in Neo4j (Fig. 4), and the
what-if module of Algorithm 1 (lines 15-21) sends *version requests* to that database.  Every update
(:meth:`TwinStore.commit`, :meth:`TwinStore.rebuild`) is atomic and makes a new numbered, optionally
named, version; :meth:`TwinStore.request` answers the subgraph a scenario needs at the latest or a chosen
version.  Each entity state and relation is a record valid for versions ``v_from <= v < v_to``, so an
update costs as much as it changes, not as the whole graph; ``keep_versions`` bounds the history.

Examples
--------
>>> from gentwin.topology import Relation
>>> store = NetworkxStore(twin="demo")
>>> v1 = store.commit(ChangeSet(
...     upsert_nodes=(TwinNode("GW1", "gateway", {"name": "gateway 1"}), TwinNode("S1", "sensor")),
...     upsert_relations=(Relation("S1", "CONNECTED_TO", "GW1"),)), name="initial")
>>> v2 = store.commit(ChangeSet(delete_nodes=("S1",)))
>>> (v1.number, v2.number), sorted(store.request().nodes), sorted(store.request(version="initial").nodes)
((1, 2), ['GW1'], ['GW1', 'S1'])
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from .neo4j_store import Neo4jStore
from .networkx_store import NetworkxStore
from . import schema
from .schema import *  # noqa: F403  (the package re-exports the schema's public names, listed once there)

__all__ = [*schema.__all__, "NetworkxStore", "Neo4jStore", "choose_backend", "open_store"]


def choose_backend(store: str = "auto", environ: Mapping[str, str] | None = None) -> str:
    """Which backend a run uses: ``"auto"`` means Neo4j when ``NEO4J_URI`` is set, else networkx.

    >>> choose_backend("auto", {}), choose_backend("auto", {"NEO4J_URI": "bolt://db:7687"})
    ('networkx', 'neo4j')
    >>> choose_backend("networkx", {"NEO4J_URI": "bolt://db:7687"})
    'networkx'
    >>> choose_backend("neo4j", {})
    Traceback (most recent call last):
    ...
    gentwin.graph.TwinStoreError: store = 'neo4j' needs NEO4J_URI (and NEO4J_USER, NEO4J_PASSWORD) in the environment
    """
    env = os.environ if environ is None else environ
    if store == "neo4j" and not env.get(ENV_URI):
        raise TwinStoreError(f"store = 'neo4j' needs {ENV_URI} (and {ENV_USER}, {ENV_PASSWORD}) in the environment")
    if store in ("networkx", "neo4j"):
        return str(store)
    if store == "auto":
        return "neo4j" if env.get(ENV_URI) else "networkx"
    raise SchemaError(f"store = {store!r}: must be one of 'auto', 'networkx', 'neo4j'")


def open_store(backend: str, *, twin: str = "twin", keep_versions: int | None = None,
               path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None,
               **kwargs: Any) -> TwinStore:
    """A store of the given backend (``"networkx"`` or ``"neo4j"``; Neo4j from the environment)."""
    if backend == "networkx":
        return NetworkxStore(twin, keep_versions=keep_versions, path=path, **kwargs)
    if backend == "neo4j":
        return Neo4jStore.from_env(environ=environ, twin=twin, keep_versions=keep_versions, **kwargs)
    raise SchemaError(f"backend = {backend!r}: must be 'networkx' or 'neo4j'")