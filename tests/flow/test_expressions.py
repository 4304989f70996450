"""The filter/derive expression language: grammar, semantics, and what it refuses."""

from __future__ import annotations

import pytest

from kaireon_server.flow.expressions import ExpressionError, compile_expression

RECORD = {
    "age": 42,
    "name": "Ada",
    "score": 7.5,
    "email": None,
    "tags": ["vip", "eu"],
    "address": {"city": "Oslo", "zip": "0150"},
    "first name": "Ada",
    "active": True,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("age > 40 and name == 'Ada'", True),
        ("age >= 43 or score < 8", True),
        ("not active", False),
        ("age + 1", 43),
        ("age - 2 * 3", 36),
        ("(age - 2) * 3", 120),
        ("age / 4", 10.5),
        ("age % 5", 2),
        ("-score", -7.5),
        ("name + '!'", "Ada!"),
        ("'vip' in tags", True),
        ("'us' not in tags", True),
        ("'d' in name", True),
        ("address.city", "Oslo"),
        ("address.missing.deeper", None),
        ("`first name`", "Ada"),
        ("email", None),
        ("email == null", True),
        ("email != null", False),
        ("email > 3", None),
        ("lower(name) == 'ada'", True),
        ("upper(address.city)", "OSLO"),
        ("len(tags)", 2),
        ("coalesce(email, 'none')", "none"),
        ("is_null(email)", True),
        ("concat(name, '-', age)", "Ada-42"),
        ("round(score / 3, 2)", 2.5),
        ("if(age > 18, 'adult', 'minor')", "adult"),
        ("startswith(name, 'A') and endswith(name, 'a')", True),
        ("substr(name, 1)", "da"),
        ("int('12') + float('0.5')", 12.5),
        ("min(3, age, 10)", 3),
        ("max('a', 'b')", "b"),
        ("1 == 1.0", True),
        ("true == 1", False),
        ("'1' == 1", False),
        ("[1, 2, age]", [1, 2, 42]),
        ('"double \\"quoted\\""', 'double "quoted"'),
        ("1e3", 1000.0),
    ],
)
def test_evaluates(text: str, expected: object) -> None:
    assert compile_expression(text).evaluate(RECORD) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("age >", "unexpected token at position 5"),
        ("age > > 1", "unexpected token at position 6"),
        ("(age", "expected ')'"),
        ("age @ 1", "unexpected character at position 4"),
        ("__import__('os')", "unknown function '__import__'"),
        ("eval('1')", "unknown function 'eval'"),
        ("lower()", "wrong number of arguments to lower()"),
        ("if(1, 2)", "if() takes 3 arguments"),
        ("'a\\q'", "unknown escape sequence"),
        ("", "expression is empty"),
        ("(" * 60 + "1" + ")" * 60, "nested too deeply"),
        ("1" * 5000, "longer than 4096"),
    ],
)
def test_syntax_errors_say_where(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_expression(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name < 1", "cannot compare string with number"),
        ("active + 1", "cannot apply + to boolean and number"),
        ("age / 0", "division by zero"),
        ("lower(age)", "lower() expects a string, got number"),
        ("age and true", "expected true, false or null, got number"),
        ("1 in age", "cannot test number in number"),
        ("int('x')", "int() cannot convert this string"),
    ],
)
def test_type_errors_are_errors_not_guesses(text: str, message: str) -> None:
    expression = compile_expression(text)
    with pytest.raises(ExpressionError) as err:
        expression.evaluate(RECORD)
    assert message in str(err.value)
    # Messages name types, never the record's values.
    assert "Ada" not in str(err.value) and "42" not in str(err.value)


def test_attribute_like_paths_only_read_record_keys() -> None:
    # A dotted path is a key lookup in the JSON object, never a Python attribute.
    assert compile_expression("name.__class__").evaluate(RECORD) is None
    assert compile_expression("address.__dict__").evaluate(RECORD) is None
    assert compile_expression("tags.append").evaluate(RECORD) is None


def test_filter_semantics_null_is_false() -> None:
    assert compile_expression("email > 3").test(RECORD) is False
    assert compile_expression("age > 3").test(RECORD) is True
    with pytest.raises(ExpressionError):
        compile_expression("age").test(RECORD)


def test_fields_are_collected_and_if_is_lazy() -> None:
    expression = compile_expression("if(active, age, 1 / 0) + len(`first name`)")
    assert expression.fields == frozenset({"active", "age", "first name"})
    assert expression.evaluate(RECORD) == 45
