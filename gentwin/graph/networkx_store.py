"""The embedded twin store: a networkx graph of the latest version, its history and an append-only journal."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Sequence

from ..files import atomic_path
from ..topology import Relation
from .schema import (
    ChangeSet, Subgraph, TwinNode, TwinRequirement, TwinStore, TwinStoreError, VersionError, VersionInfo, _Plan,
    _plan,
)

__all__ = ["NetworkxStore"]

_JOURNAL_FORMAT = "gentwin-twin-journal"
_CHANGE_FIELDS = ("upsert_nodes", "delete_nodes", "upsert_relations", "delete_relations")


def _node_json(n: TwinNode) -> list:
    return [n.id, n.kind, [[k, v] for k, v in n.meta]]


def _node_from_json(x: list) -> TwinNode:
    return TwinNode(x[0], x[1], tuple((k, v) for k, v in x[2]))


def _rel_json(r: Relation) -> list:
    return [r.head, r.type, r.tail]


def _to_json(x: Any) -> Any:
    """A node, relation, node id or version as JSON data."""
    if isinstance(x, TwinNode):
        return _node_json(x)
    if isinstance(x, Relation):
        return _rel_json(x)
    return dataclasses.asdict(x) if isinstance(x, VersionInfo) else x


def _version_from_json(x: dict) -> VersionInfo:
    return VersionInfo(x["number"], x["name"], tuple(x["parts"]), x["created"], x["n_written"])


def _changes_from_json(x: dict) -> ChangeSet:
    return ChangeSet(tuple(_node_from_json(n) for n in x["upsert_nodes"]), tuple(x["delete_nodes"]),
                     *(tuple(Relation(*r) for r in x[f]) for f in ("upsert_relations", "delete_relations")))


def _json_line(record: dict) -> str:
    return json.dumps(record, allow_nan=False, ensure_ascii=False, separators=(",", ":")) + "\n"


class NetworkxStore(TwinStore):
    """The embedded twin: a :class:`networkx.MultiDiGraph` of the latest version plus the history.

    ``path`` names a journal: each version is appended as one JSON line (``os.fsync`` after it when
    ``durable``) and a store opened on it replays it, so the twin survives a restart; a last line cut
    short by a crash is dropped.  :meth:`compact` (every ``compact_every`` versions) rewrites it
    atomically as one snapshot.
    """

    backend = "networkx"

    def __init__(self, twin: str = "twin", *, keep_versions: int | None = None, path: str | os.PathLike | None = None,
                 durable: bool = True, compact_every: int | None = 500) -> None:
        super().__init__(twin, keep_versions)
        import networkx as nx

        self._graph = nx.MultiDiGraph()  # node attributes: rec (the TwinNode), since; edge attribute: since
        self._node_hist: dict[str, list[tuple[int, int, TwinNode]]] = {}  # ended states: (v_from, v_to, node)
        self._rel_hist: dict[Relation, list[tuple[int, int]]] = {}
        self._versions: list[VersionInfo] = []
        self._names: dict[str, int] = {}
        self._next = 1
        self._cache: tuple[int, Any] | None = None
        self.path = os.fspath(path) if path is not None else None
        self.durable = bool(durable)
        self.compact_every = compact_every
        self._appended = 0
        if self.path is not None:
            self._load()

    # -- the latest version, as _plan reads it ---------------------------------
    def _current(self, ids: Sequence[str]) -> dict[str, TwinNode]:
        nodes = self._graph.nodes
        return {i: nodes[i]["rec"] for i in ids if i in nodes}

    def _existing(self, rels: Sequence[Relation]) -> set[Relation]:
        return {r for r in rels if self._graph.has_edge(r.head, r.tail, key=r.type)}

    def _incident(self, ids: Sequence[str]) -> set[Relation]:
        g = self._graph
        ids = [u for u in ids if u in g]
        return ({Relation(u, k, t) for u, t, k in g.out_edges(ids, keys=True)}
                | {Relation(h, k, u) for h, u, k in g.in_edges(ids, keys=True)})

    # -- writing ---------------------------------------------------------------
    def _check_free(self, name: str | None) -> None:
        if name is not None and name in self._names:
            raise VersionError(f"name = {name!r}: version {self._names[name]} already has this name")

    def _commit(self, changes: ChangeSet, name: str | None, parts: tuple[str, ...]) -> VersionInfo:
        self._check_free(name)
        plan = _plan(changes, self._current, self._existing, self._incident)
        info = VersionInfo(self._next, name, parts, time.time(), plan.n_written)
        self._transact(plan, info, {"op": "commit", "version": _to_json(info),
                                    "changes": {f: [_to_json(x) for x in getattr(changes, f)] for f in _CHANGE_FIELDS}})
        return info

    def _rebuild(self, nodes: list[TwinNode], rels: list[Relation], name: str | None) -> VersionInfo:
        plan = self._rebuild_plan(nodes, rels)
        info = VersionInfo(self._next, name, ("ALL",), time.time(), plan.n_written)
        self._transact(plan, info, {"op": "rebuild", "version": _to_json(info),
                                    "nodes": [_node_json(n) for n in nodes], "relations": [_rel_json(r) for r in rels]})
        return info

    def _rebuild_plan(self, nodes: list[TwinNode], rels: list[Relation]) -> _Plan:
        g = self._graph
        return _Plan([Relation(h, k, t) for h, t, k in g.edges(keys=True)], list(g.nodes), nodes, rels)

    def _transact(self, plan: _Plan, info: VersionInfo, record: dict | None) -> None:
        """Apply a plan all-or-nothing: an undo log rolls memory back, the journal is truncated back."""
        undo: list[Callable[[], None]] = []
        offset = None
        try:
            self._apply(plan, info.number, undo)
            self._versions.append(info)
            undo.append(self._versions.pop)
            if info.name is not None:
                self._names[info.name] = info.number
                undo.append(lambda n=info.name: self._names.pop(n))
            if record is not None and self.path is not None:
                offset = os.path.getsize(self.path)
                self._append(record)
        except BaseException:
            for step in reversed(undo):
                step()
            if offset is not None:
                with open(self.path, "r+b") as fh:  # type: ignore[arg-type]
                    fh.truncate(offset)
            raise
        self._next = info.number + 1
        self._cache = None
        self._prune()
        if record is not None and self.compact_every and self._appended >= self.compact_every:
            self.compact()

    def _apply(self, plan: _Plan, v: int, undo: list[Callable[[], None]]) -> None:
        g = self._graph

        def keep(hist: dict, key: Any, rec: tuple) -> None:  # an ended record goes to the history
            if self.keep_versions != 1:
                hist.setdefault(key, []).append(rec)
                undo.append(hist[key].pop)

        for r in plan.end_relations:
            since = g.edges[r.head, r.tail, r.type]["since"]
            g.remove_edge(r.head, r.tail, key=r.type)
            undo.append(lambda r=r, s=since: g.add_edge(r.head, r.tail, key=r.type, since=s))
            keep(self._rel_hist, r, (since, v))
        for nid in plan.delete_nodes:
            data = dict(g.nodes[nid])
            g.remove_node(nid)  # its relations were ended above
            undo.append(lambda nid=nid, d=data: g.add_node(nid, **d))
            keep(self._node_hist, nid, (data["since"], v, data["rec"]))
        for node in plan.states:
            if node.id in g:
                data = dict(g.nodes[node.id])
                g.nodes[node.id].update(rec=node, since=v)
                undo.append(lambda nid=node.id, d=data: g.nodes[nid].update(d))
                keep(self._node_hist, node.id, (data["since"], v, data["rec"]))
            else:
                g.add_node(node.id, rec=node, since=v)
                undo.append(lambda nid=node.id: g.remove_node(nid))
        for r in plan.new_relations:
            g.add_edge(r.head, r.tail, key=r.type, since=v)
            undo.append(lambda r=r: g.remove_edge(r.head, r.tail, key=r.type))

    def _prune(self) -> None:
        if self.keep_versions is None or len(self._versions) <= self.keep_versions:
            return
        oldest = self._versions[-self.keep_versions].number
        for info in self._versions[: -self.keep_versions]:
            self._names.pop(info.name, None)
        del self._versions[: -self.keep_versions]
        for hist in (self._node_hist, self._rel_hist):
            for key in list(hist):
                hist[key] = [rec for rec in hist[key] if rec[1] > oldest]
                if not hist[key]:
                    del hist[key]

    # -- reading ---------------------------------------------------------------
    def versions(self) -> list[VersionInfo]:
        return list(self._versions)

    def _resolve(self, version: int | str | None) -> int:
        vs = self._versions
        if version is None:
            return vs[-1].number if vs else 0
        if not vs:
            raise VersionError(f"version = {version!r}: the twin {self.twin!r} has no versions yet")
        if isinstance(version, str):
            if version not in self._names:
                raise VersionError(f"version = {version!r}: no version of twin {self.twin!r} has this name")
            return self._names[version]
        if not vs[0].number <= version <= vs[-1].number:
            raise VersionError(f"version = {version}: twin {self.twin!r} holds versions "
                               f"{vs[0].number}..{vs[-1].number}")
        return version

    def _graph_at(self, v: int):
        """The graph of version ``v`` (the live graph for the latest, else rebuilt from the history)."""
        if not self._versions or v == self._versions[-1].number:
            return self._graph
        if self._cache is not None and self._cache[0] == v:
            return self._cache[1]
        import networkx as nx

        g = nx.MultiDiGraph()
        g.add_nodes_from((nid, {"rec": d["rec"]}) for nid, d in self._graph.nodes(data=True) if d["since"] <= v)
        g.add_nodes_from((nid, {"rec": rec}) for nid, hist in self._node_hist.items() for a, b, rec in hist
                         if a <= v < b)
        g.add_edges_from((h, t, k, {}) for h, t, k, s in self._graph.edges(keys=True, data="since") if s <= v)
        g.add_edges_from((r.head, r.tail, r.type, {}) for r, hist in self._rel_hist.items() for a, b in hist
                         if a <= v < b)
        self._cache = (v, g)
        return g

    def request(self, requirement: TwinRequirement | None = None, *, version: int | str | None = None) -> Subgraph:
        req, version = self._request_args(requirement, version)
        v = self._resolve(version)
        g = self._graph_at(v)
        types = set(req.relation_types)
        succ, pred = g._succ, g._pred  # adjacency dicts: u -> v -> {key: attrs}
        if req.seeds:
            ids = {s for s in req.seeds if s in succ}
            missing = tuple(s for s in req.seeds if s not in succ)
            frontier = ids
            for _ in range(req.hops):  # breadth first, relations of ``types`` in both directions
                frontier = {w for u in frontier for adj in (succ[u], pred[u])
                            for w, keys in adj.items() if not types.isdisjoint(keys)} - ids
                ids |= frontier
        else:
            ids, missing = set(succ), ()
        nodes = {i: g.nodes[i]["rec"] for i in sorted(ids)}
        rels = frozenset(
            Relation(u, k, w) for u in ids for w, keys in succ[u].items() if w in ids for k in keys if k in types
        )
        return Subgraph(v, nodes, rels, missing)

    # -- persistence -----------------------------------------------------------
    def _header(self) -> dict:
        return {"format": _JOURNAL_FORMAT, "format_version": 1, "twin": self.twin}

    def _append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:  # type: ignore[arg-type]
            fh.write(_json_line(record))
            fh.flush()
            if self.durable:
                os.fsync(fh.fileno())
        self._appended += 1

    def _write_atomically(self, records: list[dict]) -> None:
        with atomic_path(self.path, suffix=".tmp") as tmp:  # type: ignore[arg-type]
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(_json_line(rec) for rec in records)

    def compact(self) -> None:
        """Rewrite the journal (atomically) as one snapshot of the requestable versions."""
        if self.path is None:
            return
        snap = {
            "op": "snapshot",
            "next": self._next,
            "versions": [_to_json(i) for i in self._versions],
            "nodes": [[_node_json(d["rec"]), d["since"]] for _, d in self._graph.nodes(data=True)],
            "relations": [[[h, k, t], s] for h, t, k, s in self._graph.edges(keys=True, data="since")],
            "node_hist": [[nid, [[a, b, _node_json(rec)] for a, b, rec in h]] for nid, h in self._node_hist.items()],
            "rel_hist": [[_rel_json(r), [[a, b] for a, b in h]] for r, h in self._rel_hist.items()],
        }
        self._write_atomically([self._header(), snap])
        self._appended = 0

    def _load(self) -> None:
        if not os.path.exists(self.path):  # type: ignore[arg-type]
            self._write_atomically([self._header()])
            return
        with open(self.path, "rb") as fh:  # type: ignore[arg-type]
            lines = fh.read().split(b"\n")
        torn = lines[-1] != b""  # the last line was cut short (no newline): an update that never finished
        body = lines[:-1]
        records = []
        for k, line in enumerate(body, start=1):
            try:
                records.append(json.loads(line))
            except ValueError:
                if k == len(body) and not torn:
                    torn = True
                    break
                raise TwinStoreError(f"journal {self.path}: line {k} is not valid JSON; the file is corrupt") from None
        if not records or records[0].get("format") != _JOURNAL_FORMAT:
            raise TwinStoreError(f"journal {self.path}: not a gentwin twin journal (no header line)")
        if records[0].get("twin") != self.twin:
            raise TwinStoreError(f"journal {self.path}: holds twin {records[0].get('twin')!r}, "
                                 f"not twin = {self.twin!r}")
        for rec in records[1:]:
            self._replay(rec)
        self._appended = len(records) - 1
        if torn:  # drop the unfinished line so later appends start on a clean line
            self._write_atomically(records)

    def _replay(self, rec: dict) -> None:
        op = rec.get("op")
        if op == "snapshot":
            self._versions = [_version_from_json(x) for x in rec["versions"]]
            self._names = {i.name: i.number for i in self._versions if i.name is not None}
            self._next = rec["next"]
            g = self._graph
            g.clear()
            for node, since in rec["nodes"]:
                n = _node_from_json(node)
                g.add_node(n.id, rec=n, since=since)
            for (h, k, t), since in rec["relations"]:
                g.add_edge(h, t, key=k, since=since)
            self._node_hist = {nid: [(a, b, _node_from_json(n)) for a, b, n in h] for nid, h in rec["node_hist"]}
            self._rel_hist = {Relation(*r): [(a, b) for a, b in h] for r, h in rec["rel_hist"]}
            return
        info = _version_from_json(rec["version"])
        if info.number < self._next:  # already in the snapshot
            return
        if op == "commit":
            plan = _plan(_changes_from_json(rec["changes"]), self._current, self._existing, self._incident)
        elif op == "rebuild":
            plan = self._rebuild_plan([_node_from_json(x) for x in rec["nodes"]],
                                      [Relation(*x) for x in rec["relations"]])
        else:
            raise TwinStoreError(f"journal {self.path}: unknown record op = {op!r}")
        self._transact(plan, info, None)

    def drop(self) -> None:
        for part in (self._graph, self._node_hist, self._rel_hist, self._versions, self._names):
            part.clear()
        self._next = 1
        self._cache = None
        if self.path is not None and os.path.exists(self.path):
            os.unlink(self.path)
