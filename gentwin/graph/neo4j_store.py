"""The twin store in a Neo4j 5 database: versioned records written through parameterised Cypher."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..checks import check_int
from ..topology import RELATION_TYPES, Relation
from .schema import (
    ENV_PASSWORD, ENV_URI, ENV_USER, LABELS, RESERVED_KEYS, ChangeSet, SchemaError, Subgraph, TwinNode,
    TwinRequirement, TwinStore, TwinStoreError, VersionError, VersionInfo, _Plan, _plan, label_for,
    relation_type_for,
)

__all__ = ["Neo4jStore"]

#: Schema statements, all idempotent (``IF NOT EXISTS``).
_SCHEMA = (
    "CREATE CONSTRAINT gentwin_entity_uid IF NOT EXISTS FOR (e:TwinEntity) REQUIRE e.uid IS UNIQUE",
    "CREATE CONSTRAINT gentwin_version_uid IF NOT EXISTS FOR (v:TwinVersion) REQUIRE v.uid IS UNIQUE",
    "CREATE CONSTRAINT gentwin_version_name IF NOT EXISTS FOR (v:TwinVersion) REQUIRE v.name_uid IS UNIQUE",
    "CREATE CONSTRAINT gentwin_counter_twin IF NOT EXISTS FOR (c:TwinCounter) REQUIRE c.twin IS UNIQUE",
    "CREATE INDEX gentwin_entity_twin IF NOT EXISTS FOR (e:TwinEntity) ON (e.twin)",
    "CREATE INDEX gentwin_state_twin IF NOT EXISTS FOR (s:TwinState) ON (s.twin)",
    "CREATE INDEX gentwin_version_twin IF NOT EXISTS FOR (v:TwinVersion) ON (v.twin)",
    "CREATE INDEX gentwin_staging_twin IF NOT EXISTS FOR (m:TwinStaging) ON (m.twin)",
    *(f"CREATE INDEX gentwin_rel_{t.lower()}_vto IF NOT EXISTS FOR ()-[r:{relation_type_for(t)}]-() ON (r.v_to)"
      for t in RELATION_TYPES),
)
_REL_PATTERN = "|".join(RELATION_TYPES)  # every part comes from the allow-list
#: The statements of a small update and of a version request find everything by seeks (named: _seek) in
#: the uid constraint and the twin indexes, so a plan once made stays good; without this the server re-plans
#: them (100-600 ms each) whenever a rebuild has moved its statistics, which a twin writing every few ms cannot afford.
_NO_REPLAN = "CYPHER replan=skip "


def _uid(twin: str, node_id: str) -> str:
    return f"{twin}/{node_id}"


def _seek(*names: str) -> str:
    """Hints that the entities ``names`` are found by a seek of the uid index: a plan made while the database
    is small (every estimate near 0) may scan the index instead, and replan=skip keeps it (a bare ``USING
    INDEX`` allows that scan too: 60-220 ms a write at 30,000 nodes)."""
    return "".join(f"USING INDEX SEEK {x}:TwinEntity(uid) " for x in names)


# Statement parts shared by the one-statement update, the batched one and the version lookup.  ``rows`` /
# ``uids`` name a list of the map parameter $d; relations are found from their head (the hint), as a tail
# such as a service is a hub with hundreds of relations.
def _named_relations(rows: str) -> str:
    """The current relation of each row ``{h, type, t}`` (uids), as ``r`` from ``h`` to ``x``."""
    return (f"UNWIND {rows} AS row MATCH (h:TwinEntity {{uid: row.h}})-[r:{_REL_PATTERN}]->(x:TwinEntity) "
            f"{_seek('h')}WHERE x.uid = row.t AND type(r) = row.type AND r.v_to IS NULL ")


def _current_states(uids: str) -> str:
    """The current state ``s`` of each entity ``e`` of ``uids``."""
    return (f"UNWIND {uids} AS u MATCH (e:TwinEntity {{uid: u}})-[:HAS_STATE]->(s:TwinState) {_seek('e')}"
            "WHERE s.v_to IS NULL ")


def _incident_relations(uids: str) -> str:
    """The current relations ``r`` of each entity ``e`` of ``uids``, either way round."""
    return (f"UNWIND {uids} AS u MATCH (e:TwinEntity {{uid: u}})-[r:{_REL_PATTERN}]-(:TwinEntity) {_seek('e')}"
            "WHERE r.v_to IS NULL ")


def _set_label(uids: str, kind: str) -> str:
    return f"UNWIND {uids} AS u MATCH (e:TwinEntity {{uid: u}}) {_seek('e')}SET e:{label_for(kind)}"


def _new_relations(rows: str, rel_type: str, v: str, where: str = "", count: str = "n") -> str:
    """Open a ``rel_type`` relation at version ``v`` for each row ``{h, t}`` (``where`` it holds); their count."""
    return (f"UNWIND {rows} AS row MATCH (h:TwinEntity {{uid: row.h}}), (x:TwinEntity {{uid: row.t}}) "
            f"{_seek('h', 'x')}{where}CREATE (h)-[r:{relation_type_for(rel_type)} {{v_from: {v}}}]->(x) "
            f"RETURN count(r) AS {count}")


def _new_state(v: str) -> str:
    """Open the state ``row.props`` of entity ``row.uid`` at version ``v`` (the entity too, if new)."""
    return ("MERGE (e:TwinEntity {uid: row.uid}) ON CREATE SET e.twin = $d.twin, e.id = row.id, e.kind = row.kind "
            f"CREATE (e)-[:HAS_STATE]->(n:TwinState) SET n = row.props, n.twin = $d.twin, n.v_from = {v} ")


#: Batched statements on a whole twin ($twin): (match, variable, action); each takes ``LIMIT $n`` rows a run.
_TWIN_RELS = f"MATCH (:TwinEntity {{twin: $twin}})-[r:{_REL_PATTERN}]->()"
_TWIN_STATES = "MATCH (s:TwinState {twin: $twin})"
_TWIN_CURRENT_STATES = "MATCH (:TwinEntity {twin: $twin})-[:HAS_STATE]->(s:TwinState) WHERE s.v_to IS NULL"
_ORPHANS = ("MATCH (e:TwinEntity {twin: $twin}) WHERE NOT (e)-[:HAS_STATE]->()", "e", "DETACH DELETE e")
#: Pruning after the rest of the relations ($v: the oldest version kept).
_PRUNE_REST = (
    (_TWIN_STATES + " WHERE s.v_to <= $v", "s", "DETACH DELETE s"), _ORPHANS,
    ("MATCH (x:TwinVersion {twin: $twin}) WHERE x.number < $v", "x", "DELETE x"),
)


def _batches(rows: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for k in range(0, len(rows), size):
        yield rows[k:k + size]


class Neo4jStore(TwinStore):
    """The twin in a Neo4j 5 database, through the official ``neo4j`` driver.

    Layout: one ``(:TwinEntity:<Label> {uid, twin, id, kind})`` per entity, its metadata in
    ``(:TwinState {twin, v_from, v_to, ...metadata})`` nodes linked by ``HAS_STATE``, the relations
    between entities as ``CONNECTED_TO`` / ``SERVES_IN`` / ``IN`` relationships with ``v_from`` and
    ``v_to``, one ``(:TwinVersion)`` per version.  Labels and relation types come only from the
    allow-lists; every id and value travels as a query parameter.  An update runs in one managed write
    transaction (retried on transient errors, rolled back on any failure): a small unnamed one as one
    statement, a named or large one in batched ``UNWIND`` statements; a rebuild over ``stage_rows``
    records in several transactions (``_staged_rebuild``).  :meth:`from_env` reads the
    credentials, which are kept by the driver only (not in ``repr``, not in error messages).
    """

    backend = "neo4j"

    def __init__(self, uri: str, user: str, password: str, *, twin: str = "twin", keep_versions: int | None = None,
                 database: str | None = None, batch_size: int = 2000, stage_rows: int = 20_000,
                 connection_timeout_s: float = 10.0) -> None:
        super().__init__(twin, keep_versions)
        import neo4j
        from neo4j.exceptions import AuthError, ServiceUnavailable

        if not isinstance(uri, str) or "://" not in uri:
            raise TwinStoreError(f"{ENV_URI}: must be a URI such as bolt://127.0.0.1:7687")
        self.batch_size = check_int("batch_size", batch_size, low=1, error=SchemaError)
        self.stage_rows = check_int("stage_rows", stage_rows, low=1, error=SchemaError)
        self._where = uri.split("://", 1)[1].split("@")[-1].split("/")[0].split("?")[0]  # host:port only
        self._database = database
        try:
            self._driver = neo4j.GraphDatabase.driver(uri, auth=(user, password), notifications_min_severity="OFF",
                                                      connection_timeout=connection_timeout_s)
        except (ValueError, neo4j.exceptions.ConfigurationError) as exc:
            raise TwinStoreError(f"{ENV_URI}: not a usable Neo4j URI ({type(exc).__name__})") from None
        try:
            self._driver.verify_connectivity()  # opens an authenticated connection: AuthError on bad credentials
        except (AuthError, ServiceUnavailable, OSError) as exc:
            self._driver.close()
            problem = (f"rejected the credentials (check {ENV_USER} and {ENV_PASSWORD})" if isinstance(exc, AuthError)
                       else f"is unreachable ({type(exc).__name__}); is it running, and is {ENV_URI} right?")
            raise TwinStoreError(f"the Neo4j server at {self._where} {problem}") from None
        self.server = self._driver.get_server_info().agent  # e.g. "Neo4j/5.26.0"
        self._ensure_schema()
        self._undo_staging()  # a staged rebuild that a killed client left half written

    @classmethod
    def from_env(cls, *, environ: Mapping[str, str] | None = None, **kwargs: Any) -> "Neo4jStore":
        """Connect with ``NEO4J_URI``, ``NEO4J_USER`` (default ``neo4j``) and ``NEO4J_PASSWORD``."""
        env = os.environ if environ is None else environ
        uri = env.get(ENV_URI)
        if not uri:
            raise TwinStoreError(f"{ENV_URI} is not set: the Neo4j backend needs a server URI (bolt://host:port)")
        password = env.get(ENV_PASSWORD)
        if password is None:
            raise TwinStoreError(f"{ENV_PASSWORD} is not set: the Neo4j backend needs the password of {ENV_USER}")
        return cls(uri, env.get(ENV_USER, "neo4j"), password, **kwargs)

    def __repr__(self) -> str:
        return f"Neo4jStore(twin={self.twin!r}, server={self._where!r}, keep_versions={self.keep_versions!r})"

    def close(self) -> None:
        self._driver.close()

    # -- plumbing --------------------------------------------------------------
    def _session(self):
        return self._driver.session(database=self._database) if self._database else self._driver.session()

    def _ensure_schema(self) -> None:
        from neo4j.exceptions import ClientError

        with self._session() as s:
            for stmt in _SCHEMA:
                try:
                    s.run(stmt).consume()
                except ClientError as exc:  # a concurrent creator won the race: the rule exists, which is the goal
                    if "AlreadyExists" not in (exc.code or ""):
                        raise

    def _tx(self, work: Callable[[Any], Any], *, write: bool = True) -> Any:
        """``work(tx)`` in one managed transaction; BEGIN goes with the first statement (as in ``execute_query``)."""
        with self._session() as s, getattr(s, "_pipelined_begin", contextlib.nullcontext()):
            return s.execute_write(work) if write else s.execute_read(work)

    def _write(self, work: Callable[[Any], VersionInfo]) -> VersionInfo:
        from neo4j.exceptions import ConstraintError

        try:
            return self._tx(work)
        except ConstraintError as exc:  # the name constraint: a concurrent writer took the name
            raise VersionError(f"version name already used ({exc.code})") from None

    def _drain(self, session, v: int, statements: Sequence[tuple[str, str, str]], n: int | None = None) -> int:
        """Run each (match, variable, action) on ``n`` rows a transaction until it finds none; the total."""
        total = 0
        for match, var, action in statements:
            q = f"{match} WITH {var} LIMIT $n {action} RETURN count(*) AS k"
            while k := session.execute_write(
                    lambda tx: tx.run(q, twin=self.twin, v=v, n=n or self.stage_rows).single()["k"]):
                total += k
        return total

    # -- writing -----------------------------------------------------------------
    def _commit(self, changes: ChangeSet, name: str | None, parts: tuple[str, ...]) -> VersionInfo:
        if name is None and len(changes) <= self.batch_size:
            try:
                return self._write(lambda tx: self._tx_one_statement(tx, changes, parts))
            except _Diverged:  # rolled back: the server read the change otherwise than _plan (e.g. True vs 1)
                pass

        def work(tx) -> VersionInfo:
            rec = tx.run(_NO_REPLAN + "RETURN " + _LOOKUP, d=self._lookup_params(changes)).single()
            plan, current = _plan_from(changes, rec)
            info = self._tx_open_version(tx, name, parts, plan.n_written)
            self._tx_write(tx, plan, info.number, new_ids={n.id for n in plan.states} - current)
            self._tx_prune(tx, info.number)
            return info

        return self._write(work)

    def _rebuild(self, nodes: list[TwinNode], rels: list[Relation], name: str | None) -> VersionInfo:
        if 2 * len(nodes) + len(rels) > self.stage_rows:  # over the server's transaction memory: stage it
            return self._staged_rebuild(nodes, rels, name)

        def work(tx) -> VersionInfo:
            ended = tx.run(
                f"CALL {{ {_TWIN_CURRENT_STATES} RETURN count(s) AS a }} "
                f"CALL {{ {_TWIN_RELS} WHERE r.v_to IS NULL RETURN count(r) AS b }} RETURN a + b AS n", twin=self.twin,
            ).single()["n"]
            plan = _Plan(states=nodes, new_relations=rels)
            info = self._tx_open_version(tx, name, ("ALL",), ended + plan.n_written)
            tx.run(f"{_TWIN_CURRENT_STATES} SET s.v_to = $v", twin=self.twin, v=info.number).consume()
            tx.run(f"{_TWIN_RELS} WHERE r.v_to IS NULL AND r.v_from < $v SET r.v_to = $v",
                   twin=self.twin, v=info.number).consume()
            self._tx_write(tx, plan, info.number, new_ids={n.id for n in nodes}, end_states=False)
            self._tx_prune(tx, info.number)
            return info

        return self._write(work)

    def _staged_rebuild(self, nodes: list[TwinNode], rels: list[Relation], name: str | None) -> VersionInfo:
        """A rebuild written in transactions of at most ``stage_rows`` records, published by the last one.

        Every record of version ``v`` is written (and every current one ended at ``v``, still valid for
        ``v - 1``) before the counter moves to ``v``, so no reader sees any of it before.  A ``(:TwinStaging
        {twin, v})`` marker names the version being staged: a failure, or the next store opened after a
        killed client, undoes its records.  One writer per twin, as everywhere in this store.
        """
        self._undo_staging()
        twin, n = self.twin, self.stage_rows

        def begin(tx) -> int:
            self._tx_check_free(tx, name)
            return int(tx.run("OPTIONAL MATCH (c:TwinCounter {twin: $twin}) WITH coalesce(c.latest, 0) + 1 AS v "
                              "CREATE (:TwinStaging {twin: $twin, v: v}) RETURN v", twin=twin).single()["v"])

        with self._session() as session:
            v = session.execute_write(begin)
            try:
                ended = self._drain(session, v, ((_TWIN_CURRENT_STATES, "s", "SET s.v_to = $v"),
                                                 (_TWIN_RELS + " WHERE r.v_to IS NULL AND r.v_from < $v", "r",
                                                  "SET r.v_to = $v")))
                all_ids = {x.id for x in nodes}
                for chunk in _batches(nodes, max(1, n // 2)):
                    session.execute_write(lambda tx: self._tx_write(tx, _Plan(states=list(chunk)), v,
                                                                    new_ids=all_ids, end_states=False))
                for chunk in _batches(rels, n):
                    session.execute_write(lambda tx: self._tx_write(tx, _Plan(new_relations=list(chunk)), v,
                                                                    new_ids=set(), end_states=False))

                def publish(tx) -> VersionInfo:
                    info = self._tx_open_version(tx, name, ("ALL",), ended + len(nodes) + len(rels))
                    if info.number != v:  # cannot happen with one writer per twin
                        raise TwinStoreError(f"twin {twin!r}: version {info.number} was written while {v} was staged")
                    tx.run("MATCH (m:TwinStaging {twin: $twin}) DELETE m", twin=twin).consume()
                    return info

                info = session.execute_write(publish)
            except BaseException:
                self._undo_staging()
                raise
        if self.keep_versions is not None and info.number - self.keep_versions + 1 > 1:
            with self._session() as session:
                self._drain(session, info.number - self.keep_versions + 1,
                            ((_TWIN_RELS + " WHERE r.v_to <= $v", "r", "DELETE r"), *_PRUNE_REST))
        return info

    def _undo_staging(self) -> None:
        """Undo a staged version that was never published (nothing to do, in one query, when none is)."""
        twin = self.twin
        with self._session() as session:
            rec = session.execute_read(lambda tx: tx.run(
                "MATCH (m:TwinStaging {twin: $twin}) RETURN max(m.v) AS v", twin=twin).single())
            if rec is None or rec["v"] is None:
                return
            self._drain(session, int(rec["v"]), (
                (_TWIN_RELS + " WHERE r.v_from >= $v", "r", "DELETE r"),
                (_TWIN_RELS + " WHERE r.v_to >= $v", "r", "SET r.v_to = null"),
                (_TWIN_STATES + " WHERE s.v_from >= $v", "s", "DETACH DELETE s"),
                (_TWIN_STATES + " WHERE s.v_to >= $v", "s", "SET s.v_to = null"), _ORPHANS,
            ))
            session.execute_write(lambda tx: tx.run("MATCH (m:TwinStaging {twin: $twin}) DELETE m",
                                                    twin=twin).consume())

    def _tx_check_free(self, tx, name: str | None) -> None:
        if name is not None:
            hit = tx.run("MATCH (x:TwinVersion {name_uid: $nu}) RETURN x.number AS n",
                         nu=_uid(self.twin, name)).single()
            if hit is not None:
                raise VersionError(f"name = {name!r}: version {hit['n']} already has this name")

    def _tx_open_version(self, tx, name: str | None, parts: tuple[str, ...], n_written: int) -> VersionInfo:
        """Check the name, take the next number and record the version (one statement, or two with a name)."""
        self._tx_check_free(tx, name)
        twin, created = self.twin, time.time()
        rec = tx.run(
            "MERGE (c:TwinCounter {twin: $d.twin}) ON CREATE SET c.latest = 0 SET c.latest = c.latest + 1 "
            "CREATE (x:TwinVersion {uid: $d.twin + '/' + toString(c.latest), twin: $d.twin, number: c.latest, "
            "name: $d.name, name_uid: $d.nu, parts: $d.parts, created: $d.created, n_written: $d.w}) "
            "RETURN c.latest AS v",
            d={"twin": twin, "name": name, "nu": None if name is None else _uid(twin, name), "parts": list(parts),
               "created": created, "w": n_written},
        ).single()
        return VersionInfo(int(rec["v"]), name, parts, created, n_written)

    def _lookup_params(self, changes: ChangeSet) -> dict[str, Any]:
        """The data of :data:`_LOOKUP`: touched ids, the named relations, the deleted ids."""
        twin = self.twin
        ids = {n.id for n in changes.upsert_nodes} | set(changes.delete_nodes)
        ids |= {r.head for r in changes.upsert_relations} | {r.tail for r in changes.upsert_relations}
        return {"uids": [_uid(twin, i) for i in sorted(ids)],
                "look": [_rel_row(twin, r) for r in changes.upsert_relations + changes.delete_relations],
                "duids": [_uid(twin, i) for i in changes.delete_nodes]}

    def _tx_one_statement(self, tx, changes: ChangeSet, parts: tuple[str, ...]) -> VersionInfo:
        """A small unnamed update as the one statement :data:`_ONE_STATEMENT`, checked against :func:`_plan`.

        The statement returns what it read (as :data:`_LOOKUP`) before it wrote: ``_plan`` of that reading
        raises on bad input, and any other decision than the plan's raises :class:`_Diverged` (both roll back).
        """
        twin, created = self.twin, time.time()
        rels = list(dict.fromkeys(changes.upsert_relations))
        d = self._lookup_params(changes) | {
            "twin": twin, "parts": list(parts), "created": created,
            "dels": [_rel_row(twin, r) for r in changes.delete_relations],
            "rows": [_state_row(twin, n) for n in changes.upsert_nodes],
            **{f"labels{k}": [_uid(twin, n.id) for n in changes.upsert_nodes if n.kind == kind]
               for k, kind in enumerate(sorted(LABELS))},
            **{f"rels{k}": [_rel_row(twin, r) for r in rels if r.type == t]
               for k, t in enumerate(sorted(RELATION_TYPES))},
        }
        rec = tx.run(_ONE_STATEMENT, d=d).single()
        plan, _ = _plan_from(changes, rec)  # SchemaError on bad input: nothing is committed
        if (set(rec["written"]) != {n.id for n in plan.states} or rec["ended"] != len(plan.end_relations)
                or rec["gone"] != len(plan.delete_nodes) or rec["created"] != len(plan.new_relations)):
            raise _Diverged
        self._tx_prune(tx, rec["v"])
        return VersionInfo(int(rec["v"]), None, parts, created, plan.n_written)

    def _tx_write(self, tx, plan: _Plan, v: int, *, new_ids: set[str], end_states: bool = True) -> None:
        """Write ``plan`` as version ``v`` in batched statements (``new_ids``: entities new in ``v``, labelled;
        ``end_states``: end the current states of the others)."""
        twin, size = self.twin, self.batch_size

        def run(query: str, rows: list, **d: Any) -> list:
            return [tx.run(query, d={"rows": list(chunk), "v": v, **d}).single() for chunk in _batches(rows, size)]

        run(_named_relations("$d.rows") + "SET r.v_to = $d.v", [_rel_row(twin, r) for r in plan.end_relations])
        ending = list(plan.delete_nodes) + ([n.id for n in plan.states if n.id not in new_ids] if end_states else [])
        run(_current_states("$d.rows") + "SET s.v_to = $d.v", [_uid(twin, i) for i in ending])
        run("UNWIND $d.rows AS row " + _new_state("$d.v"), [_state_row(twin, n) for n in plan.states], twin=twin)
        for kind in sorted(LABELS):  # the label comes from the allow-list only
            run(_set_label("$d.rows", kind),
                [_uid(twin, n.id) for n in plan.states if n.id in new_ids and n.kind == kind])
        for t in sorted(RELATION_TYPES):
            rows = [_rel_row(twin, r) for r in plan.new_relations if r.type == t]
            found = sum(res["n"] for res in run(_new_relations("$d.rows", t, "$d.v"), rows))
            if found != len(rows):  # cannot happen after _plan's checks; never write half a relation set
                raise TwinStoreError(f"relations of type {t}: {found} of {len(rows)} endpoints found")

    def _tx_prune(self, tx, v: int) -> None:
        if self.keep_versions is None or v - self.keep_versions + 1 <= 1:
            return
        rels = (f"MATCH ()-[r:{_REL_PATTERN}]->() WHERE r.v_to <= $v AND startNode(r).twin = $twin", "r", "DELETE r")
        tx.run("".join(f"CALL {{ {match} {action} }} " for match, _, action in (rels, *_PRUNE_REST)),
               v=v - self.keep_versions + 1, twin=self.twin).consume()

    # -- reading -----------------------------------------------------------------
    def versions(self) -> list[VersionInfo]:
        recs = self._tx(lambda tx: list(tx.run(
            "MATCH (x:TwinVersion {twin: $twin}) RETURN x.number AS number, x.name AS name, x.parts AS parts, "
            "x.created AS created, x.n_written AS n_written ORDER BY x.number", twin=self.twin)), write=False)
        return [VersionInfo(r["number"], r["name"], tuple(r["parts"]), r["created"], r["n_written"]) for r in recs]

    def request(self, requirement: TwinRequirement | None = None, *, version: int | str | None = None) -> Subgraph:
        req, version = self._request_args(requirement, version)
        twin = self.twin
        types = "|".join(relation_type_for(t) for t in req.relation_types)
        valid_s, valid_r = (f"{x}.v_from <= v AND ({x}.v_to IS NULL OR {x}.v_to > v)" for x in "sr")
        # One statement (one round trip): resolve the version, expand the requirement, return the subgraph.
        if version is None:
            head, params = "MATCH (c:TwinCounter {twin: $d.twin}) WITH c.latest AS v ", {"twin": twin}
        else:
            key = "name_uid" if isinstance(version, str) else "uid"
            head = f"MATCH (x:TwinVersion {{{key}: $d.vk}}) WITH x.number AS v "
            params = {"vk": _uid(twin, str(version))}
        if not req.seeds:
            body = (f"MATCH (n:TwinEntity {{twin: $d.twin}})-[:HAS_STATE]->(s:TwinState) WHERE {valid_s} "
                    f"OPTIONAL MATCH (n)-[r:{types}]->(o:TwinEntity) WHERE {valid_r} "
                    "RETURN v, [] AS found, n.id AS id, n.kind AS kind, properties(s) AS props, "
                    "collect([type(r), o.id]) AS out")
            params["twin"] = twin
        else:
            expand = (f"OPTIONAL MATCH (e)-[rs:{types}*1..{int(req.hops)}]-(o:TwinEntity) "
                      f"WHERE all(r IN rs WHERE {valid_r}) " if req.hops > 0 else "WITH v, e, null AS o ")
            body = (f"UNWIND $d.seeds AS u MATCH (e:TwinEntity {{uid: u}})-[:HAS_STATE]->(s:TwinState) {_seek('e')}"
                    f"WHERE {valid_s} {expand}"
                    "WITH v, collect(DISTINCT e.uid) AS found, collect(DISTINCT e) + collect(DISTINCT o) AS ns "
                    "UNWIND ns AS n WITH DISTINCT v, found, ns, n "
                    f"MATCH (n)-[:HAS_STATE]->(s:TwinState) WHERE {valid_s} "
                    f"OPTIONAL MATCH (n)-[r:{types}]->(o2:TwinEntity) WHERE o2 IN ns AND {valid_r} "
                    "RETURN v, found, n.id AS id, n.kind AS kind, properties(s) AS props, "
                    "collect([type(r), o2.id]) AS out")
            params["seeds"] = [_uid(twin, x) for x in req.seeds]

        def work(tx) -> tuple[list, Any]:
            recs = list(tx.run(_NO_REPLAN + head + body, d=params))  # one map parameter: one plan whatever the seeds
            # nothing found: tell "no such version" from "nothing there"
            rec = recs[0] if recs else tx.run(_NO_REPLAN + head + "RETURN v", d=params).single()
            return recs, rec and rec["v"]

        recs, v = self._tx(work, write=False)
        if v is None and isinstance(version, str):
            raise VersionError(f"version = {version!r}: no version of twin {twin!r} has this name")
        if v is None and version is not None:
            raise VersionError(f"version = {version}: twin {twin!r} holds no such version (or it was pruned)")
        nodes = {rec["id"]: _node_from_record(rec) for rec in recs}
        rels = {Relation(rec["id"], t, o) for rec in recs for t, o in rec["out"] if t is not None}
        found = {u for rec in recs for u in rec["found"]}
        missing = tuple(x for x in req.seeds if _uid(twin, x) not in found)
        return Subgraph(int(v or 0), dict(sorted(nodes.items())), frozenset(rels), missing)

    def drop(self) -> None:
        with self._session() as s:  # 5,000 nodes (and their relationships) a transaction
            self._drain(s, 0, (("MATCH (n) WHERE (n:TwinEntity OR n:TwinState OR n:TwinVersion OR n:TwinCounter OR "
                                "n:TwinStaging) AND n.twin = $twin", "n", "DETACH DELETE n"),), n=5000)


class _Diverged(Exception):
    """The one-statement update wrote other records than :func:`_plan` works out (it is rolled back)."""


def _rel_row(twin: str, r: Relation) -> dict[str, str]:
    return {"h": _uid(twin, r.head), "t": _uid(twin, r.tail), "type": r.type}


def _state_row(twin: str, n: TwinNode) -> dict[str, Any]:
    return {"uid": _uid(twin, n.id), "id": n.id, "kind": n.kind, "props": n.metadata}


def _node_from_record(rec) -> TwinNode:
    props = {k: v for k, v in dict(rec["props"]).items() if k not in RESERVED_KEYS}
    return TwinNode(rec["id"], rec["kind"], props)


def _plan_from(changes: ChangeSet, rec) -> tuple[_Plan, set[str]]:
    """:func:`_plan` of ``changes`` on the reading ``rec`` of :data:`_LOOKUP`; also the ids with a current state."""
    current = {i: _node_from_record({"id": i, "kind": k, "props": p}) for i, k, p in rec["cur"]}
    existing = {Relation(h, t, o) for h, t, o in rec["ex"]}
    incident = {Relation(h, t, o) for h, t, o in rec["inc"]}
    plan = _plan(changes, lambda ids: {i: current[i] for i in ids if i in current},
                 lambda rels: {r for r in rels if r in existing},
                 lambda ids: {r for r in incident if r.head in ids or r.tail in ids})
    return plan, set(current)


#: The latest version as _plan reads it: current states of the touched ids, which of the named relations
#: exist, the relations of the deleted ids.
_LOOKUP = (
    f"COLLECT {{ {_current_states('$d.uids')}RETURN [e.id, e.kind, properties(s)] }} AS cur, "
    f"COLLECT {{ {_named_relations('$d.look')}RETURN [h.id, type(r), x.id] }} AS ex, "
    f"COLLECT {{ {_incident_relations('$d.duids')}RETURN DISTINCT [startNode(r).id, type(r), endNode(r).id] }} AS inc"
)
_NOT_CURRENT = "WHERE NOT EXISTS {{ (h)-[o:{}]->(x) WHERE o.v_to IS NULL }} "
#: A small unnamed update in one statement: the reading of _LOOKUP, the next version number, the relations
#: and states it ends, the states it opens (upserted nodes whose metadata differ), labels, the relations
#: it opens (those not current), the version node.  Every subquery is always there and all data sits in
#: the one map ``$d``: the server's plan cache keys on the text and on each parameter's type and size class,
#: so bare lists would be planned anew (tens to hundreds of ms) for each power of ten of their length.
_ONE_STATEMENT = (
    f"{_NO_REPLAN}WITH {_LOOKUP} "
    "MERGE (c:TwinCounter {twin: $d.twin}) ON CREATE SET c.latest = 0 SET c.latest = c.latest + 1 "
    "WITH cur, ex, inc, c.latest AS v "
    f"CALL {{ WITH v {_named_relations('$d.dels')}SET r.v_to = v RETURN count(r) AS e1 }} "
    f"CALL {{ WITH v {_incident_relations('$d.duids')}WITH DISTINCT v, r SET r.v_to = v RETURN count(r) AS e2 }} "
    f"CALL {{ WITH v {_current_states('$d.duids')}SET s.v_to = v RETURN count(s) AS gone }} "
    "CALL { WITH v UNWIND $d.rows AS row "
    f"OPTIONAL MATCH (e0:TwinEntity {{uid: row.uid}})-[:HAS_STATE]->(s:TwinState) {_seek('e0')}WHERE s.v_to IS NULL "
    "WITH v, row, row.props AS p, s WHERE s IS NULL OR properties(s) <> p {.*, twin: s.twin, v_from: s.v_from} "
    f"SET s.v_to = v {_new_state('v')}RETURN collect(row.id) AS written }} "
    + "".join(f"CALL {{ {_set_label(f'$d.labels{k}', kind)} }} " for k, kind in enumerate(sorted(LABELS)))
    + "".join(f"CALL {{ WITH v "
              f"{_new_relations(f'$d.rels{k}', t, 'v', _NOT_CURRENT.format(relation_type_for(t)), f'n{k}')} }} "
              for k, t in enumerate(sorted(RELATION_TYPES)))
    + "WITH v, cur, ex, inc, e1 + e2 AS ended, gone, written, "
    + " + ".join(f"n{k}" for k in range(len(RELATION_TYPES))) + " AS created "
    "CREATE (:TwinVersion {uid: $d.twin + '/' + toString(v), twin: $d.twin, number: v, name: null, "
    "name_uid: null, parts: $d.parts, created: $d.created, n_written: ended + gone + size(written) + created}) "
    "RETURN v, cur, ex, inc, ended, gone, written, created"
)
