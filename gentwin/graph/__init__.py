"""The knowledge-graph twin: schema, versions and two interchangeable stores (networkx and Neo4j).

Section II.B of the paper stores the adaptive twin models "in the form of
knowledge graphs" in Neo4j (Fig. 4); the what-if module of Algorithm 1 (lines
15-21) then sends *version requests* to that database.  The package gives the
twin

* a **schema** (:mod:`gentwin.graph.schema`): node labels, the relation types
  allowed between node kinds, scalar node metadata;
* **versions**: every update (:meth:`TwinStore.commit` or
  :meth:`TwinStore.rebuild`) creates a new numbered (optionally named) version;
  :meth:`TwinStore.request` answers a *version request*, the subgraph a
  scenario needs at the latest or at a chosen version.  An update is atomic: if
  it fails half way the previous version is untouched;
* **two backends** behind one interface: :class:`NetworkxStore` (in process,
  persisted to an append-only journal so a twin survives a restart;
  :mod:`gentwin.graph.networkx_store`) and :class:`Neo4jStore` (a real Neo4j
  server through the official driver; :mod:`gentwin.graph.neo4j_store`).

How versions are kept
---------------------
Every entity state and every relation is a *record* valid for the versions
``v_from <= v < v_to`` (``v_to`` open while the record is current).  An update
ends the records it changes and opens new ones, so its cost grows with the
changed part of the graph, not with the whole graph.  ``keep_versions`` limits
the history (``1`` keeps only the latest version, which is what a twin that is
rebuilt from scratch needs).

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
    """Which backend a run uses.

    ``"networkx"`` and ``"neo4j"`` are explicit; ``"auto"`` (the default of
    ``settings.twin.store``) means Neo4j when ``NEO4J_URI`` is set and the
    embedded networkx store otherwise.  An explicit setting always wins over the
    environment.

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
    if store == "networkx":
        return "networkx"
    if store == "neo4j":
        if not env.get(ENV_URI):
            raise TwinStoreError(
                f"store = 'neo4j' needs {ENV_URI} (and {ENV_USER}, {ENV_PASSWORD}) in the environment"
            )
        return "neo4j"
    if store == "auto":
        return "neo4j" if env.get(ENV_URI) else "networkx"
    raise SchemaError(f"store = {store!r}: must be one of 'auto', 'networkx', 'neo4j'")


def open_store(
    backend: str,
    *,
    twin: str = "twin",
    keep_versions: int | None = None,
    path: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> TwinStore:
    """A store of the given backend (``"networkx"`` or ``"neo4j"``; Neo4j from the environment)."""
    if backend == "networkx":
        return NetworkxStore(twin, keep_versions=keep_versions, path=path, **kwargs)
    if backend == "neo4j":
        return Neo4jStore.from_env(environ=environ, twin=twin, keep_versions=keep_versions, **kwargs)
    raise SchemaError(f"backend = {backend!r}: must be 'networkx' or 'neo4j'")