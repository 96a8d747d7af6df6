from hypothesis import given
from hypothesis import strategies as st

from drossel.core.build import Build, product_of


def test_short_and_long_forms_are_the_same_build() -> None:
    assert Build.parse("15.1.2507.16") == Build.parse("15.01.2507.016")
    assert Build.parse("15.02.1748.039") == Build(15, 2, 1748, 39)
    assert Build(15, 2, 1748, 39).long == "15.02.1748.039"
    assert Build(8, 3, 485, 1).short == "8.3.485.1"


def test_builds_order_numerically() -> None:
    assert Build.from_text("15.0.1497.9") < Build.from_text("15.0.1497.10")
    assert Build.from_text("15.2.2562.17") > Build.from_text("15.2.1748.39")


def test_garbage_is_none() -> None:
    for text in ("", "15.1", "15.1.2.3.4", "a.b.c.d", "15.1.2507.16x", "99999.1.1.1"):
        assert Build.parse(text) is None


def test_products() -> None:
    assert product_of(Build.from_text("8.1.393.1")) == "Exchange 2007"
    assert product_of(Build.from_text("14.3.123.4")) == "Exchange 2010"
    assert product_of(Build.from_text("15.0.1497.2")) == "Exchange 2013"
    assert product_of(Build.from_text("15.1.2507.6")) == "Exchange 2016"
    assert product_of(Build.from_text("15.2.2561.99")) == "Exchange 2019"
    assert product_of(Build.from_text("15.2.2562.17")) == "Exchange SE"
    assert product_of(Build.from_text("15.20.5588.10")) == "Exchange Online"
    assert product_of(Build.from_text("15.21.92.10")) == "Exchange Online"
    assert product_of(Build.from_text("11.1.111.1")) is None


@given(st.text(max_size=40))
def test_parse_never_raises(text: str) -> None:
    result = Build.parse(text)
    assert result is None or Build.parse(result.long) == result
