"""The embedded twin store: a networkx graph of the latest version, its history and an append-only journal."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..files import atomic_path
from ..topology import Relation
from .schema import (
    ChangeSet, SchemaError, Subgraph, TwinNode, TwinRequirement, TwinStore, TwinStoreError, VersionError,
    VersionInfo, _bfs, _check_name, _rebuild_args, _check_parts, _Plan, _plan,
)

__all__ = ["NetworkxStore"]

_JOURNAL_FORMAT = "gentwin-twin-journal"


def _node_json(n: TwinNode) -> list:
    return [n.id, n.kind, [[k, v] for k, v in n.meta]]


def _node_from_json(x: list) -> TwinNode:
    return TwinNode(x[0], x[1], tuple((k, v) for k, v in x[2]))


def _rel_json(r: Relation) -> list:
    return [r.head, r.type, r.tail]


class NetworkxStore(TwinStore):
    """The embedded twin: a :class:`networkx.MultiDiGraph` of the latest version plus the history.

    Parameters
    ----------
    twin, keep_versions
        See :class:`~gentwin.graph.schema.TwinStore`.
    path : str or os.PathLike, optional
        A journal file.  Every committed version is appended to it as one JSON
        line (and flushed to disk when ``durable``), and opening a store on an
        existing journal replays it, so the twin survives a restart.  A last
        line cut short by a crash is discarded, which leaves the previous
        version.  ``compact()`` rewrites the journal atomically as one snapshot.
    durable : bool
        ``os.fsync`` after every append.
    compact_every : int or None
        Compact automatically after this many appended versions.
    """

    backend = "networkx"

    def __init__(
        self,
        twin: str = "twin",
        *,
        keep_versions: int | None = None,
        path: str | os.PathLike | None = None,
        durable: bool = True,
        compact_every: int | None = 500,
    ) -> None:
        super().__init__(twin, keep_versions)
        import networkx as nx

        self._graph = nx.MultiDiGraph()
        self._node_hist: dict[str, list[tuple[int, int, TwinNode]]] = {}
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

    # -- reading the latest version (call-backs of _plan) ------------------------
    def _current(self, ids: Sequence[str]) -> dict[str, TwinNode]:
        nodes = self._graph.nodes
        return {i: nodes[i]["rec"] for i in ids if i in nodes}

    def _existing(self, rels: Sequence[Relation]) -> set[Relation]:
        return {r for r in rels if self._graph.has_edge(r.head, r.tail, key=r.type)}

    def _incident(self, ids: Sequence[str]) -> set[Relation]:
        g = self._graph
        out: set[Relation] = set()
        for u in ids:
            if u not in g:
                continue
            for _, t, k in g.out_edges(u, keys=True):
                out.add(Relation(u, k, t))
            for h, _, k in g.in_edges(u, keys=True):
                out.add(Relation(h, k, u))
        return out

    # -- writing ---------------------------------------------------------------
    def commit(self, changes: ChangeSet, *, name: str | None = None, parts: Sequence[str] = ()) -> VersionInfo:
        if not isinstance(changes, ChangeSet):
            raise SchemaError(f"changes = {changes!r}: must be a ChangeSet")
        _check_name(name)
        parts = _check_parts(parts)
        if name is not None and name in self._names:
            raise VersionError(f"name = {name!r}: version {self._names[name]} already has this name")
        plan = _plan(changes, self._current, self._existing, self._incident)
        info = VersionInfo(self._next, name, parts, time.time(), plan.n_written)
        record = {"op": "commit", "version": _version_json(info), "changes": _changes_json(changes)}
        self._transact(plan, info, record)
        return info

    def rebuild(
        self, nodes: Iterable[TwinNode], relations: Iterable[Relation], *, name: str | None = None
    ) -> VersionInfo:
        _check_name(name)
        if name is not None and name in self._names:
            raise VersionError(f"name = {name!r}: version {self._names[name]} already has this name")
        nodes, rels, cs = _rebuild_args(nodes, relations)
        g = self._graph
        plan = _Plan(
            end_relations=[Relation(h, k, t) for h, t, k in g.edges(keys=True)],
            delete_nodes=list(g.nodes),
            states=list(cs.upsert_nodes),
            new_relations=rels,
        )
        info = VersionInfo(self._next, name, ("ALL",), time.time(), plan.n_written)
        record = {
            "op": "rebuild", "version": _version_json(info),
            "nodes": [_node_json(n) for n in nodes], "relations": [_rel_json(r) for r in rels],
        }
        self._transact(plan, info, record)
        return info

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
        keep_history = self.keep_versions != 1
        for r in plan.end_relations:
            since = g.edges[r.head, r.tail, r.type]["since"]
            g.remove_edge(r.head, r.tail, key=r.type)
            undo.append(lambda r=r, s=since: g.add_edge(r.head, r.tail, key=r.type, since=s))
            if keep_history:
                self._rel_hist.setdefault(r, []).append((since, v))
                undo.append(lambda r=r: self._rel_hist[r].pop())
        for nid in plan.delete_nodes:
            data = dict(g.nodes[nid])
            g.remove_node(nid)  # its relations were ended above
            undo.append(lambda nid=nid, d=data: g.add_node(nid, **d))
            if keep_history:
                self._node_hist.setdefault(nid, []).append((data["since"], v, data["rec"]))
                undo.append(lambda nid=nid: self._node_hist[nid].pop())
        for node in plan.states:
            if node.id in g:
                data = dict(g.nodes[node.id])
                g.nodes[node.id].update(rec=node, since=v)
                undo.append(lambda nid=node.id, d=data: g.nodes[nid].update(d))
                if keep_history:
                    self._node_hist.setdefault(node.id, []).append((data["since"], v, data["rec"]))
                    undo.append(lambda nid=node.id: self._node_hist[nid].pop())
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
            if info.name is not None:
                self._names.pop(info.name, None)
        del self._versions[: -self.keep_versions]
        for hist in (self._node_hist, self._rel_hist):
            for key in list(hist):
                kept = [rec for rec in hist[key] if rec[1] > oldest]
                if kept:
                    hist[key] = kept
                else:
                    del hist[key]

    # -- reading ---------------------------------------------------------------
    def versions(self) -> list[VersionInfo]:
        return list(self._versions)

    def _resolve(self, version: int | str | None) -> int:
        version = self._version_arg(version)
        if not self._versions:
            if version is None:
                return 0
            raise VersionError(f"version = {version!r}: the twin {self.twin!r} has no versions yet")
        if version is None:
            return self._versions[-1].number
        if isinstance(version, str):
            if version not in self._names:
                raise VersionError(f"version = {version!r}: no version of twin {self.twin!r} has this name")
            return self._names[version]
        if not self._versions[0].number <= version <= self._versions[-1].number:
            raise VersionError(
                f"version = {version}: twin {self.twin!r} holds versions "
                f"{self._versions[0].number}..{self._versions[-1].number}"
            )
        return version

    def _graph_at(self, v: int):
        """The graph of version ``v`` (the live graph for the latest, else rebuilt from the history)."""
        if not self._versions or v == self._versions[-1].number:
            return self._graph
        if self._cache is not None and self._cache[0] == v:
            return self._cache[1]
        import networkx as nx

        g = nx.MultiDiGraph()
        for nid, data in self._graph.nodes(data=True):
            if data["since"] <= v:
                g.add_node(nid, rec=data["rec"], since=data["since"])
        for nid, hist in self._node_hist.items():
            for a, b, rec in hist:
                if a <= v < b:
                    g.add_node(nid, rec=rec, since=a)
        for h, t, k, since in self._graph.edges(keys=True, data="since"):
            if since <= v:
                g.add_edge(h, t, key=k, since=since)
        for r, hist in self._rel_hist.items():
            for a, b in hist:
                if a <= v < b:
                    g.add_edge(r.head, r.tail, key=r.type, since=a)
        self._cache = (v, g)
        return g

    def request(self, requirement: TwinRequirement | None = None, *, version: int | str | None = None) -> Subgraph:
        req = self._requirement_arg(requirement)
        v = self._resolve(version)
        g = self._graph_at(v)
        types = set(req.relation_types)
        succ, pred = g._succ, g._pred  # adjacency dicts: u -> v -> {key: attrs}
        if req.seeds:
            present = [s for s in req.seeds if s in succ]
            missing = tuple(s for s in req.seeds if s not in succ)

            def adjacent(u: str) -> Iterator[str]:
                for w, keys in succ[u].items():
                    if not types.isdisjoint(keys):
                        yield w
                for w, keys in pred[u].items():
                    if not types.isdisjoint(keys):
                        yield w

            ids = _bfs(adjacent, present, req.hops)
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
        line = json.dumps(record, allow_nan=False, ensure_ascii=False, separators=(",", ":")) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:  # type: ignore[arg-type]
            fh.write(line)
            fh.flush()
            if self.durable:
                os.fsync(fh.fileno())
        self._appended += 1

    def _write_atomically(self, lines: list[dict]) -> None:
        with atomic_path(self.path, suffix=".tmp") as tmp:  # type: ignore[arg-type]
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in lines:
                    fh.write(json.dumps(rec, allow_nan=False, ensure_ascii=False, separators=(",", ":")) + "\n")

    def compact(self) -> None:
        """Rewrite the journal (atomically) as one snapshot of the requestable versions."""
        if self.path is None:
            return
        snap = {
            "op": "snapshot",
            "next": self._next,
            "versions": [_version_json(i) for i in self._versions],
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
            raw = fh.read()
        lines = raw.split(b"\n")
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
            raise TwinStoreError(
                f"journal {self.path}: holds twin {records[0].get('twin')!r}, not twin = {self.twin!r}"
            )
        for rec in records[1:]:
            self._replay(rec)
        self._appended = len(records) - 1
        if torn:  # drop the unfinished line so later appends start on a clean line
            self._write_atomically(records[:1] + records[1:])

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
            cs = _changes_from_json(rec["changes"])
            plan = _plan(cs, self._current, self._existing, self._incident)
        elif op == "rebuild":
            g = self._graph
            plan = _Plan(
                end_relations=[Relation(h, k, t) for h, t, k in g.edges(keys=True)],
                delete_nodes=list(g.nodes),
                states=[_node_from_json(x) for x in rec["nodes"]],
                new_relations=[Relation(*x) for x in rec["relations"]],
            )
        else:
            raise TwinStoreError(f"journal {self.path}: unknown record op = {op!r}")
        self._transact(plan, info, None)

    def drop(self) -> None:
        self._graph.clear()
        self._node_hist.clear()
        self._rel_hist.clear()
        self._versions.clear()
        self._names.clear()
        self._next = 1
        self._cache = None
        if self.path is not None and os.path.exists(self.path):
            os.unlink(self.path)


def _version_json(i: VersionInfo) -> dict:
    return {"number": i.number, "name": i.name, "parts": list(i.parts), "created": i.created, "n_written": i.n_written}


def _version_from_json(x: dict) -> VersionInfo:
    return VersionInfo(x["number"], x["name"], tuple(x["parts"]), x["created"], x["n_written"])


def _changes_json(cs: ChangeSet) -> dict:
    return {
        "upsert_nodes": [_node_json(n) for n in cs.upsert_nodes],
        "delete_nodes": list(cs.delete_nodes),
        "upsert_relations": [_rel_json(r) for r in cs.upsert_relations],
        "delete_relations": [_rel_json(r) for r in cs.delete_relations],
    }


def _changes_from_json(x: dict) -> ChangeSet:
    return ChangeSet(
        upsert_nodes=tuple(_node_from_json(n) for n in x["upsert_nodes"]),
        delete_nodes=tuple(x["delete_nodes"]),
        upsert_relations=tuple(Relation(*r) for r in x["upsert_relations"]),
        delete_relations=tuple(Relation(*r) for r in x["delete_relations"]),
    )
