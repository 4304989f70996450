"""Makes a caller's SQL safe to run for the `source.sql` node.

The text is parsed by PostgreSQL's own parser (pglast / libpg_query), so what
is checked is what the server would run. Accepted: one SELECT (with CTEs,
joins, subqueries, set operations, window functions), built from the node
kinds in ALLOWED_NODES, calling only the functions in ALLOWED_FUNCTIONS, and
reading only the tenant tables in READABLE_TABLES or the tenant's registered
ds_* tables. Every table reference is then rewritten to
`(SELECT * FROM "t" WHERE tenant_id = $n) AS t`, with $n bound to the
caller's tenant, and the rewritten tree is deparsed: the statement sent to
PostgreSQL is the checked tree, never the original text. The node then runs
it in a READ ONLY transaction with a statement timeout and a row limit.

The function allow-list matters as much as the table list: the service may
connect as a superuser, and functions such as pg_read_file, dblink or
pg_sleep must stay out of reach.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

from kaireon_server.platform.db.identifiers import DYNAMIC_TABLE, quote_ident

# Customer-data and decisioning tables a flow may read (all lead with tenant_id).
# Not listed on purpose: audit_log (holds personal salts), schema_registry,
# legal_hold, and the internal tables of the DSAR, erasure and flow services.
READABLE_TABLES: frozenset[str] = frozenset(
    {
        "interaction_history",
        "interaction_summary",
        "suppression",
        "decision_trace",
        "attribution_result",
        "variant_assignment",
        "identity_link",
        "journey_enrollment",
        "delivery",
        "consent_record",
        "offer",
        "rule",
        "contact_policy",
        "ml_model",
        "fairness_report",
    }
)


ALLOWED_NODES: frozenset[str] = frozenset(
    {
        "SelectStmt",
        "ResTarget",
        "ColumnRef",
        "A_Star",
        "A_Const",
        "String",
        "Integer",
        "Float",
        "Boolean",
        "BitString",
        "A_Expr",
        "BoolExpr",
        "NullTest",
        "BooleanTest",
        "TypeCast",
        "TypeName",
        "FuncCall",
        "CoalesceExpr",
        "MinMaxExpr",
        "CaseExpr",
        "CaseWhen",
        "SubLink",
        "RangeVar",
        "RangeSubselect",
        "RangeFunction",
        "JoinExpr",
        "Alias",
        "SortBy",
        "WindowDef",
        "GroupingSet",
        "CommonTableExpr",
        "WithClause",
        "ParamRef",
        "A_Indirection",
        "A_Indices",
        "A_ArrayExpr",
        "RowExpr",
        "SQLValueFunction",
        "CollateClause",
    }
)

ALLOWED_FUNCTIONS: frozenset[str] = frozenset(
    {
        # aggregates
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "bool_and",
        "bool_or",
        "every",
        "string_agg",
        "array_agg",
        "jsonb_agg",
        "jsonb_object_agg",
        "json_agg",
        "stddev",
        "stddev_pop",
        "stddev_samp",
        "variance",
        "var_pop",
        "var_samp",
        "percentile_cont",
        "percentile_disc",
        "mode",
        # window
        "row_number",
        "rank",
        "dense_rank",
        "percent_rank",
        "cume_dist",
        "ntile",
        "lag",
        "lead",
        "first_value",
        "last_value",
        "nth_value",
        # text
        "lower",
        "upper",
        "initcap",
        "length",
        "char_length",
        "character_length",
        "octet_length",
        "trim",
        "btrim",
        "ltrim",
        "rtrim",
        "substring",
        "substr",
        "replace",
        "concat",
        "concat_ws",
        "left",
        "right",
        "position",
        "strpos",
        "split_part",
        "starts_with",
        "lpad",
        "rpad",
        "repeat",
        "reverse",
        "overlay",
        "regexp_replace",
        "regexp_match",
        "regexp_like",
        "similar_to_escape",
        "format",
        "md5",
        "translate",
        # numbers
        "abs",
        "round",
        "ceil",
        "ceiling",
        "floor",
        "trunc",
        "mod",
        "power",
        "sqrt",
        "sign",
        "greatest",
        "least",
        "width_bucket",
        "random",
        # time
        "now",
        "date_trunc",
        "date_part",
        "extract",
        "to_char",
        "to_date",
        "to_timestamp",
        "age",
        "make_date",
        "make_timestamp",
        "make_interval",
        "timezone",
        "date_bin",
        # json and arrays
        "to_jsonb",
        "to_json",
        "jsonb_build_object",
        "jsonb_build_array",
        "json_build_object",
        "json_build_array",
        "jsonb_extract_path",
        "jsonb_extract_path_text",
        "jsonb_array_length",
        "jsonb_typeof",
        "jsonb_strip_nulls",
        "jsonb_array_elements",
        "jsonb_array_elements_text",
        "jsonb_each",
        "jsonb_each_text",
        "jsonb_object_keys",
        "array_length",
        "cardinality",
        "array_position",
        "array_to_string",
        "unnest",
        "generate_series",
    }
)


class SqlRejected(ValueError):
    """The query is outside the safe subset; the message says which construct."""


@dataclass(frozen=True)
class GuardedQuery:
    sql: str
    tables: frozenset[str]
    tenant_param: int


class _Guard:
    def __init__(self, readable: frozenset[str], allow_any_ds: bool, params: int) -> None:
        self.readable = readable
        self.allow_any_ds = allow_any_ds
        self.params = params
        self.tenant_param = params + 1
        self.tables: set[str] = set()

    def readable_table(self, name: str) -> bool:
        return name in self.readable or (self.allow_any_ds and bool(DYNAMIC_TABLE.fullmatch(name)))

    def visit(self, node: Any, ctes: frozenset[str]) -> Any:
        if isinstance(node, tuple | list):
            return tuple(self.visit(item, ctes) for item in node)
        if not isinstance(node, ast.Node):
            return node
        kind = type(node).__name__
        if kind not in ALLOWED_NODES:
            raise SqlRejected(f"{kind} is not allowed in a flow query")
        if isinstance(node, ast.RangeVar):
            return self.range_var(node, ctes)
        if isinstance(node, ast.FuncCall):
            self.function(node)
        if isinstance(node, ast.ParamRef) and not 1 <= (node.number or 0) <= self.params:
            raise SqlRejected(f"parameter ${node.number} has no value in params")
        if isinstance(node, ast.SelectStmt):
            ctes = self.select(node, ctes)
        for slot in getattr(type(node), "__slots__", ()):
            if slot == "withClause":
                continue
            value = getattr(node, slot, None)
            if isinstance(value, ast.Node | tuple | list):
                setattr(node, slot, self.visit(value, ctes))
        return node

    def select(self, node: ast.SelectStmt, ctes: frozenset[str]) -> frozenset[str]:
        if node.intoClause is not None:
            raise SqlRejected("SELECT INTO is not allowed")
        if node.lockingClause:
            raise SqlRejected("FOR UPDATE / FOR SHARE is not allowed")
        if node.withClause is None:
            return ctes
        with_clause = node.withClause
        ctes_list = list(with_clause.ctes or ())
        names = [str(cte.ctename) for cte in ctes_list]
        if len(set(names)) != len(names):
            raise SqlRejected("duplicate CTE name")
        for name in names:
            # A CTE named like a table would make scoping decide what is read.
            if self.readable_table(name) or name in READABLE_TABLES:
                raise SqlRejected(f"CTE name '{name}' shadows a table")
        for index, cte in enumerate(ctes_list):
            if not isinstance(cte.ctequery, ast.SelectStmt):
                raise SqlRejected("only SELECT is allowed inside WITH")
            if cte.search_clause is not None or cte.cycle_clause is not None:
                raise SqlRejected("SEARCH / CYCLE clauses are not allowed")
            # Non-recursive CTEs see only earlier siblings: a later name in an
            # earlier body is a real table, and must be checked as one.
            visible = names if with_clause.recursive else names[:index]
            cte.ctequery = self.visit(cte.ctequery, ctes | frozenset(visible))
        return ctes | frozenset(names)

    def range_var(self, node: ast.RangeVar, ctes: frozenset[str]) -> Any:
        if node.catalogname or node.schemaname not in (None, "public"):
            raise SqlRejected("schema-qualified tables are not allowed")
        name = str(node.relname)
        if node.schemaname is None and name in ctes:
            return node
        if not self.readable_table(name):
            raise SqlRejected(f"table '{name}' is not readable by flows")
        self.tables.add(name)
        inner = parse_sql(
            f"SELECT * FROM {quote_ident(name)} WHERE tenant_id = ${self.tenant_param}"  # noqa: S608 - validated name, quoted
        )[0].stmt
        alias = node.alias or ast.Alias(aliasname=name)
        return ast.RangeSubselect(lateral=False, subquery=inner, alias=alias)

    def function(self, node: ast.FuncCall) -> None:
        parts = [str(getattr(p, "sval", "")) for p in node.funcname or ()]
        if len(parts) == 2 and parts[0] == "pg_catalog":
            parts = parts[1:]
        if len(parts) != 1 or parts[0].lower() not in ALLOWED_FUNCTIONS:
            raise SqlRejected(f"function '{'.'.join(parts)}' is not allowed in a flow query")


def guard_query(
    sql: str, *, params: int, readable: Iterable[str] = (), allow_any_ds: bool = False
) -> GuardedQuery:
    """Check and rewrite `sql`. `readable` adds ds_* tables registered for the tenant;
    `allow_any_ds` accepts any ds_* name (config validation, before the registry is read)."""
    try:
        statements = parse_sql(sql)
    except ParseError as exc:
        raise SqlRejected(f"syntax error: {exc.args[0]}") from None
    if len(statements) != 1:
        raise SqlRejected("exactly one statement is allowed")
    statement = statements[0].stmt
    if not isinstance(statement, ast.SelectStmt):
        raise SqlRejected("only SELECT statements are allowed")
    guard = _Guard(READABLE_TABLES | frozenset(readable), allow_any_ds, params)
    checked = guard.visit(statement, frozenset())
    return GuardedQuery(RawStream()(checked), frozenset(guard.tables), guard.tenant_param)
