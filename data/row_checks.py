"""The contracts' row rules as column operations: which rows of an Arrow table a contract would refuse.

In: a table already conformed to a contract's schema (``data.io``). Out: a mask of the rows pydantic would
refuse, found with Arrow and numpy kernels instead of one ``model_validate`` per row (the large world's 26.7M
logged rows took about 450 s that way). The rules are derived from the contract itself (types, ``Optional``,
``min_length``/``max_length``, ``ge``/``gt``/``le``/``lt``, enum values, nested models and lists). A
contract's own validators need a column version registered here (``MODEL_RULES``), written against the
validator's source (a fingerprint of it is checked). A contract with anything this module does not know (a
constraint, a validator without a column version or edited since, v1 validators, ``model_post_init``, other
``model_config`` keys) has no column checks, and its rows are validated one by one as before. Pydantic
still words every error: ``data.io`` validates the first refused row with the contract to name its field.
"""

from __future__ import annotations

import hashlib
import inspect
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from functools import cache
from typing import Annotated, Any, get_args, get_origin

import annotated_types as at
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AwareDatetime, BaseModel

from data.contracts import Interaction, InteractionType, SearchImpression
from data.logstats import list_parents
from data.schemas import unwrap

Values = pa.Array | pa.ChunkedArray
Check = Callable[[Values], np.ndarray]  # values -> per value, True where the contract accepts it
TableRule = Callable[[pa.Table], np.ndarray]  # table -> per row, True where the rule holds


class NotCheckable(Exception):
    """The contract has a rule with no column version here: validate its rows one by one."""


def _mask(values: Values) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _bounds(measure: Values, constraints: tuple[Any, ...]) -> np.ndarray:
    ok = np.ones(len(measure), dtype=bool)
    tests = {
        at.MinLen: lambda c: pc.greater_equal(measure, c.min_length),
        at.MaxLen: lambda c: pc.less_equal(measure, c.max_length),
        at.Ge: lambda c: pc.greater_equal(measure, c.ge),
        at.Gt: lambda c: pc.greater(measure, c.gt),
        at.Le: lambda c: pc.less_equal(measure, c.le),
        at.Lt: lambda c: pc.less(measure, c.lt),
    }
    for constraint in constraints:
        ok &= _mask(tests[type(constraint)](constraint))  # a NaN fails every comparison, as in pydantic
    return ok


LENGTH = (at.MinLen, at.MaxLen)
ORDER = (at.Ge, at.Gt, at.Le, at.Lt)


def _allowed(constraints: tuple[Any, ...], kinds: tuple[type, ...], where: str) -> None:
    for constraint in constraints:
        if not isinstance(constraint, kinds):
            raise NotCheckable(f"{where}: no column check for {constraint!r}")


def _value_check(annotation: Any, where: str) -> Check:
    """The check of one value's type and constraints (None passes only where the annotation allows it)."""
    inner, nullable, constraints = unwrap(annotation)
    if get_origin(inner) is list:
        _allowed(constraints, LENGTH, where)
        items = _value_check(get_args(inner)[0], f"{where}[]")

        def inside(values: Values) -> np.ndarray:
            ok = _bounds(pc.list_value_length(values), constraints)
            flat = pc.list_flatten(values)
            if len(flat):
                ok[list_parents(values)[~items(flat)]] = False
            return ok

    elif isinstance(inner, type) and issubclass(inner, BaseModel):
        _allowed(constraints, (), where)
        fields = _model_checks(inner)

        def inside(values: Values) -> np.ndarray:
            ok = np.ones(len(values), dtype=bool)
            for name, check in fields.items():
                ok &= check(pc.struct_field(values, name))
            return ok

    elif isinstance(inner, type) and issubclass(inner, Enum):
        _allowed(constraints, (), where)
        members = pa.array([m.value for m in inner], pa.string())

        def inside(values: Values) -> np.ndarray:
            return _mask(pc.is_in(values, value_set=members))

    elif inner is str:
        _allowed(constraints, LENGTH, where)

        def inside(values: Values) -> np.ndarray:
            return _bounds(pc.utf8_length(values), constraints)

    elif inner in (int, float):
        _allowed(constraints, ORDER, where)

        def inside(values: Values) -> np.ndarray:
            return _bounds(values, constraints)

    elif inner is AwareDatetime or (isinstance(inner, type) and issubclass(inner, datetime)):
        # The schema check holds these to timestamps with a time zone; a Python datetime spans years 1-9999.
        _allowed(constraints, (), where)

        def inside(values: Values) -> np.ndarray:
            low = pa.scalar(datetime.min.replace(tzinfo=UTC), type=values.type)
            high = pa.scalar(datetime.max.replace(tzinfo=UTC), type=values.type)
            return _mask(pc.and_(pc.greater_equal(values, low), pc.less_equal(values, high)))

    elif inner is bool:
        _allowed(constraints, (), where)

        def inside(values: Values) -> np.ndarray:
            return np.ones(len(values), dtype=bool)

    else:
        raise NotCheckable(f"{where}: no column check for type {inner!r}")

    def check(values: Values) -> np.ndarray:
        present = ~_mask(pc.is_null(values))
        # Constraints hold where there is a value; a missing value is refused unless None is allowed.
        return np.where(present, inside(values) | ~present, nullable)

    return check


@cache
def _model_checks(model: type[BaseModel]) -> dict[str, Check]:
    decorators = model.__pydantic_decorators__
    if decorators.validators or decorators.root_validators:
        raise NotCheckable(f"{model.__name__}: pydantic v1-style validators have no column versions")
    if model.model_post_init is not BaseModel.model_post_init:
        raise NotCheckable(f"{model.__name__}: model_post_init has no column version")
    if set(model.model_config) - {"extra", "frozen"}:
        keys = sorted(model.model_config)
        raise NotCheckable(f"{model.__name__}: no column checks for model_config keys {keys}")
    registered = MODEL_RULES.get(model, {})
    own = {**decorators.model_validators, **decorators.field_validators}
    for name, decorator in own.items():
        if name not in registered:
            raise NotCheckable(f"{model.__name__}: no column version of validator {name}")
        if _fingerprint(decorator.func) != registered[name][1]:
            raise NotCheckable(f"{model.__name__}.{name} changed since its column version was written")
    return {
        name: _value_check(_with_metadata(info.annotation, info.metadata), f"{model.__name__}.{name}")
        for name, info in model.model_fields.items()
    }


def _fingerprint(func: Any) -> str:
    """A digest of a validator's source: its column version was written against this text."""
    source = textwrap.dedent(inspect.getsource(getattr(func, "__func__", func)))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _with_metadata(annotation: Any, metadata: list[Any]) -> Any:
    # Pydantic moves a field's outer Annotated constraints onto its FieldInfo; put them back for unwrap.
    return Annotated[(annotation, *metadata)] if metadata else annotation


def invalid_rows(table: pa.Table, model: type[BaseModel]) -> np.ndarray:
    """Per row of ``table`` (conformed to ``model``'s schema), True where the contract would refuse it.

    Raises ``NotCheckable`` when the contract has a rule with no column version."""
    ok = np.ones(table.num_rows, dtype=bool)
    for name, check in _model_checks(model).items():
        ok &= check(table[name])
    for rule, _ in MODEL_RULES.get(model, {}).values():
        ok &= rule(table)
    return ~ok


def _impression_rules(table: pa.Table) -> np.ndarray:
    """``SearchImpression._positions_are_distinct``: distinct positions, enough candidates, one team each."""
    shown = table["shown"]
    lengths = pc.fill_null(pc.list_value_length(shown), 0)
    ok = ~_mask(pc.less(table["n_candidates"], lengths))
    teams = pc.list_value_length(table["teams"])
    ok &= ~_mask(pc.not_equal(teams, lengths))  # a page without teams (null) passes
    positions = pc.struct_field(pc.list_flatten(shown), "position")
    if len(positions):
        parents = list_parents(shown)
        values = np.asarray(pc.fill_null(positions, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        order = np.lexsort((values, parents))
        parents, values = parents[order], values[order]
        repeated = (parents[1:] == parents[:-1]) & (values[1:] == values[:-1])
        ok[parents[1:][repeated]] = False
    return ok


def _interaction_rules(table: pa.Table) -> np.ndarray:
    """``Interaction._dwell_has_duration``: a dwell carries its duration."""
    dwell = pc.equal(table["type"], InteractionType.DWELL.value)
    return ~(_mask(dwell) & _mask(pc.is_null(table["dwell_ms"])))


# Column versions of the contracts' own validators, by the validator's name, with the fingerprint of the
# validator's source they were written against: a validator added to a contract without one here, or
# edited since, turns that contract's column checks off (NotCheckable) until this table is brought up to
# date (tests/data/test_row_checks.py fails meanwhile).
MODEL_RULES: dict[type[BaseModel], dict[str, tuple[TableRule, str]]] = {
    SearchImpression: {"_positions_are_distinct": (_impression_rules, "a8ad5a8483e768c9")},
    Interaction: {"_dwell_has_duration": (_interaction_rules, "2becc7216d3ea8a6")},
}
